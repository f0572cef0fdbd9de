//! What each guest uses, metered per container: guests of a pod share one
//! shim process and one cgroup, so this is how each container's stats and
//! memory limit stay its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use wasmtime::{DEFAULT_INSTANCE_LIMIT, DEFAULT_MEMORY_LIMIT, DEFAULT_TABLE_LIMIT};

use crate::RunSpec;

/// What one guest uses: its linear memory and the CPU time of the thread it
/// runs on. Guests of a pod share one shim process and one cgroup, so this
/// is how each container's `ContainerStats` stays its own.
#[derive(Debug, Default)]
pub struct GuestMeter {
    memory_bytes: AtomicU64,
    /// CPU of runs that have ended.
    cpu_nanos_done: AtomicU64,
    /// Kernel thread id of the running guest, 0 when none runs.
    thread: AtomicI32,
}

impl GuestMeter {
    /// Bytes of linear memory the guest has now (what it grew to).
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes.load(Ordering::Relaxed)
    }

    /// CPU time the guest's thread has used, in nanoseconds.
    pub fn cpu_nanos(&self) -> u64 {
        let done = self.cpu_nanos_done.load(Ordering::Relaxed);
        match self.thread.load(Ordering::Relaxed) {
            0 => done,
            tid => done + thread_cpu_nanos(tid).unwrap_or(0),
        }
    }

    pub(crate) fn enter(&self) {
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        self.thread.store(tid, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid, writable timespec for the whole call.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
        if ok {
            let nanos = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
            self.cpu_nanos_done.fetch_add(nanos, Ordering::Relaxed);
        }
        self.thread.store(0, Ordering::Relaxed);
    }
}

/// CPU time of thread `tid` of this process, from `/proc` (first field of
/// `schedstat`: nanoseconds on the CPU).
fn thread_cpu_nanos(tid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Bytes one table element is counted as against the memory budget (a
/// funcref or externref slot).
const TABLE_ELEMENT_BYTES: u64 = 8;

/// Memory that several guests draw on together: what a shim may give all
/// its guests before the cgroup it is charged to reaches its limit, the
/// shim's own memory set aside (the shim sets it; see
/// `RunSpec::shared_budget`). Without a limit it only counts.
#[derive(Debug, Default)]
pub struct SharedBudget {
    /// The limit in bytes; 0 when there is none.
    limit: AtomicU64,
    used: AtomicU64,
}

impl SharedBudget {
    /// Sets (or, with `None`, lifts) the limit. Guests that already hold
    /// more keep it; they only cannot grow.
    pub fn set_limit(&self, bytes: Option<u64>) {
        self.limit
            .store(bytes.map_or(0, |b| b.max(1)), Ordering::Relaxed);
    }

    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|l| *l > 0)
    }

    /// Bytes the guests hold from this budget now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Takes `bytes` from `counter` unless that passes `limit`.
fn take_from(counter: &AtomicU64, limit: Option<u64>, bytes: u64) -> bool {
    let before = counter.fetch_add(bytes, Ordering::Relaxed);
    if limit.is_some_and(|limit| before + bytes > limit) {
        counter.fetch_sub(bytes, Ordering::Relaxed);
        return false;
    }
    true
}

/// A store's limiter: every memory and table it grows is counted into the
/// guest's meter, which all of the container's stores share, and growth
/// past the container's one budget is refused (the guest sees `memory.grow`
/// return -1, and `malloc` NULL). Growth must also fit the shared budget of
/// the shim's cgroup, when the spec names one. What else the guest makes
/// the host allocate for it (a request's output buffers) is taken with
/// [`MeteredLimits::take`] and counted the same way.
pub(crate) struct MeteredLimits {
    limit: Option<u64>,
    meter: Arc<GuestMeter>,
    shared: Option<Arc<SharedBudget>>,
    /// Bytes this store added to the meter, taken off again when it drops.
    added: u64,
}

impl MeteredLimits {
    /// The limits `spec` sets, metered into `spec.meter`.
    pub(crate) fn new(spec: &RunSpec) -> MeteredLimits {
        MeteredLimits {
            limit: spec.memory_limit.map(|l| l as u64),
            meter: spec.meter.clone(),
            shared: spec.shared_budget.clone(),
            added: 0,
        }
    }

    /// Takes `bytes` from the container's budget and the shared one, or
    /// refuses (and takes nothing).
    pub(crate) fn take(&mut self, bytes: u64) -> bool {
        if !take_from(&self.meter.memory_bytes, self.limit, bytes) {
            return false;
        }
        if let Some(shared) = &self.shared
            && !take_from(&shared.used, shared.limit(), bytes)
        {
            self.meter.memory_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        self.added += bytes;
        true
    }
}

impl Drop for MeteredLimits {
    fn drop(&mut self) {
        self.meter
            .memory_bytes
            .fetch_sub(self.added, Ordering::Relaxed);
        if let Some(shared) = &self.shared {
            shared.used.fetch_sub(self.added, Ordering::Relaxed);
        }
    }
}

impl wasmtime::ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.take(desired.saturating_sub(current) as u64))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.take(desired.saturating_sub(current) as u64 * TABLE_ELEMENT_BYTES))
    }

    fn instances(&self) -> usize {
        DEFAULT_INSTANCE_LIMIT
    }

    fn tables(&self) -> usize {
        DEFAULT_TABLE_LIMIT
    }

    fn memories(&self) -> usize {
        DEFAULT_MEMORY_LIMIT
    }
}
