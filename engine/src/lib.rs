//! The wasmtime-specific part of wasmbox: one [`Engine`] per process, and
//! running one [`RunSpec`] to an exit status. It never sees an OCI or
//! containerd type; the shim and `wasmbox run` each build a `RunSpec`.
//!
//! By role: [`RunSpec`] (`run_spec`) is what to run, `engine` makes and keeps
//! the engines and loads and runs programs, `module_file` reads modules from
//! disk, and the other modules are the pieces a run is made of.

pub mod cache;
mod engine;
mod features;
mod guest;
pub mod http;
pub mod identity;
mod kill;
mod meter;
mod module_file;
mod opens;
mod run_spec;
mod stdio;
mod ticker;
pub mod tiering;

pub use engine::run::TRAP_EXIT_STATUS;
pub use engine::{Engine, MAX_ENGINES, Program};
pub use features::{known_features, parse_features};
pub use identity::Identity;
pub use kill::KillSwitch;
pub use meter::{GuestMeter, SharedBudget};
pub use module_file::{
    MAX_MODULE_BYTES, MAX_MODULE_ENV, max_module_bytes, read_module, resolve_in_root,
};
pub use run_spec::{Preopen, RunSpec, Stdio, env_pairs};
pub use stdio::on_io_thread_start;

/// Adds context to a wasmtime error.
fn wt<T>(r: wasmtime::Result<T>, what: &str) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::Error::from(e).context(what.to_string()))
}
