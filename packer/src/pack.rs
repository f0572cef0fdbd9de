//! `wasmbox pack`: a module file → an image in the store, and optionally in
//! an archive and an OCI layout. Each of those is a copy of the built image,
//! through the same [`copy`] as push and pull.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::image::{self, ImageDestination, PackOptions, copy};
use crate::location::{Endpoints, Location};
use crate::module::WasmModule;
use crate::progress::Progress;
use crate::reference::ImageRef;

/// What to pack and where to put it.
pub struct PackRequest<'a> {
    /// A `.wasm` binary or `.wat` text file.
    pub module: &'a Path,
    /// The export to run when the module is not a WASI command.
    pub export: Option<&'a str>,
    /// The image's name in the store.
    pub tag: &'a ImageRef,
    pub options: PackOptions,
    /// Also write an OCI archive here.
    pub archive: Option<PathBuf>,
    /// Also write into this OCI layout directory.
    pub oci_layout: Option<PathBuf>,
}

/// What was packed.
pub struct Packed {
    pub digest: String,
    pub os: String,
    pub world: String,
}

/// The file name of the module inside the image: the file's own name,
/// with `.wasm` for a `.wat` file.
pub fn module_name_for(path: &Path) -> Result<String> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the module path has no UTF-8 file name")?;
    Ok(match Path::new(file_name).extension() {
        Some(ext) if ext == "wasm" => file_name.to_string(),
        _ => format!(
            "{}.wasm",
            Path::new(file_name)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("module")
        ),
    })
}

/// Builds the image and copies it into the store (then the archive and
/// layout, if asked for). Nothing is named until the image is complete.
pub async fn pack(endpoints: &Endpoints<'_>, request: PackRequest<'_>) -> Result<Packed> {
    let module = WasmModule::load(request.module, request.export)?;
    let built = image::build(&module, &request.options)
        .with_context(|| format!("packing {}", request.module.display()))?;
    let hidden = Progress::hidden();
    let store = Location::Store(request.tag.clone());
    copy(
        &built,
        &mut store.open_destination(endpoints, None)?,
        &hidden,
    )
    .await?;
    let outputs = [
        request
            .archive
            .map(|path| Location::Archive { path, name: None }),
        request
            .oci_layout
            .map(|dir| Location::Layout { dir, name: None }),
    ];
    for output in outputs.into_iter().flatten() {
        let mut destination = output.open_destination(endpoints, Some(request.tag))?;
        let name = destination.name();
        copy(&built, &mut destination, &hidden)
            .await
            .with_context(|| format!("writing {name}"))?;
    }
    Ok(Packed {
        digest: built.digest(),
        os: request
            .options
            .os
            .clone()
            .unwrap_or_else(|| module.default_os().to_string()),
        world: module.world.to_string(),
    })
}
