//! `wasmbox sign` and `wasmbox verify` against a registry: the formats and
//! the policy are `wasmbox-trust`'s; this module moves them over the wire.

use std::path::Path;

use anyhow::{Context, Result, bail};
use oci_client::Reference;
use oci_spec::image::Descriptor;
use serde_json::json;
use wasmbox_trust::{DockerRef, Policy, PrivateKey, TrustError, Verdict, cosign, referrers};

use crate::format;
use crate::reference::ImageRef;
use crate::registry::Registry;

/// Which of cosign's forms `wasmbox sign` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureForms {
    /// cosign 3's sigstore bundle referrer only.
    Bundle,
    /// The `sha256-<hex>.sig` tag only (cosign ≤ 2, podman, skopeo, CRI-O).
    Legacy,
    /// Both, so every verifier finds one.
    Both,
}

/// What `sign` wrote.
#[derive(Debug)]
pub struct Signed {
    /// The manifest digest signed.
    pub digest: String,
    /// One line per artifact written (`bundle sha256:…`, `tag sha256-….sig`).
    pub written: Vec<String>,
}

/// A repository seen through a [`Registry`], for verification.
pub struct Repository<'a> {
    registry: &'a Registry,
    name: &'a ImageRef,
}

impl<'a> Repository<'a> {
    pub fn new(registry: &'a Registry, name: &'a ImageRef) -> Self {
        Repository { registry, name }
    }

    fn at(&self, tag_or_digest: &str) -> Reference {
        let r = self.name.reference();
        if tag_or_digest.contains(':') {
            Reference::with_digest(
                r.registry().to_string(),
                r.repository().to_string(),
                tag_or_digest.to_string(),
            )
        } else {
            Reference::with_tag(
                r.registry().to_string(),
                r.repository().to_string(),
                tag_or_digest.to_string(),
            )
        }
    }

    /// The descriptor of the manifest the image's reference names (its
    /// top-level manifest or index: what cosign and notation sign).
    pub async fn resolve(&self) -> Result<Descriptor> {
        let bytes = self
            .registry
            .raw_manifest(self.name.reference())
            .await?
            .with_context(|| format!("{} has no such image (404 MANIFEST_UNKNOWN)", self.name))?;
        descriptor_of(&bytes)
    }
}

/// The descriptor of a manifest or index, its media type read from it.
fn descriptor_of(bytes: &[u8]) -> Result<Descriptor> {
    let media_type = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| format::MEDIA_TYPE_OCI_MANIFEST.to_string());
    Ok(serde_json::from_value(json!({
        "mediaType": media_type,
        "digest": format::Digest::of(bytes).to_string(),
        "size": bytes.len(),
    }))?)
}

impl wasmbox_trust::SignatureSource for Repository<'_> {
    async fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, TrustError> {
        self.registry
            .raw_manifest(&self.at(reference))
            .await
            .map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| TrustError::Source(format!("{e:#}")))
    }

    async fn blob(&self, digest: &str, max_bytes: usize) -> Result<Vec<u8>, TrustError> {
        self.registry
            .blob_bytes(self.name.reference(), digest, max_bytes)
            .await
            .map_err(|e| TrustError::Source(format!("{e:#}")))
    }

    async fn referrers(&self, digest: &str) -> Result<Vec<String>, TrustError> {
        self.registry
            .referrer_digests(&self.at(digest))
            .await
            .map_err(|e| TrustError::Source(format!("{e:#}")))
    }
}

/// Signs the manifest `name` resolves to with `key`, in `forms`.
pub async fn sign(
    registry: &Registry,
    name: &ImageRef,
    key: &PrivateKey,
    forms: SignatureForms,
) -> Result<Signed> {
    let repo = Repository::new(registry, name);
    let subject = repo.resolve().await?;
    let digest = subject.digest().to_string();
    let mut written = Vec::new();
    if forms != SignatureForms::Legacy {
        let bundle = cosign::bundle(key, &digest)?;
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let annotations = [
            ("dev.sigstore.bundle.content", "dsse-envelope"),
            (
                "dev.sigstore.bundle.predicateType",
                cosign::PREDICATE_COSIGN_SIGN,
            ),
            ("org.opencontainers.image.created", created.as_str()),
        ];
        let at = attach(
            &repo,
            &subject,
            cosign::MEDIA_TYPE_BUNDLE,
            cosign::MEDIA_TYPE_BUNDLE,
            &bundle,
            &annotations,
        )
        .await
        .with_context(|| format!("storing the signature of {name}"))?;
        written.push(format!("bundle {at}"));
    }
    if forms != SignatureForms::Bundle {
        let tag = cosign::legacy_tag(&digest);
        let payload = cosign::simple_signing_payload(
            &DockerRef::parse(name.as_str()).map_or_else(
                || format!("{}/{}", name.registry(), name.reference().repository()),
                |r| r.name,
            ),
            &digest,
        );
        let layer = cosign::legacy_layer(&payload, &key.sign(&payload));
        // A new signature joins those already there, as cosign adds them.
        let mut layers: Vec<Descriptor> = match registry.raw_manifest(&repo.at(&tag)).await? {
            Some(existing) => serde_json::from_slice::<oci_spec::image::ImageManifest>(&existing)
                .with_context(|| format!("{name}'s signature tag {tag} is not an image manifest"))?
                .layers()
                .clone(),
            None => Vec::new(),
        };
        layers.push(layer);
        let (manifest, config) = cosign::legacy_manifest(&layers);
        let target = repo.at(&tag);
        registry.push_blob_bytes(&target, &payload).await?;
        registry.push_blob_bytes(&target, &config).await?;
        registry
            .push_manifest_bytes(&target, &manifest, format::MEDIA_TYPE_OCI_MANIFEST)
            .await
            .with_context(|| format!("storing the signature of {name}"))?;
        written.push(format!("tag {tag}"));
    }
    Ok(Signed { digest, written })
}

/// Stores `content` as the one layer of an artifact that refers to
/// `subject`, and lists it under the `sha256-<hex>` tag for registries
/// without the referrers API (a registry with it ignores the tag). Returns
/// the artifact's digest.
pub async fn attach(
    repo: &Repository<'_>,
    subject: &Descriptor,
    artifact_type: &str,
    layer_media_type: &str,
    content: &[u8],
    annotations: &[(&str, &str)],
) -> Result<String> {
    let subject_digest = subject.digest().to_string();
    let target = repo.at(&subject_digest);
    let layer_digest = repo.registry.push_blob_bytes(&target, content).await?;
    repo.registry
        .push_blob_bytes(&target, referrers::EMPTY_CONFIG)
        .await?;
    let layer: Descriptor = serde_json::from_value(json!({
        "mediaType": layer_media_type,
        "digest": layer_digest,
        "size": content.len(),
    }))?;
    let manifest = referrers::artifact_manifest(artifact_type, &[layer], subject, annotations);
    let manifest_digest = format::Digest::of(&manifest).to_string();
    repo.registry
        .push_manifest_bytes(
            &repo.at(&manifest_digest),
            &manifest,
            format::MEDIA_TYPE_OCI_MANIFEST,
        )
        .await?;
    let mut entry = json!({
        "mediaType": format::MEDIA_TYPE_OCI_MANIFEST,
        "digest": manifest_digest,
        "size": manifest.len(),
        "artifactType": artifact_type,
    });
    if !annotations.is_empty() {
        entry["annotations"] = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let entry: Descriptor = serde_json::from_value(entry)?;
    let tag = referrers::fallback_tag(&subject_digest);
    let tag_ref = repo.at(&tag);
    let existing = repo.registry.raw_manifest(&tag_ref).await?;
    let index = referrers::index_with(
        existing.as_deref(),
        &entry,
        &format!("the referrers tag {tag}"),
    )?;
    repo.registry
        .push_manifest_bytes(&tag_ref, &index, format::MEDIA_TYPE_OCI_INDEX)
        .await?;
    Ok(manifest_digest)
}

/// Checks the image `name` against `policy`: the reference is evaluated as
/// given (as skopeo and podman do), its signatures are those of the digest
/// it resolves to.
pub async fn verify(
    registry: &Registry,
    name: &ImageRef,
    policy: &Policy,
) -> Result<(String, Verdict)> {
    let repo = Repository::new(registry, name);
    let digest = repo.resolve().await?.digest().to_string();
    let Some(image) = DockerRef::parse(name.as_str()) else {
        bail!("{name} is not a reference a policy can scope");
    };
    let verdict = wasmbox_trust::verify::check(policy, &image, &digest, &repo).await?;
    Ok((digest, verdict))
}

/// A policy that accepts what `key` signed, for `wasmbox verify --key`:
/// like `cosign verify --key`, any repository the signature names is
/// accepted, as long as the digest is the image's.
pub fn key_policy(key_path: &Path) -> Result<Policy> {
    let path = std::fs::canonicalize(key_path)
        .with_context(|| format!("cannot read the key {}", key_path.display()))?;
    let json = json!({
        "default": [{
            "type": "sigstoreSigned",
            "keyPath": path,
            "signedIdentity": {"type": "matchRepository"},
        }],
    });
    Ok(Policy::parse(
        json.to_string().as_bytes(),
        &key_path.display().to_string(),
        None,
    )?)
}
