//! wasmbox: WebAssembly modules and components as OCI images.
//!
//! The library behind the `wasmbox` CLI, laid out like go-containerregistry:
//! [`image`] builds and describes images (pure), [`store`] is the local OCI
//! layout, [`registry`] talks to registries, [`archive`] writes tars for
//! `ctr`/`docker`, and [`format`] is the one definition of the image format
//! that the shim reads as well.

pub mod archive;
pub mod auth;
/// The image format, defined once in the `wasmbox-format` crate (the shim reads it too).
pub use wasmbox_format as format;
pub mod image;
pub mod module;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod run;
pub mod store;
