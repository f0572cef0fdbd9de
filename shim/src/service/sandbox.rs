//! containerd 2.x's Sandbox API (`containerd.runtime.sandbox.v1.Sandbox`),
//! for CRI runtime handlers configured with `sandboxer = "shim"`: the pod
//! is made by this shim, with no sandbox ("pause") container at all.
//!
//! containerd starts this shim for the pod before it has told it anything
//! about the pod: the pod's network namespace only comes with
//! `CreateSandbox`, when the process already runs threads, and a process
//! cannot move its threads into a namespace. So this process (the
//! controller) only answers the Sandbox API; on `CreateSandbox` it writes
//! the pod's sandbox spec into its bundle and starts a second shim process
//! there — the pod server, which enters the pod's namespaces before its
//! first thread exactly as a pod's shim does for a sandbox container — and
//! drives the pod's sandbox task in it over the task API. The pod server's
//! pid is the pod's: containers' specs name `/proc/<pid>/ns/…`, and their
//! `start` finds the pod server's socket (`pod_server_grouping`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim::ExitSignal;
use containerd_shim::StartOpts;
use containerd_shim::protos::protobuf::well_known_types::empty::Empty;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageField, UnknownValueRef};
use containerd_shim::protos::shim::shim_ttrpc::TaskClient;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::{Code, TtrpcContext};
use containerd_shim::protos::{api, types::platform::Platform};
use containerd_shim_protos::sandbox_api as sb;
use containerd_shim_protos::sandbox_sync::Sandbox;
use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

use crate::pod::{ANNOTATION_CONTAINER_TYPE, ANNOTATION_SANDBOX_ID, pod_server_grouping};

/// How long a task API call to the pod server may take (all but `Wait`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the controller needs to start the pod server like containerd
/// would start a shim.
pub struct ControllerConfig {
    /// The sandbox id this shim was started for (its only pod).
    pub id: String,
    pub namespace: String,
    /// containerd's gRPC socket and TTRPC address (for the pod server's
    /// events and Wasm layers).
    pub containerd_address: String,
    pub ttrpc_address: String,
    /// Where this shim's own socket is: the pod server's goes beside it.
    pub socket: String,
    /// The log level the pod server gets.
    pub log_level: String,
    /// The bundle containerd made for the pod.
    pub bundle: PathBuf,
}

/// The Sandbox API of one pod.
pub struct SandboxController {
    config: ControllerConfig,
    pod: Mutex<Option<Pod>>,
    /// Signalled after `ShutdownSandbox` has answered: this process exits.
    exit: Arc<ExitSignal>,
}

/// The pod server of a created pod.
struct Pod {
    client: TaskClient,
    pid: u32,
    created_at: Option<Timestamp>,
    exited: Option<(u32, Timestamp)>,
}

impl SandboxController {
    pub fn new(config: ControllerConfig, exit: Arc<ExitSignal>) -> SandboxController {
        SandboxController {
            config,
            pod: Mutex::new(None),
            exit,
        }
    }

    /// Refuses a request for a sandbox this shim was not started for.
    fn check_id(&self, id: &str) -> ttrpc::Result<()> {
        if id == self.config.id {
            return Ok(());
        }
        Err(status(
            Code::NOT_FOUND,
            format!(
                "sandbox {id} is not served here: this shim serves sandbox {}",
                self.config.id
            ),
        ))
    }

    /// The pod server's task client, once the pod is created.
    fn client(&self) -> ttrpc::Result<TaskClient> {
        self.pod
            .lock()
            .unwrap()
            .as_ref()
            .map(|p| p.client.clone())
            .ok_or_else(|| {
                status(
                    Code::FAILED_PRECONDITION,
                    format!("sandbox {} is not created yet", self.config.id),
                )
            })
    }

    /// Writes the pod's spec and starts the pod server in the bundle;
    /// creates the sandbox task in it. On error nothing is left running
    /// and no spec is left written.
    fn create(&self, req: &sb::CreateSandboxRequest) -> anyhow::Result<Pod> {
        use anyhow::Context;
        // The bundle containerd started this shim in (its cwd); the pod
        // server starts there too.
        let bundle = self.config.bundle.clone();
        let options = req
            .options
            .as_ref()
            .map(|o| o.value.as_slice())
            .unwrap_or_default();
        let mut spec = sandbox_spec(
            &self.config.id,
            &req.netns_path,
            pod_hostname(options).as_deref(),
        )?;
        // The pod server joins the pod's cgroup as a sandbox task does: the
        // pod's accounting and the kubelet's pod-level limits.
        if let (Some(parent), Some(linux)) = (pod_cgroup_parent(options), spec.linux_mut()) {
            linux.set_cgroups_path(Some(pod_cgroups_path(&parent, &self.config.id).into()));
        }
        let config = bundle.join("config.json");
        let partial = bundle.join(".config.json.partial");
        spec.save(&partial)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &config)
            .with_context(|| format!("writing {}", config.display()))?;
        let started = self.start_pod_server(&bundle);
        let (pid, address) = match started {
            Ok(started) => started,
            Err(e) => {
                let _ = std::fs::remove_file(&config);
                return Err(e);
            }
        };
        let created = connect(&address).and_then(|client| {
            let created = client
                .create(
                    ttrpc::context::with_timeout(CALL_TIMEOUT.as_nanos() as i64),
                    &api::CreateTaskRequest {
                        id: self.config.id.clone(),
                        bundle: bundle.display().to_string(),
                        ..Default::default()
                    },
                )
                .context("creating the pod's sandbox task in the pod server")?;
            Ok((client, created.pid))
        });
        match created {
            Ok((client, _)) => Ok(Pod {
                client,
                pid,
                created_at: None,
                exited: None,
            }),
            Err(e) => {
                // SAFETY: kill(2) of the pod server this call started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                let _ = std::fs::remove_file(&config);
                let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
                Err(e)
            }
        }
    }

    /// Starts the pod server (this binary, serving the task API) in
    /// `bundle`, with its socket beside this shim's.
    fn start_pod_server(&self, bundle: &Path) -> anyhow::Result<(u32, String)> {
        use anyhow::Context;
        let socket_dir = Path::new(self.config.socket.trim_start_matches("unix://"))
            .parent()
            .map(|d| d.display().to_string());
        let opts = StartOpts {
            id: self.config.id.clone(),
            address: self.config.containerd_address.clone(),
            ttrpc_address: self.config.ttrpc_address.clone(),
            namespace: self.config.namespace.clone(),
            socket_dir,
            ..Default::default()
        };
        debug_assert_eq!(std::env::current_dir().ok().as_deref(), Some(bundle));
        let spawned = containerd_shim::spawn(
            opts,
            &pod_server_grouping(&self.config.id),
            vec![(
                crate::bootstrap::SHIM_LOG_LEVEL,
                self.config.log_level.as_str(),
            )],
        )
        .context("starting the pod server")?;
        Ok(spawned)
    }
}

/// A ttrpc task client of the shim at `address`.
fn connect(address: &str) -> anyhow::Result<TaskClient> {
    use anyhow::Context;
    let client = ttrpc::Client::connect(address)
        .with_context(|| format!("connecting to the pod server at {address}"))?;
    Ok(TaskClient::new(client))
}

/// The sandbox spec of the pod, as containerd's CRI would write it for a
/// sandbox container: its network namespace (none: the host's), new IPC
/// and UTS namespaces with its hostname, and the CRI's annotations.
pub fn sandbox_spec(id: &str, netns_path: &str, hostname: Option<&str>) -> anyhow::Result<Spec> {
    let mut namespaces = vec![
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Ipc)
            .build()?,
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Uts)
            .build()?,
    ];
    if !netns_path.is_empty() {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(netns_path)
                .build()?,
        );
    }
    let mut spec = Spec::default();
    spec.set_linux(Some(
        LinuxBuilder::default().namespaces(namespaces).build()?,
    ));
    spec.set_hostname(hostname.map(str::to_string));
    spec.set_mounts(None);
    spec.set_annotations(Some(HashMap::from([
        (ANNOTATION_CONTAINER_TYPE.to_string(), "sandbox".to_string()),
        (ANNOTATION_SANDBOX_ID.to_string(), id.to_string()),
    ])));
    Ok(spec)
}

/// The `hostname` (field 2) of a CRI `PodSandboxConfig`, read off the wire
/// without the CRI's types.
pub fn pod_hostname(pod_sandbox_config: &[u8]) -> Option<String> {
    wire_string(pod_sandbox_config, &[2])
}

/// The `linux.cgroup_parent` (fields 8, then 1) of a CRI `PodSandboxConfig`:
/// where the kubelet wants the pod's cgroup.
pub fn pod_cgroup_parent(pod_sandbox_config: &[u8]) -> Option<String> {
    wire_string(pod_sandbox_config, &[8, 1])
}

/// The non-empty string at the field numbers `path` (nested messages, then
/// the string) of a protobuf message, read as unknown fields.
fn wire_string(message: &[u8], path: &[u32]) -> Option<String> {
    let (&last, outer) = path.split_last()?;
    let mut bytes = message.to_vec();
    for &field in outer {
        bytes = length_delimited(&bytes, field)?;
    }
    String::from_utf8(length_delimited(&bytes, last)?)
        .ok()
        .filter(|s| !s.is_empty())
}

fn length_delimited(message: &[u8], field: u32) -> Option<Vec<u8>> {
    let message = Empty::parse_from_bytes(message).ok()?;
    match message.special_fields.unknown_fields().get(field)? {
        UnknownValueRef::LengthDelimited(bytes) => Some(bytes.to_vec()),
        _ => None,
    }
}

/// The pod's cgroup under `parent`, named as containerd's CRI names a
/// sandbox container's: `parent.slice:cri-containerd:ID` with the systemd
/// cgroup driver, `parent/ID` with cgroupfs.
pub fn pod_cgroups_path(parent: &str, id: &str) -> String {
    if parent.ends_with(".slice") {
        format!("{parent}:cri-containerd:{id}")
    } else {
        format!("{}/{id}", parent.trim_end_matches('/'))
    }
}

fn status(code: Code, message: String) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

/// A pod server's error, passed on with what was asked.
fn forwarded(what: &str) -> impl FnOnce(ttrpc::Error) -> ttrpc::Error + '_ {
    move |e| match e {
        ttrpc::Error::RpcStatus(s) => status(s.code(), format!("{what}: {}", s.message())),
        other => status(Code::UNAVAILABLE, format!("{what}: {other}")),
    }
}

fn now() -> Timestamp {
    super::timestamp(SystemTime::now())
}

/// Ends the pod's sandbox task (any signal does) and with it the pod's
/// process namespace; its wait then returns.
fn kill_sandbox_task(client: &TaskClient, id: &str) -> ttrpc::Result<api::Empty> {
    client.kill(
        ctx(),
        &api::KillRequest {
            id: id.to_string(),
            signal: libc::SIGKILL as u32,
            ..Default::default()
        },
    )
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(CALL_TIMEOUT.as_nanos() as i64)
}

impl Sandbox for SandboxController {
    fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: sb::CreateSandboxRequest,
    ) -> ttrpc::Result<sb::CreateSandboxResponse> {
        self.check_id(&req.sandbox_id)?;
        let mut pod = self.pod.lock().unwrap();
        if pod.is_some() {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("sandbox {} is already created", req.sandbox_id),
            ));
        }
        let created = self.create(&req).map_err(|e| {
            status(
                Code::INTERNAL,
                format!("creating sandbox {}: {e:#}", req.sandbox_id),
            )
        })?;
        log::info!(id = req.sandbox_id.as_str(), pid = created.pid; "pod server up");
        *pod = Some(created);
        Ok(Default::default())
    }

    fn start_sandbox(
        &self,
        _: &TtrpcContext,
        req: sb::StartSandboxRequest,
    ) -> ttrpc::Result<sb::StartSandboxResponse> {
        self.check_id(&req.sandbox_id)?;
        let client = self.client()?;
        client
            .start(
                ctx(),
                &api::StartRequest {
                    id: req.sandbox_id.clone(),
                    ..Default::default()
                },
            )
            .map_err(forwarded("starting the pod's sandbox task"))?;
        let mut pod = self.pod.lock().unwrap();
        let pod = pod.as_mut().expect("created above");
        let created_at = now();
        pod.created_at = Some(created_at.clone());
        Ok(sb::StartSandboxResponse {
            pid: pod.pid,
            created_at: MessageField::some(created_at),
            ..Default::default()
        })
    }

    fn platform(
        &self,
        _: &TtrpcContext,
        req: sb::PlatformRequest,
    ) -> ttrpc::Result<sb::PlatformResponse> {
        self.check_id(&req.sandbox_id)?;
        // The pod is a Linux one (its Linux containers run with runc; the
        // CRI refuses any other OS); its Wasm containers carry their own.
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Ok(sb::PlatformResponse {
            platform: MessageField::some(Platform {
                os: "linux".into(),
                architecture: architecture.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn stop_sandbox(
        &self,
        _: &TtrpcContext,
        req: sb::StopSandboxRequest,
    ) -> ttrpc::Result<sb::StopSandboxResponse> {
        self.check_id(&req.sandbox_id)?;
        let Ok(client) = self.client() else {
            return Ok(Default::default());
        };
        if let Err(e) = kill_sandbox_task(&client, &req.sandbox_id) {
            log::warn!(id = req.sandbox_id.as_str(); "stopping the pod's sandbox task: {e}");
        }
        Ok(Default::default())
    }

    fn wait_sandbox(
        &self,
        _: &TtrpcContext,
        req: sb::WaitSandboxRequest,
    ) -> ttrpc::Result<sb::WaitSandboxResponse> {
        self.check_id(&req.sandbox_id)?;
        if let Some((exit_status, exited_at)) = self
            .pod
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|p| p.exited.clone())
        {
            return Ok(sb::WaitSandboxResponse {
                exit_status,
                exited_at: MessageField::some(exited_at),
                ..Default::default()
            });
        }
        let client = self.client()?;
        // No deadline: this returns when the pod ends.
        let waited = client
            .wait(
                ttrpc::context::Context::default(),
                &api::WaitRequest {
                    id: req.sandbox_id.clone(),
                    ..Default::default()
                },
            )
            .map_err(forwarded("waiting for the pod's sandbox task"))?;
        let exited_at = waited.exited_at.clone().unwrap_or_else(now);
        if let Some(pod) = self.pod.lock().unwrap().as_mut() {
            pod.exited = Some((waited.exit_status, exited_at.clone()));
        }
        Ok(sb::WaitSandboxResponse {
            exit_status: waited.exit_status,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }

    fn sandbox_status(
        &self,
        _: &TtrpcContext,
        req: sb::SandboxStatusRequest,
    ) -> ttrpc::Result<sb::SandboxStatusResponse> {
        self.check_id(&req.sandbox_id)?;
        let guard = self.pod.lock().unwrap();
        let mut response = sb::SandboxStatusResponse {
            sandbox_id: req.sandbox_id.clone(),
            state: "SANDBOX_NOTREADY".into(),
            ..Default::default()
        };
        let Some(pod) = guard.as_ref() else {
            return Ok(response);
        };
        response.pid = pod.pid;
        response.created_at = pod.created_at.clone().into();
        if let Some((_, exited_at)) = &pod.exited {
            response.exited_at = MessageField::some(exited_at.clone());
            return Ok(response);
        }
        let running = pod
            .client
            .state(
                ctx(),
                &api::StateRequest {
                    id: req.sandbox_id.clone(),
                    ..Default::default()
                },
            )
            .is_ok_and(|s| {
                s.status.enum_value() == Ok(containerd_shim::protos::types::task::Status::RUNNING)
            });
        if running {
            response.state = "SANDBOX_READY".into();
        }
        Ok(response)
    }

    fn ping_sandbox(
        &self,
        _: &TtrpcContext,
        req: sb::PingRequest,
    ) -> ttrpc::Result<sb::PingResponse> {
        self.check_id(&req.sandbox_id)?;
        Ok(Default::default())
    }

    fn shutdown_sandbox(
        &self,
        _: &TtrpcContext,
        req: sb::ShutdownSandboxRequest,
    ) -> ttrpc::Result<sb::ShutdownSandboxResponse> {
        self.check_id(&req.sandbox_id)?;
        let pod = self.pod.lock().unwrap().take();
        if let Some(pod) = pod {
            let _ = kill_sandbox_task(&pod.client, &req.sandbox_id);
            let _ = pod.client.delete(
                ctx(),
                &api::DeleteRequest {
                    id: req.sandbox_id.clone(),
                    ..Default::default()
                },
            );
            let _ = pod.client.shutdown(
                ctx(),
                &api::ShutdownRequest {
                    id: req.sandbox_id.clone(),
                    now: true,
                    ..Default::default()
                },
            );
            wait_gone(pod.pid, Duration::from_secs(5));
        }
        // Answer first, then go: containerd then runs `delete` here.
        let exit = self.exit.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            exit.signal();
        });
        Ok(Default::default())
    }

    fn sandbox_metrics(
        &self,
        _: &TtrpcContext,
        req: sb::SandboxMetricsRequest,
    ) -> ttrpc::Result<sb::SandboxMetricsResponse> {
        self.check_id(&req.sandbox_id)?;
        let stats = self
            .client()?
            .stats(
                ctx(),
                &api::StatsRequest {
                    id: req.sandbox_id.clone(),
                    ..Default::default()
                },
            )
            .map_err(forwarded("reading the pod's metrics"))?;
        // The metric type is not exported by name; it is filled in place.
        let mut response = sb::SandboxMetricsResponse::default();
        let metric = response.metrics.mut_or_insert_default();
        metric.timestamp = MessageField::some(now());
        metric.id = req.sandbox_id.clone();
        metric.data = stats.stats;
        Ok(response)
    }
}

/// Waits (at most `limit`) for process `pid`, a child of this one, to end,
/// and reaps it.
fn wait_gone(pid: u32, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        // SAFETY: waitpid(2) on a pid with WNOHANG and no status pointer.
        let reaped = unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        if reaped == pid as i32 || unsafe { libc::kill(pid as i32, 0) } != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_id_this_shim_was_not_started_for_is_refused_in_one_sentence() {
        let bundle = tempfile::tempdir().unwrap();
        let controller = SandboxController::new(
            ControllerConfig {
                id: "pod1".into(),
                namespace: "k8s.io".into(),
                containerd_address: String::new(),
                ttrpc_address: String::new(),
                socket: "unix:///run/containerd/s/x".into(),
                log_level: "info".into(),
                bundle: bundle.path().to_path_buf(),
            },
            Arc::new(ExitSignal::default()),
        );
        let Err(ttrpc::Error::RpcStatus(refused)) = controller.check_id("pod2") else {
            panic!("another sandbox's id was accepted");
        };
        assert_eq!(refused.code(), Code::NOT_FOUND);
        assert_eq!(
            refused.message(),
            "sandbox pod2 is not served here: this shim serves sandbox pod1"
        );
        assert!(controller.check_id("pod1").is_ok());
        // Before CreateSandbox there is no pod server to ask, and nothing
        // was written into the bundle.
        assert!(controller.client().is_err());
        assert_eq!(std::fs::read_dir(bundle.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_hostname_and_cgroup_parent_are_read_off_a_pod_sandbox_config() {
        // metadata (1) { name (1): "p" }, hostname (2): "web-0", log_directory (3),
        // linux (8) { cgroup_parent (1): "/kubepods/pod1" }.
        let wire = b"\x0a\x03\x0a\x01p\x12\x05web-0\x1a\x04/log\x42\x10\x0a\x0e/kubepods/pod1";
        assert_eq!(pod_hostname(wire).as_deref(), Some("web-0"));
        assert_eq!(pod_cgroup_parent(wire).as_deref(), Some("/kubepods/pod1"));
        assert_eq!(
            pod_cgroups_path("/kubepods/pod1", "sb"),
            "/kubepods/pod1/sb"
        );
        assert_eq!(
            pod_cgroups_path("kubepods-pod1.slice", "sb"),
            "kubepods-pod1.slice:cri-containerd:sb"
        );
        assert_eq!(pod_hostname(b"\x0a\x03\x0a\x01p"), None);
        assert_eq!(pod_cgroup_parent(b"\x0a\x03\x0a\x01p"), None);
        assert_eq!(pod_hostname(b"\xff\xff"), None);
    }

    #[test]
    fn the_sandbox_spec_names_the_pods_network_and_new_ipc_and_uts() {
        let spec = sandbox_spec("pod1", "/var/run/netns/cni-1", Some("web-0")).unwrap();
        assert!(crate::pod::is_sandbox(&spec));
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));
        let namespaces = spec.linux().clone().unwrap().namespaces().clone().unwrap();
        let net = namespaces
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(
            net.path().as_deref(),
            Some(Path::new("/var/run/netns/cni-1"))
        );
        // A host-network pod names no network namespace.
        let host = sandbox_spec("pod2", "", None).unwrap();
        let namespaces = host.linux().clone().unwrap().namespaces().clone().unwrap();
        assert!(
            !namespaces
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network)
        );
    }
}
