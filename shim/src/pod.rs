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
