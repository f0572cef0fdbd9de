//! The memory a shim's Wasm guests may take: a guest that reaches its limit
//! must see `memory.grow` fail (and `malloc` return NULL), never get the
//! shim killed by the kernel.
//!
//! Two limits hold each guest, both enforced by the engine's limiter:
//! - its container's own limit (the spec's `memory.limit`), on everything
//!   the guest makes the host allocate for it (linear memories, tables, a
//!   request's buffers), metered per container;
//! - the [`SharedBudget`] of the whole shim: the limit of the memory cgroup
//!   the shim process is charged to, less what the shim itself holds there.
//!
//! A shim that runs one container (`ctr run`, Docker) is charged to that
//! container's cgroup, so the second is the tighter: the guest gets the
//! limit less the shim's own memory, as a JVM sizes its heap to a
//! container's limit less the JVM's own. A pod's shim is charged to the
//! sandbox's cgroup, which has no limit of its own: each guest gets its
//! container's whole limit, and the shim's own memory is the pod's
//! overhead (`RuntimeClass.overhead`, which the kubelet adds to the pod's
//! cgroup limit).

use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Result, bail};

use crate::engine::SharedBudget;
use crate::error::InvalidSpec;

/// What the shim keeps back from its cgroup's limit, beyond what is charged
/// when the budget is sized, for what it allocates while guests run:
/// threads' stacks, instances' host state, WASI and ttrpc buffers. Measured
/// at under 2 MiB for a command guest (`memory.max_usage_in_bytes` less
/// the guest's memory); doubled.
pub const SHIM_RESERVE: u64 = 4 << 20;

/// The budget every guest of this process shares.
pub fn shared_budget() -> Arc<SharedBudget> {
    static BUDGET: OnceLock<Arc<SharedBudget>> = OnceLock::new();
    BUDGET.get_or_init(Default::default).clone()
}

/// How the shared budget was sized, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub cgroup_limit: u64,
    /// What the shim holds itself: charged, and not the guests'.
    pub shim_bytes: u64,
    pub guest_budget: u64,
}

/// Sizes the shared budget after a container was created (its module read
/// and compiled, inside the cgroup): the limit of the memory cgroup this
/// process joined, less the shim's own memory and [`SHIM_RESERVE`]. The
/// shim's own memory is what the cgroup holds beyond the guests' running
/// now, the most ever seen (compiled code stays). Without a limit the
/// budget only counts. Fails, as a wrong spec, when the limit leaves the
/// guests nothing.
pub fn size_shared_budget() -> Result<Option<Sizing>> {
    /// The most the shim ever held itself; the lock makes each
    /// measure-and-set whole when a pod's containers are created at once.
    static SHIM_BYTES: Mutex<u64> = Mutex::new(0);
    let mut most = SHIM_BYTES.lock().unwrap_or_else(|e| e.into_inner());
    let budget = shared_budget();
    let Some((limit, working_set)) =
        crate::cgroup::joined_memory().and_then(|charge| Some((charge.limit?, charge.working_set)))
    else {
        budget.set_limit(None);
        return Ok(None);
    };
    *most = (*most).max(working_set.saturating_sub(budget.used()));
    let sizing = sizing(limit, *most)?;
    budget.set_limit(Some(sizing.guest_budget));
    Ok(Some(sizing))
}

/// The smallest memory limit of a cgroup the shim joins: its reserve and as
/// much again for reading and compiling a small module (3.3 MiB measured
/// for a release build) and the guest's first pages. Below it the kernel
/// would kill the shim while it loads the module, before a guest exists.
pub const MIN_JOINED_LIMIT: u64 = 2 * SHIM_RESERVE;

/// Right after the shim joined a container's cgroup, before it loads the
/// module. A limit below [`MIN_JOINED_LIMIT`] fails, as a wrong spec, in
/// one sentence. When the cgroup's memory is limited, a big module's
/// Cranelift tier-up waits until the shim has left it, so that the compile
/// never takes the guest's memory.
pub fn after_join() -> Result<()> {
    let Some(limit) = crate::cgroup::joined_memory().and_then(|charge| charge.limit) else {
        return Ok(());
    };
    check_joined_limit(limit)?;
    crate::engine::tiering::defer_until_finish();
    Ok(())
}

fn check_joined_limit(limit: u64) -> Result<()> {
    if limit < MIN_JOINED_LIMIT {
        bail!(InvalidSpec(anyhow::anyhow!(
            "the memory limit of {} is below the {} a Wasm container's shim needs to load \
             its module and keep a reserve",
            mib(limit),
            mib(MIN_JOINED_LIMIT)
        )));
    }
    Ok(())
}

fn sizing(cgroup_limit: u64, shim_bytes: u64) -> Result<Sizing> {
    let needed = shim_bytes + SHIM_RESERVE;
    if cgroup_limit <= needed {
        bail!(InvalidSpec(anyhow::anyhow!(
            "the memory limit of {} leaves the guest nothing: the shim itself needs {} of it \
             (its own memory and the compiled module, {}, and a reserve of {})",
            mib(cgroup_limit),
            mib(needed),
            mib(shim_bytes),
            mib(SHIM_RESERVE)
        )));
    }
    Ok(Sizing {
        cgroup_limit,
        shim_bytes,
        guest_budget: cgroup_limit - needed,
    })
}

/// `bytes` in MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_budget_is_the_limit_less_the_shim_and_its_reserve() {
        let sized = sizing(64 << 20, 10 << 20).unwrap();
        assert_eq!(sized.guest_budget, (64 << 20) - (10 << 20) - SHIM_RESERVE);
        assert!(check_joined_limit(MIN_JOINED_LIMIT).is_ok());
        assert_eq!(
            format!("{:#}", check_joined_limit(4 << 20).unwrap_err()),
            "the memory limit of 4.0 MiB is below the 8.0 MiB a Wasm container's shim needs \
             to load its module and keep a reserve"
        );
        let refused = format!("{:#}", sizing(12 << 20, 10 << 20).unwrap_err());
        assert_eq!(
            refused,
            "the memory limit of 12.0 MiB leaves the guest nothing: the shim itself needs 14.0 MiB \
             of it (its own memory and the compiled module, 10.0 MiB, and a reserve of 4.0 MiB)"
        );
    }
}
