//! The local image store: a plain OCI image layout directory (so `skopeo`,
//! `oras` and `umoci` can read it too), written so a crash or a bad input never
//! leaves a half-written image: blobs land by rename after their digest is
//! checked, and `index.json` is replaced atomically, last, under a lock.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use crate::format;
use crate::image::{Image, parse_manifest};
use crate::reference::ImageRef;

/// An OCI image layout directory holding tagged images.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An image the store knows by name.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub name: String,
    pub manifest: Descriptor,
}

impl Store {
    /// The default location: `$XDG_DATA_HOME/wasmbox/store` (or `~/.local/share/...`).
    pub fn default_root() -> Result<PathBuf> {
        Ok(dirs::data_dir()
            .context(
                "cannot find the user's data directory; pass --store DIR or set WASMBOX_STORE",
            )?
            .join("wasmbox")
            .join("store"))
    }

    /// Opens the layout at `root`, creating it if missing.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)
            .with_context(|| format!("cannot create the image store at {}", root.display()))?;
        let layout = root.join(format::OCI_LAYOUT_FILE);
        if !layout.exists() {
            write_atomic(&layout, format::OCI_LAYOUT_CONTENT.as_bytes())?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the blob with `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let digest: format::Digest = digest.parse()?;
        Ok(self.root.join("blobs").join("sha256").join(digest.hex()))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    /// Reads a blob and checks that its content still matches its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let data = std::fs::read(&path).with_context(|| {
            format!(
                "blob {digest} is missing from the store at {}",
                self.root.display()
            )
        })?;
        let actual = format::Digest::of(&data).to_string();
        if actual != digest {
            bail!(
                "blob {digest} in the store at {} is corrupt (its content hashes to {actual}); remove the image and pull or pack it again",
                self.root.display()
            );
        }
        Ok(data)
    }

    /// The manifest and config blobs of a stored image (both digest-checked).
    pub fn manifest_and_config(&self, image: &StoredImage) -> Result<(Vec<u8>, Vec<u8>)> {
        let manifest = self.read_blob(image.manifest.digest().as_ref())?;
        let config_digest = parse_manifest(&manifest)
            .with_context(|| format!("reading the manifest of {}", image.name))?
            .config()
            .digest()
            .to_string();
        let config = self.read_blob(&config_digest)?;
        Ok((manifest, config))
    }

    /// A writer for a blob of unknown content; [`BlobWriter::commit`] checks the digest.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.root.join("blobs").join("sha256");
        let tmp = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempfile_in(&dir)
            .with_context(|| format!("cannot write into the store at {}", self.root.display()))?;
        Ok(BlobWriter(format::HashingWriter::new(tmp)))
    }

    /// Writes a blob whose bytes are in memory.
    pub fn write_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut w = self.blob_writer()?;
        w.write_all(data)?;
        w.commit(self, digest)
    }

    /// Stores every blob of `image`, then names it `name`.
    pub fn put(&self, name: &ImageRef, image: &Image) -> Result<()> {
        for blob in &image.blobs {
            self.write_blob(&blob.digest(), &blob.data)?;
        }
        self.write_blob(&image.digest(), &image.manifest.data)?;
        self.tag(name, image.manifest.descriptor.clone())
    }

    /// Points `name` at `manifest` (whose blobs must already be stored).
    pub fn tag(&self, name: &ImageRef, manifest: Descriptor) -> Result<()> {
        let _lock = self.lock()?;
        let mut entries = self.read_index()?;
        entries.retain(|e| image_name(e).as_deref() != Some(name.as_str()));
        let mut annotations = manifest.annotations().clone().unwrap_or_default();
        annotations.insert(
            format::ANNOTATION_CONTAINERD_IMAGE_NAME.to_string(),
            name.to_string(),
        );
        annotations.insert(
            format::ANNOTATION_REF_NAME.to_string(),
            name.tag_or_digest(),
        );
        let mut manifest = manifest;
        manifest.set_annotations(Some(annotations));
        entries.push(manifest);
        entries.sort_by_key(image_name);
        self.write_index(entries)
    }

    /// The image named `name`, if any.
    pub fn resolve(&self, name: &ImageRef) -> Result<Option<StoredImage>> {
        Ok(self.list()?.into_iter().find(|i| i.name == name.as_str()))
    }

    /// Like [`Store::resolve`], with an error that says where to get the image.
    pub fn get(&self, name: &ImageRef) -> Result<StoredImage> {
        self.resolve(name)?.with_context(|| {
            format!(
                "{name} is not in the local store at {} (pack it with wasmbox pack or fetch it with wasmbox pull)",
                self.root.display()
            )
        })
    }

    /// Every named image, sorted by name.
    pub fn list(&self) -> Result<Vec<StoredImage>> {
        Ok(self
            .read_index()?
            .into_iter()
            .filter_map(|d| image_name(&d).map(|name| StoredImage { name, manifest: d }))
            .collect())
    }

    /// Removes the name, then every blob no remaining image references.
    pub fn remove(&self, name: &ImageRef) -> Result<()> {
        let _lock = self.lock()?;
        let mut entries = self.read_index()?;
        let before = entries.len();
        entries.retain(|e| image_name(e).as_deref() != Some(name.as_str()));
        if entries.len() == before {
            bail!(
                "{name} is not in the local store at {}",
                self.root.display()
            );
        }
        let mut keep = std::collections::HashSet::new();
        for entry in &entries {
            let digest = entry.digest().to_string();
            if let Ok(bytes) = std::fs::read(self.blob_path(&digest)?)
                && let Ok(manifest) = parse_manifest(&bytes)
            {
                keep.insert(manifest.config().digest().to_string());
                keep.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
            }
            keep.insert(digest);
        }
        self.write_index(entries)?;
        let dir = self.root.join("blobs").join("sha256");
        for file in std::fs::read_dir(&dir)? {
            let file = file?;
            let digest = match format::Digest::from_hex(&file.file_name().to_string_lossy()) {
                Ok(d) => d.to_string(),
                // Not a blob (a temp file of a write in progress): not ours to prune.
                Err(_) => continue,
            };
            if !keep.contains(&digest) {
                std::fs::remove_file(file.path())
                    .with_context(|| format!("cannot remove {}", file.path().display()))?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> Result<File> {
        let path = self.root.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    }

    fn read_index(&self) -> Result<Vec<Descriptor>> {
        let path = self.root.join("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let index: ImageIndex = serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is not a valid OCI image index", path.display())
                })?;
                Ok(index.manifests().clone())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn write_index(&self, entries: Vec<Descriptor>) -> Result<()> {
        write_atomic(&self.root.join("index.json"), &index_json(entries)?)
    }
}

/// Serialises an OCI `index.json` listing `manifests`.
pub fn index_json(manifests: Vec<Descriptor>) -> Result<Vec<u8>> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?;
    Ok(serde_json::to_vec(&index)?)
}

/// The full name an index entry stands for.
fn image_name(d: &Descriptor) -> Option<String> {
    d.annotations()
        .as_ref()?
        .get(format::ANNOTATION_CONTAINERD_IMAGE_NAME)
        .cloned()
}

/// Streams a blob into the store, hashing it as it goes.
pub struct BlobWriter(format::HashingWriter<tempfile::NamedTempFile>);

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl BlobWriter {
    /// Moves the blob into place if it hashes to `digest`; otherwise deletes it.
    pub fn commit(mut self, store: &Store, digest: &str) -> Result<()> {
        self.0.flush()?;
        let (file, actual, written) = self.0.finish();
        if actual.to_string() != digest {
            bail!("content of {digest} hashes to {actual} ({written} bytes received)");
        }
        file.as_file().sync_all()?;
        let path = store.blob_path(digest)?;
        file.persist(&path)
            .with_context(|| format!("cannot store blob {digest}"))?;
        Ok(())
    }
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write into {}", dir.display()))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
