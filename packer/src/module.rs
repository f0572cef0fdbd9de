//! Reading and checking a Wasm module or component before it is packed:
//! binary or `.wat` text in, validated bytes and what kind of program it is out.

use std::path::{Path, PathBuf};

use wasmparser::{
    FuncToValidate, FuncValidatorAllocations, FunctionBody, Parser, Payload, ValidPayload,
    Validator, ValidatorResources, WasmFeatures,
};

use crate::format::{OS_WASIP1, OS_WASIP2, WasiWorld};

/// Why a file cannot be packed. Each message is one sentence naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a WebAssembly module: it does not start with the \\0asm magic bytes (pass a .wasm binary or a .wat text file)"
    )]
    NotWasm { path: PathBuf },
    #[error("{path} is not valid WebAssembly text: {message}")]
    InvalidText { path: PathBuf, message: String },
    #[error("{path} is not a valid WebAssembly module: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{path} is neither a WASI command (it exports no `_start` function) nor a component; pass --export NAME to choose the function to run"
    )]
    NotRunnable { path: PathBuf },
    #[error("{path} has no exported function named `{export}` (exported functions: {available})")]
    MissingExport {
        path: PathBuf,
        export: String,
        available: String,
    },
    #[error("{path} is a component; --export only applies to core modules")]
    ExportOnComponent { path: PathBuf },
}

/// Whether the binary is a core module or a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    Core,
    Component,
}

/// A validated module with what the image needs to know about it.
#[derive(Debug, Clone)]
pub struct WasmModule {
    /// The binary (text input is compiled).
    pub bytes: Vec<u8>,
    pub kind: ModuleKind,
    pub world: WasiWorld,
    /// Function to run instead of `_start` (`--export`).
    pub export: Option<String>,
    /// Top-level import names (module names for core modules, deduplicated).
    pub imports: Vec<String>,
    /// Top-level export names.
    pub exports: Vec<String>,
}

impl WasmModule {
    /// Reads `path` (binary or `.wat`), validates it and checks that it can be
    /// run: a WASI command, a component, or a module whose `export` exists.
    pub fn load(path: &Path, export: Option<&str>) -> Result<Self, ModuleError> {
        let raw = std::fs::read(path).map_err(|source| ModuleError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let is_text = path.extension().is_some_and(|e| e == "wat" || e == "wast");
        let bytes = if raw.starts_with(b"\0asm") {
            raw
        } else if is_text {
            wat::parse_bytes(&raw)
                .map_err(|e| ModuleError::InvalidText {
                    path: path.to_path_buf(),
                    message: one_line(&e.to_string()),
                })?
                .into_owned()
        } else {
            return Err(ModuleError::NotWasm {
                path: path.to_path_buf(),
            });
        };
        Self::from_bytes(path, bytes, export)
    }

    /// Validates `bytes` (read from `path`, which only names it in errors).
    pub fn from_bytes(
        path: &Path,
        bytes: Vec<u8>,
        export: Option<&str>,
    ) -> Result<Self, ModuleError> {
        let invalid = |e: wasmparser::BinaryReaderError| ModuleError::Invalid {
            path: path.to_path_buf(),
            message: format!("{} (at byte offset {})", e.message(), e.offset()),
        };
        validate(&bytes).map_err(invalid)?;
        let kind = if Parser::is_component(&bytes) {
            ModuleKind::Component
        } else {
            ModuleKind::Core
        };
        let (imports, exports, exported_funcs) = top_level_names(&bytes).map_err(invalid)?;

        let world = match kind {
            ModuleKind::Component => {
                if export.is_some() {
                    return Err(ModuleError::ExportOnComponent {
                        path: path.to_path_buf(),
                    });
                }
                if exports
                    .iter()
                    .any(|e| e.starts_with("wasi:http/incoming-handler"))
                {
                    WasiWorld::HttpProxy
                } else if exports.iter().any(|e| e.starts_with("wasi:cli/run")) {
                    WasiWorld::CliCommand
                } else {
                    WasiWorld::Component
                }
            }
            ModuleKind::Core => {
                match export {
                    Some(name) if !exported_funcs.iter().any(|f| f == name) => {
                        return Err(ModuleError::MissingExport {
                            path: path.to_path_buf(),
                            export: name.to_string(),
                            available: if exported_funcs.is_empty() {
                                "none".to_string()
                            } else {
                                exported_funcs.join(", ")
                            },
                        });
                    }
                    Some(_) => {}
                    None if !exported_funcs.iter().any(|f| f == "_start") => {
                        return Err(ModuleError::NotRunnable {
                            path: path.to_path_buf(),
                        });
                    }
                    None => {}
                }
                if imports
                    .iter()
                    .any(|m| m.starts_with("wasi_snapshot_preview1") || m == "wasi_unstable")
                {
                    WasiWorld::Preview1
                } else {
                    WasiWorld::CoreOnly
                }
            }
        };
        Ok(WasmModule {
            bytes,
            kind,
            world,
            export: export.map(str::to_string),
            imports,
            exports,
        })
    }

    /// The `os` of a Wasm artifact of this module (the CNCF spec's WASI version).
    pub fn default_os(&self) -> &'static str {
        match self.kind {
            ModuleKind::Core => OS_WASIP1,
            ModuleKind::Component => OS_WASIP2,
        }
    }
}

/// Import names, export names and exported function names of the outermost
/// module or component (nested modules and components are skipped).
type Names = (Vec<String>, Vec<String>, Vec<String>);

/// Validates `bytes` as `Validator::validate_all` does, with the function
/// bodies (nearly all of a big module's bytes) checked on every core, as
/// wasmtime validates when it compiles. Of several invalid bodies, the
/// first in the file is reported, whatever the number of cores.
fn validate(bytes: &[u8]) -> Result<(), wasmparser::BinaryReaderError> {
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut bodies: Vec<(FuncToValidate<ValidatorResources>, FunctionBody<'_>)> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        if let ValidPayload::Func(function, body) = validator.payload(&payload?)? {
            bodies.push((function, body));
        }
    }
    if bodies.is_empty() {
        return Ok(());
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(bodies.len());
    let per_worker = bodies.len().div_ceil(workers);
    let mut batches = Vec::with_capacity(workers);
    while !bodies.is_empty() {
        let rest = bodies.split_off(bodies.len().min(per_worker));
        batches.push(std::mem::replace(&mut bodies, rest));
    }
    let first_error = |batch: Vec<(FuncToValidate<ValidatorResources>, FunctionBody<'_>)>| {
        let mut allocations = FuncValidatorAllocations::default();
        for (function, body) in batch {
            let mut validator = function.into_validator(allocations);
            validator.validate(&body)?;
            allocations = validator.into_allocations();
        }
        Ok::<(), wasmparser::BinaryReaderError>(())
    };
    std::thread::scope(|scope| {
        let mut batches = batches.into_iter();
        let own = batches.next();
        let others: Vec<_> = batches
            .map(|batch| scope.spawn(move || first_error(batch)))
            .collect();
        // Batches are in file order, so the first error found in order is
        // the file's first.
        let mut result = own.map_or(Ok(()), first_error);
        for other in others {
            let other = other.join().expect("a validation thread panicked");
            if result.is_ok() {
                result = other;
            }
        }
        result
    })
}

fn top_level_names(bytes: &[u8]) -> Result<Names, wasmparser::BinaryReaderError> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut funcs = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ImportSection(reader) if depth == 1 => {
                for import in reader.into_imports() {
                    let import = import?;
                    if !imports.iter().any(|m| m == import.module) {
                        imports.push(import.module.to_string());
                    }
                }
            }
            Payload::ExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export?;
                    if export.kind == wasmparser::ExternalKind::Func {
                        funcs.push(export.name.to_string());
                    }
                    exports.push(export.name.to_string());
                }
            }
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(import?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(export?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports, funcs))
}

/// Keeps the first line of a multi-line tool message (wat errors draw a caret diagram).
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    match lines.next() {
        Some(location) if location.starts_with("-->") => {
            format!("{first} ({})", location.trim_start_matches("-->").trim())
        }
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_wat(text: &str, export: Option<&str>) -> Result<WasmModule, ModuleError> {
        WasmModule::from_bytes(Path::new("t.wasm"), wat::parse_str(text).unwrap(), export)
    }

    #[test]
    fn wasi_command_is_preview1() {
        let m = load_wat(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (func (export "_start")) (memory (export "memory") 1))"#,
            None,
        )
        .unwrap();
        assert_eq!(m.kind, ModuleKind::Core);
        assert_eq!(m.world, WasiWorld::Preview1);
        assert_eq!(m.default_os(), "wasip1");
    }

    #[test]
    fn library_module_needs_an_export() {
        let text = r#"(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#;
        let err = load_wat(text, None).unwrap_err().to_string();
        assert!(err.contains("neither a WASI command"), "{err}");
        let err = load_wat(text, Some("sub")).unwrap_err().to_string();
        assert!(
            err.contains("no exported function named `sub`") && err.contains("add"),
            "{err}"
        );
        assert_eq!(
            load_wat(text, Some("add")).unwrap().world,
            WasiWorld::CoreOnly
        );
    }

    #[test]
    fn component_exporting_cli_run_is_a_command() {
        let m = load_wat(
            r#"(component
                (core module $m (func (export "run") (result i32) i32.const 0))
                (core instance $i (instantiate $m))
                (func $run (result (result)) (canon lift (core func $i "run")))
                (instance $inst (export "run" (func $run)))
                (export "wasi:cli/run@0.2.0" (instance $inst)))"#,
            None,
        )
        .unwrap();
        assert_eq!(m.kind, ModuleKind::Component);
        assert_eq!(m.world, WasiWorld::CliCommand);
        assert_eq!(m.exports, vec!["wasi:cli/run@0.2.0"]);
    }

    #[test]
    fn truncated_module_is_rejected_with_offset() {
        let mut bytes = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
        bytes.truncate(bytes.len() - 3);
        let err = WasmModule::from_bytes(Path::new("cut.wasm"), bytes, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cut.wasm is not a valid WebAssembly module"),
            "{err}"
        );
    }
}
