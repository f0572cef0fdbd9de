//! Docker references as containers/image normalizes them for policy scopes
//! and signature identities (`busybox` is `docker.io/library/busybox`).

use std::fmt;

/// A normalized reference: `name` is `host[:port]/path`, with a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerRef {
    /// `host[:port]/path`, the repository.
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl DockerRef {
    /// Parses `s` (`[host[:port]/]path[:tag][@digest]`); `None` if it is not a reference.
    pub fn parse(s: &str) -> Option<DockerRef> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let (alg, hex) = d.split_once(':')?;
                if alg.is_empty() || hex.is_empty() {
                    return None;
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if name.is_empty() || tag.as_deref() == Some("") {
            return None;
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || "._-/:".contains(c);
        if !name.chars().all(valid) || name.starts_with('/') || name.ends_with('/') {
            return None;
        }
        let (first, path) = match name.split_once('/') {
            // cosign writes Docker Hub as index.docker.io.
            Some(("index.docker.io", p)) => ("docker.io".to_string(), p.to_string()),
            Some((f, p)) if f.contains('.') || f.contains(':') || f == "localhost" => {
                (f.to_string(), p.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if path.contains(':') || first.chars().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        let path = if first == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Some(DockerRef {
            name: format!("{first}/{path}"),
            tag,
            digest,
        })
    }

    /// The registry host (with port).
    pub fn host(&self) -> &str {
        self.name.split('/').next().unwrap_or_default()
    }

    /// The path inside the registry.
    pub fn repository(&self) -> &str {
        self.name.split_once('/').map_or("", |(_, p)| p)
    }

    /// The same repository at `digest`.
    pub fn with_digest(&self, digest: &str) -> DockerRef {
        DockerRef {
            name: self.name.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }
}

impl fmt::Display for DockerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_as_containers_image_does() {
        let r = DockerRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox");
        assert_eq!(
            DockerRef::parse("index.docker.io/library/busybox").unwrap(),
            r
        );
        let r = DockerRef::parse("127.0.0.1:5000/ns/app:v1").unwrap();
        assert_eq!((r.host(), r.repository()), ("127.0.0.1:5000", "ns/app"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = DockerRef::parse(&format!("localhost/app@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("localhost/app@{d}"));
        for bad in ["", "a b", "/x", "x/", "app:", "app@sha256"] {
            assert_eq!(DockerRef::parse(bad), None, "{bad}");
        }
    }
}
