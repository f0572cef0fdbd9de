//! Loading a program: its bytes read, compiled (through the module cache,
//! with Winch first for big ones) and linked against WASI once, at create,
//! so that a bad module fails there and each start only instantiates.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{Linker, Module};
use wasmtime_wasi::p2::bindings::CommandPre;

use super::{ComponentState, CoreState, Engine, Linked, Program};
use crate::cache::compile::{compile_cached, load_cached};
use crate::cache::{Kind, ModuleCache};
use crate::module_file::read_module;
use crate::run_spec::RunSpec;
use crate::{http, opens, tiering, wt};

impl Engine {
    /// Reads, compiles (or loads from the module cache) and links the
    /// program `spec` names. Done at container create, so a corrupt module
    /// fails there with a clear error.
    pub fn load(&self, spec: &RunSpec) -> Result<Program> {
        let bytes = read_module(&spec.module)?;
        let cache = ModuleCache::shared();
        if wasmparser::Parser::is_component(&bytes) {
            let serves_http = http::exports_incoming_handler(&bytes);
            let engine = if serves_http {
                self.serving_engine()
            } else {
                &self.engine
            };
            let component: Component = compile_cached(
                cache,
                engine,
                &bytes,
                &wasmbox_format::Digest::of(&bytes),
                &spec.module,
                "Cranelift",
            )?;
            if serves_http && http::is_http_handler(engine, &component) {
                http::check(spec)?;
                let linker = self.linker(&self.http_linker, engine, http::linker)?;
                let pre = http::pre_instantiate(linker, &component)
                    .with_context(|| format!("{} cannot be served", spec.module.display()))?;
                return Ok(Program(Linked::Http(pre)));
            }
            let linker = self.linker(&self.command_linker, engine, command_linker)?;
            let pre = wt(
                linker.instantiate_pre(&component),
                "the component imports something WASI does not provide",
            )
            .and_then(|pre| {
                wt(
                    CommandPre::new(pre),
                    "the component is not a wasi:cli command",
                )
            })
            .with_context(|| format!("{} cannot run", spec.module.display()))?;
            Ok(Program(Linked::Component(pre)))
        } else if bytes.starts_with(b"\0asm") || spec.module.extension().is_some_and(|e| e == "wat")
        {
            let (module, linker) = self.compile_core(&bytes, &spec.module)?;
            let pre = wt(
                linker.instantiate_pre(&module),
                "the module imports something WASI does not provide",
            )
            .with_context(|| format!("{} cannot run", spec.module.display()))?;
            Ok(Program(Linked::Core(pre)))
        } else {
            bail!(
                "{} is not a WebAssembly module (it does not start with \\0asm)",
                spec.module.display()
            )
        }
    }

    /// The linker in `slot` (always for `engine`), built on first use.
    fn linker<'a, L>(
        &self,
        slot: &'a OnceLock<L>,
        engine: &wasmtime::Engine,
        build: fn(&wasmtime::Engine) -> Result<L>,
    ) -> Result<&'a L> {
        if let Some(linker) = slot.get() {
            return Ok(linker);
        }
        let linker = build(engine).context("linking WASI")?;
        Ok(slot.get_or_init(|| linker))
    }

    /// `bytes` (read from `path`) compiled for this engine: from the cache,
    /// or with Winch first when it is big and uncached (see [`tiering`]),
    /// else with Cranelift.
    fn compile_core(&self, bytes: &[u8], path: &Path) -> Result<(Module, &Linker<CoreState>)> {
        let cache = ModuleCache::shared();
        // Hashed once: the cache keys of every compiler derive from it.
        let digest = wasmbox_format::Digest::of(bytes);
        if let Some(cache) = cache
            && tiering::wanted(bytes.len())
            && let Some(baseline) = self.baseline()
        {
            if let Some(module) = load_cached::<Module>(cache, &self.engine, &digest, path) {
                let linker = self.linker(&self.core_linker, &self.engine, core_linker)?;
                return Ok((module, linker));
            }
            match compile_cached::<Module>(
                Some(cache),
                &baseline.engine,
                bytes,
                &digest,
                path,
                "Winch",
            ) {
                Ok(module) => {
                    tiering::tier_up_in_background(
                        cache,
                        self.engine.clone(),
                        bytes.to_vec(),
                        cache.entry_path(&baseline.engine, Kind::Module, &digest),
                        digest,
                        path.to_path_buf(),
                    );
                    let linker =
                        self.linker(&baseline.core_linker, &baseline.engine, core_linker)?;
                    return Ok((module, linker));
                }
                // A feature Winch lacks (tail calls, GC, ...): Cranelift
                // decides, and explains an invalid module.
                Err(e) => log::info!("Winch cannot compile {}: {e:#}", path.display()),
            }
        }
        let module = compile_cached(cache, &self.engine, bytes, &digest, path, "Cranelift")?;
        let linker = self.linker(&self.core_linker, &self.engine, core_linker)?;
        Ok((module, linker))
    }
}

/// WASI preview 1 for core modules, with the guarded opens.
fn core_linker(engine: &wasmtime::Engine) -> Result<Linker<CoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut CoreState| &mut s.wasi)?;
    opens::guard_p1_opens(&mut linker, |s| &mut s.wasi)?;
    Ok(linker)
}

/// WASI 0.2 for `wasi:cli` commands, with the guarded opens.
fn command_linker(engine: &wasmtime::Engine) -> Result<ComponentLinker<ComponentState>> {
    let mut linker = ComponentLinker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    opens::guard_p2_opens(&mut linker)?;
    Ok(linker)
}
