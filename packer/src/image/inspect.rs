//! Describing any image, ours or another tool's, for `inspect` and `images`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use oci_spec::image::{Descriptor, ImageConfiguration};
use serde::Serialize;

use super::parse_manifest;
use crate::format::{self, WasmArtifactConfig};

/// What `inspect` and `images` show of an image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    /// `image` (OCI/Docker config) or `artifact` (Wasm config).
    pub format: String,
    pub os: String,
    pub architecture: String,
    pub is_wasm: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasi_world: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Manifest + config + layers, in bytes.
    pub size: u64,
    pub config: LayerInfo,
    pub layers: Vec<LayerInfo>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Signatures, SBOMs and other artifacts attached to the image, for an
    /// image read from a registry (`None` where there are no referrers to ask).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<Vec<AttachedInfo>>,
}

/// An artifact that refers to the image.
#[derive(Debug, Clone, Serialize)]
pub struct AttachedInfo {
    /// `signature`, `sbom` or `other`.
    pub kind: String,
    /// What wrote it, as far as its type tells: `cosign bundle`, `cosign
    /// .sig tag`, `notation`, `SPDX`, `CycloneDX`, or the artifact type.
    pub format: String,
    pub artifact_type: String,
    /// The artifact's manifest digest (the `.sig` tag's, for cosign's legacy form).
    pub digest: String,
}

/// One blob in [`ImageInfo`].
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl From<&Descriptor> for LayerInfo {
    fn from(d: &Descriptor) -> Self {
        LayerInfo {
            media_type: d.media_type().to_string(),
            digest: d.digest().to_string(),
            size: d.size(),
        }
    }
}

/// Describes an image from its manifest and config blobs.
pub fn describe(reference: &str, manifest_bytes: &[u8], config_bytes: &[u8]) -> Result<ImageInfo> {
    let manifest = parse_manifest(manifest_bytes)?;
    let config_desc = manifest.config();
    let annotations: BTreeMap<String, String> = manifest
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut info = ImageInfo {
        reference: reference.to_string(),
        digest: format::Digest::of(manifest_bytes).to_string(),
        media_type: manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| format::MEDIA_TYPE_OCI_MANIFEST.to_string()),
        format: String::new(),
        os: String::new(),
        architecture: String::new(),
        is_wasm: false,
        entrypoint: vec![],
        cmd: vec![],
        env: vec![],
        working_dir: None,
        wasi_world: annotations.get(format::ANNOTATION_WASI_WORLD).cloned(),
        created: None,
        size: manifest_bytes.len() as u64
            + config_desc.size()
            + manifest.layers().iter().map(|l| l.size()).sum::<u64>(),
        config: LayerInfo::from(config_desc),
        layers: manifest.layers().iter().map(LayerInfo::from).collect(),
        annotations,
        attached: None,
    };
    if config_desc.media_type().to_string() == format::MEDIA_TYPE_WASM_CONFIG {
        let config: WasmArtifactConfig = serde_json::from_slice(config_bytes)
            .context("the Wasm artifact config is not valid JSON")?;
        info.format = "artifact".into();
        info.os = config.os;
        info.architecture = config.architecture;
        info.created = config.created;
        if info.wasi_world.is_none() {
            info.wasi_world = config.component.and_then(|c| c.target);
        }
    } else {
        let config: ImageConfiguration =
            serde_json::from_slice(config_bytes).context("the image config is not valid JSON")?;
        info.format = "image".into();
        info.os = config.os().to_string();
        info.architecture = config.architecture().to_string();
        info.created = config.created().clone();
        if let Some(c) = config.config() {
            info.entrypoint = c.entrypoint().clone().unwrap_or_default();
            info.cmd = c.cmd().clone().unwrap_or_default();
            info.env = c.env().clone().unwrap_or_default();
            info.working_dir = c.working_dir().clone();
        }
    }
    info.is_wasm = format::is_wasm_platform(&info.os, &info.architecture)
        || info
            .layers
            .iter()
            .any(|l| format::is_wasm_layer(&l.media_type));
    Ok(info)
}
