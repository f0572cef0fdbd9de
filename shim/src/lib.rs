//! containerd-shim-wasmtime: runs Wasm images under containerd.
//!
//! Split like runwasi: [`engine`] is the small wasmtime-specific part (it
//! knows nothing of containerd), [`spec`] turns an OCI runtime spec into the
//! engine's [`engine::RunSpec`], [`container`] is one container's lifecycle,
//! and the ttrpc task service in the binary is containerd plumbing only.

pub mod container;
pub mod engine;
pub mod spec;
