//! Which network a container's guest gets: the network namespace its spec
//! names or asks for, entered by the whole shim process before it starts any
//! thread, so every guest thread and its sockets live there.
//!
//! - A pod's sandbox names the pod's namespace: the pod's shim joins it and
//!   the pod's containers share it (`pod.rs`).
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
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Set once this shim process made the fresh network namespace its single
/// container asked for.
static OWN_NAMESPACE: AtomicBool = AtomicBool::new(false);
/// Set once this shim process, a pod's, made the pod's own IPC (and UTS)
/// namespace, which the pod's Linux containers join through the shim's pid.
static POD_IPC: AtomicBool = AtomicBool::new(false);
static POD_UTS: AtomicBool = AtomicBool::new(false);

/// The `network` namespace entry of a spec: `None` without one (host
/// network), `Some(None)` for a new namespace, `Some(Some(path))` to join.
fn network_namespace(spec: &Spec) -> Option<Option<&Path>> {
    let entry = spec
        .linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?;
    Some(entry.path().as_deref())
}

/// Whether the spec gives the container a network namespace of its own (or
/// of its pod) rather than the host's.
pub fn has_own_namespace(spec: &Spec) -> bool {
    network_namespace(spec).is_some()
}

/// Moves the calling thread, and so every thread it starts afterwards, into
/// the network namespace the container in `bundle` should have (see the
/// module doc). Call before the shim starts any thread.
pub fn enter_container_network(bundle: &Path) -> Result<()> {
    let Ok(spec) = Spec::load(bundle.join("config.json")) else {
        return Ok(());
    };
    let pod_member = !crate::pod::is_sandbox(&spec)
        && crate::pod::annotation(&spec, crate::pod::ANNOTATION_SANDBOX_ID).is_some();
    if pod_member {
        // It joins the pod's shim, which entered the pod's namespace.
        return Ok(());
    }
    if crate::pod::is_sandbox(&spec) {
        enter_network(&spec)?;
        return make_pod_ipc_and_uts(&spec);
    }
    enter_network(&spec)
}

fn enter_network(spec: &Spec) -> Result<()> {
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
            OWN_NAMESPACE.store(true, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// A pod's sandbox asks for new IPC and UTS namespaces (what the pause
/// process of a runc pod holds): the shim makes them, with the pod's
/// hostname, so that the pod's Linux containers, whose specs name the
/// sandbox task's (the shim's) namespaces, share the pod's and not the node's.
fn make_pod_ipc_and_uts(spec: &Spec) -> Result<()> {
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
    let flags = if ipc { libc::CLONE_NEWIPC } else { 0 } | if uts { libc::CLONE_NEWUTS } else { 0 };
    if flags == 0 {
        return Ok(());
    }
    // SAFETY: unshare(2) with flag constants; it changes only the calling
    // thread's namespaces (inherited by the threads it starts later).
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("creating the pod's IPC and UTS namespaces");
    }
    POD_IPC.store(ipc, Ordering::Relaxed);
    POD_UTS.store(uts, Ordering::Relaxed);
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
pub fn holds_pod_namespace(kind: &str) -> bool {
    match kind {
        "net" => true,
        "ipc" => POD_IPC.load(Ordering::Relaxed),
        "uts" => POD_UTS.load(Ordering::Relaxed),
        _ => false,
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

/// Whether the container's guest may use sockets without an annotation: its
/// spec names the namespace this shim is in (a pod's, or one it joined), or
/// asked for a fresh one, which this shim made for it.
pub fn guest_has_network(spec: &Spec) -> bool {
    match network_namespace(spec) {
        None => false,
        Some(None) => OWN_NAMESPACE.load(Ordering::Relaxed),
        Some(Some(path)) => {
            let (Ok(theirs), Ok(ours)) = (
                std::fs::metadata(path),
                std::fs::metadata("/proc/thread-self/ns/net"),
            ) else {
                return false;
            };
            (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino())
        }
    }
}
