//! Building an image from a module and files (pure: bytes in, blobs out).
//! The result is an [`Image`] held in memory, which is itself an image
//! source: `pack` copies it into the store like any other.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

use crate::format::{self, ComponentDescription, WasiWorld, WasmArtifactConfig};
use crate::module::{ModuleKind, WasmModule};

/// How the image is laid out in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Docker-compatible `wasi/wasm` image: OCI config and one tar layer.
    Image,
    /// CNCF TAG-Runtime Wasm artifact: Wasm config and one `application/wasm` layer.
    Artifact,
}

/// Compression of the tar layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// A file or directory from the host copied into the image (`--add SRC:DEST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddSpec {
    pub source: PathBuf,
    /// Absolute path in the image.
    pub dest: String,
}

impl FromStr for AddSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (src, dest) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("--add {s}: expected SRC:DEST"))?;
        if src.is_empty() || dest.is_empty() {
            return Err(format!("--add {s}: expected SRC:DEST with both parts set"));
        }
        Ok(AddSpec {
            source: PathBuf::from(src),
            dest: dest.to_string(),
        })
    }
}

/// Everything `pack` needs besides the module.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// File name of the module inside the image (`hello.wasm`).
    pub module_name: String,
    pub adds: Vec<AddSpec>,
    pub env: Vec<String>,
    pub args: Vec<String>,
    pub workdir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub format: ImageFormat,
    pub compression: Compression,
    /// Overrides the detected `os`.
    pub os: Option<String>,
    /// `created`, and the mtime of every tar entry.
    pub created: SystemTime,
}

impl PackOptions {
    /// `created` from `SOURCE_DATE_EPOCH` when set, else the Unix epoch, so that
    /// packing the same inputs always gives the same digest.
    pub fn created_from_env() -> Result<SystemTime> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => {
                let secs: u64 = v.trim().parse().with_context(|| {
                    format!("SOURCE_DATE_EPOCH={v} is not a number of seconds since 1970")
                })?;
                Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            }
            Err(_) => Ok(SystemTime::UNIX_EPOCH),
        }
    }
}

/// One content-addressed blob.
#[derive(Debug, Clone)]
pub struct Blob {
    pub descriptor: Descriptor,
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, data: Vec<u8>) -> Result<Self> {
        let descriptor = DescriptorBuilder::default()
            .media_type(MediaType::from(media_type))
            .size(data.len() as u64)
            .digest(oci_spec::image::Digest::from_str(
                &format::Digest::of(&data).to_string(),
            )?)
            .build()?;
        Ok(Blob { descriptor, data })
    }

    pub fn digest(&self) -> String {
        self.descriptor.digest().to_string()
    }
}

/// A complete image: the manifest and every blob it references (config first).
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Blob,
    pub blobs: Vec<Blob>,
}

impl Image {
    pub fn digest(&self) -> String {
        self.manifest.digest()
    }
}

/// Builds the image for `module`. Reads the `--add` sources; writes nothing.
pub fn build(module: &WasmModule, opts: &PackOptions) -> Result<Image> {
    let os = opts.os.clone().unwrap_or_else(|| match opts.format {
        // Docker's spelling, the one `docker run --platform wasi/wasm` and
        // buildx use: Docker matches a single manifest's `os` exactly.
        ImageFormat::Image => format::OS_WASI.to_string(),
        // The CNCF Wasm artifact spec names the WASI version.
        ImageFormat::Artifact => module.default_os().to_string(),
    });
    let created = humantime::format_rfc3339_seconds(opts.created).to_string();
    let mut annotations = opts.annotations.clone();
    annotations.insert(
        format::ANNOTATION_WASI_WORLD.to_string(),
        module.world.to_string(),
    );
    if let Some(export) = &module.export {
        annotations.insert(format::ANNOTATION_EXPORT.to_string(), export.clone());
    }

    let (config, layer) = match opts.format {
        ImageFormat::Image => image_config_and_layer(module, opts, &os, &created)?,
        ImageFormat::Artifact => artifact_config_and_layer(module, opts, &os, &created)?,
    };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor.clone())
        .layers(vec![layer.descriptor.clone()])
        .annotations(
            annotations
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()?;
    let manifest = Blob::new(
        format::MEDIA_TYPE_OCI_MANIFEST,
        serde_json::to_vec(&manifest)?,
    )?;
    Ok(Image {
        manifest,
        blobs: vec![config, layer],
    })
}

fn image_config_and_layer(
    module: &WasmModule,
    opts: &PackOptions,
    os: &str,
    created: &str,
) -> Result<(Blob, Blob)> {
    let tar = layer_tar(module, opts)?;
    let diff_id = format::Digest::of(&tar).to_string();
    let (media_type, data) = match opts.compression {
        Compression::Gzip => (
            format::MEDIA_TYPE_OCI_LAYER_GZIP,
            super::gzip::compress(&tar, flate2::Compression::default())?,
        ),
        Compression::Zstd => (
            format::MEDIA_TYPE_OCI_LAYER_ZSTD,
            zstd::encode_all(tar.as_slice(), 3)?,
        ),
        Compression::None => (format::MEDIA_TYPE_OCI_LAYER_TAR, tar),
    };
    let layer = Blob::new(media_type, data)?;

    let mut entrypoint = format!("/{}", opts.module_name);
    if let Some(export) = &module.export {
        entrypoint.push(format::ENTRYPOINT_EXPORT_SEPARATOR);
        entrypoint.push_str(export);
    }
    let mut runtime = ConfigBuilder::default();
    runtime = runtime.entrypoint(vec![entrypoint]);
    if !opts.args.is_empty() {
        runtime = runtime.cmd(opts.args.clone());
    }
    if !opts.env.is_empty() {
        runtime = runtime.env(opts.env.clone());
    }
    if let Some(dir) = &opts.workdir {
        runtime = runtime.working_dir(dir.clone());
    }
    if !opts.labels.is_empty() {
        runtime = runtime.labels(
            opts.labels
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    let config = ImageConfigurationBuilder::default()
        .created(created.to_string())
        .architecture(Arch::Wasm)
        .os(Os::from(os))
        .config(runtime.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id])
                .build()?,
        )
        .history(vec![
            HistoryBuilder::default()
                .created(created.to_string())
                .created_by(format!("wasmbox pack {}", opts.module_name))
                .build()?,
        ])
        .build()?;
    let config = Blob::new(format::MEDIA_TYPE_OCI_CONFIG, serde_json::to_vec(&config)?)?;
    Ok((config, layer))
}

fn artifact_config_and_layer(
    module: &WasmModule,
    opts: &PackOptions,
    os: &str,
    created: &str,
) -> Result<(Blob, Blob)> {
    let unsupported = [
        (!opts.adds.is_empty(), "--add"),
        (!opts.env.is_empty(), "--env"),
        (!opts.args.is_empty(), "--arg"),
        (opts.workdir.is_some(), "--workdir"),
        (!opts.labels.is_empty(), "--label"),
        (opts.compression != Compression::Gzip, "--compression"),
    ];
    if let Some((_, flag)) = unsupported.iter().find(|(set, _)| *set) {
        bail!(
            "{flag} needs --format image: a Wasm artifact holds only the module, with no file system or process settings"
        );
    }
    let mut layer = Blob::new(format::MEDIA_TYPE_WASM_LAYER, module.bytes.clone())?;
    layer.descriptor.set_annotations(Some(
        [(
            format::ANNOTATION_TITLE.to_string(),
            opts.module_name.clone(),
        )]
        .into(),
    ));
    let component = (module.kind == ModuleKind::Component).then(|| ComponentDescription {
        exports: module.exports.clone(),
        imports: module.imports.clone(),
        target: match module.world {
            WasiWorld::CliCommand | WasiWorld::HttpProxy => Some(module.world.to_string()),
            _ => None,
        },
    });
    let config = WasmArtifactConfig {
        created: Some(created.to_string()),
        architecture: format::ARCH_WASM.to_string(),
        os: os.to_string(),
        layer_digests: vec![layer.digest()],
        component,
    };
    let config = Blob::new(format::MEDIA_TYPE_WASM_CONFIG, serde_json::to_vec(&config)?)?;
    Ok((config, layer))
}

/// What one tar entry holds.
enum Entry {
    Dir,
    File { data: Vec<u8>, executable: bool },
    Symlink(PathBuf),
}

/// The layer's uncompressed tar: the module at `/<name>` plus every `--add`,
/// sorted by path, owned by 0:0, with fixed mtimes and normalised modes.
fn layer_tar(module: &WasmModule, opts: &PackOptions) -> Result<Vec<u8>> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    insert(
        &mut entries,
        &opts.module_name,
        Entry::File {
            data: module.bytes.clone(),
            executable: true,
        },
    )?;
    for add in &opts.adds {
        let dest = image_path(&add.dest)
            .with_context(|| format!("--add {}:{}", add.source.display(), add.dest))?;
        add_host_path(&mut entries, &add.source, &dest)
            .with_context(|| format!("--add {}:{}", add.source.display(), add.dest))?;
    }
    if let Some(dir) = &opts.workdir {
        let dir = image_path(dir).with_context(|| format!("--workdir {dir}"))?;
        if !dir.is_empty() {
            insert(&mut entries, &dir, Entry::Dir)?;
        }
    }

    let mtime = opts
        .created
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in &entries {
        match entry {
            Entry::Dir => {
                let mut header = deterministic_header(tar::EntryType::Directory, 0o755, 0, mtime);
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Entry::File { data, executable } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut header =
                    deterministic_header(tar::EntryType::Regular, mode, data.len() as u64, mtime);
                tar.append_data(&mut header, path, data.as_slice())?;
            }
            Entry::Symlink(target) => {
                let mut header = deterministic_header(tar::EntryType::Symlink, 0o777, 0, mtime);
                tar.append_link(&mut header, path, target)?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

/// A tar header that depends only on its arguments (owner 0:0, no user or
/// group names, the given mtime): every tar wasmbox writes, layers and
/// archives, uses it, so the same inputs give the same bytes.
pub(crate) fn deterministic_header(
    kind: tar::EntryType,
    mode: u32,
    size: u64,
    mtime: u64,
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Normalises an image path to its relative form (`/a/b` → `a/b`), refusing `..`.
fn image_path(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(
                p.to_str()
                    .context("the path in the image is not valid UTF-8")?
                    .to_string(),
            ),
            Component::ParentDir => bail!("the path in the image must not contain `..`"),
            Component::Prefix(_) => bail!("the path in the image must be a Unix path"),
        }
    }
    Ok(parts.join("/"))
}

/// Inserts `entry` at `path` and a directory entry for each parent.
fn insert(entries: &mut BTreeMap<String, Entry>, path: &str, entry: Entry) -> Result<()> {
    let mut parent = String::new();
    let components: Vec<&str> = path.split('/').collect();
    for part in &components[..components.len().saturating_sub(1)] {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(part);
        match entries.get(&parent) {
            None => {
                entries.insert(parent.clone(), Entry::Dir);
            }
            Some(Entry::Dir) => {}
            Some(_) => {
                bail!("/{parent} is a file in the image, so /{path} cannot be placed under it")
            }
        }
    }
    match (entries.get(path), &entry) {
        (Some(Entry::Dir), Entry::Dir) => {}
        (Some(_), _) => bail!("/{path} is already in the image (from the module or another --add)"),
        (None, _) => {
            entries.insert(path.to_string(), entry);
        }
    }
    Ok(())
}

fn add_host_path(entries: &mut BTreeMap<String, Entry>, source: &Path, dest: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(source)
        .with_context(|| format!("cannot read {}", source.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(source)?;
        insert(entries, dest, Entry::Symlink(target))
    } else if ft.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let data =
            std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
        let executable = meta.permissions().mode() & 0o111 != 0;
        insert(entries, dest, Entry::File { data, executable })
    } else if ft.is_dir() {
        if !dest.is_empty() {
            insert(entries, dest, Entry::Dir)?;
        }
        let mut children: Vec<_> = std::fs::read_dir(source)
            .with_context(|| format!("cannot list {}", source.display()))?
            .collect::<std::io::Result<_>>()?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let name = child.file_name();
            let name = name.to_str().with_context(|| {
                format!("{} has a name that is not UTF-8", child.path().display())
            })?;
            let child_dest = if dest.is_empty() {
                name.to_string()
            } else {
                format!("{dest}/{name}")
            };
            add_host_path(entries, &child.path(), &child_dest)?;
        }
        Ok(())
    } else {
        bail!(
            "{} is not a regular file, directory or symlink (devices, sockets and fifos cannot go into an image)",
            source.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::inspect::describe;

    fn module() -> WasmModule {
        WasmModule::from_bytes(
            Path::new("hello.wasm"),
            wat::parse_str(r#"(module (func (export "_start")))"#).unwrap(),
            None,
        )
        .unwrap()
    }

    fn opts(format: ImageFormat) -> PackOptions {
        PackOptions {
            module_name: "hello.wasm".into(),
            adds: vec![],
            env: vec!["A=1".into()],
            args: vec!["x".into()],
            workdir: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            format,
            compression: Compression::Gzip,
            os: None,
            created: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn same_inputs_give_the_same_digest() {
        let a = build(&module(), &opts(ImageFormat::Image)).unwrap();
        let b = build(&module(), &opts(ImageFormat::Image)).unwrap();
        assert_eq!(a.digest(), b.digest());
        let mut later = opts(ImageFormat::Image);
        later.created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_ne!(build(&module(), &later).unwrap().digest(), a.digest());
    }

    #[test]
    fn image_config_has_wasm_platform_and_entrypoint() {
        let img = build(&module(), &opts(ImageFormat::Image)).unwrap();
        let info = describe("x", &img.manifest.data, &img.blobs[0].data).unwrap();
        assert_eq!(
            (info.os.as_str(), info.architecture.as_str()),
            ("wasi", "wasm")
        );
        assert_eq!(info.entrypoint, vec!["/hello.wasm"]);
        assert_eq!(info.cmd, vec!["x"]);
        assert_eq!(info.layers[0].media_type, format::MEDIA_TYPE_OCI_LAYER_GZIP);
        assert_eq!(info.wasi_world.as_deref(), Some("none"));
    }

    #[test]
    fn artifact_refuses_filesystem_options() {
        let err = build(&module(), &opts(ImageFormat::Artifact)).unwrap_err();
        assert!(
            err.to_string().starts_with("--env needs --format image"),
            "{err}"
        );
    }

    #[test]
    fn add_rejects_parent_dir_in_destination() {
        assert!(image_path("/a/../b").is_err());
        assert_eq!(image_path("/a/./b/").unwrap(), "a/b");
    }
}
