//! `wasmbox run`: an image (from the local store, or any location `copy`
//! takes) or a module file → the engine's [`RunSpec`], without containerd.
//! The image is read through the image model: its layers stream, verified,
//! into a temporary root filesystem that the guest sees as `/`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::image::ImageConfiguration;
use wasmbox_engine::{Preopen, RunSpec, Stdio};

use crate::format;
use crate::image::{ImageSource, blocking_reader, descriptor_digest, read_blob, verified};
use crate::location::{Endpoints, Location};

/// A host directory for the guest (`--dir HOST:GUEST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

impl std::str::FromStr for DirSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (host, guest, read_only) = match parts.as_slice() {
            [host] => (*host, *host, false),
            [host, guest] => (*host, *guest, false),
            [host, guest, "ro"] => (*host, *guest, true),
            [host, guest, "rw"] => (*host, *guest, false),
            _ => return Err(format!("--dir {s}: expected HOST[:GUEST[:ro|rw]]")),
        };
        if !guest.starts_with('/') {
            return Err(format!("--dir {s}: the guest path must be absolute"));
        }
        Ok(DirSpec {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            read_only,
        })
    }
}

/// What to run and how, as typed on the command line.
pub struct RunRequest<'a> {
    /// A `.wasm`/`.wat` file, an image reference in the local store, or a
    /// location as `copy` takes it (`oci-archive:`, `oci:`, `docker://`).
    pub target: &'a str,
    /// Arguments after the module; replace the image's `Cmd` when given.
    pub args: &'a [String],
    pub env: &'a [String],
    pub dirs: &'a [DirSpec],
}

/// Builds the [`RunSpec`]; images are unpacked under `scratch`, which must
/// outlive the run.
pub fn prepare(endpoints: &Endpoints, req: &RunRequest, scratch: &Path) -> Result<RunSpec> {
    let file = Path::new(req.target);
    let mut spec = if file.is_file() {
        let mut args = vec![req.target.to_string()];
        args.extend(req.args.iter().cloned());
        RunSpec {
            module: file.to_path_buf(),
            args,
            ..Default::default()
        }
    } else {
        let location = match req.target.parse().map_err(anyhow::Error::msg) {
            // A plain reference names an image of the local store.
            Ok(Location::Registry(r)) if !req.target.starts_with("docker://") => Location::Store(r),
            Ok(location) => location,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "{} is neither a module file nor an image reference",
                        req.target
                    )
                });
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let source = location.open_source(endpoints)?;
        from_image(&runtime, &source, req.args, scratch)?
    };
    for kv in req.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv}: expected KEY=VALUE"))?;
        spec.env.retain(|(key, _)| key != k);
        spec.env.push((k.to_string(), v.to_string()));
    }
    for d in req.dirs {
        if !d.host.is_dir() {
            bail!("--dir {}: {} is not a directory", d.guest, d.host.display());
        }
        spec.preopens.push(Preopen {
            host: d.host.clone(),
            guest: d.guest.clone(),
            read_only: d.read_only,
        });
    }
    spec.stdin = Stdio::Inherit;
    spec.stdout = Stdio::Inherit;
    spec.stderr = Stdio::Inherit;
    Ok(spec)
}

fn from_image(
    runtime: &tokio::runtime::Runtime,
    source: &impl ImageSource,
    args: &[String],
    scratch: &Path,
) -> Result<RunSpec> {
    let name = source.name();
    let manifest = runtime.block_on(source.manifest())?;
    let config_bytes = runtime.block_on(read_blob(source, manifest.config()))?;
    let rootfs = scratch.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    // A layer as a verified, blocking reader: it fails at the end of the
    // content if the content does not match the digest.
    let open_layer = |layer| -> Result<_> {
        let stream = runtime.block_on(source.blob(layer))?;
        let digest = descriptor_digest(layer)?;
        let stream = verified(
            stream,
            digest,
            layer.size(),
            indicatif::ProgressBar::hidden(),
        );
        Ok(std::io::BufReader::new(blocking_reader(runtime, stream)))
    };

    // CNCF artifact (or any image whose layers are raw Wasm): the module is the layer.
    if let Some(layer) = manifest
        .layers()
        .iter()
        .find(|l| format::is_wasm_layer(l.media_type().as_ref()))
    {
        let module = rootfs.join(format::ARTIFACT_MODULE_PATH.trim_start_matches('/'));
        let mut blob = open_layer(layer)?;
        let mut file = std::fs::File::create(&module)
            .with_context(|| format!("creating {}", module.display()))?;
        std::io::copy(&mut blob, &mut file)
            .with_context(|| format!("reading the module of {name}"))?;
        let mut argv = vec![format::ARTIFACT_MODULE_PATH.to_string()];
        argv.extend(args.iter().cloned());
        return Ok(RunSpec {
            module,
            args: argv,
            preopens: vec![root_preopen(&rootfs)],
            ..Default::default()
        });
    }

    for layer in manifest.layers() {
        let media_type = layer.media_type().to_string();
        if !format::is_tar_layer(&media_type) {
            bail!("{name} has a layer of type {media_type}, which wasmbox run cannot unpack");
        }
        // After the tar ends, the rest of the blob is read too: a corrupt
        // layer is an error even where the tar and the compression end early.
        let what = || format!("unpacking layer {} of {name}", layer.digest());
        let mut blob = open_layer(layer)?;
        {
            let reader: Box<dyn Read + '_> = if media_type.ends_with("gzip") {
                Box::new(flate2::read::GzDecoder::new(&mut blob))
            } else if media_type.ends_with("zstd") {
                Box::new(zstd::Decoder::with_buffer(&mut blob)?)
            } else {
                Box::new(&mut blob)
            };
            let mut archive = tar::Archive::new(reader);
            archive.unpack(&rootfs).with_context(what)?;
            std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).with_context(what)?;
        }
        std::io::copy(&mut blob, &mut std::io::sink()).with_context(what)?;
    }
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).context("the image config is not valid JSON")?;
    let process = config.config().clone().unwrap_or_default();
    let mut argv = process.entrypoint().clone().unwrap_or_default();
    if args.is_empty() {
        argv.extend(process.cmd().clone().unwrap_or_default());
    } else {
        argv.extend(args.iter().cloned());
    }
    let Some(entry) = argv.first() else {
        bail!("{name} has no entrypoint; give the module path as the first argument");
    };
    let (module_path, export) = format::split_entrypoint(entry);
    let module = wasmbox_engine::resolve_in_root(&rootfs, module_path)
        .with_context(|| format!("finding the module {module_path} in {name}"))?;
    let env = wasmbox_engine::env_pairs(process.env().clone().unwrap_or_default());
    Ok(RunSpec {
        module,
        export: export.map(str::to_string),
        args: argv,
        env,
        preopens: vec![root_preopen(&rootfs)],
        ..Default::default()
    })
}

fn root_preopen(rootfs: &Path) -> Preopen {
    Preopen {
        host: rootfs.to_path_buf(),
        guest: "/".to_string(),
        read_only: false,
    }
}
