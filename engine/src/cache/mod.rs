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
//!
//! This module is the directory and its keys; `entry` reads, writes, locks
//! and evicts the entries, and `compile` is the engine's way through it.

use std::hash::Hasher;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use wasmbox_format::{Digest, Hasher as DigestHasher};

pub(crate) mod compile;
mod entry;

pub use entry::seal;

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
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn cache(dir: &Path, max: u64) -> ModuleCache {
        ModuleCache::open(dir, max).unwrap()
    }

    const WAT: &str = r#"(module (func (export "f") (result i32) i32.const 42))"#;

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
