//! The one definition of the wasmbox image format: media types, platform
//! strings, annotation keys and the Wasm artifact config schema. The packer
//! writes these and the shim reads them; nothing else spells them out. A crate
//! of its own so the shim does not link the registry client.

use serde::{Deserialize, Serialize};

mod atomic;
mod digest;
pub use atomic::{AtomicFile, WriteError, write_atomic};
pub use digest::{Digest, DigestError, Hasher, HashingWriter, VerifyingReader};

/// The runtime type containerd, Docker and the RuntimeClass know the shim by.
pub const RUNTIME_TYPE: &str = "io.containerd.wasmtime.v1";

/// Where an artifact image's module is in the container (its one Wasm
/// layer has no file name), and so its argv\[0\].
pub const ARTIFACT_MODULE_PATH: &str = "/module.wasm";

/// The file that marks a directory as an OCI image layout, and its content.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const OCI_LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// OCI image manifest (image-spec `manifest.md`).
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (image-spec `image-index.md`).
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config (image-spec `config.md`).
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed tar layer (image-spec `layer.md`).
pub const MEDIA_TYPE_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip tar layer (image-spec `layer.md`).
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Zstd tar layer (image-spec `layer.md`).
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker image manifest, schema 2 (what `docker push` of a legacy builder writes).
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list, schema 2.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip tar layer.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Config of a CNCF TAG-Runtime Wasm OCI artifact
/// (tag-runtime `wasm-oci-artifact` spec).
pub const MEDIA_TYPE_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The single layer of a CNCF Wasm OCI artifact: the raw module or component.
pub const MEDIA_TYPE_WASM_LAYER: &str = "application/wasm";
/// Layer type written by wasm-pkg-tools / early component tooling.
pub const MEDIA_TYPE_WASM_COMPONENT_LAYER_V0: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Layer type written by runwasi's `oci-tar-builder` and wasm-to-oci successors.
pub const MEDIA_TYPE_WASM_CONTENT_LAYER_V1: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// Every layer media type whose content is a raw Wasm binary (not a tar).
pub const WASM_LAYER_MEDIA_TYPES: [&str; 3] = [
    MEDIA_TYPE_WASM_LAYER,
    MEDIA_TYPE_WASM_COMPONENT_LAYER_V0,
    MEDIA_TYPE_WASM_CONTENT_LAYER_V1,
];

/// An SPDX JSON SBOM: the artifact and layer type of the SBOMs `wasmbox
/// pack --sbom` attaches.
pub const MEDIA_TYPE_SPDX: &str = "application/spdx+json";
/// A CycloneDX JSON SBOM (recognized, not written).
pub const MEDIA_TYPE_CYCLONEDX: &str = "application/vnd.cyclonedx+json";

/// Manifest media types a registry may answer with; sent as `Accept`.
pub const ACCEPTED_MANIFEST_MEDIA_TYPES: [&str; 4] = [
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
];

/// `architecture` of every Wasm image (Docker's `wasi/wasm` platform).
pub const ARCH_WASM: &str = "wasm";
/// `os` of a WASI preview 1 core module.
pub const OS_WASIP1: &str = "wasip1";
/// `os` of a WASI preview 2 component.
pub const OS_WASIP2: &str = "wasip2";
/// `os` written by Docker's buildx (`--platform wasi/wasm`) and older tooling.
/// It is the only value Docker's platform matching accepts for
/// `docker run --platform=wasi/wasm` on a single-manifest image.
pub const OS_WASI: &str = "wasi";
/// Every `os` value that marks a Wasm image when reading.
pub const WASM_OSES: [&str; 3] = [OS_WASIP1, OS_WASIP2, OS_WASI];

/// Annotation (manifest) recording the WASI world the packer detected.
pub const ANNOTATION_WASI_WORLD: &str = "dev.wasmbox.wasi.world";
/// Annotation (manifest) recording the exported function that is the entrypoint
/// when the module is not a WASI command (`--export`).
pub const ANNOTATION_EXPORT: &str = "dev.wasmbox.wasm.export";
/// Standard annotation: the tag an index entry stands for (image-spec `annotations.md`).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Standard annotation: a human file name for a blob (used on the Wasm artifact layer).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// Standard annotation: creation time.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// containerd's annotation for the full image name in an imported index.json.
pub const ANNOTATION_CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// Container annotation (OCI runtime spec, e.g. `ctr run --annotation`, pod
/// annotations): WASI network access, `none` (default) or `host` (sockets and
/// name lookup in the host's network; only for containers on the host network).
pub const ANNOTATION_NETWORK: &str = "dev.wasmbox.wasi.network";
/// Container annotation: `ro` makes the root filesystem read-only for the
/// guest even when the spec leaves it writable.
pub const ANNOTATION_ROOTFS: &str = "dev.wasmbox.wasi.rootfs";
/// Container annotation: wasmtime features to turn on (`name` or `+name`) or
/// off (`-name`), comma-separated, e.g. `custom-page-sizes,-simd`.
pub const ANNOTATION_FEATURES: &str = "dev.wasmbox.wasm.features";

/// Container annotation: the name of a shared-shim group. Containers of one
/// containerd namespace that name the same group are served by one
/// long-lived shim process instead of one each (README: "The shared shim").
/// The runtime option `shim_group` sets it for every container of a runtime
/// handler; the annotation wins, and an empty value opts a container out.
pub const ANNOTATION_SHIM_GROUP: &str = "dev.wasmbox.shim.group";

/// Container annotation: the port a `wasi:http` component is served on
/// (default: the container's `PORT` environment variable, else 8080).
pub const ANNOTATION_HTTP_PORT: &str = "dev.wasmbox.http.port";
/// Container annotation: how many `wasi:http` requests the container runs at
/// a time (default 64); more wait. All of them share its memory limit.
pub const ANNOTATION_HTTP_CONCURRENCY: &str = "dev.wasmbox.http.concurrency";

/// Separates the module path from the export to call in an entrypoint:
/// `/module.wasm#function` runs `function` instead of `_start`.
pub const ENTRYPOINT_EXPORT_SEPARATOR: char = '#';

/// The WASI world a module or component targets, recorded in [`ANNOTATION_WASI_WORLD`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum WasiWorld {
    /// A core module importing `wasi_snapshot_preview1`.
    Preview1,
    /// A core module that imports nothing from WASI.
    CoreOnly,
    /// A component exporting `wasi:cli/run`.
    CliCommand,
    /// A component exporting `wasi:http/incoming-handler`.
    HttpProxy,
    /// A component of some other world.
    Component,
    /// A value written by another tool.
    Other(String),
}

impl WasiWorld {
    /// The string stored in the annotation.
    pub fn as_str(&self) -> &str {
        match self {
            WasiWorld::Preview1 => "wasi_snapshot_preview1",
            WasiWorld::CoreOnly => "none",
            WasiWorld::CliCommand => "wasi:cli/command",
            WasiWorld::HttpProxy => "wasi:http/proxy",
            WasiWorld::Component => "component",
            WasiWorld::Other(s) => s,
        }
    }
}

impl From<WasiWorld> for String {
    fn from(w: WasiWorld) -> String {
        w.as_str().to_string()
    }
}

impl From<String> for WasiWorld {
    fn from(s: String) -> Self {
        match s.as_str() {
            "wasi_snapshot_preview1" => WasiWorld::Preview1,
            "none" => WasiWorld::CoreOnly,
            "wasi:cli/command" => WasiWorld::CliCommand,
            "wasi:http/proxy" => WasiWorld::HttpProxy,
            "component" => WasiWorld::Component,
            _ => WasiWorld::Other(s),
        }
    }
}

impl std::fmt::Display for WasiWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Config blob of a CNCF Wasm OCI artifact (`application/vnd.wasm.config.v0+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmArtifactConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Always [`ARCH_WASM`].
    pub architecture: String,
    /// One of [`WASM_OSES`].
    pub os: String,
    /// Digests of the layers, in manifest order.
    #[serde(default)]
    pub layer_digests: Vec<String>,
    /// Present for components only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentDescription>,
}

/// The `component` field of [`WasmArtifactConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ComponentDescription {
    /// Interfaces and functions the component exports.
    pub exports: Vec<String>,
    /// Interfaces and functions the component imports.
    pub imports: Vec<String>,
    /// The world the component targets, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// True when a layer of this media type holds a raw Wasm binary.
pub fn is_wasm_layer(media_type: &str) -> bool {
    WASM_LAYER_MEDIA_TYPES.contains(&media_type)
}

/// True when a layer of this media type is a (possibly compressed) tar.
pub fn is_tar_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_TYPE_OCI_LAYER_TAR
            | MEDIA_TYPE_OCI_LAYER_GZIP
            | MEDIA_TYPE_OCI_LAYER_ZSTD
            | MEDIA_TYPE_DOCKER_LAYER_GZIP
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

/// True when `os`/`architecture` name a Wasm platform.
pub fn is_wasm_platform(os: &str, architecture: &str) -> bool {
    architecture == ARCH_WASM && WASM_OSES.contains(&os)
}

/// The one rule for choosing the Wasm image of an index (a multi-platform
/// image): the first entry whose platform (`platform_of` gives its os and
/// architecture) is a Wasm one; else, when the index has a single entry that
/// names no platform, that entry (an artifact index); else none. A single
/// entry of another platform (`linux/amd64`) is not taken: it is not Wasm.
pub fn choose_wasm_entry<T>(
    entries: &[T],
    platform_of: impl Fn(&T) -> Option<(String, String)>,
) -> Option<&T> {
    entries
        .iter()
        .find(|e| platform_of(e).is_some_and(|(os, arch)| is_wasm_platform(&os, &arch)))
        .or(match entries {
            [only] if platform_of(only).is_none() => Some(only),
            _ => None,
        })
}

/// Splits an entrypoint `"/m.wasm#run"` into the module path and the export to call.
pub fn split_entrypoint(entrypoint: &str) -> (&str, Option<&str>) {
    match entrypoint.rsplit_once(ENTRYPOINT_EXPORT_SEPARATOR) {
        Some((path, export)) if !export.is_empty() => (path, Some(export)),
        _ => (entrypoint, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_with_export_splits_at_hash() {
        assert_eq!(split_entrypoint("/m.wasm#run"), ("/m.wasm", Some("run")));
        assert_eq!(split_entrypoint("/m.wasm"), ("/m.wasm", None));
    }

    #[test]
    fn world_round_trips_through_its_annotation_string() {
        for w in [
            WasiWorld::Preview1,
            WasiWorld::CoreOnly,
            WasiWorld::CliCommand,
            WasiWorld::HttpProxy,
            WasiWorld::Component,
        ] {
            assert_eq!(WasiWorld::from(String::from(w.clone())), w);
        }
    }

    #[test]
    fn an_index_yields_its_wasm_entry_or_its_only_unlabelled_one() {
        let p = |os: &str, arch: &str| Some((os.to_string(), arch.to_string()));
        let platform = |e: &(u8, Option<(String, String)>)| e.1.clone();
        let mixed = [(1, p("linux", "amd64")), (2, p("wasip1", "wasm"))];
        assert_eq!(choose_wasm_entry(&mixed, platform).map(|e| e.0), Some(2));
        let unlabelled = [(1, None)];
        assert_eq!(
            choose_wasm_entry(&unlabelled, platform).map(|e| e.0),
            Some(1)
        );
        let linux_only = [(1, p("linux", "amd64"))];
        assert!(choose_wasm_entry(&linux_only, platform).is_none());
        let two_unlabelled = [(1, None), (2, None)];
        assert!(choose_wasm_entry(&two_unlabelled, platform).is_none());
    }

    #[test]
    fn wasm_platform_accepts_docker_wasi_and_rejects_linux() {
        assert!(is_wasm_platform("wasi", "wasm"));
        assert!(is_wasm_platform("wasip2", "wasm"));
        assert!(!is_wasm_platform("linux", "amd64"));
    }
}
