//! The compiled-module cache shared by the shim and `wasmbox run`: the first
//! start of a module compiles it with Cranelift, every later start of the
//! same bytes (any container, any image) loads the compiled artifact.
//!
//! Why not wasmtime's own `cache` feature: it has no lock, so N containers
//! of a new module created at once compile it N times; its entries carry no
//! checksum; it reports neither hit nor miss; and it runs a clean-up worker
//! thread in every process. Here:
//!
//! - An entry is `<module sha256>-<engine hash>.cwasm`, where the engine
//!   hash covers [`wasmtime::Engine::precompile_compatibility_hash`] (wasmtime
//!   version, compiler settings, enabled Wasm features) and the kind (module
//!   or component). An entry of another engine is never even looked at; one
//!   that wasmtime still refuses is a miss, removed and recompiled.
//! - An entry is `MAGIC`, the artifact's sha256 in hex, then the artifact. It
//!   is written to a temp file and renamed into place, so a reader sees a
//!   whole entry or none; a truncated or corrupt one fails its checksum and
//!   is removed and recompiled.
//! - A miss takes an exclusive `flock` on `<entry>.lock` and looks again
//!   before it compiles, so concurrent first starts compile once.
//! - The directory is created `0700` and used only when it is owned by this
//!   process's user and writable by no one else: the artifacts are machine
//!   code that wasmtime runs without re-validating. Guests never see it (it
//!   is no preopen).
//! - Its size is capped ([`DEFAULT_MAX_BYTES`], or [`MAX_ENV`]): a hit
//!   touches its entry's mtime, and a store evicts the least recently used
//!   entries until the directory fits.

use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use wasmbox_format::{Digest, Hasher as DigestHasher};

/// Environment variable naming the cache directory (for the shim:
/// containerd's, which its shims inherit).
pub const DIR_ENV: &str = "WASMBOX_CACHE_DIR";
/// Environment variable setting the cap in MiB; `0` turns the cache off.
pub const MAX_ENV: &str = "WASMBOX_CACHE_MAX_MIB";
/// Where root's processes (the shim) keep the cache by default.
pub const ROOT_DIR: &str = "/var/lib/wasmbox/cache";
/// The default cap: room for a few dozen typical programs (a hello world
/// compiles to ~100 KiB, CPython to ~40 MiB) at a small share of a node's disk.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Every entry starts with these bytes (the format's version is in them).
const MAGIC: &[u8; 8] = b"wbxcode1";
const HEADER_LEN: usize = MAGIC.len() + 64;
/// Temp and lock files older than this belong to a process that died
/// mid-store; eviction removes them.
const STALE_AFTER: Duration = Duration::from_secs(600);

/// What a [`ModuleCache::load_or_compile`] did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded a compiled artifact.
    Hit,
    /// Compiled, and stored the artifact.
    Compiled,
    /// Compiled; the cache is off or could not store it.
    CompiledUncached,
}

/// A compiled-module cache directory with a size cap.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
    max_bytes: u64,
}

/// Whether an entry holds a core module or a component (a different kind
/// of artifact for the same bytes' hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Module,
    Component,
}

impl ModuleCache {
    /// The cache this process uses: [`DIR_ENV`] if set, else [`ROOT_DIR`] for
    /// root and `$XDG_CACHE_HOME/wasmbox/modules` (or `~/.cache/…`) for
    /// others; capped by [`MAX_ENV`]. `None` when it is turned off or
    /// there is no such directory; a directory that cannot be used safely
    /// is logged once and skipped (containers still start, uncached).
    pub fn from_env() -> Option<ModuleCache> {
        let max_bytes = match std::env::var(MAX_ENV) {
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(0) => return None,
                Ok(mib) => mib.saturating_mul(1 << 20),
                Err(_) => {
                    log::warn!(
                        "{MAX_ENV}={v} is not a number of MiB; using {} MiB",
                        DEFAULT_MAX_BYTES >> 20
                    );
                    DEFAULT_MAX_BYTES
                }
            },
            Err(_) => DEFAULT_MAX_BYTES,
        };
        let dir = match std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d),
            // SAFETY: geteuid(2) has no preconditions and cannot fail.
            None if unsafe { libc::geteuid() } == 0 => PathBuf::from(ROOT_DIR),
            None => std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?
                .join("wasmbox/modules"),
        };
        match ModuleCache::open(&dir, max_bytes) {
            Ok(cache) => Some(cache),
            Err(e) => {
                log::warn!("not caching compiled modules: {e:#}");
                None
            }
        }
    }

    /// The process-wide cache ([`ModuleCache::from_env`], looked up once).
    pub fn shared() -> Option<&'static ModuleCache> {
        // The engine's unit tests never write to the machine's cache.
        if cfg!(test) {
            return None;
        }
        static CACHE: std::sync::OnceLock<Option<ModuleCache>> = std::sync::OnceLock::new();
        CACHE.get_or_init(ModuleCache::from_env).as_ref()
    }

    /// Opens (creating it `0700` if missing) the cache at `dir`. Refuses a
    /// directory another user owns or others may write.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<ModuleCache> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the module cache {}", dir.display()))?;
        let meta = std::fs::symlink_metadata(dir)
            .with_context(|| format!("cannot stat the module cache {}", dir.display()))?;
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_dir() {
            bail!("the module cache {} is not a directory", dir.display());
        }
        if meta.uid() != euid {
            bail!(
                "the module cache {} is owned by uid {}, not this process's uid {euid}",
                dir.display(),
                meta.uid()
            );
        }
        if meta.mode() & 0o022 != 0 {
            bail!(
                "the module cache {} is writable by other users (mode {:o})",
                dir.display(),
                meta.mode() & 0o7777
            );
        }
        Ok(ModuleCache {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry for `bytes` compiled as `kind` by `engine`.
    pub fn entry_path(&self, engine: &wasmtime::Engine, kind: Kind, module: &Digest) -> PathBuf {
        let mut hasher = StableHasher::default();
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        hasher.0.update(match kind {
            Kind::Module => b"module".as_slice(),
            Kind::Component => b"component".as_slice(),
        });
        let engine_hash = hasher.0.finish();
        self.dir.join(format!(
            "{}-{}.cwasm",
            module.hex(),
            &engine_hash.hex()[..16]
        ))
    }

    /// Loads `bytes`' artifact if cached; else, holding the entry's lock,
    /// compiles with `compile` and stores what `serialize` makes of the
    /// result. `deserialize` turns a stored artifact back into a `T`.
    pub fn load_or_compile<T>(
        &self,
        entry: &Path,
        deserialize: impl Fn(&[u8]) -> wasmtime::Result<T>,
        compile: impl FnOnce() -> Result<T>,
        serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
    ) -> Result<(T, Outcome)> {
        if let Some(t) = self.try_load(entry, &deserialize) {
            return Ok((t, Outcome::Hit));
        }
        let lock = self.lock(entry);
        // Another process may have stored it while this one waited.
        if lock.is_some()
            && let Some(t) = self.try_load(entry, &deserialize)
        {
            drop_lock(lock, entry);
            return Ok((t, Outcome::Hit));
        }
        let compiled = compile();
        let outcome = match &compiled {
            Ok(t) if lock.is_some() => match serialize(t)
                .map_err(anyhow::Error::from)
                .and_then(|artifact| self.store(entry, &artifact))
            {
                Ok(()) => Outcome::Compiled,
                Err(e) => {
                    log::warn!(
                        "cannot store {} in the module cache: {e:#}",
                        entry.display()
                    );
                    Outcome::CompiledUncached
                }
            },
            _ => Outcome::CompiledUncached,
        };
        drop_lock(lock, entry);
        Ok((compiled?, outcome))
    }

    /// The entry's artifact if it is whole and wasmtime takes it; a corrupt
    /// or refused entry is removed (and logged).
    fn try_load<T>(
        &self,
        entry: &Path,
        deserialize: &impl Fn(&[u8]) -> wasmtime::Result<T>,
    ) -> Option<T> {
        let (file, data) = match read_entry(entry, self.max_bytes) {
            Ok(Some(read)) => read,
            Ok(None) => return None,
            Err(e) => {
                log::warn!(
                    "module cache entry {} is unusable: {e:#}; compiling again",
                    entry.display()
                );
                let _ = std::fs::remove_file(entry);
                return None;
            }
        };
        match deserialize(&data[HEADER_LEN..]) {
            Ok(t) => {
                // Recently used: eviction takes the oldest mtime first
                // (futimens on the descriptor read: this user owns the file).
                let _ = file.set_modified(SystemTime::now());
                Some(t)
            }
            Err(e) => {
                log::warn!(
                    "module cache entry {} was refused by wasmtime ({e}); compiling again",
                    entry.display()
                );
                let _ = std::fs::remove_file(entry);
                None
            }
        }
    }

    /// An exclusive lock on `<entry>.lock`; `None` (compile without
    /// storing) when it cannot be taken.
    fn lock(&self, entry: &Path) -> Option<File> {
        let path = lock_path(entry);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path);
        match file.and_then(|f| f.lock().map(|()| f)) {
            Ok(f) => Some(f),
            Err(e) => {
                log::warn!(
                    "cannot lock {}: {e}; compiling without caching",
                    path.display()
                );
                None
            }
        }
    }

    /// Writes `artifact` as `entry` (temp file + rename), then evicts least
    /// recently used entries until the cache fits its cap.
    fn store(&self, entry: &Path, artifact: &[u8]) -> Result<()> {
        let size = (HEADER_LEN + artifact.len()) as u64;
        if size > self.max_bytes {
            bail!(
                "its {} MiB exceed the cache's cap of {} MiB",
                size >> 20,
                self.max_bytes >> 20
            );
        }
        self.evict(size, entry);
        let mut tmp = tempfile::Builder::new()
            .prefix(".store-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .context("creating a temp file")?;
        tmp.write_all(&header(artifact))
            .and_then(|()| tmp.write_all(artifact))
            .context("writing the artifact")?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .context("setting its mode")?;
        tmp.persist(entry).context("renaming it into place")?;
        Ok(())
    }

    /// Removes least recently used entries until `incoming` more bytes fit
    /// under the cap (never `keep`), and temp or lock files left by a
    /// process that died mid-store.
    fn evict(&self, incoming: u64, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut total = 0u64;
        for item in dir.flatten() {
            let path = item.path();
            let Ok(meta) = item.metadata() else { continue };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".cwasm") {
                total += meta.len();
                if path != keep {
                    entries.push((modified, meta.len(), path));
                }
            } else if (name.ends_with(".tmp") || name.ends_with(".lock"))
                && now.duration_since(modified).unwrap_or_default() > STALE_AFTER
            {
                let _ = std::fs::remove_file(&path);
            }
        }
        entries.sort();
        for (_, len, path) in entries {
            if total + incoming <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                log::info!("module cache: evicted {}", path.display());
                total -= len;
            }
        }
    }
}

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

fn lock_path(entry: &Path) -> PathBuf {
    let mut name = entry.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Removes the lock file, then releases the lock: whoever waits on it (or
/// creates a new one) looks for the entry again after taking it, and finds
/// the stored one.
fn drop_lock(lock: Option<File>, entry: &Path) {
    if let Some(lock) = lock {
        let _ = std::fs::remove_file(lock_path(entry));
        drop(lock);
    }
}

/// The entry file, open, and its whole content with the header checked:
/// `None` when it does not exist; an error when it is truncated, foreign or
/// corrupt.
fn read_entry(entry: &Path, max_bytes: u64) -> Result<Option<(File, Vec<u8>)>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(entry)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot open it"),
    };
    let meta = file.metadata().context("cannot stat it")?;
    if !meta.is_file() || meta.len() > max_bytes {
        bail!("it is not a regular file under the cache's cap");
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut data).context("cannot read it")?;
    if data.len() < HEADER_LEN || &data[..MAGIC.len()] != MAGIC {
        bail!("it does not start with wasmbox's cache header");
    }
    if header(&data[HEADER_LEN..]) != data[..HEADER_LEN] {
        bail!("its checksum does not match (truncated or corrupt)");
    }
    Ok(Some((file, data)))
}

/// Wraps `artifact` as a cache entry: for tests that plant entries.
pub fn seal(artifact: &[u8]) -> Vec<u8> {
    let mut out = header(artifact);
    out.extend_from_slice(artifact);
    out
}

/// An entry's header for `artifact`: the magic and the artifact's digest.
fn header(artifact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(Digest::of(artifact).hex().as_bytes());
    out
}

/// Feeds `Hash` output into sha256, which (unlike std's hasher) is the same
/// in every build, so keys stay valid across shim upgrades that keep the
/// wasmtime configuration.
#[derive(Default)]
struct StableHasher(DigestHasher);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest of the bytes written is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, max: u64) -> ModuleCache {
        ModuleCache::open(dir, max).unwrap()
    }

    fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> Result<wasmtime::Module> {
        Ok(wasmtime::Module::new(engine, bytes)?)
    }

    fn load(
        cache: &ModuleCache,
        engine: &wasmtime::Engine,
        bytes: &[u8],
    ) -> (wasmtime::Module, Outcome) {
        let entry = cache.entry_path(engine, Kind::Module, &Digest::of(bytes));
        cache
            .load_or_compile(
                &entry,
                // SAFETY: entries are written only by this cache (in a temp
                // dir of this test) and checked against their checksum.
                |a| unsafe { wasmtime::Module::deserialize(engine, a) },
                || compile(engine, bytes),
                |m| m.serialize(),
            )
            .unwrap()
    }

    const WAT: &str = r#"(module (func (export "f") (result i32) i32.const 42))"#;

    #[test]
    fn second_load_is_a_hit_and_a_corrupt_entry_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(&dir.path().join("c"), 1 << 30);
        let engine = wasmtime::Engine::default();
        let bytes = WAT.as_bytes().to_vec();
        assert_eq!(load(&cache, &engine, &bytes).1, Outcome::Compiled);
        assert_eq!(load(&cache, &engine, &bytes).1, Outcome::Hit);
        let entry = cache.entry_path(&engine, Kind::Module, &Digest::of(&bytes));
        let mut data = std::fs::read(&entry).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&entry, &data).unwrap();
        assert_eq!(load(&cache, &engine, &bytes).1, Outcome::Compiled);
        assert_eq!(load(&cache, &engine, &bytes).1, Outcome::Hit);
        // No lock or temp file stays behind.
        let names: Vec<_> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let mode = std::fs::metadata(cache.dir()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ModuleCache::open(dir.path(), 1 << 20).unwrap_err();
        assert!(
            format!("{err:#}").contains("writable by other users"),
            "{err:#}"
        );
    }

    #[test]
    fn engines_with_other_features_use_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path(), 1 << 30);
        let bytes = WAT.as_bytes().to_vec();
        let plain = wasmtime::Engine::default();
        let mut config = wasmtime::Config::new();
        config.wasm_simd(false).wasm_relaxed_simd(false);
        let other = wasmtime::Engine::new(&config).unwrap();
        assert_ne!(
            cache.entry_path(&plain, Kind::Module, &Digest::of(&bytes)),
            cache.entry_path(&other, Kind::Module, &Digest::of(&bytes))
        );
        assert_ne!(
            cache.entry_path(&plain, Kind::Module, &Digest::of(&bytes)),
            cache.entry_path(&plain, Kind::Component, &Digest::of(&bytes))
        );
    }
}
