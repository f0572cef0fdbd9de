//! OCI runtime spec + rootfs → [`RunSpec`]: what the guest may see, and nothing more.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Spec;
use wasmbox_format::{self as format, split_entrypoint};

use crate::engine::{Identity, Preopen, RunSpec};
use crate::error::InvalidSpec;

/// The network the container has, as the shim entered it (`pod::namespaces`).
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestNetwork {
    /// The guest may use sockets without an annotation: its spec names the
    /// namespace the shim is in, or asked for a fresh one the shim made.
    pub granted: bool,
    /// The spec gives the container a network namespace of its own (or of
    /// its pod) rather than the host's.
    pub own_namespace: bool,
}

/// Builds the run description for the container whose root filesystem is at
/// `rootfs`. `layer_module` is asked for the image's Wasm layer only when the
/// rootfs does not hold the entrypoint (images of raw Wasm layers unpack to
/// an empty rootfs). A wrong spec or annotation fails as [`InvalidSpec`].
pub fn run_spec(
    spec: &Spec,
    rootfs: &Path,
    network: GuestNetwork,
    layer_module: impl FnOnce() -> Result<Option<PathBuf>>,
) -> Result<RunSpec> {
    let process = spec
        .process()
        .as_ref()
        .context("the container spec has no process")
        .map_err(InvalidSpec)?;
    let (module, export, args) = entrypoint(process, rootfs, layer_module)?;
    let options = Annotations::read(spec, network).map_err(InvalidSpec)?;
    // The spec's volumes are added by the caller, who mounts them (crate::mounts).
    let preopens = vec![Preopen {
        host: rootfs.to_path_buf(),
        guest: "/".to_string(),
        read_only: options.root_read_only,
    }];
    Ok(RunSpec {
        module,
        export,
        args,
        env: environment(process),
        preopens,
        memory_limit: spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
            .map(|l| l as usize),
        network: options.network,
        features: options.features,
        http_port: options.http_port,
        http_concurrency: options.http_concurrency,
        identity: Some(identity(process)),
        open_files_limit: Some(open_files_limit(process)),
        ..Default::default()
    })
}

/// The module to run, the export to call and argv: from `process.args`
/// (`/m.wasm#export` names an export), else from the image's Wasm layer.
fn entrypoint(
    process: &oci_spec::runtime::Process,
    rootfs: &Path,
    layer_module: impl FnOnce() -> Result<Option<PathBuf>>,
) -> Result<(PathBuf, Option<String>, Vec<String>)> {
    let mut args = process.args().clone().unwrap_or_default();
    let (module, export) = match args.first() {
        Some(entry) => {
            let (module_path, export) = split_entrypoint(entry);
            let module = match wasmbox_engine::resolve_in_root(rootfs, module_path) {
                Ok(module) => module,
                Err(not_in_rootfs) => layer_module()?.ok_or_else(|| {
                    not_in_rootfs.context(format!("finding the module {module_path} in the image"))
                })?,
            };
            (module, export.map(str::to_string))
        }
        None => match layer_module()? {
            Some(module) => {
                args.push(format::ARTIFACT_MODULE_PATH.to_string());
                (module, None)
            }
            None => {
                return Err(InvalidSpec(anyhow::anyhow!(
                    "the container spec has no process.args: the image sets no entrypoint and none was given"
                ))
                .into());
            }
        },
    };
    Ok((module, export, args))
}

/// `process.env`; WASI preview 1 has no working directory (relative paths
/// resolve from `/`), so a `cwd` other than `/` reaches the guest as `PWD`,
/// which a guest can chdir to, unless the spec sets PWD itself.
fn environment(process: &oci_spec::runtime::Process) -> Vec<(String, String)> {
    let mut env = wasmbox_engine::env_pairs(process.env().clone().unwrap_or_default());
    let cwd = process.cwd().to_string_lossy();
    if cwd != "/" && !cwd.is_empty() && !env.iter().any(|(k, _)| k == "PWD") {
        env.push(("PWD".to_string(), cwd.into_owned()));
    }
    env
}

/// What the container's wasmbox annotations ask for, checked.
struct Annotations {
    root_read_only: bool,
    network: bool,
    features: Vec<(String, bool)>,
    http_port: Option<u16>,
    http_concurrency: Option<usize>,
}

impl Annotations {
    fn read(spec: &Spec, guest_network: GuestNetwork) -> Result<Annotations> {
        let annotations = spec.annotations().clone().unwrap_or_default();
        let annotation = |key: &str| annotations.get(key).map(String::as_str);
        let spec_read_only = spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);
        let root_read_only = match annotation(format::ANNOTATION_ROOTFS) {
            Some("ro") => true,
            None | Some("rw") => spec_read_only,
            Some(other) => bail!(
                "annotation {}={other}: expected ro or rw",
                format::ANNOTATION_ROOTFS
            ),
        };
        let network = match annotation(format::ANNOTATION_NETWORK) {
            // The container's own (or its pod's) network, which the shim entered.
            None => guest_network.granted,
            Some("none") => false,
            Some("host") => {
                if guest_network.own_namespace {
                    bail!(
                        "annotation {}=host needs a container on the host network (ctr run --net-host): the guest's sockets would otherwise escape the container's own network namespace",
                        format::ANNOTATION_NETWORK
                    );
                }
                true
            }
            Some(other) => bail!(
                "annotation {}={other}: expected none or host",
                format::ANNOTATION_NETWORK
            ),
        };
        let features = match annotation(format::ANNOTATION_FEATURES) {
            Some(list) => wasmbox_engine::parse_features(list)
                .with_context(|| format!("annotation {}", format::ANNOTATION_FEATURES))?,
            None => Vec::new(),
        };
        let http_port = match annotation(format::ANNOTATION_HTTP_PORT) {
            None => None,
            Some(v) => Some(v.parse::<u16>().ok().filter(|p| *p != 0).with_context(|| {
                format!(
                    "annotation {}={v}: expected a port number (1-65535)",
                    format::ANNOTATION_HTTP_PORT
                )
            })?),
        };
        let http_concurrency = match annotation(format::ANNOTATION_HTTP_CONCURRENCY) {
            None => None,
            Some(v) => Some(
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=65536).contains(n))
                    .with_context(|| {
                        format!(
                            "annotation {}={v}: expected a number of requests (1-65536)",
                            format::ANNOTATION_HTTP_CONCURRENCY
                        )
                    })?,
            ),
        };
        Ok(Annotations {
            root_read_only,
            network,
            features,
            http_port,
            http_concurrency,
        })
    }
}

/// The guest's file access identity: `process.user`, and the capabilities a
/// process of that user would have in effect after `execve` (the effective
/// set for root, the ambient set for any other user), as under runc. A spec
/// without `capabilities` keeps the shim's, as runc keeps its own.
fn identity(process: &oci_spec::runtime::Process) -> Identity {
    let user = process.user();
    let uid = user.uid();
    let capabilities = process.capabilities().as_ref().map(|caps| {
        let set = if uid == 0 {
            caps.effective()
        } else {
            caps.ambient()
        };
        let names: Vec<String> = set.iter().flatten().map(|c| c.to_string()).collect();
        wasmbox_engine::identity::capability_mask(names.iter().map(String::as_str))
    });
    Identity {
        uid,
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        capabilities,
    }
}

/// Files a guest may hold open when its spec sets no `RLIMIT_NOFILE`
/// (the soft limit a Linux process usually starts with).
pub const DEFAULT_OPEN_FILES_LIMIT: usize = 1024;

/// The soft `RLIMIT_NOFILE` of the spec, else [`DEFAULT_OPEN_FILES_LIMIT`].
fn open_files_limit(process: &oci_spec::runtime::Process) -> usize {
    process
        .rlimits()
        .iter()
        .flatten()
        .find(|r| r.typ() == oci_spec::runtime::PosixRlimitType::RlimitNofile)
        .map_or(DEFAULT_OPEN_FILES_LIMIT, |r| {
            usize::try_from(r.soft()).unwrap_or(usize::MAX)
        })
}
