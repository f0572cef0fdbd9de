//! A native Linux image for the mixed-pod tests: Debian's static busybox
//! `FROM scratch`, written as an OCI layout (one uncompressed tar layer,
//! platform linux/amd64) that `wasmbox copy` pushes to a test registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmbox_format::Digest;

/// The busybox applets the image links in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "wget", "ls", "hostname", "id", "true", "seq", "touch", "test",
];

/// Writes the busybox image as an OCI layout in `dir` with the ref name
/// `v1`, and returns `dir`.
pub fn busybox_layout(dir: &Path) -> PathBuf {
    crate::require_tool("busybox");
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox = which("busybox");
    std::fs::copy(&busybox, bin.join("busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    // /tmp for programs that write there, /etc for the CRI's hosts files.
    for extra in ["tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(extra)).unwrap();
    }
    let layer_path = dir.join("layer.tar");
    let status = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&layer_path)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of the busybox layer");
    let layer = std::fs::read(&layer_path).unwrap();

    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let digest = Digest::of(bytes);
        std::fs::write(blobs.join(digest.hex()), bytes).unwrap();
        (format!("sha256:{}", digest.hex()), bytes.len())
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

fn which(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{tool} is not on PATH"))
}
