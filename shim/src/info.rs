//! The `-info` action: what containerd 2.x learns about the runtime before
//! any container exists (`ctr plugins inspect-runtime`, the CRI's runtime
//! handler features, its check of idmap mounts). The features describe
//! what a Wasm guest is given; Linux containers under this runtime are run
//! by runc, which keeps its own features.

use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use wasmbox_format as format;

use crate::mounts::MOUNT_FLAGS;
use crate::pod::{ANNOTATION_CONTAINER_TYPE, ANNOTATION_SANDBOX_ID};

/// The type URL containerd registers runtime-spec `Features` under (it
/// decodes the JSON value into them).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// The container annotations the shim reads, and what each does.
pub const ANNOTATIONS_READ: [(&str, &str); 8] = [
    (
        format::ANNOTATION_NETWORK,
        "WASI network access: none (default) or host (sockets and name lookup in the container's network namespace)",
    ),
    (
        format::ANNOTATION_ROOTFS,
        "ro: the guest gets its root filesystem read-only even where the spec leaves it writable",
    ),
    (
        format::ANNOTATION_FEATURES,
        "wasmtime features to turn on (name, +name) or off (-name), comma-separated",
    ),
    (
        format::ANNOTATION_HTTP_PORT,
        "the port a wasi:http component is served on (default: PORT, else 8080)",
    ),
    (
        format::ANNOTATION_HTTP_CONCURRENCY,
        "how many wasi:http requests run at a time (default 64)",
    ),
    (
        format::ANNOTATION_SHIM_GROUP,
        "a shared-shim group: containers of one namespace that name it share one shim process (host network only; empty: opt out)",
    ),
    (
        ANNOTATION_SANDBOX_ID,
        "the pod a container belongs to: one shim process serves a pod",
    ),
    (
        ANNOTATION_CONTAINER_TYPE,
        "sandbox: the pod's sandbox task, which holds the pod's namespaces and runs no program",
    ),
];

/// The runtime-spec `features` document of the runtime (JSON).
pub fn features() -> serde_json::Value {
    let mount_options: Vec<&str> = MOUNT_FLAGS.iter().map(|(name, _)| *name).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        // A Wasm guest runs in the shim's process: no hook is run for it.
        "hooks": [],
        "mountOptions": mount_options,
        "linux": {
            // The namespaces a Wasm container's spec may name and get:
            // the pod's network, IPC, UTS and PID namespaces, and its own
            // mount namespace for its root filesystem. No user namespace,
            // hence no idmap mounts (containerd refuses those up front).
            "namespaces": ["mount", "network", "ipc", "uts", "pid"],
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": { "enabled": false },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": {
            "dev.wasmbox.linux-containers": "run by runc (its features: runc features)"
        },
        // Pod annotations that widen what a guest reaches: a CRI allows
        // them only where the runtime handler's pod_annotations does.
        "potentiallyUnsafeConfigAnnotations": [format::ANNOTATION_NETWORK, format::ANNOTATION_FEATURES]
    })
}

/// The `RuntimeInfo` `-info` prints, for runtime `name`; the runtime
/// options containerd sent (if any) are echoed, as runc's shim does.
pub fn runtime_info(name: &str, options: Option<&Any>) -> RuntimeInfo {
    RuntimeInfo {
        name: name.to_string(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }),
        options: options.cloned().into(),
        features: MessageField::some(Any {
            type_url: FEATURES_TYPE_URL.to_string(),
            value: features().to_string().into_bytes(),
            ..Default::default()
        }),
        annotations: ANNOTATIONS_READ
            .iter()
            .map(|(key, meaning)| (key.to_string(), meaning.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_parse_as_runtime_spec_features_and_list_no_idmap() {
        let info = runtime_info("io.containerd.wasmtime.v1", None);
        let features: oci_spec::runtime::Features =
            serde_json::from_slice(&info.features.value).expect("runtime-spec features");
        let options = features.mount_options().clone().unwrap();
        assert!(options.iter().any(|o| o == "ro") && options.iter().any(|o| o == "nosuid"));
        assert!(!options.iter().any(|o| o == "rro" || o == "idmap"));
        let linux = features.linux().clone().unwrap();
        assert!(
            !linux
                .namespaces()
                .clone()
                .unwrap()
                .contains(&oci_spec::runtime::LinuxNamespaceType::User)
        );
        assert_eq!(info.annotations.len(), ANNOTATIONS_READ.len());
    }
}
