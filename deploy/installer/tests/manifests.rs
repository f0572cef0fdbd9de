//! Every Kubernetes manifest in `deploy/kubernetes/` parses into the typed
//! k8s-openapi object for its kind, round-trips without losing a field
//! (catches misspelled field names), and agrees with the installer.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use wasmbox_node_installer::{DEFAULT_HANDLER, NODE_LABEL, NODE_LABEL_VALUE};

/// The kinds the manifests may contain; any other kind fails to
/// deserialize.
#[derive(Debug, Deserialize)]
enum Kind {
    RuntimeClass,
    Namespace,
    ServiceAccount,
    ClusterRole,
    ClusterRoleBinding,
    DaemonSet,
    Deployment,
    Service,
}

#[derive(Default)]
struct Objects {
    runtime_classes: Vec<RuntimeClass>,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    daemon_sets: Vec<DaemonSet>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
}

fn kubernetes_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kubernetes")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

/// Deserializes into `T` and checks that serializing it again gives the
/// same JSON: a field k8s-openapi does not know would be dropped.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Value, what: &str) -> T {
    let object: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{what} does not parse: {e}"));
    let back = serde_json::to_value(&object).unwrap();
    assert_eq!(
        &back, doc,
        "{what} changed in a round trip through its type (misspelled or unknown field?)"
    );
    object
}

fn load() -> Objects {
    let mut files = Vec::new();
    yaml_files(&kubernetes_dir(), &mut files);
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let mut objects = Objects::default();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        for (n, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let doc = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: document {n}: {e}", file.display()));
            if doc.is_null() {
                continue;
            }
            let what = format!("{} document {n}", file.display());
            let kind: Kind = serde_json::from_value(doc["kind"].clone())
                .unwrap_or_else(|e| panic!("{what}: unexpected kind: {e}"));
            match kind {
                Kind::RuntimeClass => objects.runtime_classes.push(typed(&doc, &what)),
                Kind::Namespace => objects.namespaces.push(typed(&doc, &what)),
                Kind::ServiceAccount => objects.service_accounts.push(typed(&doc, &what)),
                Kind::ClusterRole => objects.cluster_roles.push(typed(&doc, &what)),
                Kind::ClusterRoleBinding => objects.cluster_role_bindings.push(typed(&doc, &what)),
                Kind::DaemonSet => objects.daemon_sets.push(typed(&doc, &what)),
                Kind::Deployment => objects.deployments.push(typed(&doc, &what)),
                Kind::Service => objects.services.push(typed(&doc, &what)),
            }
        }
    }
    objects
}

#[test]
fn runtime_class_matches_installer() {
    let objects = load();
    let [rc] = objects.runtime_classes.as_slice() else {
        panic!("expected one RuntimeClass");
    };
    assert_eq!(rc.metadata.name.as_deref(), Some("wasmtime"));
    assert_eq!(rc.handler, DEFAULT_HANDLER);
    let selector = rc
        .scheduling
        .as_ref()
        .and_then(|s| s.node_selector.clone())
        .unwrap();
    assert_eq!(
        selector,
        BTreeMap::from([(NODE_LABEL.to_owned(), NODE_LABEL_VALUE.to_owned())])
    );
    // The pod shim's own memory, which the kubelet adds to the pod's limit.
    let memory = rc
        .overhead
        .as_ref()
        .and_then(|o| o.pod_fixed.as_ref())
        .and_then(|fixed| fixed.get("memory"))
        .map(|q| q.0.clone());
    assert_eq!(memory.as_deref(), Some("16Mi"));
}

#[test]
fn node_installer_daemon_set() {
    let objects = load();
    let [ds] = objects.daemon_sets.as_slice() else {
        panic!("expected one DaemonSet");
    };
    assert_eq!(ds.metadata.name.as_deref(), Some("wasmbox-node-installer"));
    let namespace = ds.metadata.namespace.as_deref().unwrap();
    assert!(
        objects
            .namespaces
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(namespace))
    );
    let pod = ds.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.host_pid, Some(true));
    assert!(
        pod.tolerations
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none())
    );

    let [init] = pod.init_containers.as_deref().unwrap() else {
        panic!("expected one init container");
    };
    let args = init.args.as_deref().unwrap();
    assert_eq!(args[0], "install");
    assert!(args.iter().any(|a| a == "--label-node"), "{args:?}");
    let host_root = &args[args.iter().position(|a| a == "--host-root").unwrap() + 1];
    assert_eq!(
        init.security_context.as_ref().unwrap().privileged,
        Some(true)
    );
    let node_name = init
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .unwrap();
    assert_eq!(
        node_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    // The host's / is mounted where --host-root points.
    let mount = init
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| &m.mount_path == host_root)
        .unwrap();
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(volume.host_path.as_ref().unwrap().path, "/");

    let [main] = pod.containers.as_slice() else {
        panic!("expected one container");
    };
    assert_eq!(
        main.command.as_deref().unwrap(),
        ["wasmbox-node-installer", "sleep"]
    );
    assert_eq!(main.image, init.image);

    // RBAC: the pod's service account may get and patch nodes.
    let sa = pod.service_account_name.as_deref().unwrap();
    assert!(objects.service_accounts.iter().any(|s| {
        s.metadata.name.as_deref() == Some(sa) && s.metadata.namespace.as_deref() == Some(namespace)
    }));
    let binding = objects
        .cluster_role_bindings
        .iter()
        .find(|b| {
            b.subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == sa
                    && s.namespace.as_deref() == Some(namespace)
            })
        })
        .unwrap();
    let role = objects
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(binding.role_ref.name.as_str()))
        .unwrap();
    assert!(role.rules.iter().flatten().any(|rule| {
        rule.resources.iter().flatten().any(|r| r == "nodes")
            && ["get", "patch"]
                .iter()
                .all(|v| rule.verbs.iter().any(|x| x == v))
    }));
}

#[test]
fn http_hello_example() {
    let objects = load();
    let deployment = objects
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("http-hello"))
        .unwrap();
    let template = &deployment.spec.template;
    let pod = template.spec.as_ref().unwrap();
    assert_eq!(pod.runtime_class_name.as_deref(), Some("wasmtime"));
    let container_port = pod.containers[0].ports.as_ref().unwrap()[0].container_port;

    let service = objects
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("http-hello"))
        .unwrap();
    let spec = service.spec.as_ref().unwrap();
    // The service selects the deployment's pods...
    let pod_labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    for (k, v) in spec.selector.as_ref().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v));
    }
    // ...on the port the container listens on.
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 80);
    assert_eq!(port.target_port, Some(IntOrString::Int(container_port)));
}

/// The Dockerfile puts the shim where the installer looks for it by default.
#[test]
fn dockerfile_matches_installer_defaults() {
    let dockerfile =
        fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(" /opt/wasmbox/containerd-shim-wasmtime-v1\n"));
    assert!(dockerfile.contains(" /usr/local/bin/wasmbox-node-installer\n"));
    assert!(dockerfile.contains("FROM rust:1.95-bookworm AS build"));
    assert!(dockerfile.contains("FROM debian:bookworm-slim"));
}

/// The mixed pod: a Wasm server and Linux init and sidecar containers that
/// reach it on the pod's loopback and share its volume.
#[test]
fn http_hello_sidecar_example() {
    let objects = load();
    let deployment = objects
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("http-hello-sidecar"))
        .unwrap();
    let pod = deployment.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.runtime_class_name.as_deref(), Some("wasmtime"));
    let [wasm, sidecar] = pod.containers.as_slice() else {
        panic!("expected the Wasm server and one sidecar");
    };
    let [init] = pod.init_containers.as_deref().unwrap() else {
        panic!("expected one init container");
    };
    assert!(wasm.image.as_deref().unwrap().contains("http-hello"));
    for linux in [sidecar, init] {
        assert!(linux.image.as_deref().unwrap().starts_with("busybox:"));
    }
    let port = wasm.ports.as_ref().unwrap()[0].container_port;
    let script = sidecar.command.as_ref().unwrap().join(" ");
    assert!(
        script.contains(&format!("http://127.0.0.1:{port}/")),
        "{script}"
    );
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for container in [wasm, sidecar, init] {
        for mount in container.volume_mounts.iter().flatten() {
            assert!(volumes.contains(&mount.name.as_str()), "{}", mount.name);
        }
    }
    let service = objects
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("http-hello-sidecar"))
        .unwrap();
    let spec = service.spec.as_ref().unwrap();
    assert_eq!(
        spec.ports.as_ref().unwrap()[0].target_port,
        Some(IntOrString::Int(port))
    );
}
