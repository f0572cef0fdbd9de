//! Joining the container's cgroup, so the node accounts the shim's CPU and
//! memory to the container (what `kubectl top` and the OOM logic see), and
//! leaving it again on delete, with nothing left behind.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Whether this process is in a container's cgroup (see [`join`]), and
/// the directory of its memory cgroup there (`None` without a memory
/// controller).
static JOINED: std::sync::Mutex<Option<Option<PathBuf>>> = std::sync::Mutex::new(None);
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

/// Whether the node runs cgroup v2, which decides the metrics type containerd expects.
pub fn unified() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
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

pub fn join(cgroups_path: &str, limits: Limits) -> Result<Option<Membership>> {
    let Some(absolute) = cgroupfs_path(cgroups_path)? else {
        return Ok(None);
    };
    let mut joined = JOINED.lock().unwrap();
    if joined.is_some() {
        return Ok(None);
    }
    let relative = absolute.trim_start_matches('/');
    let pid = std::process::id().to_string();
    let unified = unified();
    let mut membership = Membership {
        original: Vec::new(),
        created: Vec::new(),
        joined: Vec::new(),
        unified,
    };
    let hierarchies: Vec<(PathBuf, String)> = if unified {
        vec![(PathBuf::from(CGROUP_ROOT), current_path("")?)]
    } else {
        let mut seen = Vec::new();
        let mut list = Vec::new();
        for controller in V1_CONTROLLERS {
            let root = Path::new(CGROUP_ROOT).join(controller);
            let Ok(real) = root.canonicalize() else {
                continue;
            };
            if seen.contains(&real) {
                continue; // cpu and cpuacct are often one hierarchy
            }
            seen.push(real);
            list.push((root, current_path(controller)?));
        }
        list
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
        std::fs::write(target.join("cgroup.procs"), &pid)
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

    /// [`Membership::leave`] without releasing [`JOINED`] (which `join`
    /// holds locked while it backs out of a failed join).
    fn back_out(&self) -> Result<()> {
        let pid = std::process::id().to_string();
        for procs in &self.original {
            std::fs::write(procs, &pid)
                .with_context(|| format!("moving the shim back to {}", procs.display()))?;
        }
        for dir in &self.created {
            // A cgroup is removed with rmdir even though it lists files.
            std::fs::remove_dir(dir)
                .with_context(|| format!("removing the cgroup {}", dir.display()))?;
        }
        Ok(())
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

/// How many times the kernel's OOM killer acted in the memory cgroup at
/// `cgroups_path` (`oom_kill` of v1's `memory.oom_control`, kernel 4.13+,
/// or of v2's `memory.events`); 0 when it cannot be read.
pub fn oom_kills_in(cgroups_path: &str) -> u64 {
    let Some(dir) = dirs_of(cgroups_path, &["memory"]).and_then(|d| d.into_iter().next()) else {
        return 0;
    };
    let file = if unified() {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    oom_kill_count(&dir.join(file)).unwrap_or(0)
}

/// The `oom_kill N` line of v1's `memory.oom_control` or v2's `memory.events`.
fn oom_kill_count(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// The directories of the cgroup at `cgroups_path` (as a spec names it):
/// the one of the unified hierarchy, or on cgroup v1 its directory in each
/// of `v1_controllers`, in that order. `None` for a relative or bad path,
/// or one naming the root itself.
fn dirs_of(cgroups_path: &str, v1_controllers: &[&str]) -> Option<Vec<PathBuf>> {
    let absolute = cgroupfs_path(cgroups_path).ok()??;
    let relative = absolute.trim_start_matches('/');
    if relative.is_empty() {
        return None;
    }
    Some(if unified() {
        vec![Path::new(CGROUP_ROOT).join(relative)]
    } else {
        v1_controllers
            .iter()
            .map(|c| Path::new(CGROUP_ROOT).join(c).join(relative))
            .collect()
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

/// Watches the memory cgroup at `cgroups_path` (a Linux container's, made
/// by runc) and calls `on_oom` each time the kernel's OOM killer acts in it,
/// on a thread of its own that ends when the cgroup is removed: cgroup v1
/// through an eventfd on `memory.oom_control`, v2 through inotify on
/// `memory.events` (its `oom_kill` count).
pub fn watch_oom(cgroups_path: &str, on_oom: impl Fn() + Send + 'static) -> Result<()> {
    let Some(dir) = dirs_of(cgroups_path, &["memory"]).and_then(|d| d.into_iter().next()) else {
        return Ok(());
    };
    if unified() {
        watch_oom_v2(&dir, on_oom)
    } else {
        watch_oom_v1(&dir, on_oom)
    }
}

fn watch_oom_v1(dir: &Path, on_oom: impl Fn() + Send + 'static) -> Result<()> {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd};
    let control = std::fs::File::open(dir.join("memory.oom_control"))
        .with_context(|| format!("opening {}/memory.oom_control", dir.display()))?;
    // SAFETY: eventfd(2) with integer arguments; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("making an eventfd");
    }
    // SAFETY: eventfd returned a new descriptor that only we own.
    let mut events = unsafe { std::fs::File::from_raw_fd(fd) };
    std::fs::write(
        dir.join("cgroup.event_control"),
        format!("{} {}", events.as_raw_fd(), control.as_raw_fd()),
    )
    .with_context(|| format!("registering for OOM events in {}", dir.display()))?;
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .name("oom-watch".into())
        .spawn(move || {
            let _control = control;
            let mut count = [0u8; 8];
            // The eventfd also fires when the cgroup is removed.
            while events.read_exact(&mut count).is_ok() && dir.exists() {
                on_oom();
            }
        })?;
    Ok(())
}

fn watch_oom_v2(dir: &Path, on_oom: impl Fn() + Send + 'static) -> Result<()> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let events_file = dir.join("memory.events");
    let path = std::ffi::CString::new(events_file.as_os_str().as_encoded_bytes())
        .context("a cgroup path contains NUL")?;
    // SAFETY: inotify_init1 with a flag; the result is checked.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("making an inotify descriptor");
    }
    // SAFETY: inotify_init1 returned a new descriptor that only we own.
    let mut inotify = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: a valid descriptor and a NUL-terminated path alive for the call.
    if unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MODIFY) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("watching {}", events_file.display()));
    }
    let oom_kills = move || oom_kill_count(&events_file);
    let mut seen = oom_kills().unwrap_or(0);
    std::thread::Builder::new()
        .name("oom-watch".into())
        .spawn(move || {
            let mut buffer = [0u8; 4096];
            // Each read returns at a change; the cgroup's removal ends it
            // (IN_IGNORED, then the file is gone).
            while inotify.read(&mut buffer).is_ok_and(|n| n > 0) {
                let Some(now) = oom_kills() else { return };
                if now > seen {
                    seen = now;
                    on_oom();
                }
            }
        })?;
    Ok(())
}

/// After a shim died (containerd's `shim delete`): removes the container's
/// cgroup in every hierarchy. Only the dead shim was in it; a cgroup still
/// in use refuses rmdir and stays.
pub fn remove_left_behind(cgroups_path: &str) {
    for dir in dirs_of(cgroups_path, &V1_CONTROLLERS).into_iter().flatten() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The cgroupfs directory (absolute within a hierarchy) a spec's
/// `linux.cgroupsPath` names, or `None` for a relative path.
fn cgroupfs_path(cgroups_path: &str) -> Result<Option<String>> {
    let path = cgroupfs_path_unchecked(cgroups_path)?;
    // `..` would lead out of the cgroup root.
    if let Some(path) = &path
        && Path::new(path)
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        bail!("cgroupsPath {cgroups_path} leaves the cgroup root: it contains `..`");
    }
    Ok(path)
}

fn cgroupfs_path_unchecked(cgroups_path: &str) -> Result<Option<String>> {
    if cgroups_path.starts_with('/') {
        return Ok(Some(cgroups_path.to_string()));
    }
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Ok(None);
    };
    if name.is_empty() {
        bail!("cgroupsPath {cgroups_path}: the systemd unit name is empty");
    }
    let parent = expand_slice(if slice.is_empty() {
        "system.slice"
    } else {
        slice
    })
    .with_context(|| format!("cgroupsPath {cgroups_path}"))?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(Some(format!("{parent}/{unit}")))
}

/// systemd's slice nesting: `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`.
fn expand_slice(slice: &str) -> Result<String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        bail!("{slice} is not a systemd slice (it does not end in .slice)");
    };
    if stem == "-" {
        return Ok(String::new()); // the root slice
    }
    if stem.is_empty()
        || stem.contains('/')
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
    {
        bail!("{slice} is not a valid systemd slice name");
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(component);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// This process's path in the hierarchy of `controller` ("" for cgroup v2).
fn current_path(controller: &str) -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        if matches {
            return Ok(path.to_string());
        }
    }
    Ok("/".to_string())
}

#[cfg(test)]
mod tests {
    use super::cgroupfs_path;

    fn path(p: &str) -> Option<String> {
        cgroupfs_path(p).unwrap()
    }

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

    #[test]
    fn cgroupfs_paths_stay_as_they_are() {
        assert_eq!(path("/default/abc").as_deref(), Some("/default/abc"));
        assert_eq!(path("relative/abc"), None);
    }

    #[test]
    fn systemd_paths_expand_to_their_slice_directories() {
        assert_eq!(
            path("kubepods-besteffort-pod12.slice:cri-containerd:abc").as_deref(),
            Some(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            path(":wasmbox:abc").as_deref(),
            Some("/system.slice/wasmbox-abc.scope")
        );
        assert_eq!(path("-.slice::abc").as_deref(), Some("/abc.scope"));
        assert_eq!(
            path("machine.slice:x:inner.slice").as_deref(),
            Some("/machine.slice/inner.slice")
        );
    }

    #[test]
    fn malformed_systemd_paths_are_refused() {
        for bad in [
            "kubepods:cri:abc",
            "a--b.slice:p:n",
            "a.slice:p:",
            "../x.slice:p:n",
            "/../../escaped",
            "/default/../../../escaped",
            "x.slice:p:../../escaped",
        ] {
            assert!(cgroupfs_path(bad).is_err(), "{bad} accepted");
        }
    }
}
