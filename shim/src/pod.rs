//! Kubernetes pods through containerd's CRI: the sandbox ("pause") container
//! the shim holds itself, one shim process per pod, and the pod's network
//! namespace.
//!
//! containerd's CRI plugin creates a pod's sandbox container first, with the
//! pod's network namespace in its spec, then the pod's containers, whose
//! specs name the sandbox task's namespaces as `/proc/<sandbox pid>/ns/…`.
//! The sandbox task's pid is this shim's, so the shim enters the pod's
//! network namespace before it starts any thread (`network.rs`): every
//! container of the pod then shares it, and a guest's sockets reach the pod's
//! network only.

use std::path::Path;
use std::sync::Mutex;

use oci_spec::runtime::Spec;

use crate::container::OnExit;

/// CRI annotation: `sandbox` for a pod's sandbox container, `container` otherwise.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI annotation: the id of the pod's sandbox container.
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

pub(crate) fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
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

/// The process holding the pod's process namespace, once a container of a
/// pod that shares one (`shareProcessNamespace`) asked for it: `unshare
/// --pid --kill-child sleep infinity`, whose child is the namespace's first
/// process, as the pause process is in a runc pod. Killed with the sandbox.
static POD_PID_NAMESPACE: Mutex<Option<u32>> = Mutex::new(None);

/// The pod's own process namespace (`/proc/PID/ns/pid` of its first
/// process), made at the first call.
pub fn pod_pid_namespace() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    let mut holder = POD_PID_NAMESPACE.lock().unwrap();
    let unshare_pid = match *holder {
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
            // The reaper collects it when it ends; its pid is then forgotten.
            crate::reaper::on_exit(pid, since, move |_| {
                let mut holder = POD_PID_NAMESPACE.lock().unwrap();
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
            return Ok(std::path::PathBuf::from(format!("/proc/{first}/ns/pid")));
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("unshare (pid {unshare_pid}) started no process in a new namespace");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Ends the pod's process namespace, and with it every process left in it.
pub(crate) fn end_pod_pid_namespace() {
    if let Some(pid) = POD_PID_NAMESPACE.lock().unwrap().take() {
        // SAFETY: kill(2) with integers only, touching no memory. The pid
        // is still the holder's: the reaper forgets it (under the lock
        // taken above) as soon as it collects the holder.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// A pod's sandbox ("pause") container: it runs no program and holds the
/// pod until it is killed. With no guest thread to report its exit, it keeps
/// the exit callback `start` gives it until `kill` takes it.
pub(crate) struct Sandbox {
    on_exit: Mutex<Option<OnExit>>,
}

impl Sandbox {
    /// The sandbox of `spec`. The shim joins the pod's cgroup (the pod's
    /// accounting: the pod's containers share this process); a cgroup it
    /// cannot join is logged and skipped, as the pod still runs without it.
    pub(crate) fn create(id: &str, spec: &Spec) -> (Sandbox, Option<crate::cgroup::Membership>) {
        let cgroup = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .and_then(|p| {
                let limits = crate::cgroup::Limits::from_spec(spec);
                match crate::cgroup::join(&p.to_string_lossy(), limits) {
                    Ok(membership) => membership,
                    Err(e) => {
                        log::warn!(id; "not joining the pod's cgroup: {e:#}");
                        None
                    }
                }
            });
        log::info!(id; "pod sandbox");
        let sandbox = Sandbox {
            on_exit: Mutex::new(None),
        };
        (sandbox, cgroup)
    }

    /// Keeps the callback to run when the sandbox is killed.
    pub(crate) fn hold(&self, on_exit: OnExit) {
        *self.on_exit.lock().unwrap() = Some(on_exit);
    }

    /// The callback, once: the sandbox has been killed.
    pub(crate) fn release(&self) -> Option<OnExit> {
        self.on_exit.lock().unwrap().take()
    }
}
