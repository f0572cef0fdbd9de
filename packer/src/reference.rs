//! Image references, normalised the way Docker and containerd spell them
//! (`hello` → `docker.io/library/hello:latest`), so the store, the registry
//! client and `ctr` agree on one name.

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
    full: String,
}

impl ImageRef {
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The registry-protocol reference.
    pub fn reference(&self) -> &Reference {
        &self.inner
    }

    /// Registry host (and port) as written in the reference.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The tag, or the digest when the reference has no tag.
    pub fn tag_or_digest(&self) -> String {
        self.inner
            .tag()
            .or(self.inner.digest())
            .unwrap_or("latest")
            .to_string()
    }

    /// The same repository at `digest` (for pulling what an index points to).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.inner.registry().to_string(),
            self.inner.repository().to_string(),
            digest.to_string(),
        )
    }
}

impl FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = Reference::try_from(s)
            .map_err(|e| format!("{s:?} is not a valid image reference ({e})"))?;
        let inner = if parsed.tag().is_none() && parsed.digest().is_none() {
            Reference::with_tag(
                parsed.registry().to_string(),
                parsed.repository().to_string(),
                "latest".to_string(),
            )
        } else {
            parsed
        };
        let full = inner.whole();
        Ok(ImageRef { inner, full })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_expand_like_docker() {
        let r: ImageRef = "hello".parse().unwrap();
        assert_eq!(r.as_str(), "docker.io/library/hello:latest");
        let r: ImageRef = "127.0.0.1:5000/demo/hello:v1".parse().unwrap();
        assert_eq!(r.as_str(), "127.0.0.1:5000/demo/hello:v1");
        assert_eq!(r.registry(), "127.0.0.1:5000");
    }

    #[test]
    fn invalid_reference_is_reported() {
        let err = "Bad Ref!".parse::<ImageRef>().unwrap_err();
        assert!(err.contains("is not a valid image reference"), "{err}");
    }
}
