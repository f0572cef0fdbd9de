//! What one run of a guest is made of: the [`RunSpec`] the shim builds from
//! an OCI spec and `wasmbox run` from its flags. Plain data, so that every
//! other module can take it without depending on how it is run.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::identity::Identity;
use crate::meter::{GuestMeter, SharedBudget};

/// Everything the engine needs to run one program. Built from an OCI spec
/// (the shim) or from CLI flags (`wasmbox run`).
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// Host path of the `.wasm` (or `.wat`) file.
    pub module: PathBuf,
    /// Export to call instead of `_start` (core modules only).
    pub export: Option<String>,
    /// argv, argv[0] included.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Directories the guest may open, with their guest paths.
    pub preopens: Vec<Preopen>,
    /// Cap on the bytes of linear memory and tables the guest may have, all
    /// its memories and instances together (and, for `wasi:http`, all its
    /// requests in flight together).
    pub memory_limit: Option<usize>,
    /// The user, groups and capabilities the guest's file access runs as;
    /// `None` runs it as this process.
    pub identity: Option<Identity>,
    /// `wasi:http` requests one container serves at a time; more wait.
    pub http_concurrency: Option<usize>,
    /// The mount namespace the guest's threads run in: one where the
    /// process's `/etc/resolv.conf` and `/etc/hosts` are the container's, so
    /// that name lookups (WASI sockets, outgoing `wasi:http`) use its resolver
    /// configuration; `None` keeps this process's.
    pub mount_namespace: Option<Arc<OwnedFd>>,
    /// Files the guest may hold open at once (the spec's `RLIMIT_NOFILE`);
    /// past it opening fails with EMFILE, for this guest only.
    pub open_files_limit: Option<usize>,
    /// WASI sockets and name lookup in this process's network namespace.
    pub network: bool,
    /// Wasm features turned on (`true`) or off beyond wasmtime's defaults.
    pub features: Vec<(String, bool)>,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// Port to serve a `wasi:http` component on, when set by annotation;
    /// else the container's `PORT`, else 8080.
    pub http_port: Option<u16>,
    /// What the guest uses while it runs; shared by every clone of the spec.
    pub meter: Arc<GuestMeter>,
    /// The budget this guest shares with the others of its process, on top
    /// of `memory_limit`: the shim's cgroup limit less the shim's own memory.
    pub shared_budget: Option<Arc<SharedBudget>>,
}

/// `KEY=VALUE` strings (OCI `process.env`, image `Env`) as pairs; entries
/// without `=` are dropped.
pub fn env_pairs(list: impl IntoIterator<Item = String>) -> Vec<(String, String)> {
    list.into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// A host directory visible to the guest at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// Where one of the guest's standard streams goes.
#[derive(Debug, Clone, Default)]
pub enum Stdio {
    /// Empty input, discarded output.
    #[default]
    Null,
    /// A FIFO (containerd's stdio) or other file by path.
    Fifo(PathBuf),
    /// The slave side of a pseudo-terminal.
    Terminal(Arc<OwnedFd>),
    /// This process's own stream (`wasmbox run`).
    Inherit,
}
