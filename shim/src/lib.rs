//! containerd-shim-wasmtime: runs Wasm images under containerd.
//!
//! Split like runwasi, in layers that only look down:
//! - [`service`]: the ttrpc Task service, a thin adapter (registry, routing,
//!   events, error codes) over
//! - [`task`]: one [`task::Lifecycle`] for every task and exec, and the one
//!   [`task::Workload`] trait that the three kinds implement: a Wasm guest in
//!   this process ([`task::wasm`]), a Linux container run by [`runc`]
//!   ([`task::linux`], reaped by [`reaper`]), a pod's sandbox ([`task::sandbox`]).
//! - Below them, what the kinds share: [`spec`] turns an OCI runtime spec into
//!   the engine's [`engine::RunSpec`]; [`content`] reads modules kept in Wasm
//!   layers; [`mounts`] makes the guest's filesystem (every mount
//!   nodev,nosuid); [`cgroup`] and [`memory`] hold guests to their limits so
//!   that the kernel never OOM-kills the shim; [`pod`] reads the CRI's
//!   annotations and holds the pod's namespaces; [`stdio`] is the FIFOs and
//!   terminals of every kind; [`shared`] is the opt-in shim process that
//!   serves many containers of a group.
//! - [`engine`] (the `wasmbox-engine` crate) is the wasmtime-specific part;
//!   it knows nothing of containerd.

pub mod bootstrap;
pub mod cgroup;
pub mod content;
pub mod error;
pub mod info;
pub mod memory;
pub mod mounts;
pub mod options;
pub mod pod;
pub mod reaper;
pub mod runc;
pub mod service;
pub mod shared;
pub mod spec;
pub mod stdio;
pub mod task;
pub mod verification;

/// The engine lives in its own crate so that `wasmbox run` shares it.
pub use wasmbox_engine as engine;
