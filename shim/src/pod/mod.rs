//! Kubernetes pods through containerd's CRI: which containers belong to a
//! pod, read from the CRI's annotations, and so which shim process serves
//! them (one per pod). A leaf: the pod's namespaces are `namespaces.rs`, its
//! sandbox task `task::sandbox`.
//!
//! containerd's CRI plugin creates a pod's sandbox container first, with the
//! pod's network namespace in its spec, then the pod's containers, whose
//! specs name the sandbox task's namespaces as `/proc/<sandbox pid>/ns/…`.
//! The sandbox task's pid is this shim's, so the shim enters the pod's
//! namespaces before it starts any thread: every container of the pod then
//! shares them, and a guest's sockets reach the pod's network only.

pub mod namespaces;

use std::path::Path;

use oci_spec::runtime::Spec;

/// CRI annotation: `sandbox` for a pod's sandbox container, `container` otherwise.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI annotation: the id of the pod's sandbox container.
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

pub fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
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

/// The directory containerd 2.x's shim sandbox controller (`sandboxer =
/// "shim"`) keeps a pod's bundle in: `<state>/<this>/<namespace>/<id>`.
const SANDBOX_CONTROLLER_STATE: &str = "io.containerd.sandbox.controller.v1.shim";

/// Whether `bundle` is a pod's bundle of containerd's shim sandbox
/// controller: the shim started there serves the Sandbox API (`service/sandbox.rs`).
pub fn is_sandbox_controller_bundle(bundle: &Path) -> bool {
    !bundle.join("config.json").exists()
        && bundle
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|name| name == SANDBOX_CONTROLLER_STATE)
}

/// The grouping (socket name) of the process that runs a pod's containers
/// when containerd's shim sandbox controller made the pod: a second shim
/// process, started in the pod's namespaces once containerd has named them.
pub fn pod_server_grouping(sandbox_id: &str) -> String {
    format!("{sandbox_id}/pod")
}

/// Whether `spec` is a container of a pod other than its sandbox: it joins
/// the shim of its pod's sandbox.
pub fn is_pod_member(spec: &Spec) -> bool {
    !is_sandbox(spec) && annotation(spec, ANNOTATION_SANDBOX_ID).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(annotations: &[(&str, &str)]) -> Spec {
        let mut spec = Spec::default();
        spec.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        spec
    }

    #[test]
    fn the_cri_annotations_tell_a_sandbox_from_its_containers() {
        let sandbox = spec_with(&[
            (ANNOTATION_CONTAINER_TYPE, "sandbox"),
            (ANNOTATION_SANDBOX_ID, "pod1"),
        ]);
        assert!(is_sandbox(&sandbox));
        assert!(!is_pod_member(&sandbox));
        let member = spec_with(&[
            (ANNOTATION_CONTAINER_TYPE, "container"),
            (ANNOTATION_SANDBOX_ID, "pod1"),
        ]);
        assert!(!is_sandbox(&member));
        assert!(is_pod_member(&member));
        let alone = spec_with(&[]);
        assert!(!is_sandbox(&alone) && !is_pod_member(&alone));
        assert_eq!(annotation(&member, ANNOTATION_SANDBOX_ID), Some("pod1"));
    }

    #[test]
    fn only_a_spec_less_bundle_of_the_shim_sandbox_controller_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir
            .path()
            .join(SANDBOX_CONTROLLER_STATE)
            .join("k8s.io")
            .join("pod1");
        std::fs::create_dir_all(&bundle).unwrap();
        assert!(is_sandbox_controller_bundle(&bundle));
        let task = dir.path().join("io.containerd.runtime.v2.task/k8s.io/pod1");
        std::fs::create_dir_all(&task).unwrap();
        assert!(!is_sandbox_controller_bundle(&task));
        Spec::default().save(bundle.join("config.json")).unwrap();
        assert!(!is_sandbox_controller_bundle(&bundle));
    }

    #[test]
    fn a_pods_containers_share_the_sandboxs_shim_and_others_get_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let write = |spec: &Spec| spec.save(dir.path().join("config.json")).unwrap();
        write(&spec_with(&[(ANNOTATION_SANDBOX_ID, "pod1")]));
        assert_eq!(grouping(dir.path(), "c1"), "pod1");
        write(&spec_with(&[(ANNOTATION_SANDBOX_ID, "")]));
        assert_eq!(grouping(dir.path(), "c1"), "c1", "an empty sandbox id");
        write(&spec_with(&[]));
        assert_eq!(grouping(dir.path(), "c1"), "c1");
        std::fs::write(dir.path().join("config.json"), "not json").unwrap();
        assert_eq!(grouping(dir.path(), "c1"), "c1", "an unreadable spec");
    }
}
