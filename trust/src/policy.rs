//! containers/image `policy.json` (containers-policy.json(5)), the file
//! podman, skopeo and CRI-O already read: a `default` list of requirements
//! and, under `transports.docker`, lists for registries, namespaces,
//! repositories and single images. wasmbox reads the docker transport; an
//! image must satisfy every requirement of the most specific scope that
//! names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::TrustError;
use crate::keys::PublicKey;
use crate::reference::DockerRef;

/// A parsed policy, with its keys read.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it came from, for messages (a path).
    origin: String,
    default: Vec<Requirement>,
    docker: BTreeMap<String, Vec<Requirement>>,
    /// SHA-256 of the file and every key it reads: a cached verdict is only
    /// good for the same policy.
    fingerprint: String,
}

/// One requirement an image must meet.
#[derive(Debug, Clone)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    /// Signed, in a form cosign writes, by one of `keys`.
    SigstoreSigned {
        keys: Vec<PublicKey>,
        identity: SignedIdentity,
    },
    /// A requirement wasmbox cannot check (GPG `signedBy`, keyless,
    /// transparency logs): an image it applies to is refused, saying why.
    Unsupported(String),
}

/// Which identity a signature must claim (`signedIdentity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    MatchExact,
    /// The default: the same repository for a digest reference, the same
    /// reference otherwise.
    MatchRepoDigestOrExact,
    MatchRepository,
    ExactReference(DockerRef),
    ExactRepository(String),
}

/// The requirements that apply to an image, and the scope that chose them.
pub struct Applicable<'a> {
    /// The `transports.docker` key, `""` for the transport's default, or
    /// `None` for the policy's `default`.
    pub scope: Option<&'a str>,
    pub requirements: &'a [Requirement],
}

impl Policy {
    /// Reads and checks the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, TrustError> {
        let bytes = std::fs::read(path).map_err(|e| {
            TrustError::Policy(format!("cannot read the policy {}: {e}", path.display()))
        })?;
        Policy::parse(&bytes, &path.display().to_string(), path.parent())
    }

    /// Checks a policy's bytes; relative `keyPath`s are taken from `dir`.
    pub fn parse(bytes: &[u8], origin: &str, dir: Option<&Path>) -> Result<Policy, TrustError> {
        let bad = |why: String| TrustError::Policy(format!("the policy {origin} {why}"));
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("is not valid JSON ({e})")))?;
        let Value::Object(top) = value else {
            return Err(bad("is not a JSON object".into()));
        };
        let mut fingerprint = Sha256::new();
        fingerprint.update(bytes);
        let mut ctx = Context {
            dir,
            fingerprint: &mut fingerprint,
        };
        for key in top.keys() {
            if key != "default" && key != "transports" {
                return Err(bad(format!("has an unknown field \"{key}\"")));
            }
        }
        let default = match top.get("default") {
            Some(v) => {
                requirements(v, &mut ctx).map_err(|e| bad(format!("has a bad \"default\": {e}")))?
            }
            None => return Err(bad("has no \"default\" requirements".into())),
        };
        let mut docker = BTreeMap::new();
        if let Some(transports) = top.get("transports") {
            let Value::Object(transports) = transports else {
                return Err(bad("has \"transports\" that is not an object".into()));
            };
            // Other transports (containers-storage, oci, dir…) never apply to
            // an image pulled from a registry; they are accepted and ignored.
            if let Some(scopes) = transports.get("docker") {
                let Value::Object(scopes) = scopes else {
                    return Err(bad("has transports.docker that is not an object".into()));
                };
                for (scope, reqs) in scopes {
                    check_scope(scope)
                        .map_err(|e| bad(format!("has a bad docker scope \"{scope}\": {e}")))?;
                    let reqs = requirements(reqs, &mut ctx)
                        .map_err(|e| bad(format!("has a bad docker scope \"{scope}\": {e}")))?;
                    docker.insert(scope.clone(), reqs);
                }
            }
        }
        Ok(Policy {
            origin: origin.to_string(),
            default,
            docker,
            fingerprint: hex::encode(fingerprint.finalize()),
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// SHA-256 over the policy and the keys it reads.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The requirements for `image`: the first of its scopes the policy
    /// names (the reference, the repository, each parent namespace, the
    /// host, `*.` wildcards of the host), else `""`, else `default`.
    pub fn applicable(&self, image: &DockerRef) -> Applicable<'_> {
        for scope in scopes_of(image) {
            if let Some((key, reqs)) = self.docker.get_key_value(&scope) {
                return Applicable {
                    scope: Some(key),
                    requirements: reqs,
                };
            }
        }
        if let Some((key, reqs)) = self.docker.get_key_value("") {
            return Applicable {
                scope: Some(key),
                requirements: reqs,
            };
        }
        Applicable {
            scope: None,
            requirements: &self.default,
        }
    }
}

/// containers/image's lookup order for a docker reference: the reference
/// itself, its repository and each parent namespace up to the host (with
/// its port), then `*.`-wildcards of the host name without the port.
pub fn scopes_of(image: &DockerRef) -> Vec<String> {
    let mut scopes = Vec::new();
    if image.tag.is_some() || image.digest.is_some() {
        // A reference with both is looked up by its digest.
        let identity = match (&image.digest, &image.tag) {
            (Some(d), _) => format!("{}@{d}", image.name),
            (None, Some(t)) => format!("{}:{t}", image.name),
            (None, None) => unreachable!(),
        };
        scopes.push(identity);
    }
    let mut name = image.name.as_str();
    loop {
        scopes.push(name.to_string());
        match name.rfind('/') {
            Some(i) => name = &name[..i],
            None => break,
        }
    }
    let mut host = name.split(':').next().unwrap_or(name);
    while let Some(dot) = host.find('.') {
        host = &host[dot + 1..];
        scopes.push(format!("*.{host}"));
    }
    scopes
}

fn check_scope(scope: &str) -> Result<(), String> {
    if scope.is_empty() {
        return Ok(());
    }
    if let Some(domain) = scope.strip_prefix("*.") {
        if domain.is_empty() || domain.contains('/') || domain.contains(':') || domain.contains('*')
        {
            return Err("a wildcard scope is \"*.\" followed by a host name".into());
        }
        return Ok(());
    }
    if scope.contains('*') {
        return Err("only a leading \"*.\" may be a wildcard".into());
    }
    // A host alone, a namespace, a repository or a full reference.
    let probe = if scope.contains('/') {
        scope.to_string()
    } else {
        format!("{scope}/x")
    };
    match DockerRef::parse(&probe) {
        Some(r) if probe == scope && r.name != scope && r.tag.is_none() && r.digest.is_none() => {
            Err(format!("it is not fully qualified (write \"{}\")", r.name))
        }
        Some(_) => Ok(()),
        None => Err("it is not a registry, namespace, repository or image reference".into()),
    }
}

struct Context<'a> {
    dir: Option<&'a Path>,
    fingerprint: &'a mut Sha256,
}

fn requirements(value: &Value, ctx: &mut Context) -> Result<Vec<Requirement>, String> {
    let Value::Array(items) = value else {
        return Err("requirements must be a list".into());
    };
    if items.is_empty() {
        return Err("a requirement list must not be empty (use [{\"type\":\"reject\"}] or [{\"type\":\"insecureAcceptAnything\"}])".into());
    }
    items.iter().map(|v| requirement(v, ctx)).collect()
}

fn requirement(value: &Value, ctx: &mut Context) -> Result<Requirement, String> {
    let Value::Object(fields) = value else {
        return Err("a requirement must be an object".into());
    };
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .ok_or("a requirement has no \"type\"")?;
    let only = |allowed: &[&str]| -> Result<(), String> {
        match fields
            .keys()
            .find(|k| *k != "type" && !allowed.contains(&k.as_str()))
        {
            Some(k) => Err(format!("{kind} has an unknown field \"{k}\"")),
            None => Ok(()),
        }
    };
    match kind {
        "insecureAcceptAnything" => {
            only(&[])?;
            Ok(Requirement::InsecureAcceptAnything)
        }
        "reject" => {
            only(&[])?;
            Ok(Requirement::Reject)
        }
        "signedBy" => Ok(Requirement::Unsupported(
            "signedBy (GPG simple signing) is not supported by wasmbox; use sigstoreSigned with a cosign key".into(),
        )),
        "sigstoreSigned" => sigstore_signed(fields, ctx),
        other => Err(format!("\"{other}\" is not a requirement type (insecureAcceptAnything, reject, sigstoreSigned)")),
    }
}

fn sigstore_signed(fields: &Map<String, Value>, ctx: &mut Context) -> Result<Requirement, String> {
    const KEY_FIELDS: [&str; 4] = ["keyPath", "keyPaths", "keyData", "keyDatas"];
    const KEYLESS_FIELDS: [&str; 2] = ["fulcio", "pki"];
    const REKOR_FIELDS: [&str; 4] = [
        "rekorPublicKeyPath",
        "rekorPublicKeyPaths",
        "rekorPublicKeyData",
        "rekorPublicKeyDatas",
    ];
    if let Some(k) = fields.keys().find(|k| {
        *k != "type"
            && *k != "signedIdentity"
            && !KEY_FIELDS.contains(&k.as_str())
            && !KEYLESS_FIELDS.contains(&k.as_str())
            && !REKOR_FIELDS.contains(&k.as_str())
    }) {
        return Err(format!("sigstoreSigned has an unknown field \"{k}\""));
    }
    let sources: Vec<&str> = KEY_FIELDS
        .iter()
        .chain(KEYLESS_FIELDS.iter())
        .copied()
        .filter(|k| fields.contains_key(*k))
        .collect();
    if sources.len() != 1 {
        return Err(format!(
            "sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio or pki (it has {})",
            if sources.is_empty() {
                "none".to_string()
            } else {
                sources.join(", ")
            }
        ));
    }
    let identity = signed_identity(fields.get("signedIdentity"))?;
    if KEYLESS_FIELDS.contains(&sources[0]) {
        return Ok(Requirement::Unsupported(format!(
            "sigstoreSigned with {} (keyless signing) is not supported by wasmbox yet; use a public key (keyPath or keyData)",
            sources[0]
        )));
    }
    if let Some(k) = REKOR_FIELDS.iter().find(|k| fields.contains_key(**k)) {
        return Ok(Requirement::Unsupported(format!(
            "sigstoreSigned with {k} (a transparency log) is not supported by wasmbox yet"
        )));
    }
    let source = sources[0];
    let value = &fields[source];
    let list: Vec<&Value> = match value {
        Value::Array(items) if source.ends_with('s') => items.iter().collect(),
        _ if source.ends_with('s') => return Err(format!("{source} must be a list")),
        v => vec![v],
    };
    if list.is_empty() {
        return Err(format!("{source} must not be empty"));
    }
    let mut keys = Vec::new();
    for item in list {
        let text = item
            .as_str()
            .ok_or_else(|| format!("{source} must hold strings"))?;
        let (pem, what) = if source.starts_with("keyPath") {
            let path = resolve(text, ctx.dir);
            let pem = std::fs::read(&path)
                .map_err(|e| format!("cannot read the key {}: {e}", path.display()))?;
            (pem, path.display().to_string())
        } else {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| format!("{source} must be base64 (of a PEM public key)"))?;
            (pem, source.to_string())
        };
        let key = PublicKey::from_pem(&pem, &what).map_err(|e| e.to_string())?;
        ctx.fingerprint.update(key.to_der());
        keys.push(key);
    }
    Ok(Requirement::SigstoreSigned { keys, identity })
}

fn resolve(path: &str, dir: Option<&Path>) -> PathBuf {
    let p = PathBuf::from(path);
    match dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p,
    }
}

fn signed_identity(value: Option<&Value>) -> Result<SignedIdentity, String> {
    let Some(value) = value else {
        return Ok(SignedIdentity::MatchRepoDigestOrExact);
    };
    let Value::Object(fields) = value else {
        return Err("signedIdentity must be an object".into());
    };
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .ok_or("signedIdentity has no \"type\"")?;
    let string = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("signedIdentity {kind} needs \"{name}\""))
    };
    Ok(match kind {
        "matchExact" => SignedIdentity::MatchExact,
        "matchRepoDigestOrExact" => SignedIdentity::MatchRepoDigestOrExact,
        "matchRepository" => SignedIdentity::MatchRepository,
        "exactReference" => {
            let r = string("dockerReference")?;
            let parsed = DockerRef::parse(r)
                .filter(|p| p.tag.is_some() || p.digest.is_some())
                .ok_or_else(|| {
                    format!("dockerReference \"{r}\" is not a reference with a tag or digest")
                })?;
            SignedIdentity::ExactReference(parsed)
        }
        "exactRepository" => {
            let r = string("dockerRepository")?;
            let parsed = DockerRef::parse(r)
                .filter(|p| p.tag.is_none() && p.digest.is_none())
                .ok_or_else(|| format!("dockerRepository \"{r}\" is not a repository"))?;
            SignedIdentity::ExactRepository(parsed.name)
        }
        "remapIdentity" => {
            return Err("signedIdentity remapIdentity is not supported by wasmbox".into());
        }
        other => return Err(format!("\"{other}\" is not a signedIdentity type")),
    })
}

impl SignedIdentity {
    /// Whether a signature claiming `signed` may stand for `image`, by
    /// containers/image's rules: a name-only claim (what cosign writes)
    /// satisfies only the repository-level identities.
    pub fn accepts(&self, image: &DockerRef, signed: &DockerRef) -> bool {
        let name_only = |r: &DockerRef| r.tag.is_none() && r.digest.is_none();
        match self {
            SignedIdentity::MatchExact => {
                !name_only(image) && !name_only(signed) && image == signed
            }
            SignedIdentity::MatchRepoDigestOrExact => {
                if name_only(signed) {
                    false
                } else if image.digest.is_some() {
                    image.name == signed.name
                } else {
                    !name_only(image) && image == signed
                }
            }
            SignedIdentity::MatchRepository => image.name == signed.name,
            SignedIdentity::ExactReference(r) => !name_only(signed) && r == signed,
            SignedIdentity::ExactRepository(name) => *name == signed.name,
        }
    }

    /// The policy's spelling, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            SignedIdentity::MatchExact => "matchExact",
            SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            SignedIdentity::MatchRepository => "matchRepository",
            SignedIdentity::ExactReference(_) => "exactReference",
            SignedIdentity::ExactRepository(_) => "exactRepository",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Result<Policy, TrustError> {
        Policy::parse(json.as_bytes(), "p.json", None)
    }

    #[test]
    fn scopes_are_tried_from_the_image_to_wildcard_hosts() {
        let d = format!("sha256:{}", "b".repeat(64));
        let r = DockerRef::parse(&format!("registry.example.com:5000/ns/app@{d}")).unwrap();
        assert_eq!(
            scopes_of(&r),
            vec![
                format!("registry.example.com:5000/ns/app@{d}"),
                "registry.example.com:5000/ns/app".to_string(),
                "registry.example.com:5000/ns".to_string(),
                "registry.example.com:5000".to_string(),
                "*.example.com".to_string(),
                "*.com".to_string(),
            ]
        );
    }

    #[test]
    fn the_most_specific_scope_wins_then_the_transport_default_then_default() {
        let p = policy(
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{
                "127.0.0.1:5000":[{"type":"insecureAcceptAnything"}],
                "127.0.0.1:5000/app":[{"type":"reject"}]}}}"#,
        )
        .unwrap();
        let scope = |r: &str| {
            p.applicable(&DockerRef::parse(r).unwrap())
                .scope
                .map(str::to_string)
        };
        assert_eq!(
            scope("127.0.0.1:5000/app:v1").as_deref(),
            Some("127.0.0.1:5000/app")
        );
        assert_eq!(
            scope("127.0.0.1:5000/other:v1").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(scope("example.com/x:1"), None);
    }

    #[test]
    fn malformed_policies_are_refused_in_one_sentence() {
        for (json, says) in [
            ("{", "is not valid JSON"),
            ("[]", "is not a JSON object"),
            ("{}", "has no \"default\""),
            (r#"{"default":[]}"#, "must not be empty"),
            (
                r#"{"default":[{"type":"maybe"}]}"#,
                "is not a requirement type",
            ),
            (
                r#"{"default":[{"type":"reject","x":1}]}"#,
                "unknown field \"x\"",
            ),
            (
                r#"{"default":[{"type":"sigstoreSigned"}]}"#,
                "exactly one of keyPath",
            ),
            (
                r#"{"default":[{"type":"sigstoreSigned","keyData":"!!"}]}"#,
                "must be base64",
            ),
            (
                r#"{"default":[{"type":"sigstoreSigned","keyPath":"/nonexistent/k.pub"}]}"#,
                "cannot read the key /nonexistent/k.pub",
            ),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a*b":[{"type":"reject"}]}}}"#,
                "bad docker scope",
            ),
        ] {
            let err = policy(json).unwrap_err().to_string();
            assert!(err.starts_with("the policy p.json "), "{err}");
            assert!(err.contains(says), "{json}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn key_data_is_base64_of_a_pem_public_key_and_must_be_p256() {
        let key = crate::PrivateKey::generate().public_key();
        let data = base64::engine::general_purpose::STANDARD.encode(key.to_pem());
        let p = policy(&format!(
            r#"{{"default":[{{"type":"sigstoreSigned","keyData":"{data}"}}]}}"#
        ))
        .unwrap();
        assert!(
            matches!(&p.default[0], Requirement::SigstoreSigned { keys, .. } if keys[0] == key)
        );
        let not_a_key = base64::engine::general_purpose::STANDARD.encode("hello");
        let err = policy(&format!(
            r#"{{"default":[{{"type":"sigstoreSigned","keyData":"{not_a_key}"}}]}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("keyData is not a PEM public key"), "{err}");
    }

    #[test]
    fn identities_match_as_containers_image_matches_them() {
        let d = format!("sha256:{}", "c".repeat(64));
        let by_digest = DockerRef::parse(&format!("r.io/app@{d}")).unwrap();
        let by_tag = DockerRef::parse("r.io/app:v1").unwrap();
        let repo_only = DockerRef::parse("r.io/app").unwrap();
        let id = SignedIdentity::MatchRepoDigestOrExact;
        // The default never accepts cosign's name-only identity.
        assert!(!id.accepts(&by_digest, &repo_only));
        assert!(!id.accepts(&by_tag, &repo_only));
        assert!(id.accepts(&by_tag, &by_tag));
        assert!(
            id.accepts(&by_digest, &by_tag),
            "a digest reference needs the repository only"
        );
        assert!(!id.accepts(&by_digest, &DockerRef::parse("r.io/other:v1").unwrap()));
        assert!(SignedIdentity::MatchRepository.accepts(&by_tag, &repo_only));
        assert!(SignedIdentity::MatchRepository.accepts(&by_digest, &repo_only));
        assert!(
            !SignedIdentity::MatchRepository
                .accepts(&by_digest, &DockerRef::parse("r.io/other").unwrap())
        );
        assert!(!SignedIdentity::MatchExact.accepts(&by_tag, &repo_only));
    }
}
