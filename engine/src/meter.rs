//! What each guest uses, metered per container: guests of a pod share one
//! shim process and one cgroup, so this is how each container's stats and
//! memory limit stay its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use wasmtime::{DEFAULT_INSTANCE_LIMIT, DEFAULT_MEMORY_LIMIT, DEFAULT_TABLE_LIMIT};

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
    /// Bytes the guest holds now: its linear memories and tables, and the
    /// host buffers its `wasi:http` requests hold.
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

/// Takes `bytes` from `counter` unless that passes `limit` (or overflows);
/// one compare-and-swap, so a concurrent taker is never refused for bytes
/// that were only briefly counted.
fn take_from(counter: &AtomicU64, limit: Option<u64>, bytes: u64) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |before| {
            before
                .checked_add(bytes)
                .filter(|after| limit.is_none_or(|limit| *after <= limit))
        })
        .is_ok()
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
    /// The last growth taken, given back if wasmtime then fails it.
    pending: u64,
}

impl MeteredLimits {
    /// The limits a spec sets (its `memory_limit` and `shared_budget`),
    /// metered into its `meter` (see `guest::metered_limits`): the fields,
    /// not the `RunSpec`, so that `run_spec` can hold this module's types
    /// without the two depending on each other.
    pub(crate) fn new(
        memory_limit: Option<usize>,
        meter: Arc<GuestMeter>,
        shared_budget: Option<Arc<SharedBudget>>,
    ) -> MeteredLimits {
        MeteredLimits {
            limit: memory_limit.map(|l| l as u64),
            meter,
            shared: shared_budget,
            added: 0,
            pending: 0,
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

    /// Gives `bytes` back to both budgets.
    fn give_back(&mut self, bytes: u64) {
        let bytes = bytes.min(self.added);
        self.meter.memory_bytes.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(shared) = &self.shared {
            shared.used.fetch_sub(bytes, Ordering::Relaxed);
        }
        self.added -= bytes;
    }

    /// A growth from `current` to `desired` bytes: refused past `maximum`
    /// (wasmtime would fail it anyway, after asking), else taken.
    fn grow(&mut self, current: u64, desired: u64, maximum: Option<u64>) -> bool {
        self.pending = 0;
        if maximum.is_some_and(|maximum| desired > maximum) {
            return false;
        }
        let bytes = desired.saturating_sub(current);
        if !self.take(bytes) {
            return false;
        }
        self.pending = bytes;
        true
    }

    /// wasmtime failed a growth: the one just taken is given back, unless
    /// the failure came before the limiter was asked (a growth past the
    /// memory type's own limits, which wasmtime checks first).
    fn grow_failed(&mut self, error: &wasmtime::Error) {
        let pending = std::mem::take(&mut self.pending);
        if !error.to_string().contains("type's limits") {
            self.give_back(pending);
        }
    }
}

impl Drop for MeteredLimits {
    fn drop(&mut self) {
        self.give_back(self.added);
    }
}

impl wasmtime::ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current as u64, desired as u64, maximum.map(|m| m as u64)))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed(&error);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Elements as bytes; a count too big to say in bytes is refused.
        let bytes = |elements: usize| (elements as u64).checked_mul(TABLE_ELEMENT_BYTES);
        let (Some(current), Some(desired)) = (bytes(current), bytes(desired)) else {
            return Ok(false);
        };
        Ok(self.grow(current, desired, maximum.and_then(bytes)))
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed(&error);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(limit: Option<u64>) -> MeteredLimits {
        MeteredLimits::new(
            limit.map(|l| l as usize),
            Arc::default(),
            Some(Arc::new(SharedBudget::default())),
        )
    }

    fn held(limits: &MeteredLimits) -> (u64, u64) {
        let shared = limits.shared.as_ref().unwrap().used();
        (limits.meter.memory_bytes(), shared)
    }

    #[test]
    fn a_growth_refused_or_failed_takes_nothing_from_either_budget() {
        let mut l = limits(Some(1 << 20));
        assert!(!l.grow(0, 2 << 20, None), "past the limit");
        assert!(!l.grow(0, 8192, Some(4096)), "past the memory's maximum");
        assert_eq!(held(&l), (0, 0));
        assert!(l.grow(0, 4096, None));
        assert_eq!(held(&l), (4096, 4096));
        // wasmtime could not map it after the limiter said yes: given back.
        l.grow_failed(&wasmtime::Error::msg("Memory maximum size exceeded"));
        assert_eq!(held(&l), (0, 0));
        // A failure before the limiter was asked leaves the last growth taken.
        assert!(l.grow(0, 4096, None));
        l.grow_failed(&wasmtime::Error::msg(
            "memory growth exceeds memory type's limits",
        ));
        assert_eq!(held(&l), (4096, 4096));
        drop(l);
    }

    #[test]
    fn a_growth_that_would_overflow_the_count_is_refused() {
        let mut l = limits(None);
        assert!(l.take(4096));
        assert!(!l.take(u64::MAX), "wrapped past u64::MAX");
        assert_eq!(held(&l), (4096, 4096));
    }

    #[test]
    fn what_a_store_took_goes_back_when_it_drops() {
        let l = limits(Some(1 << 20));
        let (meter, shared) = (l.meter.clone(), l.shared.clone().unwrap());
        let mut l = l;
        assert!(l.take(1000));
        drop(l);
        assert_eq!((meter.memory_bytes(), shared.used()), (0, 0));
    }
}
