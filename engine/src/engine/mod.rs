//! The process-wide [`Engine`]s, one per Wasm feature set and few of them:
//! how they are made and kept. Loading a program is in [`load`], running
//! one in [`run`]; both are `impl Engine` blocks over this module's state.

use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use wasmtime::component::{Linker as ComponentLinker, ResourceTable};
use wasmtime::{InstancePre, Linker};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::features::{Features, config};
use crate::http;
use crate::meter::MeteredLimits;
use crate::run_spec::RunSpec;
use crate::{ticker, wt};

mod load;
pub(crate) mod run;

/// A compiled module or component, linked against WASI and ready to
/// instantiate (every import resolved once, at create).
#[derive(Clone)]
pub struct Program(Linked);

#[derive(Clone)]
enum Linked {
    Core(InstancePre<CoreState>),
    /// A `wasi:cli` command.
    Component(CommandPre<ComponentState>),
    /// A `wasi:http/incoming-handler`, served on a port.
    Http(ProxyPre<http::HttpState>),
}

/// The process-wide wasmtime engine: compiled code and the epoch ticker are
/// shared by every container this process runs.
pub struct Engine {
    engine: wasmtime::Engine,
    /// Serves `wasi:http` handlers, which instantiate once per request:
    /// the same features on the pooling allocator (or `engine` where the
    /// host cannot reserve the pool's address space), made on first use.
    serving: OnceLock<wasmtime::Engine>,
    /// Compiles big core modules with Winch for their first start (see
    /// [`tiering`](crate::tiering)): the same features, made on first use;
    /// `None` where Winch cannot take them.
    baseline: OnceLock<Option<Baseline>>,
    features: Features,
    /// Linkers are built once per engine, on first use of each kind.
    core_linker: OnceLock<Linker<CoreState>>,
    command_linker: OnceLock<ComponentLinker<ComponentState>>,
    http_linker: OnceLock<ComponentLinker<http::HttpState>>,
}

/// A Winch engine and its linker for core modules.
struct Baseline {
    engine: wasmtime::Engine,
    core_linker: OnceLock<Linker<CoreState>>,
}

/// The most distinct feature sets (so engines) one process keeps.
pub const MAX_ENGINES: usize = 8;

impl Engine {
    /// The shared engine with wasmtime's default features, created on first use.
    pub fn global() -> Result<&'static Engine> {
        Self::with_features(&[])
    }

    /// The shared engine for `spec`'s feature set.
    pub fn for_spec(spec: &RunSpec) -> Result<&'static Engine> {
        Self::with_features(&spec.features)
    }

    /// One engine per distinct feature set, created once and kept for the
    /// life of the process, and at most [`MAX_ENGINES`] of them: each has
    /// its own code memory and ticker thread, and the sets come from
    /// annotations anyone who can create a container may write.
    pub fn with_features(features: &[(String, bool)]) -> Result<&'static Engine> {
        static ENGINES: OnceLock<std::sync::Mutex<Vec<(Features, &'static Engine)>>> =
            OnceLock::new();
        let engines = ENGINES.get_or_init(Default::default);
        let mut engines = engines.lock().unwrap_or_else(|e| e.into_inner());
        // The same features in another order or repeated are the same set.
        let mut canonical: Features = Vec::new();
        for (name, on) in features {
            canonical.retain(|(n, _)| n != name);
            canonical.push((name.clone(), *on));
        }
        canonical.sort();
        let features = canonical.as_slice();
        if let Some((_, e)) = engines.iter().find(|(f, _)| f.as_slice() == features) {
            return Ok(e);
        }
        if engines.len() >= MAX_ENGINES {
            bail!(
                "this shim already runs guests with {MAX_ENGINES} different Wasm feature sets, the most it keeps engines for"
            );
        }
        let engine: &'static Engine = Box::leak(Box::new(Engine::new(features)?));
        engines.push((features.to_vec(), engine));
        Ok(engine)
    }

    fn new(features: &[(String, bool)]) -> Result<Engine> {
        let engine = wt(
            wasmtime::Engine::new(&config(features)?),
            "configuring wasmtime with these features",
        )?;
        ticker::register(&engine).context("starting the epoch ticker")?;
        Ok(Engine {
            engine,
            serving: OnceLock::new(),
            baseline: OnceLock::new(),
            features: features.to_vec(),
            core_linker: OnceLock::new(),
            command_linker: OnceLock::new(),
            http_linker: OnceLock::new(),
        })
    }

    /// The engine `wasi:http` handlers are compiled for and served by.
    fn serving_engine(&self) -> &wasmtime::Engine {
        self.serving.get_or_init(|| {
            let pooled = config(&self.features).and_then(|mut config| {
                config.allocation_strategy(http::instance_pool());
                wt(wasmtime::Engine::new(&config), "reserving the instance pool")
            });
            let registered = pooled.and_then(|engine| {
                ticker::register(&engine).context("starting the epoch ticker")?;
                Ok(engine)
            });
            registered.unwrap_or_else(|e| {
                log::warn!(
                    "serving wasi:http without the pooling allocator (slower instantiation per request): {e:#}"
                );
                self.engine.clone()
            })
        })
    }

    /// The Winch engine for this feature set, or `None` (logged once) where
    /// Winch does not support one of the features.
    fn baseline(&self) -> Option<&Baseline> {
        self.baseline
            .get_or_init(|| {
                let engine = config(&self.features).and_then(|mut config| {
                    config.strategy(wasmtime::Strategy::Winch);
                    let engine = wt(wasmtime::Engine::new(&config), "configuring Winch")?;
                    ticker::register(&engine).context("starting the epoch ticker")?;
                    Ok(engine)
                });
                match engine {
                    Ok(engine) => Some(Baseline {
                        engine,
                        core_linker: OnceLock::new(),
                    }),
                    Err(e) => {
                        log::info!("big modules compile with Cranelift only: {e:#}");
                        None
                    }
                }
            })
            .as_ref()
    }
}

struct CoreState {
    wasi: WasiP1Ctx,
    limits: MeteredLimits,
    activity: ticker::WasmActivity,
}

pub(crate) struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MeteredLimits,
    activity: ticker::WasmActivity,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::parse_features;

    #[test]
    fn engines_are_shared_per_feature_set_and_bounded() {
        // The other tests of this process use the default engine: make it first.
        Engine::global().unwrap();
        let a = Engine::with_features(&parse_features("simd,tail-call").unwrap()).unwrap();
        let b = Engine::with_features(&parse_features("tail-call,+simd,simd").unwrap()).unwrap();
        assert!(
            std::ptr::eq(a, b),
            "the same set in another order got its own engine"
        );
        let sets = [
            "memory64",
            "-memory64",
            "multi-memory",
            "-multi-memory",
            "-tail-call",
            "extended-const",
            "wide-arithmetic",
            "custom-page-sizes",
            "-extended-const",
        ];
        let refused = sets
            .iter()
            .map(|set| Engine::with_features(&parse_features(set).unwrap()))
            .filter_map(Result::err)
            .next()
            .expect("more feature sets than MAX_ENGINES were all given engines");
        assert!(
            format!("{refused}").contains("different Wasm feature sets"),
            "{refused}"
        );
    }
}
