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

use oci_spec::runtime::Spec;

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
