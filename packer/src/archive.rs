//! OCI archives (`oci-archive:PATH`): an OCI image layout in a tar, the
//! format of `ctr image import`, `docker load` and skopeo. Written with
//! containerd's name annotation and Docker's `manifest.json` so both
//! importers find the image by name; blobs stream into the tar, and the
//! archive appears only once complete. Read by unpacking the layout into a
//! temporary directory, each blob checked against its file name.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use oci_spec::image::Descriptor;
use serde::Serialize;

use crate::format::{self, AtomicFile, Digest};
use crate::image::build::deterministic_header;
use crate::image::{BlobStream, ImageDestination, Manifest, descriptor_digest};
use crate::store::{LayoutImage, LayoutName, Store, index_json};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Opens the image `name` of the archive at `path` as a source, by
/// unpacking the archive's layout into a temporary directory.
pub fn open(path: &Path, name: LayoutName, label: String, place: String) -> Result<LayoutImage> {
    let dir = tempfile::Builder::new()
        .prefix("wasmbox-archive-")
        .tempdir()
        .context("creating a directory to unpack the archive into")?;
    unpack(path, dir.path())?;
    LayoutImage::unpacked(dir, name, label, place)
}

/// Unpacks the layout files of an OCI archive (`oci-layout`, `index.json`,
/// `blobs/sha256/*`) into `dir`, checking each blob against its name.
/// Everything else in the tar (Docker's `manifest.json`, directories) is
/// skipped, and no entry can land outside `dir`.
fn unpack(path: &Path, dir: &Path) -> Result<()> {
    let file =
        File::open(path).with_context(|| format!("cannot open the archive {}", path.display()))?;
    let store = Store::open(dir)?;
    // Store::open wrote an oci-layout marker: the archive must bring its own.
    std::fs::remove_file(dir.join(format::OCI_LAYOUT_FILE))?;
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries()
        .with_context(|| format!("{} is not a tar archive", path.display()))?;
    for entry in entries {
        let mut entry =
            entry.with_context(|| format!("{} is not a valid tar archive", path.display()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if name == format::OCI_LAYOUT_FILE || name == "index.json" {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            format::write_atomic(&dir.join(&name), &data, 0o644)?;
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let digest = Digest::from_hex(hex).with_context(|| {
                format!(
                    "{} holds {name}, which is not named by a sha256 digest",
                    path.display()
                )
            })?;
            let mut writer = store.blob_writer()?;
            std::io::copy(&mut entry, &mut writer)
                .with_context(|| format!("reading {name} from {}", path.display()))?;
            writer
                .commit(&store, &digest)
                .with_context(|| format!("{} holds a corrupt {name}", path.display()))?;
        }
    }
    if !dir.join(format::OCI_LAYOUT_FILE).is_file() || !dir.join("index.json").is_file() {
        bail!(
            "{} is not an OCI archive (it has no {} and index.json)",
            path.display(),
            format::OCI_LAYOUT_FILE
        );
    }
    Ok(())
}

/// An archive being written: a destination for one image.
pub struct ArchiveWriter {
    path: PathBuf,
    name: LayoutName,
    label: String,
    /// The tar in progress, `None` once committed.
    file: Option<AtomicFile>,
    written: BTreeSet<Digest>,
}

impl ArchiveWriter {
    /// Starts the archive `path` (replaced only when the copy completes),
    /// naming the image `name` in it.
    pub fn create(path: &Path, name: LayoutName, label: String) -> Result<ArchiveWriter> {
        let mut file = AtomicFile::create(path, 0o644)
            .with_context(|| format!("writing the archive {}", path.display()))?;
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut header = deterministic_header(tar::EntryType::Directory, 0o755, 0, 0);
            header.set_path(dir)?;
            header.set_cksum();
            file.file().write_all(header.as_bytes())?;
        }
        Ok(ArchiveWriter {
            path: path.to_path_buf(),
            name,
            label,
            file: Some(file),
            written: BTreeSet::new(),
        })
    }

    fn tar(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("the archive is written until put_manifest commits it")
            .file()
    }

    /// Writes one regular file's header; its `size` bytes and padding follow.
    fn start_entry(&mut self, name: &str, size: u64) -> Result<()> {
        let mut header = deterministic_header(tar::EntryType::Regular, 0o644, size, 0);
        header.set_path(name)?;
        header.set_cksum();
        self.tar().write_all(header.as_bytes())?;
        Ok(())
    }

    /// Pads an entry of `size` bytes to the tar block size.
    fn end_entry(&mut self, size: u64) -> Result<()> {
        let padding = (512 - size % 512) % 512;
        self.tar().write_all(&vec![0u8; padding as usize])?;
        Ok(())
    }

    fn add_file(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.start_entry(name, data.len() as u64)?;
        self.tar().write_all(data)?;
        self.end_entry(data.len() as u64)
    }
}

impl ImageDestination for ArchiveWriter {
    fn name(&self) -> String {
        self.label.clone()
    }

    async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool> {
        Ok(self.written.contains(&descriptor_digest(descriptor)?))
    }

    async fn put_blob(&mut self, descriptor: &Descriptor, mut data: BlobStream) -> Result<()> {
        let digest = descriptor_digest(descriptor)?;
        let path = self.path.display().to_string();
        let what = || format!("writing blob {digest} into {path}");
        let size = descriptor.size();
        self.start_entry(&blob_name(&digest), size)
            .with_context(what)?;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.with_context(what)?;
            self.tar().write_all(&chunk).with_context(what)?;
        }
        self.end_entry(size).with_context(what)?;
        self.written.insert(digest);
        Ok(())
    }

    async fn put_manifest(&mut self, manifest: &Manifest) -> Result<()> {
        let path = self.path.display().to_string();
        let what = || format!("writing the archive {path}");
        self.add_file(&blob_name(manifest.digest()), manifest.bytes())
            .with_context(what)?;
        self.add_file(
            format::OCI_LAYOUT_FILE,
            format::OCI_LAYOUT_CONTENT.as_bytes(),
        )
        .with_context(what)?;
        let index = index_json(vec![self.name.entry(manifest.descriptor()?)])?;
        self.add_file("index.json", &index).with_context(what)?;
        let is_artifact =
            manifest.config().media_type().to_string() == format::MEDIA_TYPE_WASM_CONFIG;
        if !is_artifact {
            let entry = DockerManifestEntry {
                config: blob_name(&descriptor_digest(manifest.config())?),
                repo_tags: match &self.name {
                    LayoutName::Image(r) => vec![docker_tag(r.as_str())],
                    _ => vec![],
                },
                layers: manifest
                    .layers()
                    .iter()
                    .map(|l| descriptor_digest(l).map(|d| blob_name(&d)))
                    .collect::<Result<_>>()?,
            };
            self.add_file("manifest.json", &serde_json::to_vec(&[entry])?)
                .with_context(what)?;
        }
        // The end of a tar: two zero blocks.
        self.tar().write_all(&[0u8; 1024]).with_context(what)?;
        let file = self.file.take().expect("put_manifest runs once");
        file.commit().with_context(what)?;
        Ok(())
    }
}

/// Docker's short spelling of a name (`docker.io/library/x:t` → `x:t`).
fn docker_tag(full: &str) -> String {
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .map(str::to_string)
        .unwrap_or_else(|| full.to_string())
}
