//! The namespaces the shim process holds for its container or its pod, in
//! one place: the network namespace its spec names or asks for, the pod's
//! IPC and UTS namespaces, and a pod's shared process namespace. The shim
//! enters them before it starts any thread, so every guest thread and its
//! sockets live there; what it entered is a [`Namespaces`] value handed to
//! the tasks that need it, not a process-wide static.
//!
//! - A pod's sandbox names the pod's namespace: the pod's shim joins it and
//!   the pod's containers share it (`pod/mod.rs`).
//! - A container of its own that names a namespace path (`ctr run
//!   --with-ns network:PATH`, `docker run --network container:…`) joins it.
//! - A container of its own that asks for a new namespace (a `network` entry
//!   without a path: `ctr run`, and Docker, which then moves the container's
//!   interface into the namespace of the task's pid — this shim's) gets a
//!   fresh one with only loopback up, as runc would create it.
//! - A spec without a `network` entry keeps the host network (`--net-host`),
//!   which the guest may use only when granted by annotation.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::spec::GuestNetwork;

/// What this shim process entered or made (see the module doc).
#[derive(Default)]
pub struct Namespaces {
    /// It made the fresh network namespace its single container asked for.
    own_network: bool,
    /// It, a pod's shim, made the pod's own IPC (and UTS) namespace, which
    /// the pod's Linux containers join through the shim's pid.
    pod_ipc: bool,
    pod_uts: bool,
    /// The process holding the pod's process namespace, once a container of
    /// a pod that shares one (`shareProcessNamespace`) asked for it: `unshare
    /// --pid --kill-child sleep infinity`, whose child is the namespace's
    /// first process, as the pause process is in a runc pod. Killed with the sandbox.
    pod_pid_holder: Arc<Mutex<Option<u32>>>,
    /// containerd's network namespace, the one the shim started in: the
    /// shim's own requests to registries (the run-time policy) go out from
    /// there, never from a container's network.
    host_network: Option<Arc<std::fs::File>>,
}

impl Namespaces {
    /// Moves the calling thread, and so every thread it starts afterwards,
    /// into the namespaces the container of `spec` (its bundle's, `None`
    /// when it has none) should have (see the module doc). Call before the
    /// shim starts any thread.
    pub fn enter_for(spec: Option<&Spec>) -> Result<Namespaces> {
        let mut entered = Namespaces::host();
        let Some(spec) = spec else {
            return Ok(entered);
        };
        if crate::pod::is_pod_member(spec) {
            // It joins the pod's shim, which entered the pod's namespaces.
            return Ok(entered);
        }
        entered.enter_network(spec)?;
        if crate::pod::is_sandbox(spec) {
            entered.make_pod_ipc_and_uts(spec)?;
        }
        Ok(entered)
    }

    /// What a shim that enters nothing holds: containerd's network, which
    /// a shared shim's containers (`shared.rs`) run on.
    pub fn host() -> Namespaces {
        Namespaces {
            host_network: std::fs::File::open("/proc/thread-self/ns/net")
                .ok()
                .map(Arc::new),
            ..Namespaces::default()
        }
    }

    fn enter_network(&mut self, spec: &Spec) -> Result<()> {
        match network_namespace(spec) {
            None => Ok(()),
            Some(Some(path)) => join(path),
            Some(None) => {
                // SAFETY: unshare(2) with a flag constant; it changes only the
                // calling thread's namespace and touches no memory of ours.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .context("creating the container's network namespace");
                }
                bring_up_loopback().context("bringing up loopback in the container's network")?;
                self.own_network = true;
                Ok(())
            }
        }
    }

    /// A pod's sandbox asks for new IPC and UTS namespaces (what the pause
    /// process of a runc pod holds): the shim makes them, with the pod's
    /// hostname, so that the pod's Linux containers, whose specs name the
    /// sandbox task's (the shim's) namespaces, share the pod's and not the node's.
    fn make_pod_ipc_and_uts(&mut self, spec: &Spec) -> Result<()> {
        let wants_new = |typ: LinuxNamespaceType| {
            spec.linux()
                .as_ref()
                .and_then(|l| l.namespaces().as_ref())
                .is_some_and(|list| list.iter().any(|n| n.typ() == typ && n.path().is_none()))
        };
        let (ipc, uts) = (
            wants_new(LinuxNamespaceType::Ipc),
            wants_new(LinuxNamespaceType::Uts),
        );
        let flags =
            if ipc { libc::CLONE_NEWIPC } else { 0 } | if uts { libc::CLONE_NEWUTS } else { 0 };
        if flags == 0 {
            return Ok(());
        }
        // SAFETY: unshare(2) with flag constants; it changes only the calling
        // thread's namespaces (inherited by the threads it starts later).
        if unsafe { libc::unshare(flags) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context("creating the pod's IPC and UTS namespaces");
        }
        self.pod_ipc = ipc;
        self.pod_uts = uts;
        if let Some(hostname) = spec.hostname().as_deref().filter(|h| uts && !h.is_empty()) {
            // SAFETY: sethostname reads `len` bytes of a live slice.
            if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("setting the pod's hostname {hostname}"));
            }
        }
        Ok(())
    }

    /// Whether the shim process holds the pod's namespace of `kind` (as named
    /// in `/proc/PID/ns/KIND`), for a pod's Linux container to join.
    pub fn holds_pod_namespace(&self, kind: &str) -> bool {
        match kind {
            "net" => true,
            "ipc" => self.pod_ipc,
            "uts" => self.pod_uts,
            _ => false,
        }
    }

    /// What network the container's guest gets. It may use sockets without
    /// an annotation when its spec names the namespace this shim is in (a
    /// pod's, or one it joined), or asked for a fresh one, which this shim
    /// made for it.
    pub fn guest_network(&self, spec: &Spec) -> GuestNetwork {
        let granted = match network_namespace(spec) {
            None => false,
            Some(None) => self.own_network,
            Some(Some(path)) => {
                let (Ok(theirs), Ok(ours)) = (
                    std::fs::metadata(path),
                    std::fs::metadata("/proc/thread-self/ns/net"),
                ) else {
                    return GuestNetwork {
                        granted: false,
                        own_namespace: true,
                    };
                };
                (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino())
            }
        };
        GuestNetwork {
            granted,
            own_namespace: network_namespace(spec).is_some(),
        }
    }

    /// The pod's own process namespace (`/proc/PID/ns/pid` of its first
    /// process), made at the first call.
    pub fn pod_pid_namespace(&self) -> Result<PathBuf> {
        let mut holder = self.pod_pid_holder.lock().unwrap();
        let current = *holder;
        let unshare_pid = match current {
            Some(pid) => pid,
            None => {
                let since = crate::reaper::mark();
                let child = std::process::Command::new("unshare")
                    .args(["--pid", "--kill-child", "--", "sleep", "infinity"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .context("running unshare (util-linux)")?;
                let pid = child.id();
                *holder = Some(pid);
                drop(holder);
                // The reaper collects it when it ends; its pid is then
                // forgotten. (After the lock is let go: a holder that has
                // ended already is forgotten at once, on this thread.)
                let holder_of = self.pod_pid_holder.clone();
                crate::reaper::on_exit(pid, since, move |_| {
                    let mut holder = holder_of.lock().unwrap();
                    if *holder == Some(pid) {
                        *holder = None;
                    }
                });
                pid
            }
        };
        // Its child, the namespace's first process, may take a moment to fork.
        let children = format!("/proc/{unshare_pid}/task/{unshare_pid}/children");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let first = std::fs::read_to_string(&children)
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok());
            if let Some(first) = first {
                return Ok(PathBuf::from(format!("/proc/{first}/ns/pid")));
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("unshare (pid {unshare_pid}) started no process in a new namespace");
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Ends the pod's process namespace, and with it every process left in it.
    pub fn end_pod_pid_namespace(&self) {
        if let Some(pid) = self.pod_pid_holder.lock().unwrap().take() {
            // SAFETY: kill(2) with integers only, touching no memory. The pid
            // is still the holder's: the reaper forgets it (under the lock
            // taken above) as soon as it collects the holder.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// The `network` namespace entry of a spec: `None` without one (host
/// network), `Some(None)` for a new namespace, `Some(Some(path))` to join.
pub(crate) fn network_namespace(spec: &Spec) -> Option<Option<&Path>> {
    let entry = spec
        .linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?;
    Some(entry.path().as_deref())
}

impl Namespaces {
    /// Runs `work` on a thread of its own in containerd's network namespace
    /// (where registries are reachable as containerd reaches them), or here
    /// when the shim entered none.
    pub fn in_host_network<T: Send>(&self, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let Some(host) = &self.host_network else {
            return work();
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns(2) on a descriptor we hold open; it moves
                    // only this short-lived thread (and threads it starts),
                    // touching no memory.
                    if unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error())
                            .context("entering containerd's network namespace");
                    }
                    work()
                })
                .join()
                .unwrap_or_else(|_| anyhow::bail!("the thread asking the registry panicked"))
        })
    }
}

fn join(path: &Path) -> Result<()> {
    let netns = std::fs::File::open(path)
        .with_context(|| format!("opening the network namespace {}", path.display()))?;
    // SAFETY: setns(2) on a descriptor we hold open; it changes only this
    // thread's namespace and touches no memory.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering the network namespace {}", path.display()));
    }
    Ok(())
}

/// `ip link set lo up`, with the two ioctls it comes down to.
fn bring_up_loopback() -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked and
    // owned by `sock` from here on.
    let sock = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    // SAFETY: ifreq is plain old data, so all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the `ifreq` we pass,
    // which lives across both calls; the name is NUL-terminated.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
