//! Joining the container's cgroup, so the node accounts the shim's CPU and
//! memory to the container (what `kubectl top` and the OOM logic see), and
//! leaving it again with nothing left behind: at delete when the shim goes
//! on, else by exiting in it (containerd's `shim delete` removes it). Each
//! move is made where it costs no RCU grace period when it can be.
//!
//! This module is the shim's membership (with the spec's limits) and the
//! usage read for stats; `path` maps a spec's `cgroupsPath` to cgroupfs
//! directories, and `oom` counts and watches OOM kills.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

mod oom;
mod path;
mod thread;

pub use oom::{oom_kills_in, watch_oom};
pub use path::unified;
use path::{CGROUP_ROOT, cgroupfs_path, current_path, dirs_of};
pub use thread::{ThreadCgroup, move_current_thread_home};

/// Whether this process is in a container's cgroup (see [`join`]), and
/// the directory of its memory cgroup there (`None` without a memory
/// controller).
static JOINED: std::sync::Mutex<Option<Option<PathBuf>>> = std::sync::Mutex::new(None);
/// A membership [`join_before_threads`] made, with the `cgroupsPath` it
/// is for, until the create of that container takes it over in [`join`].
static EARLY: std::sync::Mutex<Option<(String, Limits, Membership)>> = std::sync::Mutex::new(None);
/// The membership of a deleted container that the shim keeps until it
/// exits ([`Membership::leave_at_exit`]).
static PARKED: std::sync::Mutex<Option<Membership>> = std::sync::Mutex::new(None);
/// cgroup v1 hierarchies the shim joins (the ones that account resources).
const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "blkio"];

/// The shim process's membership in a container's cgroup.
#[derive(Debug)]
pub struct Membership {
    /// `cgroup.procs` files to move back to on leave.
    original: Vec<PathBuf>,
    /// The container's own cgroup directories this membership created. Shared
    /// parents (`/default`, the namespace) stay, as runc leaves them.
    created: Vec<PathBuf>,
    /// The container's cgroup directory in each hierarchy joined.
    joined: Vec<PathBuf>,
    unified: bool,
}

/// What the container's cgroup has used, for `stats` (`ctr task metrics`, `kubectl top`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub memory_bytes: u64,
    /// The memory limit in bytes; 0 when there is none.
    pub memory_limit: u64,
    pub cpu_nanos: u64,
    pub pids: u64,
    /// cgroup v2 (else v1), which decides the metrics type containerd expects.
    pub unified: bool,
}

/// The limits of a spec's `linux.resources` that the shim writes into the
/// container's cgroup when it creates or joins it, as runc does, so the
/// kernel enforces them on everything the container's shim does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    /// CFS quota and period in microseconds.
    pub cpu_quota: Option<(i64, u64)>,
}

impl Limits {
    pub fn from_spec(spec: &oci_spec::runtime::Spec) -> Limits {
        let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
            return Limits::default();
        };
        let positive = |v: Option<i64>| v.filter(|v| *v > 0);
        Limits {
            memory_bytes: positive(resources.memory().as_ref().and_then(|m| m.limit())),
            pids: positive(resources.pids().as_ref().map(|p| p.limit())),
            cpu_quota: resources.cpu().as_ref().and_then(|c| {
                let quota = positive(c.quota())?;
                Some((quota, c.period().filter(|p| *p > 0).unwrap_or(100_000)))
            }),
        }
    }

    /// The files and values that set these limits in cgroup v2 or v1, in
    /// the order they must be written (a v1 period before its quota).
    fn files(&self, unified: bool) -> Vec<(&'static str, String)> {
        let mut files = Vec::new();
        if let Some(bytes) = self.memory_bytes {
            let file = if unified {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            files.push((file, bytes.to_string()));
        }
        if let Some(pids) = self.pids {
            files.push(("pids.max", pids.to_string()));
        }
        if let Some((quota, period)) = self.cpu_quota {
            if unified {
                files.push(("cpu.max", format!("{quota} {period}")));
            } else {
                files.push(("cpu.cfs_period_us", period.to_string()));
                files.push(("cpu.cfs_quota_us", quota.to_string()));
            }
        }
        files
    }
}

/// Moves this process into `cgroups_path` in every hierarchy: cgroupfs style
/// (`/default/ID`, containerd's default) or systemd style (`slice:prefix:name`,
/// what the kubelet sends with the systemd cgroup driver), which is joined at
/// its cgroupfs directory (the scope is not registered with systemd over
/// D-Bus). A relative path returns `None`.
///
/// A process sits in one cgroup per hierarchy, so only the shim's first
/// container is joined: for a pod that is its sandbox, whose cgroup then
/// accounts the whole pod (the kubelet reads pod usage from the parent).
/// Later containers of the same shim return `None`.
///
/// A membership [`join_before_threads`] made for the same path and limits
/// is taken over; one made for other ones is left first.
pub fn join(cgroups_path: &str, limits: Limits) -> Result<Option<Membership>> {
    if let Some((path, early_limits, membership)) = EARLY.lock().unwrap().take() {
        if path == cgroups_path && early_limits == limits {
            return Ok(Some(membership));
        }
        membership.leave()?;
    }
    leave_parked()?;
    join_moving(cgroups_path, limits, Move::Process)
}

/// [`join`] for the container whose bundle this shim was started in, while
/// the process still has one thread: on cgroup v1 the kernel then moves that
/// thread alone, and every thread started later is born in the cgroup. A
/// whole process's move takes the kernel's global threadgroup lock, which
/// waits for an RCU grace period (about 9 ms here, once per create); a
/// thread moving itself does not. Joins nothing (and says nothing: the
/// create joins, and reports) when the process has other threads, or when
/// the spec's limits could stop the shim itself from starting: a pids
/// limit, or a memory limit below [`crate::memory::MIN_JOINED_LIMIT`].
pub fn join_before_threads(cgroups_path: &str, limits: Limits) {
    let single_threaded =
        std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1);
    let safe_limits = limits.pids.is_none()
        && limits
            .memory_bytes
            .is_none_or(|bytes| bytes as u64 >= crate::memory::MIN_JOINED_LIMIT);
    if !single_threaded || !safe_limits {
        return;
    }
    if let Ok(Some(membership)) = join_moving(cgroups_path, limits, Move::OnlyThread) {
        *EARLY.lock().unwrap() = Some((cgroups_path.to_string(), limits, membership));
    }
}

/// Leaves a membership [`join_before_threads`] made that no create took
/// over: a Linux container's cgroup is runc's to make and fill.
pub fn leave_early() -> Result<()> {
    match EARLY.lock().unwrap().take() {
        Some((_, _, membership)) => membership.leave(),
        None => Ok(()),
    }
}

/// Leaves the cgroup of a deleted container now, instead of at exit
/// ([`Membership::leave_at_exit`]): the shim goes on serving other tasks,
/// or has work left after its last.
pub fn leave_parked() -> Result<()> {
    match PARKED.lock().unwrap().take() {
        Some(membership) => membership.leave(),
        None => Ok(()),
    }
}

/// How [`join_moving`] moves the shim into a cgroup.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Move {
    /// The whole process: its pid into `cgroup.procs`.
    Process,
    /// On cgroup v1, the calling thread (`0` into `tasks`), which must be
    /// the only one; on v2, as [`Move::Process`].
    OnlyThread,
}

fn join_moving(cgroups_path: &str, limits: Limits, how: Move) -> Result<Option<Membership>> {
    let Some(absolute) = cgroupfs_path(cgroups_path)? else {
        return Ok(None);
    };
    let mut joined = JOINED.lock().unwrap();
    if joined.is_some() {
        return Ok(None);
    }
    let relative = absolute.trim_start_matches('/');
    let unified = unified();
    let (file, who) = match how {
        Move::OnlyThread if !unified => ("tasks", "0".to_string()),
        _ => ("cgroup.procs", std::process::id().to_string()),
    };
    let mut membership = Membership {
        original: Vec::new(),
        created: Vec::new(),
        joined: Vec::new(),
        unified,
    };
    let hierarchies: Vec<(PathBuf, String)> = if unified {
        vec![(PathBuf::from(CGROUP_ROOT), current_path("")?)]
    } else {
        v1_hierarchies(&V1_CONTROLLERS)
            .into_iter()
            .map(|(controller, root)| Ok((root, current_path(controller)?)))
            .collect::<Result<_>>()?
    };
    let files = limits.files(unified);
    let mut written = Vec::new();
    let mut join_one = |root: &Path, current: &str, membership: &mut Membership| -> Result<()> {
        let target = root.join(relative);
        if !target.exists() {
            if unified && !files.is_empty() {
                enable_controllers(root, relative);
            }
            std::fs::create_dir_all(&target)
                .with_context(|| format!("creating the cgroup {}", target.display()))?;
            membership.created.push(target.clone());
        }
        // Limits first, as runc sets them, then the shim moves in. Each
        // v1 file exists only in its own controller's hierarchy.
        for (file, value) in &files {
            let path = target.join(file);
            if path.exists() {
                std::fs::write(&path, value).with_context(|| {
                    format!(
                        "setting {file} to {value} in the cgroup {}",
                        target.display()
                    )
                })?;
                written.push(*file);
            }
        }
        std::fs::write(target.join(file), &who)
            .with_context(|| format!("joining the cgroup {}", target.display()))?;
        membership.joined.push(target.clone());
        membership.original.push(
            root.join(current.trim_start_matches('/'))
                .join("cgroup.procs"),
        );
        Ok(())
    };
    for (root, current) in &hierarchies {
        if let Err(e) = join_one(root, current, &mut membership) {
            // Nothing half-made stays: back out of what was joined and created.
            let _ = membership.back_out();
            return Err(e);
        }
    }
    for (file, value) in &files {
        if !written.contains(file) {
            log::warn!(
                "the spec sets {file}={value}, but no cgroup controller for it is available: not enforced by the cgroup"
            );
        }
    }
    let memory_dir = if unified {
        membership.joined.first().cloned()
    } else {
        membership
            .joined
            .iter()
            .find(|dir| dir.join("memory.limit_in_bytes").exists())
            .cloned()
    };
    *joined = Some(memory_dir);
    Ok(Some(membership))
}

/// The mounted cgroup v1 hierarchies of `controllers`, each once (cpu and
/// cpuacct are often one hierarchy), with their controller's name.
fn v1_hierarchies<'a>(controllers: &[&'a str]) -> Vec<(&'a str, PathBuf)> {
    let mut seen = Vec::new();
    let mut list = Vec::new();
    for controller in controllers {
        let root = Path::new(CGROUP_ROOT).join(controller);
        let Ok(real) = root.canonicalize() else {
            continue;
        };
        if !seen.contains(&real) {
            seen.push(real);
            list.push((*controller, root));
        }
    }
    list
}

/// cgroup v2: turns the cpu, memory and pids controllers on for the
/// children of every ancestor of `relative` (what runc and systemd do), so
/// the container's cgroup has the files its limits are written to. Errors
/// are left to the limit writes, which name the file that is missing.
fn enable_controllers(root: &Path, relative: &str) {
    let mut dir = root.to_path_buf();
    let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
        dir.push(part);
        let _ = std::fs::create_dir(&dir);
    }
    let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
}

impl Membership {
    /// Reads the cgroup's counters; a counter that cannot be read is 0.
    pub fn usage(&self) -> Usage {
        read_usage(&self.joined, self.unified)
    }

    /// Moves the process back where it was and removes the cgroups it created.
    pub fn leave(self) -> Result<()> {
        *JOINED.lock().unwrap() = None;
        self.back_out()
    }

    /// Its container was deleted and the shim is about to exit: it stays
    /// in the cgroup until then, and containerd's `delete` of the shim,
    /// which runs once the process is gone, removes the cgroup
    /// ([`remove_left_behind`]). Moving a whole process out takes an RCU
    /// grace period, which would come before containerd's answer. A shim
    /// that goes on serving, or working, leaves first ([`leave_parked`]).
    pub fn leave_at_exit(self) {
        if let Some(earlier) = PARKED.lock().unwrap().replace(self) {
            // One membership per process: there is never an earlier one.
            let _ = earlier.back_out();
        }
    }

    /// [`Membership::leave`] without releasing [`JOINED`] (which `join`
    /// holds locked while it backs out of a failed join).
    fn back_out(&self) -> Result<()> {
        let pid = std::process::id().to_string();
        remove_dirs(&self.created, || {
            for procs in &self.original {
                std::fs::write(procs, &pid)
                    .with_context(|| format!("moving the shim back to {}", procs.display()))?;
            }
            Ok(())
        })
    }
}

/// Removes the cgroup directories `dirs`, after `move_out` took the shim's
/// threads out of them. A thread the process starts while it is being
/// moved can be left in the old cgroup (cgroup v1 moves a thread group
/// thread by thread), or a guest's thread may still be finishing: the rmdir
/// then fails with EBUSY, and both are tried again, briefly.
fn remove_dirs(dirs: &[PathBuf], move_out: impl Fn() -> Result<()>) -> Result<()> {
    remove_dirs_within(dirs, std::time::Duration::from_millis(100), move_out)
}

/// [`remove_dirs`], trying again for up to `patience`.
fn remove_dirs_within(
    dirs: &[PathBuf],
    patience: std::time::Duration,
    move_out: impl Fn() -> Result<()>,
) -> Result<()> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        move_out()?;
        let busy = dirs.iter().find_map(|dir| match std::fs::remove_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some((dir, e)),
            Ok(()) => None,
        });
        match busy {
            None => return Ok(()),
            Some((_, e))
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Some((dir, e)) => {
                return Err(e).with_context(|| format!("removing the cgroup {}", dir.display()));
            }
        }
    }
}

/// Reads the counters of a cgroup whose directories (one per hierarchy)
/// are `dirs`; a counter that cannot be read is 0.
fn read_usage(dirs: &[PathBuf], unified: bool) -> Usage {
    let read = |file: &str| -> Option<String> {
        dirs.iter()
            .map(|dir| dir.join(file))
            .find(|p| p.exists())
            .and_then(|p| std::fs::read_to_string(p).ok())
    };
    let number = |file: &str| {
        read(file)
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    if unified {
        let cpu_usec = read("cpu.stat")
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("usage_usec ")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
            })
            .unwrap_or(0);
        Usage {
            memory_bytes: number("memory.current"),
            // "max" (no limit) does not parse, and reads as 0.
            memory_limit: number("memory.max"),
            cpu_nanos: cpu_usec * 1000,
            pids: number("pids.current"),
            unified: true,
        }
    } else {
        Usage {
            memory_bytes: number("memory.usage_in_bytes"),
            memory_limit: number("memory.limit_in_bytes"),
            cpu_nanos: number("cpuacct.usage"),
            pids: number("pids.current"),
            unified: false,
        }
    }
}

/// The memory limit of a memory cgroup and what is charged to it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryCharge {
    /// The limit in bytes, `None` when there is none.
    pub limit: Option<u64>,
    /// Bytes charged that the kernel cannot simply drop: usage less the
    /// inactive file cache (the kubelet's "working set").
    pub working_set: u64,
}

/// The memory cgroup this process joined (see [`join`]): its limit and
/// charge. `None` when it joined none, or it has no memory controller.
pub fn joined_memory() -> Option<MemoryCharge> {
    let dir = JOINED.lock().unwrap().clone()??;
    memory_charge(&dir, unified())
}

/// Reads the limit and working set of the memory cgroup at `dir`.
fn memory_charge(dir: &Path, unified: bool) -> Option<MemoryCharge> {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let (limit_file, usage_file, inactive_key) = if unified {
        ("memory.max", "memory.current", "inactive_file ")
    } else {
        (
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "total_inactive_file ",
        )
    };
    let usage: u64 = read(usage_file)?.trim().parse().ok()?;
    // v2 writes "max"; v1 a huge page-rounded number for "no limit".
    let limit = read(limit_file)
        .and_then(|l| l.trim().parse::<u64>().ok())
        .filter(|l| *l < 1 << 62);
    let inactive_file = read("memory.stat")
        .and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix(inactive_key)?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    Some(MemoryCharge {
        limit,
        working_set: usage.saturating_sub(inactive_file),
    })
}

/// The counters of the cgroup at `cgroups_path` (as a spec names it), which
/// the shim is not a member of: a Linux container's, made by runc.
pub fn usage_of(cgroups_path: &str) -> Usage {
    let unified = unified();
    match dirs_of(cgroups_path, &V1_CONTROLLERS) {
        Some(dirs) => read_usage(&dirs, unified),
        None => Usage {
            unified,
            ..Default::default()
        },
    }
}

/// The processes in the cgroup at `cgroups_path` (a Linux container's):
/// its `cgroup.procs` in the unified hierarchy or the pids (else memory)
/// hierarchy of cgroup v1. Empty when it cannot be read.
pub fn procs_of(cgroups_path: &str) -> Vec<u32> {
    dirs_of(cgroups_path, &["pids", "memory"])
        .into_iter()
        .flatten()
        .find_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// After a shim died (containerd's `shim delete`): removes the container's
/// cgroup in every hierarchy. Only the dead shim was in it, and may still be
/// for a moment while the kernel tears it down (a shared shim's threads are
/// in many); a cgroup still in use after a second stays.
pub fn remove_left_behind(cgroups_path: &str) {
    let dirs = dirs_of(cgroups_path, &V1_CONTROLLERS).unwrap_or_default();
    if let Err(e) = remove_dirs_within(&dirs, std::time::Duration::from_secs(1), || Ok(())) {
        log::warn!("after the shim died: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_become_the_v1_or_v2_files_runc_writes() {
        let limits = super::Limits {
            memory_bytes: Some(64 << 20),
            pids: Some(50),
            cpu_quota: Some((50_000, 100_000)),
        };
        let pairs = |unified| {
            limits
                .files(unified)
                .into_iter()
                .map(|(f, v)| format!("{f}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs(false),
            [
                "memory.limit_in_bytes=67108864",
                "pids.max=50",
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=50000"
            ]
        );
        assert_eq!(
            pairs(true),
            ["memory.max=67108864", "pids.max=50", "cpu.max=50000 100000"]
        );
        assert!(super::Limits::default().files(true).is_empty());
    }
}
