//! Artifacts that refer to an image (signatures, SBOMs): a repository as
//! `wasmbox-trust` reads it, and how an artifact is attached — pushed with
//! its `subject` and listed under the `sha256-<hex>` tag for registries
//! without the referrers API.

use anyhow::{Context, Result};
use oci_client::Reference;
use oci_spec::image::Descriptor;
use serde_json::json;
use wasmbox_trust::{TrustError, referrers};

use crate::format;
use crate::image::AttachedInfo;
use crate::reference::ImageRef;
use crate::registry::Registry;

/// A repository seen through a [`Registry`], for verification.
pub struct Repository<'a> {
    registry: &'a Registry,
    name: &'a ImageRef,
}

impl<'a> Repository<'a> {
    pub fn new(registry: &'a Registry, name: &'a ImageRef) -> Self {
        Repository { registry, name }
    }

    pub fn at(&self, tag_or_digest: &str) -> Reference {
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

/// Stores `content` as the one layer (named `layer_title`, if given) of
/// an artifact that refers to `subject`, and lists it under the `sha256-<hex>` tag for registries
/// without the referrers API (a registry with it ignores the tag). Returns
/// the artifact's digest.
pub async fn attach(
    repo: &Repository<'_>,
    subject: &Descriptor,
    artifact_type: &str,
    layer_media_type: &str,
    layer_title: Option<&str>,
    content: &[u8],
    annotations: &[(&str, &str)],
) -> Result<String> {
    let subject_digest = subject.digest().to_string();
    let target = repo.at(&subject_digest);
    let layer_digest = repo.registry.push_blob_bytes(&target, content).await?;
    repo.registry
        .push_blob_bytes(&target, referrers::EMPTY_CONFIG)
        .await?;
    let mut layer = json!({
        "mediaType": layer_media_type,
        "digest": layer_digest,
        "size": content.len(),
    });
    if let Some(title) = layer_title {
        // The file name `oras pull` writes the layer to.
        layer["annotations"] = json!({ format::ANNOTATION_TITLE: title });
    }
    let layer: Descriptor = serde_json::from_value(layer)?;
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

/// The signatures, SBOMs and other artifacts attached to the image `name`
/// resolves to: its referrers, and cosign's `.sig` tag.
pub async fn attached(registry: &Registry, name: &ImageRef) -> Result<Vec<AttachedInfo>> {
    let repo = Repository::new(registry, name);
    let subject = repo.resolve().await?.digest().to_string();
    let mut found = Vec::new();
    for digest in registry.referrer_digests(&repo.at(&subject)).await? {
        let Some(manifest) = registry.raw_manifest(&repo.at(&digest)).await? else {
            continue;
        };
        let artifact_type = referrers::artifact_type_of(&manifest).unwrap_or_default();
        let (kind, format) = match artifact_type.as_str() {
            wasmbox_trust::cosign::MEDIA_TYPE_BUNDLE => ("signature", "cosign bundle"),
            wasmbox_trust::notation::ARTIFACT_TYPE_SIGNATURE => ("signature", "notation"),
            format::MEDIA_TYPE_SPDX => ("sbom", "SPDX"),
            format::MEDIA_TYPE_CYCLONEDX => ("sbom", "CycloneDX"),
            other => ("other", other),
        };
        found.push(AttachedInfo {
            kind: kind.into(),
            format: format.into(),
            artifact_type: artifact_type.clone(),
            digest,
        });
    }
    let tag = wasmbox_trust::cosign::legacy_tag(&subject);
    if let Some(manifest) = registry.raw_manifest(&repo.at(&tag)).await? {
        for _ in wasmbox_trust::cosign::legacy_layers(&manifest)? {
            found.push(AttachedInfo {
                kind: "signature".into(),
                format: "cosign .sig tag".into(),
                artifact_type: wasmbox_trust::cosign::MEDIA_TYPE_SIMPLE_SIGNING.into(),
                digest: format::Digest::of(&manifest).to_string(),
            });
        }
    }
    Ok(found)
}
