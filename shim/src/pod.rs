//! Kubernetes pods through containerd's CRI: the sandbox ("pause") container
//! the shim holds itself, one shim process per pod, and the pod's network
//! namespace.
//!
//! containerd's CRI plugin creates a pod's sandbox container first, with the
//! pod's network namespace in its spec, then the pod's containers, whose
//! specs name the sandbox task's namespaces as `/proc/<sandbox pid>/ns/…`.
//! The sandbox task's pid is this shim's, so the shim enters the pod's
//! network namespace before it starts any thread: every container of the pod
//! then shares it, and a guest's sockets reach the pod's network only.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// CRI annotation: `sandbox` for a pod's sandbox container, `container` otherwise.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI annotation: the id of the pod's sandbox container.
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Whether `spec` is a pod's sandbox container, which runs no program.
pub fn is_sandbox(spec: &Spec) -> bool {
    annotation(spec, ANNOTATION_CONTAINER_TYPE) == Some("sandbox")
}

/// The id that picks the shim process for the container in `bundle`: its
/// pod's sandbox id, so a pod's containers share one shim, or else its own.
pub fn grouping(bundle: &Path, id: &str) -> String {
    Spec::load(bundle.join("config.json"))
        .ok()
        .and_then(|spec| annotation(&spec, ANNOTATION_SANDBOX_ID).map(str::to_string))
        .filter(|sandbox| !sandbox.is_empty())
        .unwrap_or_else(|| id.to_string())
}

/// The network namespace path a spec asks to join, if any.
fn network_namespace(spec: &Spec) -> Option<&Path> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?
        .path()
        .as_deref()
}

/// Moves the calling thread, and so every thread it starts afterwards, into
/// the network namespace of the pod whose sandbox is in `bundle`. Does
/// nothing for other containers. Call before the shim starts any thread.
pub fn enter_pod_network(bundle: &Path) -> Result<()> {
    let Ok(spec) = Spec::load(bundle.join("config.json")) else {
        return Ok(());
    };
    if !is_sandbox(&spec) {
        return Ok(());
    }
    let Some(path) = network_namespace(&spec) else {
        return Ok(()); // host network pod
    };
    let netns = std::fs::File::open(path)
        .with_context(|| format!("opening the pod's network namespace {}", path.display()))?;
    // SAFETY: setns(2) on a descriptor we hold open; it changes only this
    // thread's namespace and touches no memory.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&netns), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering the pod's network namespace {}", path.display()));
    }
    Ok(())
}

/// Whether the container's spec names the network namespace this shim is in
/// (a container of the pod whose sandbox the shim holds): its guest may then
/// use sockets, which reach only the pod's network.
pub fn shares_shim_network(spec: &Spec) -> bool {
    let Some(path) = network_namespace(spec) else {
        return false;
    };
    let (Ok(theirs), Ok(ours)) = (
        std::fs::metadata(path),
        std::fs::metadata("/proc/thread-self/ns/net"),
    ) else {
        return false;
    };
    (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino())
}
