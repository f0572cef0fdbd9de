//! What every guest gets the same way, whether it runs as a command or
//! serves wasi:http: its store's metered limits, a resource table capped at
//! its open-files limit, and the container's identity on the threads that
//! act for it.

use anyhow::{Context, Result};
use wasmtime::component::ResourceTable;

use crate::identity;
use crate::meter::MeteredLimits;
use crate::run_spec::RunSpec;

/// The limits `spec` sets, metered into `spec.meter`.
pub(crate) fn metered_limits(spec: &RunSpec) -> MeteredLimits {
    MeteredLimits::new(
        spec.memory_limit,
        spec.meter.clone(),
        spec.shared_budget.clone(),
    )
}

/// A guest's resource table (its open files and directories, streams,
/// sockets), capped at its open-files limit, so that it cannot use up the
/// descriptors of the process it shares with the other containers of its
/// pod. Its opens past the cap get EMFILE (see `opens`); any other resource
/// past it ends the guest by a trap, as wasmtime-wasi reports a full table.
pub(crate) fn cap_resources(table: &mut ResourceTable, open_files_limit: Option<usize>) {
    if let Some(limit) = open_files_limit {
        table.set_max_capacity(limit.max(MIN_RESOURCES));
    }
}

/// The fewest resources a guest is allowed, whatever its limit says: its
/// standard streams and preopens take some before it opens anything.
const MIN_RESOURCES: usize = 64;

pub(crate) fn resource_table(open_files_limit: Option<usize>) -> ResourceTable {
    let mut table = ResourceTable::new();
    cap_resources(&mut table, open_files_limit);
    table
}

/// Takes on `spec`'s identity on this thread until the guard drops.
pub(crate) fn enter_identity(spec: &RunSpec) -> Result<Option<identity::Entered>> {
    spec.identity
        .as_ref()
        .map(|id| {
            id.enter()
                .with_context(|| format!("taking on the container's user {}:{}", id.uid, id.gid))
        })
        .transpose()
}
