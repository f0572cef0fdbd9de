//! The opt-in shared shim: containers that name a group (the annotation
//! [`ANNOTATION_SHIM_GROUP`], or `shim_group` in the runtime's options) are
//! served by one long-lived shim process per containerd namespace and group,
//! instead of one process each. containerd still executes `start` for every
//! container; `start` answers with the running shim's address, so the
//! server is spawned once and the dead-shim `delete` never runs.
//!
//! What the shared process costs, and so what it refuses:
//! - its guests are threads of one process, so one crash ends every container
//!   it serves (containerd then reports each exited and cleans it up, and the
//!   next container gets a new shim);
//! - it holds one network namespace, the host's: a container that asks for
//!   one of its own (`ctr run` without `--net-host`, Docker's bridge, which
//!   moves an interface into the namespace of the task's pid) is refused;
//! - a pod's containers already share their pod's shim: refused there;
//! - its guests run in their containers' cgroups as threads (cgroup v1's
//!   cpu, cpuacct, pids and blkio hierarchies take threads); memory is
//!   metered and limited per guest by the engine, never by the kernel, since
//!   a memory cgroup charges a whole process. cgroup v2 moves threads only
//!   inside a threaded subtree of the process's own cgroup, so there a
//!   container with a CPU quota is refused.
//!
//! The race this module closes: a `start` that found the shim serving
//! answers containerd with its address, and containerd's `create` follows;
//! meanwhile the shim may have lost its last container. `start` and the
//! shim's decision to end take one lock (a `flock` on the socket
//! directory); `start` marks the socket claimed (its mtime), and a shim
//! with no task ends only when no claim is newer than its last `create`, or
//! the claim is older than [`CLAIM_GRACE`].

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Spec;
use wasmbox_format::ANNOTATION_SHIM_GROUP;

use crate::error::InvalidSpec;
use crate::pod::namespaces::network_namespace;

/// The environment variable `start` names the group in, for the server it spawns.
pub const GROUP_ENV: &str = "WASMBOX_SHIM_GROUP";

/// How long a claim keeps an idle shared shim up for the `create` that
/// `start` promised containerd.
pub const CLAIM_GRACE: Duration = Duration::from_secs(10);

/// The longest group name: it is part of log lines and errors, not of paths.
const MAX_GROUP_NAME: usize = 64;

/// A container's shared-shim group, and what named it (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    source: &'static str,
}

impl Group {
    /// The grouping (hashed into the socket address, with the namespace)
    /// of the group's shim. A container id never holds a `/`, so no
    /// container's own shim shares it.
    pub fn grouping(&self) -> String {
        format!("shared/{}", self.name)
    }
}

/// The group the container of `spec` asks for, if any: the annotation, or
/// else the runtime option; an empty annotation opts out. Refused, in one
/// sentence, where one process cannot keep the guarantees of the container's
/// own shim (see the module doc).
pub fn group_of(spec: &Spec, id: &str, runtime_option: Option<&str>) -> Result<Option<Group>> {
    let annotation = crate::pod::annotation(spec, ANNOTATION_SHIM_GROUP);
    let group = match (annotation, runtime_option) {
        (Some(""), _) => return Ok(None),
        (Some(name), _) => Group {
            name: name.to_string(),
            source: "the annotation dev.wasmbox.shim.group",
        },
        (None, Some(name)) if !name.is_empty() => Group {
            name: name.to_string(),
            source: "the runtime option shim_group",
        },
        _ => return Ok(None),
    };
    let Group { name, source } = &group;
    let refuse = |why: String| -> Result<Option<Group>> {
        bail!(InvalidSpec(anyhow::anyhow!(
            "container {id} asks for the shared shim group \"{name}\" ({source}), but {why}"
        )))
    };
    if name.len() > MAX_GROUP_NAME
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return refuse(format!(
            "a group name is 1 to {MAX_GROUP_NAME} letters, digits, '.', '_' or '-', \
             starting with a letter or digit"
        ));
    }
    if let Some(pod) = crate::pod::annotation(spec, crate::pod::ANNOTATION_SANDBOX_ID) {
        return refuse(format!(
            "it is part of pod {pod}, whose containers already share the pod's shim; \
             pods cannot use a shared shim"
        ));
    }
    match network_namespace(spec) {
        None => {}
        Some(Some(path)) if same_namespace(path, Path::new("/proc/self/ns/net")) => {}
        Some(_) => {
            return refuse(
                "it also asks for a network namespace of its own, which one process cannot \
                 give each of its containers: run it on the host network (ctr run --net-host, \
                 docker run --network host) or without the group"
                    .to_string(),
            );
        }
    }
    if crate::cgroup::unified() && crate::cgroup::Limits::from_spec(spec).cpu_quota.is_some() {
        return refuse(
            "it sets a CPU quota, which cgroup v2 cannot apply to one thread of a shared \
             process: run it without the quota or without the group"
                .to_string(),
        );
    }
    Ok(Some(group))
}

fn same_namespace(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// The lock `start` and the shim's decision to end share: an exclusive
/// `flock` on the socket's directory (no file of its own to leave behind).
/// Released when dropped; not inherited by the shim `start` spawns.
pub struct StartLock(#[allow(dead_code)] File);

impl StartLock {
    pub fn take(socket: &Path) -> Result<StartLock> {
        let dir = socket.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        // SAFETY: flock(2) on a descriptor `file` owns, which stays open
        // for the call; it touches no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", dir.display()));
        }
        Ok(StartLock(file))
    }
}

/// The socket path of a `unix://` address.
pub fn socket_path(address: &str) -> PathBuf {
    PathBuf::from(address.trim_start_matches("unix://"))
}

/// Marks the running shim's socket claimed (its mtime, now): a `create`
/// is on its way. Call with the [`StartLock`] held.
pub fn claim(socket: &Path) -> Result<()> {
    let path = std::ffi::CString::new(socket.as_os_str().as_bytes())
        .context("the socket path holds a NUL byte")?;
    // SAFETY: utimensat(2) reads the NUL-terminated path, which outlives
    // the call; null times mean "now".
    if unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), std::ptr::null(), 0) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("claiming the shared shim at {}", socket.display()));
    }
    Ok(())
}

/// A shared shim's decision to end once it serves no container.
pub struct Retirement {
    socket: PathBuf,
    /// When the last `create` arrived: a claim older than it was that one's.
    last_create: Mutex<SystemTime>,
    /// It ended: its socket path may be a new shim's now.
    retired: AtomicBool,
}

/// What an idle shim does, decided under the [`StartLock`].
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A container came meanwhile.
    Stay,
    /// A `create` was promised: look again after this long.
    Wait(Duration),
    /// The socket is gone: no `start` finds this shim any more.
    End,
}

impl Retirement {
    pub fn new(socket: PathBuf) -> Retirement {
        Retirement {
            socket,
            last_create: Mutex::new(SystemTime::UNIX_EPOCH),
            retired: AtomicBool::new(false),
        }
    }

    /// A `create` arrived (the claim of the `start` before it is used up).
    pub fn created(&self) {
        *self.last_create.lock().unwrap() = SystemTime::now();
    }

    /// The shim serves no container: on a thread of its own, ends it with
    /// `end` once no `create` is on its way, unless `is_idle` says a
    /// container came meanwhile.
    pub fn retire_when_idle(
        self: &std::sync::Arc<Self>,
        is_idle: impl Fn() -> bool + Send + 'static,
        end: impl FnOnce() + Send + 'static,
    ) {
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("retire".into())
            .spawn(move || {
                loop {
                    match this.decide(&is_idle) {
                        Ok(Verdict::Stay) => return,
                        Ok(Verdict::Wait(wait)) => std::thread::sleep(wait),
                        Ok(Verdict::End) => return end(),
                        Err(e) => {
                            log::warn!("the shared shim stays up: {e:#}");
                            return;
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("the shared shim stays up: {e}");
        }
    }

    fn decide(&self, is_idle: &dyn Fn() -> bool) -> Result<Verdict> {
        if self.retired.load(Ordering::SeqCst) {
            return Ok(Verdict::Stay);
        }
        let _lock = StartLock::take(&self.socket)?;
        // Read before the registry: a `create` marks its arrival before it
        // registers its task, so one that comes between the two reads is
        // either seen in the registry or leaves its claim newer than this.
        let last_create = *self.last_create.lock().unwrap();
        if !is_idle() {
            return Ok(Verdict::Stay);
        }
        let claimed = std::fs::metadata(&self.socket)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let verdict = verdict(claimed, last_create, SystemTime::now());
        if verdict == Verdict::End {
            self.retired.store(true, Ordering::SeqCst);
            match std::fs::remove_file(&self.socket) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", self.socket.display()));
                }
                _ => {}
            }
        }
        Ok(verdict)
    }

    /// Whether it ended (and so left its socket path to a new shim).
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }
}

fn verdict(claimed: SystemTime, last_create: SystemTime, now: SystemTime) -> Verdict {
    if claimed <= last_create {
        return Verdict::End;
    }
    match (claimed + CLAIM_GRACE).duration_since(now) {
        Ok(left) if !left.is_zero() => Verdict::Wait(left),
        _ => Verdict::End,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: &[(&str, &str)], network: Option<Option<&str>>) -> Spec {
        use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType};
        let mut spec = Spec::default();
        spec.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        let mut namespaces = Vec::new();
        if let Some(path) = network {
            let mut ns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
            if let Some(path) = path {
                ns = ns.path(path);
            }
            namespaces.push(ns.build().unwrap());
        }
        spec.set_linux(Some(
            LinuxBuilder::default()
                .namespaces(namespaces)
                .build()
                .unwrap(),
        ));
        spec
    }

    #[test]
    fn the_annotation_wins_over_the_runtime_option_and_empty_opts_out() {
        let named = spec(&[(ANNOTATION_SHIM_GROUP, "web")], None);
        let group = group_of(&named, "c1", Some("all")).unwrap().unwrap();
        assert_eq!(group.grouping(), "shared/web");
        let plain = spec(&[], None);
        assert_eq!(
            group_of(&plain, "c1", Some("all")).unwrap().unwrap().name,
            "all"
        );
        assert_eq!(group_of(&plain, "c1", None).unwrap(), None);
        let out = spec(&[(ANNOTATION_SHIM_GROUP, "")], None);
        assert_eq!(group_of(&out, "c1", Some("all")).unwrap(), None);
    }

    #[test]
    fn pods_own_network_namespaces_and_odd_names_are_refused_in_one_sentence() {
        let error = |s: &Spec| format!("{:#}", group_of(s, "c1", None).unwrap_err());
        let pod = spec(
            &[
                (ANNOTATION_SHIM_GROUP, "g"),
                (crate::pod::ANNOTATION_SANDBOX_ID, "pod1"),
            ],
            None,
        );
        assert!(error(&pod).contains("part of pod pod1"), "{}", error(&pod));
        let fresh = spec(&[(ANNOTATION_SHIM_GROUP, "g")], Some(None));
        assert!(error(&fresh).contains("network namespace of its own"));
        let other = spec(
            &[(ANNOTATION_SHIM_GROUP, "g")],
            Some(Some("/proc/1/ns/mnt")),
        );
        assert!(error(&other).contains("network namespace of its own"));
        let host = spec(
            &[(ANNOTATION_SHIM_GROUP, "g")],
            Some(Some("/proc/self/ns/net")),
        );
        assert!(group_of(&host, "c1", None).unwrap().is_some());
        for bad in ["a/b", "..", &"x".repeat(65)] {
            let s = spec(&[(ANNOTATION_SHIM_GROUP, bad)], None);
            assert!(error(&s).contains("a group name is"), "{bad}");
        }
        assert!(error(&fresh).starts_with("container c1 asks for the shared shim group \"g\""));
    }

    #[test]
    fn an_idle_shim_waits_only_for_a_claim_newer_than_its_last_create() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + s);
        // The claim was the last create's own: end.
        assert_eq!(verdict(t(0), t(1), t(2)), Verdict::End);
        // A claim after the last create, 3 s ago: wait out the rest of the grace.
        assert_eq!(
            verdict(t(5), t(1), t(8)),
            Verdict::Wait(CLAIM_GRACE - Duration::from_secs(3))
        );
        // A claim whose create never came: end after the grace.
        assert_eq!(verdict(t(5), t(1), t(5) + CLAIM_GRACE), Verdict::End);
    }

    #[test]
    fn retiring_removes_the_socket_under_the_lock_unless_a_container_came() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s");
        std::fs::write(&socket, b"").unwrap();
        let retirement = Retirement::new(socket.clone());
        retirement.created();
        assert_eq!(retirement.decide(&|| false).unwrap(), Verdict::Stay);
        assert!(socket.exists());
        assert_eq!(retirement.decide(&|| true).unwrap(), Verdict::End);
        assert!(!socket.exists() && retirement.retired());
        // A new shim's socket at the same path is left alone.
        std::fs::write(&socket, b"").unwrap();
        assert_eq!(retirement.decide(&|| true).unwrap(), Verdict::Stay);
        assert!(socket.exists());
        // A claim after the last create keeps a new retirement up.
        let fresh = Retirement::new(socket.clone());
        fresh.created();
        std::thread::sleep(Duration::from_millis(20));
        claim(&socket).unwrap();
        assert!(matches!(fresh.decide(&|| true).unwrap(), Verdict::Wait(_)));
    }
}
