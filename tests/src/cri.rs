//! A kubelet stand-in: containerd's CRI plugin, configured with the snippet
//! `deploy/` ships, a CNI bridge network on a private test range, a local
//! registry holding the sandbox image, and a CRI client (k8s-cri over tonic)
//! that drives pods the way the kubelet does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatsRequest, ContainerStatus,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{Containerd, Registry, RegistryAuth, Wasmbox, wait_until};

/// The RuntimeClass handler the tests (and `deploy/`) use.
pub const HANDLER: &str = "wasmtime";
/// The same runtime with containerd 2.x's shim sandbox controller
/// (`sandboxer = "shim"`): the shim makes the pod through the Sandbox API.
pub const SHIM_SANDBOXER_HANDLER: &str = "wasmtime-sandboxer";
/// The same runtime with the shim's own settings file (its `options`'
/// `ConfigPath`, [`CriNode::shim_config`]), e.g. a policy of its own.
pub const CONFIGURED_HANDLER: &str = "wasmtime-configured";
/// The file name of [`CriNode::shim_config`].
const SHIM_CONFIG: &str = "wasmbox-shim.toml";
/// CNI plugins from Debian's containernetworking-plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The CRI settings of a containerd 1.x (config version 2): the sandbox
/// image, OOM score rule, CNI, the registry as an http mirror, and the
/// runtime table `deploy/` ships. containerd replaces its default runtime
/// table when the config names any runtime, so runc (the default handler)
/// is listed as in every real config.
fn cri_config_v2(
    pause: &str,
    cni_conf: &Path,
    registry: &str,
    dir: &Path,
    runtimes: bool,
) -> String {
    let runtimes = if runtimes {
        format!(
            "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n    runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{CONFIGURED_HANDLER}]\n    runtime_type = \"io.containerd.wasmtime.v1\"\n    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{CONFIGURED_HANDLER}.options]\n      ConfigPath = \"{}\"\n{}",
            dir.join(SHIM_CONFIG).display(),
            deploy_snippet("config-1.x.toml")
        )
    } else {
        String::new()
    };
    format!(
        r#"  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{conf}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
{runtimes}"#,
        conf = cni_conf.display(),
    )
}

/// The same for containerd 2.x (config version 3): the images plugin pins
/// the sandbox image and reads registry hosts from a `certs.d` directory
/// (`hosts.toml`, which replaced `registry.mirrors`); the runtime plugin
/// holds CNI, the OOM rule and the runtimes.
fn cri_config_v3(
    pause: &str,
    cni_conf: &Path,
    registry: &str,
    dir: &Path,
    runtimes: bool,
) -> String {
    let runtimes = if runtimes {
        format!(
            "  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n    runtime_type = 'io.containerd.runc.v2'\n  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{SHIM_SANDBOXER_HANDLER}]\n    runtime_type = 'io.containerd.wasmtime.v1'\n    sandboxer = 'shim'\n  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{CONFIGURED_HANDLER}]\n    runtime_type = 'io.containerd.wasmtime.v1'\n    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{CONFIGURED_HANDLER}.options]\n      ConfigPath = '{}'\n{}",
            dir.join(SHIM_CONFIG).display(),
            deploy_snippet("config-2.x.toml")
        )
    } else {
        String::new()
    };
    let certs_d = dir.join("certs.d");
    let host_dir = certs_d.join(registry);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    format!(
        r#"[plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{pause}'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '{certs_d}'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_BIN_DIR}']
    conf_dir = '{conf}'
{runtimes}"#,
        certs_d = certs_d.display(),
        conf = cni_conf.display(),
    )
}

/// A runtime-table snippet of `deploy/containerd/`, as users paste it.
fn deploy_snippet(file: &str) -> String {
    let path = workspace_root().join("deploy/containerd").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// containerd with its CRI plugin, a registry and a CNI network, all private
/// to one test.
pub struct CriNode {
    pub containerd: Containerd,
    pub registry: Registry,
    pub w: Wasmbox,
    dir: TempDir,
    runtime: tokio::runtime::Runtime,
    rt: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// The CNI bridge of this node's network (CNI leaves bridges behind).
    bridge: String,
}

/// A pod the test made: its sandbox id and the config the kubelet would
/// send again with each container.
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

impl CriNode {
    pub fn start() -> CriNode {
        crate::require_tool("containerd");
        CriNode::start_on(None)
    }

    /// A node whose containerd and ctr are the ones in `bin_dir` (`None`:
    /// PATH), e.g. the containerd 1.7 of the private Docker Engine, which
    /// unpacks images of raw Wasm layers that 1.6 refuses.
    pub fn start_on(bin_dir: Option<PathBuf>) -> CriNode {
        CriNode::start_from(bin_dir, None)
    }

    /// A node whose containerd starts from the whole config `base` (its
    /// runtimes, e.g. as `deploy/`'s installer wrote them): only the
    /// test's paths, CNI, sandbox image and registry are set in it.
    pub fn start_from(bin_dir: Option<PathBuf>, base: Option<String>) -> CriNode {
        CriNode::start_with_env(bin_dir, base, Vec::new())
    }

    /// [`CriNode::start_from`] with `env` added to containerd's environment
    /// (so to its shims'), e.g. `WASMBOX_POLICY`.
    pub fn start_with_env(
        bin_dir: Option<PathBuf>,
        base: Option<String>,
        env: Vec<(String, String)>,
    ) -> CriNode {
        assert!(
            Path::new(CNI_BIN_DIR).join("bridge").exists(),
            "CNI plugins missing in {CNI_BIN_DIR}: apt-get install containernetworking-plugins"
        );
        let registry = Registry::start(RegistryAuth::None);
        let w = Wasmbox::new();
        let dir = tempfile::Builder::new().prefix("cri").tempdir().unwrap();

        // The sandbox ("pause") image: containerd pulls and unpacks it, the
        // shim never runs it. A tiny image of our own, in the local registry.
        let pause = format!("{}/wasmbox/pause:v1", registry.addr);
        let pause_wat = dir.path().join("pause.wat");
        std::fs::write(&pause_wat, r#"(module (func (export "_start")))"#).unwrap();
        w.ok(&[
            "pack",
            pause_wat.to_str().unwrap(),
            "-t",
            &pause,
            "--push",
            "--plain-http",
        ]);

        let net = unique_network();
        let bridge = format!("wbx{net}");
        let cni_conf = dir.path().join("net.d");
        std::fs::create_dir_all(&cni_conf).unwrap();
        std::fs::write(
            cni_conf.join("10-wasmbox-test.conflist"),
            serde_json::json!({
                "cniVersion": "0.4.0",
                "name": format!("wbx-test-{net}"),
                "plugins": [{
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("10.{}.{}.0/24", 200 + net / 256, net % 256)}]],
                        "dataDir": dir.path().join("ipam"),
                    }
                }]
            })
            .to_string(),
        )
        .unwrap();

        let runtimes = base.is_none();
        std::fs::write(dir.path().join(SHIM_CONFIG), "").unwrap();
        let cri_config = match crate::containerd::major_version_of(bin_dir.as_deref()) {
            1 => cri_config_v2(&pause, &cni_conf, &registry.addr, dir.path(), runtimes),
            _ => cri_config_v3(&pause, &cni_conf, &registry.addr, dir.path(), runtimes),
        };
        let containerd = Containerd::start_opts(crate::ContainerdOptions {
            bin_dir,
            cri_config,
            base_config: base,
            env,
            ..Default::default()
        });

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = containerd.address.clone();
        let channel = runtime
            .block_on(
                Endpoint::try_from("http://[::]")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(socket).await?,
                            ))
                        }
                    })),
            )
            .expect("connecting to containerd's CRI");
        CriNode {
            rt: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            containerd,
            registry,
            w,
            dir,
            runtime,
            bridge,
        }
    }

    /// The settings file of [`CONFIGURED_HANDLER`]'s shims (empty at first).
    pub fn shim_config(&self) -> PathBuf {
        self.dir.path().join(SHIM_CONFIG)
    }

    /// The directory pods write their CRI logs under.
    pub fn log_dir(&self, pod: &str) -> PathBuf {
        self.dir.path().join("pods").join(pod)
    }

    /// Packs `module` as `NAME:v1`, pushes it to the registry and pulls it
    /// through the CRI, as the kubelet does before creating a container.
    pub fn image(&self, name: &str, module: &Path) -> String {
        self.image_packed(name, module, &[])
    }

    /// [`CriNode::image`], packed with `pack_args` added (e.g. `--format
    /// artifact`); packing again under the same name moves its tag.
    pub fn image_packed(&self, name: &str, module: &Path, pack_args: &[&str]) -> String {
        let image = format!("{}/{name}:v1", self.registry.addr);
        let mut args = vec![
            "pack",
            module.to_str().unwrap(),
            "-t",
            &image,
            "--push",
            "--plain-http",
        ];
        args.extend_from_slice(pack_args);
        self.w.ok(&args);
        self.pull(&image);
        image
    }

    /// RunPodSandbox with the Wasm runtime handler.
    pub fn run_pod(&self, name: &str) -> Result<Pod, tonic::Status> {
        self.run_pod_on(name, HANDLER)
    }

    /// RunPodSandbox with runtime handler `handler`.
    pub fn run_pod_on(&self, name: &str, handler: &str) -> Result<Pod, tonic::Status> {
        self.run_pod_with(name, handler, |_| {})
    }

    /// RunPodSandbox with runtime handler `handler` and the pod config
    /// `edit` makes of the usual one (a cgroup parent, …).
    pub fn run_pod_with(
        &self,
        name: &str,
        handler: &str,
        edit: impl FnOnce(&mut PodSandboxConfig),
    ) -> Result<Pod, tonic::Status> {
        let mut config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("uid-{name}"),
                namespace: "default".to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: self.log_dir(name).to_string_lossy().into_owned(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(own_process_namespace()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        edit(&mut config);
        let mut rt = self.rt.clone();
        let id = self
            .runtime
            .block_on(rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.to_string(),
            }))?
            .into_inner()
            .pod_sandbox_id;
        Ok(Pod { id, config })
    }

    /// CreateContainer + StartContainer; returns the container id.
    pub fn run_container(
        &self,
        pod: &Pod,
        name: &str,
        image: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, tonic::Status> {
        let id = self.create_container(pod, name, image, args, env)?;
        self.start_container(&id)?;
        Ok(id)
    }

    /// CreateContainer of a full `config`, then StartContainer; returns the id.
    pub fn run_container_with(
        &self,
        pod: &Pod,
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let id = self.create_container_with(pod, config)?;
        self.start_container(&id)?;
        Ok(id)
    }

    /// CreateContainer alone; returns the container id.
    pub fn create_container(
        &self,
        pod: &Pod,
        name: &str,
        image: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, tonic::Status> {
        let mut config = container_config(name, image, args);
        config.envs = env
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        self.create_container_with(pod, config)
    }

    /// CreateContainer of a full `config` (see [`container_config`]).
    pub fn create_container_with(
        &self,
        pod: &Pod,
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let mut rt = self.rt.clone();
        self.runtime.block_on(async {
            let id = rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.id.clone(),
                    config: Some(config),
                    sandbox_config: Some(pod.config.clone()),
                })
                .await?
                .into_inner()
                .container_id;
            Ok(id)
        })
    }

    /// The busybox image of [`crate::linux_image`], pushed as `busybox:v1`
    /// and pulled through the CRI.
    pub fn linux_image(&self) -> String {
        let image = format!("{}/busybox:v1", self.registry.addr);
        let layout = crate::linux_image::busybox_layout(&self.dir.path().join("busybox"));
        self.w.ok(&[
            "copy",
            &format!("oci:{}:v1", layout.display()),
            &image,
            "--plain-http",
        ]);
        self.pull(&image);
        image
    }

    /// PullImage, as the kubelet does before creating a container.
    pub fn pull(&self, image: &str) {
        let mut images = self.images.clone();
        self.runtime
            .block_on(images.pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .unwrap_or_else(|e| panic!("CRI PullImage {image}: {}", e.message()));
    }

    /// UpdateContainerResources (an in-place pod resize).
    pub fn update_container_resources(
        &self,
        id: &str,
        resources: k8s_cri::v1::LinuxContainerResources,
    ) -> Result<(), tonic::Status> {
        let mut rt = self.rt.clone();
        self.runtime
            .block_on(
                rt.update_container_resources(k8s_cri::v1::UpdateContainerResourcesRequest {
                    container_id: id.to_string(),
                    linux: Some(resources),
                    ..Default::default()
                }),
            )
            .map(|_| ())
    }

    /// ExecSync (`kubectl exec` without a terminal): exit code, stdout, stderr.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
    ) -> Result<(i32, String, String), tonic::Status> {
        let mut rt = self.rt.clone();
        let resp = self
            .runtime
            .block_on(rt.exec_sync(ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|c| c.to_string()).collect(),
                timeout: 30,
            }))?
            .into_inner();
        Ok((
            resp.exit_code,
            String::from_utf8_lossy(&resp.stdout).into_owned(),
            String::from_utf8_lossy(&resp.stderr).into_owned(),
        ))
    }

    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let mut rt = self.rt.clone();
        self.runtime
            .block_on(rt.start_container(StartContainerRequest {
                container_id: id.to_string(),
            }))
            .map(|_| ())
    }

    pub fn container_status(&self, id: &str) -> ContainerStatus {
        let mut rt = self.rt.clone();
        self.runtime
            .block_on(rt.container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            }))
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {}", e.message()))
            .into_inner()
            .status
            .expect("a status")
    }

    /// The pid of the container's process (from the verbose status), for
    /// a Linux container its own process's.
    pub fn container_pid(&self, id: &str) -> u32 {
        let mut rt = self.rt.clone();
        let status = self
            .runtime
            .block_on(rt.container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            }))
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {}", e.message()))
            .into_inner();
        status
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .and_then(|info| info["pid"].as_u64())
            .unwrap_or_else(|| panic!("no pid in the status of {id}: {:?}", status.info))
            as u32
    }

    /// Waits until the container has exited; returns its status.
    pub fn wait_exited(&self, id: &str, within: Duration) -> ContainerStatus {
        wait_until(within, &format!("container {id} exiting"), || {
            let status = self.container_status(id);
            if status.state == ContainerState::ContainerExited as i32 {
                Ok(status)
            } else {
                Err(format!("still {:?}", status.state()))
            }
        })
    }

    /// ContainerStats: (memory working set bytes, CPU core nanoseconds).
    pub fn container_stats(&self, id: &str) -> (u64, u64) {
        let mut rt = self.rt.clone();
        let stats = self
            .runtime
            .block_on(rt.container_stats(ContainerStatsRequest {
                container_id: id.to_string(),
            }))
            .unwrap_or_else(|e| panic!("ContainerStats {id}: {}", e.message()))
            .into_inner()
            .stats
            .expect("stats");
        let memory = stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map_or(0, |v| v.value);
        let cpu = stats
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map_or(0, |v| v.value);
        (memory, cpu)
    }

    pub fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), tonic::Status> {
        let mut rt = self.rt.clone();
        self.runtime
            .block_on(rt.stop_container(StopContainerRequest {
                container_id: id.to_string(),
                timeout: timeout_seconds,
            }))
            .map(|_| ())
    }

    pub fn remove_container(&self, id: &str) {
        let mut rt = self.rt.clone();
        self.runtime
            .block_on(rt.remove_container(RemoveContainerRequest {
                container_id: id.to_string(),
            }))
            .unwrap_or_else(|e| panic!("RemoveContainer {id}: {}", e.message()));
    }

    /// The pod's IP and its network namespace path (from the verbose status).
    pub fn pod_network(&self, pod: &Pod) -> (String, String) {
        let mut rt = self.rt.clone();
        let status = self
            .runtime
            .block_on(rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.id.clone(),
                verbose: true,
            }))
            .unwrap_or_else(|e| panic!("PodSandboxStatus {}: {}", pod.id, e.message()))
            .into_inner();
        let ip = status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        let info: HashMap<String, serde_json::Value> = status
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_default();
        // The sandbox's runtime spec names the network namespace CNI set up.
        let netns = info
            .get("runtimeSpec")
            .and_then(|spec| spec.pointer("/linux/namespaces"))
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            !netns.is_empty() && Path::new(&netns).exists(),
            "pod {} has no network namespace in its status: {info:?}",
            pod.id
        );
        (ip, netns)
    }

    /// The pod's state as PodSandboxStatus reports it (`SandboxReady`, …).
    pub fn pod_state(&self, pod: &Pod) -> Result<k8s_cri::v1::PodSandboxState, tonic::Status> {
        let mut rt = self.rt.clone();
        Ok(self
            .runtime
            .block_on(rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.id.clone(),
                verbose: false,
            }))?
            .into_inner()
            .status
            .map(|s| s.state())
            .unwrap_or(k8s_cri::v1::PodSandboxState::SandboxNotready))
    }

    /// StopPodSandbox + RemovePodSandbox, as the kubelet does on pod delete.
    pub fn remove_pod(&self, pod: &Pod) {
        let mut rt = self.rt.clone();
        self.runtime
            .block_on(async {
                rt.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
                .await?;
                rt.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
                .await
            })
            .unwrap_or_else(|e| panic!("removing pod {}: {}", pod.id, e.message()));
    }

    /// The guest's lines from the CRI log file (`TIMESTAMP STREAM P|F LINE`),
    /// as `(stream, line)`.
    pub fn log_lines(&self, pod: &str, container: &str) -> Vec<(String, String)> {
        let path = self.log_dir(pod).join(container).join("0.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut parts = l.splitn(4, ' ');
                let (_time, stream, _tag) = (parts.next()?, parts.next()?, parts.next()?);
                Some((stream.to_string(), parts.next().unwrap_or("").to_string()))
            })
            .collect()
    }

    /// Asserts that no shim process, mount, container or task state dir of
    /// this containerd is left, and that none of `netns` still exists.
    pub fn assert_clean(&self, netns: &[String]) {
        self.containerd.assert_clean_in("k8s.io");
        let left: Vec<_> = netns
            .iter()
            .filter(|p| !p.is_empty() && Path::new(p).exists())
            .collect();
        assert!(left.is_empty(), "network namespaces left: {left:?}");
    }
}

impl Drop for CriNode {
    /// Removes the pods a failed test left, so their shims, network
    /// namespaces and mounts do not outlive it (the kubelet's garbage
    /// collection, in short). A passing test has removed them already.
    fn drop(&mut self) {
        let mut rt = self.rt.clone();
        let cleanup = async move {
            let pods = rt
                .list_pod_sandbox(ListPodSandboxRequest::default())
                .await
                .map(|r| r.into_inner().items)
                .unwrap_or_default();
            for pod in pods {
                let _ = rt
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    })
                    .await;
                let _ = rt
                    .remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: pod.id,
                    })
                    .await;
            }
        };
        // The timer must be made inside the runtime.
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), cleanup).await });
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The config of container `name` running `args` of `image`, logging to
/// `NAME/0.log` in the pod's log directory; add mounts, envs, … to it.
pub fn container_config(name: &str, image: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        args: args.iter().map(|a| a.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(own_process_namespace()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the kubelet asks for unless a pod sets `shareProcessNamespace`:
/// the pod's network and IPC namespaces, a process namespace of its own.
pub fn own_process_namespace() -> NamespaceOption {
    NamespaceOption {
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    }
}

/// A number that keeps each test's bridge and subnet apart from the other
/// tests running at the same time.
fn unique_network() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
