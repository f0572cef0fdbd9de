//! containerd's gRPC API, for what `ctr` cannot do on containerd 1.6: run a
//! container of an image whose layers are raw Wasm. `ctr run` would unpack
//! the image first, and 1.6 refuses ("mismatched image rootfs and manifest
//! layers"); ≥ 1.7.7 unpacks such images to an empty rootfs. Creating the
//! container with its image but no snapshot is what the shim then sees on
//! either version.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, StartRequest, WaitRequest, container::Runtime,
    containers_client::ContainersClient, tasks_client::TasksClient,
};
use containerd_client::tonic::Request;
use containerd_client::with_namespace;

use crate::Containerd;

const NAMESPACE: &str = "default";

/// What a container run through the API left: its exit status and output.
#[derive(Debug)]
pub struct ApiRun {
    pub exit_status: u32,
    pub stdout: String,
    pub stderr: String,
}

impl Containerd {
    /// Creates container `id` of `image` with `runtime` and no rootfs
    /// snapshot, runs it to its end, deletes it, and returns what it
    /// printed; `Err` holds containerd's answer when create fails (the
    /// container record is removed then too). `args` replaces the spec's
    /// process.args; `None` leaves them empty, as an image without a command.
    pub fn run_via_api(
        &self,
        runtime: &str,
        image: &str,
        id: &str,
        args: Option<&[&str]>,
    ) -> Result<ApiRun, String> {
        let out = self.ctr(&["oci", "spec"]);
        assert!(out.status.success(), "ctr oci spec failed");
        let mut spec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        spec["process"]["args"] = serde_json::json!(args.unwrap_or_default());
        // The default spec names a cgroup per container id under /default.
        spec["linux"].as_object_mut().unwrap().remove("cgroupsPath");

        let io_dir = tempfile::tempdir().unwrap();
        let stdout_path = io_dir.path().join("stdout");
        let stderr_path = io_dir.path().join("stderr");
        let mut stdout = open_fifo(&stdout_path);
        let mut stderr = open_fifo(&stderr_path);

        let runtime_name = runtime.to_string();
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = tokio.block_on(async {
            let channel = containerd_client::connect(&self.address).await.unwrap();
            let mut containers = ContainersClient::new(channel.clone());
            let mut tasks = TasksClient::new(channel);
            let container = Container {
                id: id.to_string(),
                image: image.to_string(),
                runtime: Some(Runtime {
                    name: runtime_name,
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                    value: serde_json::to_vec(&spec).unwrap(),
                }),
                ..Default::default()
            };
            containers
                .create(with_namespace!(
                    CreateContainerRequest {
                        container: Some(container)
                    },
                    NAMESPACE
                ))
                .await
                .map_err(|e| format!("creating container {id}: {}", e.message()))?;
            let run = async {
                tasks
                    .create(with_namespace!(
                        CreateTaskRequest {
                            container_id: id.to_string(),
                            stdout: stdout_path.to_string_lossy().into_owned(),
                            stderr: stderr_path.to_string_lossy().into_owned(),
                            ..Default::default()
                        },
                        NAMESPACE
                    ))
                    .await
                    .map_err(|e| e.message().to_string())?;
                let wait = {
                    let mut tasks = tasks.clone();
                    let id = id.to_string();
                    tokio::spawn(async move {
                        tasks
                            .wait(with_namespace!(
                                WaitRequest {
                                    container_id: id,
                                    exec_id: String::new(),
                                },
                                NAMESPACE
                            ))
                            .await
                    })
                };
                tasks
                    .start(with_namespace!(
                        StartRequest {
                            container_id: id.to_string(),
                            exec_id: String::new(),
                        },
                        NAMESPACE
                    ))
                    .await
                    .map_err(|e| e.message().to_string())?;
                let exit = wait
                    .await
                    .unwrap()
                    .map_err(|e| e.message().to_string())?
                    .into_inner()
                    .exit_status;
                tasks
                    .delete(with_namespace!(
                        DeleteTaskRequest {
                            container_id: id.to_string(),
                        },
                        NAMESPACE
                    ))
                    .await
                    .map_err(|e| e.message().to_string())?;
                Ok::<u32, String>(exit)
            }
            .await;
            containers
                .delete(with_namespace!(
                    DeleteContainerRequest { id: id.to_string() },
                    NAMESPACE
                ))
                .await
                .map_err(|e| format!("deleting container {id}: {}", e.message()))?;
            run
        });
        result.map(|exit_status| ApiRun {
            exit_status,
            stdout: drain(&mut stdout),
            stderr: drain(&mut stderr),
        })
    }
}

/// A FIFO opened read-write and non-blocking, so neither side waits for the
/// other to open it and reading stops when it is empty.
fn open_fifo(path: &Path) -> std::fs::File {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap()
}

/// Everything written to `fifo`, read until it stays empty for 200 ms (this
/// side holds a write end too, so there is no end-of-file to wait for).
fn drain(fifo: &mut std::fs::File) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < std::time::Duration::from_millis(200) {
        match fifo.read(&mut buf) {
            Ok(n) if n > 0 => {
                out.extend_from_slice(&buf[..n]);
                quiet_since = std::time::Instant::now();
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("reading the container's output: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
