//! A cache entry on disk: its header and checksum, the lock a miss takes,
//! the temp-file-and-rename store, and eviction to the cap. Kept apart from
//! the directory's rules: this is where crashes and races are handled.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use wasmbox_format::Digest;

use super::{ModuleCache, Outcome};

/// Every entry starts with these bytes (the format's version is in them).
const MAGIC: &[u8; 8] = b"wbxcode1";
const HEADER_LEN: usize = MAGIC.len() + 64;
/// Temp and lock files older than this belong to a process that died
/// mid-store; eviction removes them.
const STALE_AFTER: Duration = Duration::from_secs(600);

impl ModuleCache {
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
    pub(super) fn try_load<T>(
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::cache::Kind;

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
}
