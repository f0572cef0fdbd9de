//! wasmbox: WebAssembly modules and components as OCI images.
//!
//! The library behind the `wasmbox` CLI, laid out like go-containerregistry:
//! [`image`] is the model (a manifest and streamed blobs, the source and
//! destination traits, and [`image::copy`]), with `build` and `inspect`
//! beside it; [`store`] (OCI layout directories, the local store among
//! them), [`registry`] and [`archive`] are where images live, each a source
//! and a destination; [`location`] parses the names `copy` takes; [`pack`]
//! and [`run`] are the workflows; [`format`] is the one definition of the
//! image format, which the shim reads as well.

pub mod archive;
pub mod auth;
/// The image format, defined once in the `wasmbox-format` crate (the shim reads it too).
pub use wasmbox_format as format;
pub mod image;
pub mod location;
pub mod module;
pub mod pack;
pub mod progress;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod run;
pub mod sbom;
pub mod signing;
pub mod store;
