//! OCI image layout directories: the local store, and any `oci:DIR` a user
//! names (so `skopeo`, `oras` and `umoci` read what wasmbox writes and the
//! other way round). Written so a crash or a bad input never leaves a
//! half-written image: blobs land by rename after their digest is checked,
//! and `index.json` is replaced atomically, last, under a lock.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use crate::format::{self, Digest, VerifyingReader};
use crate::image::{
    BlobStream, ImageDestination, ImageSource, Manifest, descriptor_digest, is_index,
    parse_manifest, platform_of, stream_reader,
};
use crate::reference::ImageRef;

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An image the store knows by its full name.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub name: String,
    pub manifest: Descriptor,
}

/// How an image is named in a layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutName {
    /// A full reference, as the store and `ctr image import` name images:
    /// `io.containerd.image.name`, plus the tag as `org.opencontainers.image.ref.name`.
    Image(ImageRef),
    /// `org.opencontainers.image.ref.name`, as skopeo's `oci:DIR:REF` writes
    /// it (`latest`, `v1`, or a full reference). An entry whose ref name or
    /// containerd name is this one matches it.
    RefName(String),
    /// No name: as a source, the layout's only image; as a destination, an
    /// unnamed entry.
    Unnamed,
}

impl LayoutName {
    /// The name for `REF` in `oci:DIR:REF`.
    pub fn from_ref_name(name: &str) -> LayoutName {
        LayoutName::RefName(name.to_string())
    }

    /// The index entry for `manifest` under this name.
    pub fn entry(&self, manifest: Descriptor) -> Descriptor {
        let mut annotations = manifest.annotations().clone().unwrap_or_default();
        match self {
            LayoutName::Image(r) => {
                annotations.insert(
                    format::ANNOTATION_CONTAINERD_IMAGE_NAME.to_string(),
                    r.to_string(),
                );
                annotations.insert(format::ANNOTATION_REF_NAME.to_string(), r.tag_or_digest());
            }
            LayoutName::RefName(n) => {
                annotations.insert(format::ANNOTATION_REF_NAME.to_string(), n.clone());
                // A full reference spelt out names the image for `ctr image import` too.
                if n.parse::<ImageRef>().is_ok_and(|full| full.as_str() == n) {
                    annotations.insert(
                        format::ANNOTATION_CONTAINERD_IMAGE_NAME.to_string(),
                        n.clone(),
                    );
                }
            }
            LayoutName::Unnamed => {}
        }
        let mut manifest = manifest;
        manifest.set_annotations((!annotations.is_empty()).then_some(annotations));
        manifest
    }

    fn matches(&self, entry: &Descriptor) -> bool {
        let annotation = |key: &str| {
            entry
                .annotations()
                .as_ref()
                .and_then(|a| a.get(key))
                .map(String::as_str)
        };
        match self {
            LayoutName::Image(r) => {
                annotation(format::ANNOTATION_CONTAINERD_IMAGE_NAME) == Some(r.as_str())
            }
            LayoutName::RefName(n) => {
                annotation(format::ANNOTATION_REF_NAME) == Some(n.as_str())
                    || annotation(format::ANNOTATION_CONTAINERD_IMAGE_NAME) == Some(n.as_str())
            }
            LayoutName::Unnamed => false,
        }
    }
}

impl std::fmt::Display for LayoutName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutName::Image(r) => write!(f, "{r}"),
            LayoutName::RefName(n) => f.write_str(n),
            LayoutName::Unnamed => f.write_str("(unnamed)"),
        }
    }
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
            .with_context(|| format!("cannot create the image layout at {}", root.display()))?;
        let layout = root.join(format::OCI_LAYOUT_FILE);
        if !layout.exists() {
            format::write_atomic(&layout, format::OCI_LAYOUT_CONTENT.as_bytes(), 0o644)?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing layout without creating anything: a source must be one.
    pub fn open_existing(root: &Path) -> Result<Self> {
        if !root.join(format::OCI_LAYOUT_FILE).is_file() {
            bail!(
                "{} is not an OCI image layout (it has no {} file)",
                root.display(),
                format::OCI_LAYOUT_FILE
            );
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the blob with `digest`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    /// Opens a blob for reading; the reader fails at the end if the content
    /// no longer matches its digest.
    pub fn open_blob(&self, digest: &Digest) -> Result<VerifyingReader<File>> {
        let path = self.blob_path(digest);
        let file = File::open(&path).with_context(|| {
            format!(
                "blob {digest} is missing from the image layout at {}",
                self.root.display()
            )
        })?;
        Ok(VerifyingReader::new(file, digest.clone()))
    }

    /// Reads a small blob (a manifest or a config) and checks its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        std::io::copy(&mut self.open_blob(digest)?, &mut data).map_err(|e| {
            anyhow::anyhow!(
                "blob {digest} in the image layout at {} is corrupt ({e}); remove the image and pull or pack it again",
                self.root.display()
            )
        })?;
        Ok(data)
    }

    /// The manifest and config blobs of a stored image (both digest-checked).
    pub fn manifest_and_config(&self, image: &StoredImage) -> Result<(Manifest, Vec<u8>)> {
        let manifest = self.read_manifest(&descriptor_digest(&image.manifest)?)?;
        let config = self.read_blob(&descriptor_digest(manifest.config())?)?;
        Ok((manifest, config))
    }

    /// The image manifest at `digest`, following an index to its Wasm entry.
    fn read_manifest(&self, digest: &Digest) -> Result<Manifest> {
        let bytes = self.read_blob(digest)?;
        if !is_index(&bytes) {
            return Manifest::from_bytes(bytes);
        }
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("the index {digest} is not valid JSON"))?;
        let entry = format::choose_wasm_entry(index.manifests(), platform_of)
            .with_context(|| format!("the index {digest} has no wasm entry"))?;
        Manifest::from_bytes(self.read_blob(&descriptor_digest(entry)?)?)
    }

    /// A writer for a blob of unknown content; [`BlobWriter::commit`] checks the digest.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.root.join("blobs").join("sha256");
        let tmp = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempfile_in(&dir)
            .with_context(|| {
                format!(
                    "cannot write into the image layout at {}",
                    self.root.display()
                )
            })?;
        Ok(BlobWriter(format::HashingWriter::new(tmp)))
    }

    /// Writes a blob whose bytes are in memory.
    pub fn write_blob(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut w = self.blob_writer()?;
        w.write_all(data)?;
        w.commit(self, digest)
    }

    /// Points `name` at `manifest` (whose blobs must already be stored),
    /// replacing what the name pointed at before.
    pub fn tag(&self, name: &LayoutName, manifest: Descriptor) -> Result<()> {
        let _lock = self.lock()?;
        let mut entries = self.read_index()?;
        entries.retain(|e| match name {
            LayoutName::Unnamed => e.digest() != manifest.digest() || e.annotations().is_some(),
            _ => !name.matches(e),
        });
        let manifest = name.entry(manifest);
        entries.push(manifest);
        entries.sort_by_key(image_name);
        self.write_index(entries)
    }

    /// The index entry `name` stands for. An unnamed lookup takes the
    /// layout's only entry. `place` names the layout in messages.
    pub fn find(&self, name: &LayoutName, place: &str) -> Result<Descriptor> {
        let entries = self.read_index()?;
        if *name == LayoutName::Unnamed {
            return match entries.as_slice() {
                [only] => Ok(only.clone()),
                [] => bail!("{place} holds no image"),
                _ => bail!("{place} holds {} images; name one with :REF", entries.len()),
            };
        }
        entries
            .into_iter()
            .find(|e| name.matches(e))
            .with_context(|| format!("{name} is not in {place}"))
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

    /// Every image with a full name, sorted by name.
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
            let digest = descriptor_digest(entry)?;
            let mut referenced = vec![digest.clone()];
            // An index (from another tool's layout) keeps its manifests too.
            if let Ok(bytes) = std::fs::read(self.blob_path(&digest))
                && is_index(&bytes)
                && let Ok(index) = serde_json::from_slice::<ImageIndex>(&bytes)
            {
                referenced.extend(
                    index
                        .manifests()
                        .iter()
                        .filter_map(|m| descriptor_digest(m).ok()),
                );
            }
            for manifest_digest in referenced {
                if let Ok(bytes) = std::fs::read(self.blob_path(&manifest_digest))
                    && let Ok(manifest) = parse_manifest(&bytes)
                {
                    keep.insert(manifest.config().digest().to_string());
                    keep.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
                }
                keep.insert(manifest_digest.to_string());
            }
        }
        self.write_index(entries)?;
        let dir = self.root.join("blobs").join("sha256");
        for file in std::fs::read_dir(&dir)? {
            let file = file?;
            let digest = match Digest::from_hex(&file.file_name().to_string_lossy()) {
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
        format::write_atomic(&self.root.join("index.json"), &index_json(entries)?, 0o644)?;
        Ok(())
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
    pub fn commit(mut self, store: &Store, digest: &Digest) -> Result<()> {
        self.0.flush()?;
        let (file, actual, written) = self.0.finish();
        if actual != *digest {
            bail!("content of {digest} hashes to {actual} ({written} bytes received)");
        }
        file.as_file().sync_all()?;
        let path = store.blob_path(digest);
        file.persist(&path)
            .with_context(|| format!("cannot store blob {digest}"))?;
        Ok(())
    }
}

/// One image of a layout, by name: what `store:REF` and `oci:DIR[:REF]`
/// open, as a source or as a destination.
pub struct LayoutImage {
    store: Store,
    name: LayoutName,
    /// How the user spelt the location, for messages.
    label: String,
    /// The layout itself, without the image's name (`oci:DIR`).
    place: String,
    /// A directory the layout was unpacked into (an archive's), removed
    /// when the image is dropped.
    _unpacked: Option<tempfile::TempDir>,
}

impl LayoutImage {
    /// The image `name` of `store`; `label` and `place` say where it is in
    /// messages, with and without the name.
    pub fn new(store: Store, name: LayoutName, label: String, place: String) -> LayoutImage {
        LayoutImage {
            store,
            name,
            label,
            place,
            _unpacked: None,
        }
    }

    /// An image of a layout unpacked into `dir`, which lives as long as it.
    pub fn unpacked(
        dir: tempfile::TempDir,
        name: LayoutName,
        label: String,
        place: String,
    ) -> Result<LayoutImage> {
        let store = Store::open_existing(dir.path())?;
        Ok(LayoutImage {
            store,
            name,
            label,
            place,
            _unpacked: Some(dir),
        })
    }
}

impl ImageSource for LayoutImage {
    fn name(&self) -> String {
        self.label.clone()
    }

    async fn manifest(&self) -> Result<Manifest> {
        let entry = self.store.find(&self.name, &self.place)?;
        self.store
            .read_manifest(&descriptor_digest(&entry)?)
            .with_context(|| format!("reading the manifest of {}", self.label))
    }

    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream> {
        let digest = descriptor_digest(descriptor)?;
        let path = self.store.blob_path(&digest);
        let file = File::open(&path).with_context(|| {
            format!(
                "blob {digest} of {} is missing from {}",
                self.label,
                path.display()
            )
        })?;
        Ok(stream_reader(file))
    }
}

impl ImageDestination for LayoutImage {
    fn name(&self) -> String {
        self.label.clone()
    }

    async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool> {
        Ok(self.store.has_blob(&descriptor_digest(descriptor)?))
    }

    async fn put_blob(&mut self, descriptor: &Descriptor, mut data: BlobStream) -> Result<()> {
        let digest = descriptor_digest(descriptor)?;
        let what = || format!("writing blob {digest} into {}", self.label);
        let mut writer = self.store.blob_writer()?;
        while let Some(chunk) = data.next().await {
            writer
                .write_all(&chunk.with_context(what)?)
                .with_context(what)?;
        }
        writer.commit(&self.store, &digest).with_context(what)
    }

    async fn put_manifest(&mut self, manifest: &Manifest) -> Result<()> {
        self.store.write_blob(manifest.digest(), manifest.bytes())?;
        self.store.tag(&self.name, manifest.descriptor()?)
    }
}
