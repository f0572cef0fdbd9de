//! OCI 1.1 referrers: artifacts (signatures, SBOMs) that point at an image
//! through their manifest's `subject`. A registry with the referrers API
//! lists them at `/v2/<name>/referrers/<digest>`; on one without it (the
//! distribution 2.8 registry among them) they are listed in an image index
//! tagged `sha256-<hex>` (distribution-spec's "referrers tag schema"),
//! which every writer updates: cosign, notation, oras and wasmbox.

use oci_spec::image::{Descriptor, ImageIndex};
use serde_json::{Value, json};

use crate::TrustError;
use wasmbox_format::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};

/// The OCI empty descriptor's media type and content (`{}`), the config of
/// an artifact that has none.
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Most bytes read for a referrer's manifest or the fallback index.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The fallback tag that lists the referrers of `digest` (`sha256:ab…` → `sha256-ab…`).
pub fn fallback_tag(digest: &str) -> String {
    let tag = digest.replacen(':', "-", 1);
    tag.chars().take(128).collect()
}

/// The descriptors an index (the API's answer or the fallback tag) lists.
pub fn parse_index(bytes: &[u8], what: &str) -> Result<Vec<Descriptor>, TrustError> {
    let index: ImageIndex = serde_json::from_slice(bytes)
        .map_err(|e| TrustError::Malformed(format!("{what} is not an OCI image index ({e})")))?;
    Ok(index.manifests().clone())
}

/// The fallback index with `entry` added (once): `existing` is the index the
/// tag holds now, if any. Entries other writers put there are kept as they are.
pub fn index_with(
    existing: Option<&[u8]>,
    entry: &Descriptor,
    what: &str,
) -> Result<Vec<u8>, TrustError> {
    let mut manifests: Vec<Value> = match existing {
        Some(bytes) => {
            let v: Value = serde_json::from_slice(bytes).map_err(|e| {
                TrustError::Malformed(format!("{what} is not an OCI image index ({e})"))
            })?;
            v.get("manifests")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| {
                    TrustError::Malformed(format!(
                        "{what} is not an OCI image index (no manifests)"
                    ))
                })?
        }
        None => Vec::new(),
    };
    let digest = entry.digest().to_string();
    if !manifests
        .iter()
        .any(|m| m.get("digest").and_then(Value::as_str) == Some(digest.as_str()))
    {
        manifests.push(serde_json::to_value(entry).expect("a descriptor serializes"));
    }
    Ok(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("JSON serializes"))
}

/// An artifact manifest: `artifact_type`, an empty config, `layers`, and
/// `subject`, the image it refers to.
pub fn artifact_manifest(
    artifact_type: &str,
    layers: &[Descriptor],
    subject: &Descriptor,
    annotations: &[(&str, &str)],
) -> Vec<u8> {
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": MEDIA_TYPE_EMPTY,
            "digest": wasmbox_format::Digest::of(EMPTY_CONFIG).to_string(),
            "size": EMPTY_CONFIG.len(),
        },
        "layers": layers,
        "subject": subject,
    });
    if !annotations.is_empty() {
        let map: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        manifest["annotations"] = Value::Object(map);
    }
    serde_json::to_vec(&manifest).expect("JSON serializes")
}

/// The artifact type of a referrer's manifest: its `artifactType`, else its
/// config's media type (image-spec's rule). Index entries are not trusted
/// for this: cosign 3 lists its bundles there as `application/vnd.oci.empty.v1+json`.
pub fn artifact_type_of(manifest: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(manifest).ok()?;
    v.get("artifactType")
        .and_then(Value::as_str)
        .or_else(|| v.pointer("/config/mediaType").and_then(Value::as_str))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_index_keeps_other_writers_entries_and_adds_once() {
        let cosign = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":877,"digest":"sha256:e69b6c9b8c0d5532f4c4e700951b480d7854f5ff3e60ff1183e34c537ce46603","artifactType":"application/vnd.oci.empty.v1+json"}]}"#;
        let entry: Descriptor = serde_json::from_str(&format!(
            r#"{{"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","size":10,"digest":"sha256:{}","artifactType":"application/spdx+json"}}"#,
            "1".repeat(64)
        ))
        .unwrap();
        let once = index_with(Some(cosign.as_bytes()), &entry, "i").unwrap();
        let twice = index_with(Some(&once), &entry, "i").unwrap();
        assert_eq!(once, twice);
        let listed = parse_index(&twice, "i").unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[0].digest().to_string(),
            format!(
                "sha256:{}",
                "e69b6c9b8c0d5532f4c4e700951b480d7854f5ff3e60ff1183e34c537ce46603"
            )
        );
        assert_eq!(fallback_tag("sha256:abc"), "sha256-abc");
    }
}
