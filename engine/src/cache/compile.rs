//! Compiling through the cache: the one path the engine takes for modules
//! and components alike, so that every compile is logged as a hit or a
//! miss and the unsafe deserializing is in one place.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use wasmbox_format::Digest;

use super::{Kind, ModuleCache, Outcome};

/// What the cache holds: a core module or a component.
pub(crate) trait Compiled: Sized {
    const KIND: Kind;
    fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
    /// From an artifact of a whole cache entry (see the SAFETY notes).
    fn load(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
}

impl Compiled for wasmtime::Module {
    const KIND: Kind = Kind::Module;
    fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        wasmtime::Module::new(engine, bytes)
    }
    fn load(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: the artifact comes from a cache entry, which only this
        // program writes (the directory is this user's and 0700, see
        // `ModuleCache::open`), which was read whole (its checksum matched),
        // and whose header wasmtime checks against this engine's version
        // and configuration before it maps any code.
        unsafe { wasmtime::Module::deserialize(engine, artifact) }
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        wasmtime::Module::serialize(self)
    }
}

impl Compiled for wasmtime::component::Component {
    const KIND: Kind = Kind::Component;
    fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        wasmtime::component::Component::new(engine, bytes)
    }
    fn load(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: as for `Module::load` above.
        unsafe { wasmtime::component::Component::deserialize(engine, artifact) }
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        wasmtime::component::Component::serialize(self)
    }
}

/// Compiles `bytes` (read from `path`) through `cache` when there is one,
/// logging what happened: the one path the engine takes for modules and
/// components alike.
pub(crate) fn compile_cached<T: Compiled>(
    cache: Option<&ModuleCache>,
    engine: &wasmtime::Engine,
    bytes: &[u8],
    digest: &Digest,
    path: &Path,
    compiler: &str,
) -> Result<T> {
    let compile = || {
        T::compile(engine, bytes).map_err(|e| {
            anyhow::Error::from(e).context(format!(
                "{} is not a valid WebAssembly module",
                path.display()
            ))
        })
    };
    let Some(cache) = cache else {
        return compile();
    };
    let started = Instant::now();
    let entry = cache.entry_path(engine, T::KIND, digest);
    let (t, outcome) =
        cache.load_or_compile(&entry, |a| T::load(engine, a), compile, T::serialize)?;
    let ms = started.elapsed().as_millis();
    let what = path.display();
    match outcome {
        Outcome::Hit => log_hit(path, &entry, ms),
        Outcome::Compiled => log::info!(
            "module cache miss: compiled {what} with {compiler} in {ms} ms, stored as {}",
            entry.display()
        ),
        Outcome::CompiledUncached => {
            log::info!("module cache miss: compiled {what} with {compiler} in {ms} ms, not stored")
        }
    }
    Ok(t)
}

/// `bytes`' artifact for `engine` if `cache` holds a usable one (logged as
/// a hit); never compiles.
pub(crate) fn load_cached<T: Compiled>(
    cache: &ModuleCache,
    engine: &wasmtime::Engine,
    digest: &Digest,
    path: &Path,
) -> Option<T> {
    let started = Instant::now();
    let entry = cache.entry_path(engine, T::KIND, digest);
    let t = cache.try_load(&entry, &|a: &[u8]| T::load(engine, a))?;
    log_hit(path, &entry, started.elapsed().as_millis());
    Some(t)
}

fn log_hit(path: &Path, entry: &Path, ms: u128) {
    log::info!(
        "module cache hit: loaded {} from {} in {ms} ms",
        path.display(),
        entry.display()
    );
}
