//! Image archives for `ctr image import` and `docker load`: an OCI image
//! layout in a tar, with containerd's name annotation and Docker's
//! `manifest.json` so both importers find the image by name.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::format;
use crate::image::parse_manifest;
use crate::reference::ImageRef;
use crate::store::{Store, index_json};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// Writes the image `name` from `store` to the tar file `path` (atomically).
pub fn write(store: &Store, name: &ImageRef, path: &Path) -> Result<()> {
    let stored = store.get(name)?;
    let manifest_digest = stored.manifest.digest().to_string();
    let manifest_bytes = store.read_blob(&manifest_digest)?;
    let manifest = parse_manifest(&manifest_bytes)?;

    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            format::OCI_LAYOUT_FILE.into(),
            format::OCI_LAYOUT_CONTENT.as_bytes().to_vec(),
        ),
        (
            "index.json".into(),
            index_json(vec![stored.manifest.clone()])?,
        ),
    ];
    if manifest.config().media_type().to_string() != format::MEDIA_TYPE_WASM_CONFIG {
        let entry = DockerManifestEntry {
            config: blob_name(manifest.config().digest().as_ref()),
            repo_tags: vec![docker_tag(name)],
            layers: manifest
                .layers()
                .iter()
                .map(|l| blob_name(l.digest().as_ref()))
                .collect(),
        };
        files.push(("manifest.json".into(), serde_json::to_vec(&[entry])?));
    }
    let mut digests = vec![manifest_digest, manifest.config().digest().to_string()];
    digests.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
    for digest in digests {
        let data = store.read_blob(&digest)?;
        files.push((blob_name(&digest), data));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);

    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (file_name, _) in &files {
        let mut parent = Path::new(file_name).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    for dir in dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(0);
        tar.append_data(&mut header, format!("{}/", dir.display()), std::io::empty())?;
    }
    for (file_name, data) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        tar.append_data(&mut header, file_name, data.as_slice())?;
    }
    let bytes = tar.into_inner()?;
    crate::store::write_atomic(path, &bytes)
        .with_context(|| format!("writing the archive {}", path.display()))
}

/// Docker's short spelling of a name (`docker.io/library/x:t` → `x:t`).
fn docker_tag(name: &ImageRef) -> String {
    let full = name.to_string();
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .map(str::to_string)
        .unwrap_or(full)
}
