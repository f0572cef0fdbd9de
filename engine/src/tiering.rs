//! Tiered compilation of big core modules, for their first start.
//!
//! Cranelift makes fast code slowly: CPython's 26 MB take it seconds on two
//! cores. Winch, wasmtime's baseline compiler, makes slower code in a
//! fraction of that time. So a big module that the cache holds no Cranelift
//! artifact for is compiled with Winch (and that artifact cached, so a
//! second start before the tier-up is done is quick too), starts, and is
//! compiled with Cranelift on low-priority threads in the background; the
//! next start loads the Cranelift artifact, and the Winch one is removed.
//!
//! Only a process that outlives its guests enables it (the shim): it waits
//! for its background compiles before it exits ([`finish`]), after it has
//! answered containerd's shutdown and left the container's cgroup.
//! `wasmbox run` compiles with Cranelift at once, as a CLI must not linger.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use crate::cache::compile::compile_cached;
use crate::cache::{Kind, ModuleCache};

/// Modules at least this big start on Winch code when uncached (2 MiB:
/// Cranelift compiles smaller ones in well under half a second here).
const DEFAULT_MIN_BYTES: u64 = 2 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);
static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());
/// Whether tier-ups wait for [`finish`] instead of running beside the guest.
static DEFERRED: AtomicBool = AtomicBool::new(false);
/// Tier-ups waiting for [`finish`].
type TierUp = Box<dyn FnOnce() + Send>;
static WAITING: Mutex<Vec<TierUp>> = Mutex::new(Vec::new());

/// Lets this process start big modules on Winch code and compile them with
/// Cranelift in the background; it must call [`finish`] before it exits.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Makes later tier-ups wait until [`finish`]: a process whose memory is
/// limited (the shim in a container's memory cgroup) must not spend its
/// guest's memory on a Cranelift compile while the guest runs. At `finish`
/// the shim has left the container's cgroup.
pub fn defer_until_finish() {
    DEFERRED.store(true, Ordering::Relaxed);
}

/// Whether [`finish`] has tier-ups to run or compiles to wait for.
pub fn has_work() -> bool {
    fn some<T>(list: &Mutex<Vec<T>>) -> bool {
        !list.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
    some(&WAITING) || some(&PENDING)
}

/// Runs the deferred tier-ups, then waits for the background compiles
/// still running, so that each stores its artifact and removes its lock
/// file.
pub fn finish() {
    DEFERRED.store(false, Ordering::Relaxed);
    let waiting = std::mem::take(&mut *WAITING.lock().unwrap_or_else(|e| e.into_inner()));
    for tier_up in waiting {
        tier_up();
    }
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    if !pending.is_empty() {
        log::info!(
            "waiting for {} background compile(s) before exiting",
            pending.len()
        );
    }
    for handle in pending {
        let _ = handle.join();
    }
}

/// Whether a module of `len` bytes should start on Winch code when the
/// cache has no Cranelift artifact for it. `WASMBOX_WINCH_MIN_KIB` sets the
/// size (`off` never tiers).
pub(crate) fn wanted(len: usize) -> bool {
    static MIN_BYTES: OnceLock<Option<u64>> = OnceLock::new();
    let min = MIN_BYTES.get_or_init(|| match std::env::var("WASMBOX_WINCH_MIN_KIB") {
        Ok(v) if v.trim() == "off" => None,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(kib) => Some(kib << 10),
            Err(_) => {
                log::warn!(
                    "WASMBOX_WINCH_MIN_KIB={v:?} is neither a size in KiB nor `off`; using {} KiB",
                    DEFAULT_MIN_BYTES >> 10
                );
                Some(DEFAULT_MIN_BYTES)
            }
        },
        Err(_) => Some(DEFAULT_MIN_BYTES),
    });
    ENABLED.load(Ordering::Relaxed) && min.is_some_and(|min| len as u64 >= min)
}

/// Compiles `bytes` with Cranelift (`optimized`) into `cache` on
/// low-priority threads, then removes `baseline_entry` (the Winch artifact
/// it replaces).
pub(crate) fn tier_up_in_background(
    cache: &'static ModuleCache,
    optimized: wasmtime::Engine,
    bytes: Vec<u8>,
    baseline_entry: PathBuf,
    digest: wasmbox_format::Digest,
    path: PathBuf,
) {
    if DEFERRED.load(Ordering::Relaxed) {
        let tier_up =
            move || tier_up_in_background(cache, optimized, bytes, baseline_entry, digest, path);
        WAITING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(tier_up));
        return;
    }
    let what = path.display().to_string();
    let spawned = std::thread::Builder::new()
        .name("tier-up".into())
        .spawn(move || {
            lower_priority();
            let compile = || compile(cache, &optimized, &bytes, &digest, &path);
            match pool() {
                Some(pool) => pool.install(compile),
                None => compile(),
            }
            // Stored: later starts load it, so the Winch artifact has no use.
            if cache.entry_path(&optimized, Kind::Module, &digest).exists() {
                let _ = std::fs::remove_file(&baseline_entry);
            }
        });
    match spawned {
        Ok(handle) => PENDING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle),
        Err(e) => log::warn!("cannot start compiling {what} with Cranelift in the background: {e}"),
    }
}

fn compile(
    cache: &ModuleCache,
    optimized: &wasmtime::Engine,
    bytes: &[u8],
    digest: &wasmbox_format::Digest,
    path: &Path,
) {
    let compiled = compile_cached::<wasmtime::Module>(
        Some(cache),
        optimized,
        bytes,
        digest,
        path,
        "Cranelift",
    );
    if let Err(e) = compiled {
        log::warn!(
            "compiling {} with Cranelift in the background: {e:#}",
            path.display()
        );
    }
}

/// The background compiles' worker threads, one per core at the lowest
/// priority, so that they take only what the guests leave idle.
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("tier-up-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .map_err(|e| log::warn!("cannot start the background compile threads: {e}"))
            .ok()
    })
    .as_ref()
}

/// Nice 19 for the calling thread (Linux applies `setpriority` with who = 0
/// to the calling thread only).
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}
