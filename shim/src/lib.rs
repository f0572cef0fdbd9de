//! containerd-shim-wasmtime: runs Wasm images under containerd.
//!
//! Split like runwasi: [`engine`] (the `wasmbox-engine` crate) is the small
//! wasmtime-specific part (it knows nothing of containerd), [`spec`] turns an OCI runtime spec into the
//! engine's [`engine::RunSpec`], [`container`] is one container's lifecycle,
//! [`content`] reads modules kept in an image's Wasm layers, [`memory`] sizes what the guests may take so that the kernel never
//! OOM-kills the shim, [`mounts`] makes
//! the guest's filesystem (every mount nodev,nosuid), [`pod`] is the
//! Kubernetes sandbox and pod network, [`linux`] runs a pod's native Linux
//! containers with [`runc`] (the shim reaps them: [`reaper`]), [`stdio`]
//! is the FIFOs and terminals of both kinds, and the ttrpc task service in the binary is containerd plumbing only.

pub mod cgroup;
pub mod container;
pub mod content;
pub mod error;
pub mod linux;
pub mod memory;
pub mod mounts;
pub mod network;
pub mod pod;
pub mod reaper;
pub mod runc;
pub mod spec;
pub mod stdio;

/// The engine lives in its own crate so that `wasmbox run` shares it.
pub use wasmbox_engine as engine;
