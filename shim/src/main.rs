//! `containerd-shim-wasmtime-v1`: the containerd runtime v2 shim binary.
//! This file is containerd plumbing only: the ttrpc Task service, events and
//! the shim's `start`/`delete` bootstrap. Wasm is in the library.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use containerd_shim::api::{self, Status as ApiStatus};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{
    Config, DeleteResponse, ExitSignal, Flags, StartOpts, TtrpcContext, TtrpcResult,
};
use containerd_shim_wasmtime::container::{Container, Exit, RootfsMount, Status};
use containerd_shim_wasmtime::content::ImageSource;
use containerd_shim_wasmtime::error::ShimError;
use containerd_shim_wasmtime::linux::ExecProcess;
use log::{error, info, warn};

/// The runtime type containerd knows this shim by.
const RUNTIME_ID: &str = wasmbox_format::RUNTIME_TYPE;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Ok(flags) = containerd_shim::parse(&args[1..])
        && !flags.info
        && !flags.version
    {
        let result = match flags.action.as_str() {
            "start" => start_and_print_address(flags).map_err(anyhow::Error::from),
            "" => serve(flags),
            // `delete` (cleanup after a dead shim) is the crate's; its
            // reaper would take the exit of the runc it runs from us.
            _ => {
                let config = Config {
                    no_reaper: true,
                    ..Default::default()
                };
                return containerd_shim::run::<WasmShim>(RUNTIME_ID, Some(config));
            }
        };
        if let Err(e) = result {
            eprintln!("{RUNTIME_ID}: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    containerd_shim::run::<WasmShim>(RUNTIME_ID, None)
}

/// The shim server: the task service on the socket containerd chose, under
/// both the v2 (containerd 1.6/1.7/2.x) and v3 service names, until shutdown.
fn serve(flags: Flags) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::fd::IntoRawFd;
    // First, while this is the only thread: every later thread inherits
    // the namespaces and the blocked SIGCHLD the reaper takes.
    containerd_shim_wasmtime::network::enter_container_network(&std::env::current_dir()?)?;
    containerd_shim_wasmtime::reaper::install()
        .context("becoming the subreaper of runc's containers")?;
    containerd_shim_wasmtime::runc::raise_open_files_limit();
    // wasmtime-wasi opens an INFO span per WASI call, and another crate of
    // the workspace turns on tracing's `log` fallback, which would write
    // each as a line of containerd's log: a subscriber that takes nothing
    // turns the fallback off (and the spans into no-ops).
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    // This process outlives its guests: big modules may start on Winch
    // code and tier up in the background (waited for below).
    wasmbox_engine::tiering::enable();
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .context("opening the shim log")?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let shim = WasmShim {
        id: flags.id.clone(),
        namespace: flags.namespace.clone(),
        containerd_address: flags.address.clone(),
        exit: Arc::new(ExitSignal::default()),
    };
    let service: Arc<dyn containerd_shim::Task + Send + Sync> =
        Arc::new(TaskService::new(&shim, Events::new(ttrpc_address)));
    let mut methods = containerd_shim::protos::shim::shim_ttrpc::create_task(service.clone());
    for (name, handler) in containerd_shim::protos::shim::shim_ttrpc::create_task(service) {
        methods.insert(
            name.replace("containerd.task.v3.", "containerd.task.v2."),
            handler,
        );
    }

    let path = flags.socket.trim_start_matches("unix://").to_string();
    if let Some(dir) = Path::new(&path).parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("listening on {path}"))?;
    let mut server = ttrpc::Server::new()
        .add_listener(listener.into_raw_fd())?
        .register_service(methods);
    server.start()?;
    // SAFETY: dup2 on the process's own standard descriptors, which stay open.
    // Closing our end of the stdout pipe tells the `start` action the server is up.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    info!(id = flags.id.as_str(), socket = path.as_str(); "shim serving");
    shim.exit.wait();
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    // containerd has its answer and the containers are gone: what is left
    // is storing the Cranelift artifacts of modules that started on Winch.
    wasmbox_engine::tiering::finish();
    Ok(())
}

/// The `start` action: spawn the shim server and print its address plainly.
/// containerd 1.6 reads stdout as the bare address, while the shim crate
/// answers with the JSON that only containerd ≥ 1.7 parses; every version
/// accepts the bare address.
fn start_and_print_address(flags: Flags) -> Result<(), containerd_shim::Error> {
    use std::io::Write;
    // A pod's containers join the shim of its sandbox.
    let cwd = std::env::current_dir().unwrap_or_default();
    let grouping = containerd_shim_wasmtime::pod::grouping(&cwd, &flags.id);
    let opts = StartOpts {
        id: flags.id,
        publish_binary: flags.publish_binary,
        address: flags.address,
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace,
        debug: flags.debug,
        ..Default::default()
    };
    let existing = opts.socket_address(&grouping);
    let address = if grouping != opts.id && shim_is_serving(&existing) {
        existing
    } else {
        containerd_shim::spawn(opts, &grouping, Vec::new())?.1
    };
    containerd_shim::util::write_address(&address)?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| containerd_shim::Error::Other(format!("writing the address: {e}")))
}

/// Whether a shim answers on `address` (the pod's shim, when it is up).
fn shim_is_serving(address: &str) -> bool {
    std::os::unix::net::UnixStream::connect(address.trim_start_matches("unix://")).is_ok()
}

/// The shim process: bootstrap (`start`, `delete`) and the task service.
#[derive(Clone)]
struct WasmShim {
    /// The id the shim was started for (for `delete`, the container to clean up).
    id: String,
    namespace: String,
    /// containerd's gRPC socket, for images whose module is a layer.
    containerd_address: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for WasmShim {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        WasmShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            containerd_address: args.address.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        // main() handles `start` itself; this path only exists for the trait.
        let grouping = opts.id.clone();
        Ok(containerd_shim::spawn(opts, &grouping, Vec::new())?.1)
    }

    /// containerd's cleanup after a shim died: unmount what it left behind.
    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        if let Ok(bundle) = std::env::current_dir() {
            let cgroups_path = oci_spec::runtime::Spec::load(bundle.join("config.json"))
                .ok()
                .and_then(|spec| spec.linux().as_ref()?.cgroups_path().clone())
                .map(|p| p.to_string_lossy().into_owned());
            // A Linux container the dead shim ran: runc removes what is left
            // of it (processes, cgroup, state); for any other id it has nothing.
            if bundle.join("init.pid").exists() {
                let runc = containerd_shim_wasmtime::runc::Runc::new(
                    &self.namespace,
                    &bundle,
                    cgroups_path.as_deref(),
                );
                if let Err(e) = runc.delete(&self.id) {
                    warn!("cleanup of {} in runc: {e:#}", self.id);
                }
            }
            let rootfs = bundle.join("rootfs");
            if let Err(e) = containerd_shim_wasmtime::mounts::unmount_all(&bundle, &rootfs, true) {
                warn!("cleanup of {}: {e:#}", bundle.display());
            }
            if let Some(path) = cgroups_path {
                // The kernel's OOM killer ended the shim that ran this Wasm
                // container in its cgroup (the backstop behind the guests'
                // budget): say so, as runc's shim would have, so the CRI
                // reports OOMKilled and Docker `OOMKilled: true`.
                if !bundle.join("init.pid").exists()
                    && containerd_shim_wasmtime::cgroup::oom_kills_in(&path) > 0
                {
                    warn!("{}: the kernel's OOM killer ended the shim", self.id);
                    let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
                    Events::new(address).publish(
                        &self.namespace,
                        topics::TASK_OOM_EVENT_TOPIC,
                        Box::new(TaskOOM {
                            container_id: self.id.clone(),
                            ..Default::default()
                        }),
                    );
                }
                containerd_shim_wasmtime::cgroup::remove_left_behind(&path);
            }
        }
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::some(timestamp(SystemTime::now())),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, _: RemotePublisher) -> TaskService {
        let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
        TaskService::new(self, Events::new(address))
    }
}

/// containerd's event service, connected for each event: a standing ttrpc
/// 0.10 client polls its socket every 10 ms, which cost every idle shim 100
/// wake-ups a second. A container has a handful of events in its life.
struct Events {
    address: String,
}

impl Events {
    fn new(address: String) -> Events {
        Events { address }
    }

    fn publish(&self, namespace: &str, topic: &str, event: Box<dyn MessageDyn>) {
        let published = RemotePublisher::new(&self.address).and_then(|publisher| {
            publisher.publish(ttrpc::context::Context::default(), topic, namespace, event)
        });
        if let Err(e) = published {
            warn!("publishing {topic} to {}: {e}", self.address);
        }
    }
}

/// The runc side of a container, for exec: Wasm containers have none.
fn linux_of(
    container: &Container,
) -> TtrpcResult<&containerd_shim_wasmtime::linux::LinuxContainer> {
    container
        .linux()
        .ok_or_else(|| ShimError::Unimplemented("exec is not supported for Wasm containers").into())
}

/// Holds a process's exit event back until its start event is out: a
/// program that ends at once must not be reported stopped before started
/// (containerd's runc shim holds exits back the same way).
#[derive(Clone)]
struct StartGate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl StartGate {
    fn new() -> StartGate {
        StartGate(Arc::new((Mutex::new(false), std::sync::Condvar::new())))
    }

    fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    /// Waits until the gate is open (bounded: a start that never returns
    /// must not hold an exit forever).
    fn wait(&self) {
        let open = self.0.0.lock().unwrap();
        let _ = self
            .0
            .1
            .wait_timeout_while(open, std::time::Duration::from_secs(5), |open| !*open);
    }
}

/// The ttrpc Task API for every container of this shim.
struct TaskService {
    namespace: String,
    containerd_address: String,
    exit: Arc<ExitSignal>,
    events: Arc<Events>,
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

impl TaskService {
    fn new(shim: &WasmShim, events: Events) -> TaskService {
        TaskService {
            namespace: shim.namespace.clone(),
            containerd_address: shim.containerd_address.clone(),
            exit: shim.exit.clone(),
            events: Arc::new(events),
            containers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn get(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(id.to_string()).into())
    }

    /// Starts exec `exec_id` in container `id` with runc.
    fn start_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<api::StartResponse> {
        let container = self.get(id)?;
        let linux = linux_of(&container)?;
        let events = self.events.clone();
        let namespace = self.namespace.clone();
        let container_id = id.to_string();
        let exit_id = container_id.clone();
        let started = StartGate::new();
        let gate = started.clone();
        let result = linux
            .start_exec(exec_id, move |exec: &ExecProcess, exit: &Exit| {
                let (_, pid, _) = exec.status();
                gate.wait();
                events.publish(
                    &namespace,
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id: exit_id,
                        id: exec.exec_id.clone(),
                        pid: pid.unwrap_or(0),
                        exit_status: exit.status,
                        exited_at: MessageField::some(timestamp(exit.at)),
                        ..Default::default()
                    }),
                );
            })
            .map_err(ShimError::FailedPrecondition);
        if let Ok(pid) = result {
            self.events.publish(
                &self.namespace,
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id,
                    exec_id: exec_id.to_string(),
                    pid,
                    ..Default::default()
                }),
            );
        }
        started.open();
        let pid = result?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<api::DeleteResponse> {
        let exec = self.get_exec(id, exec_id)?;
        let (_, pid, _) = exec.status();
        let container = self.get(id)?;
        let exit = container
            .linux()
            .map(|linux| linux.delete_exec(exec_id))
            .transpose()
            .map_err(ShimError::FailedPrecondition)?
            .flatten()
            .unwrap_or(Exit {
                status: 0,
                at: SystemTime::now(),
            });
        Ok(api::DeleteResponse {
            pid: pid.unwrap_or(0),
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    /// The exec `exec_id` of container `id`; only Linux containers have any.
    fn get_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<Arc<ExecProcess>> {
        let container = self.get(id)?;
        let linux = linux_of(&container)?;
        linux
            .exec(exec_id)
            .map_err(|e| ShimError::NotFound(format!("{e:#}")).into())
    }
}

impl containerd_shim::Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        info!(id = req.id.as_str(); "create");
        if self.containers.lock().unwrap().contains_key(&req.id) {
            return Err(ShimError::AlreadyExists(req.id.clone()).into());
        }
        let mounts: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                fs_type: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let container = Container::create(
            &req.id,
            Path::new(&req.bundle),
            &mounts,
            [&req.stdin, &req.stdout, &req.stderr],
            req.terminal,
            &ImageSource {
                containerd_address: self.containerd_address.clone(),
                namespace: self.namespace.clone(),
                container_id: req.id.clone(),
            },
        )
        .map_err(|e| {
            error!(id = req.id.as_str(); "create failed: {e:#}");
            ShimError::from_create(e)
        })?;
        if let Some(linux) = container.linux() {
            // The kubelet reports OOMKilled from this event.
            let (events, namespace, id) =
                (self.events.clone(), self.namespace.clone(), req.id.clone());
            let watched = linux.watch_oom(move || {
                info!(id = id.as_str(); "OOM killer acted in the container's cgroup");
                events.publish(
                    &namespace,
                    topics::TASK_OOM_EVENT_TOPIC,
                    Box::new(TaskOOM {
                        container_id: id.clone(),
                        ..Default::default()
                    }),
                );
            });
            if let Err(e) = watched {
                warn!(id = req.id.as_str(); "no OOM events: {e:#}");
            }
        }
        self.containers
            .lock()
            .unwrap()
            .insert(req.id.clone(), Arc::new(container));
        let pid = self.get(&req.id)?.pid();
        self.events.publish(
            &self.namespace,
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        if !req.exec_id.is_empty() {
            return self.start_exec(&req.id, &req.exec_id);
        }
        let container = self.get(&req.id)?;
        let events = self.events.clone();
        let namespace = self.namespace.clone();
        let pid = container.pid();
        let started = StartGate::new();
        let gate = started.clone();
        let result = container
            .start(move |c: &Container, exit: &Exit| {
                info!(id = c.id.as_str(), exit_status = exit.status; "exited");
                gate.wait();
                events.publish(
                    &namespace,
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id: c.id.clone(),
                        id: c.id.clone(),
                        pid,
                        exit_status: exit.status,
                        exited_at: MessageField::some(timestamp(exit.at)),
                        ..Default::default()
                    }),
                );
            })
            .map_err(ShimError::FailedPrecondition);
        if result.is_ok() {
            self.events.publish(
                &self.namespace,
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                }),
            );
        }
        started.open();
        result?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let container = self.get(&req.id)?;
        let mut resp = api::StateResponse {
            id: container.id.clone(),
            bundle: container.bundle.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let (status, pid, exit) = if req.exec_id.is_empty() {
            resp.stdin = container.stdin.clone();
            resp.stdout = container.stdout.clone();
            resp.stderr = container.stderr.clone();
            let (status, exit) = container.status();
            (status, container.pid(), exit)
        } else {
            let exec = self.get_exec(&req.id, &req.exec_id)?;
            resp.exec_id = req.exec_id.clone();
            [resp.stdin, resp.stdout, resp.stderr] = exec.stdio.clone();
            let (status, pid, exit) = exec.status();
            (status, pid.unwrap_or(0), exit)
        };
        resp.pid = pid;
        resp.set_status(match status {
            Status::Created => ApiStatus::CREATED,
            Status::Running => ApiStatus::RUNNING,
            Status::Stopped => ApiStatus::STOPPED,
        });
        if let Some(exit) = exit {
            resp.exit_status = exit.status;
            resp.exited_at = MessageField::some(timestamp(exit.at));
        }
        Ok(resp)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let exit = if req.exec_id.is_empty() {
            self.get(&req.id)?.wait()
        } else {
            self.get_exec(&req.id, &req.exec_id)?.wait()
        };
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        info!(id = req.id.as_str(), exec_id = req.exec_id.as_str(), signal = req.signal; "kill");
        let killed = if req.exec_id.is_empty() {
            self.get(&req.id)?
                .kill(req.signal, req.all)
                .map_err(ShimError::Internal)?
        } else {
            self.get_exec(&req.id, &req.exec_id)?.kill(req.signal)
        };
        if !killed {
            return Err(
                ShimError::NotFound(format!("{}: its process already finished", req.id)).into(),
            );
        }
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            return self.delete_exec(&req.id, &req.exec_id);
        }
        let container = self.get(&req.id)?;
        let (status, exit) = container.status();
        if status == Status::Running {
            return Err(ShimError::FailedPrecondition(anyhow::anyhow!(
                "container {} is running; kill it first",
                req.id
            ))
            .into());
        }
        container.cleanup().map_err(ShimError::Internal)?;
        self.containers.lock().unwrap().remove(&req.id);
        let exit = exit.unwrap_or(Exit {
            status: 0,
            at: SystemTime::now(),
        });
        let pid = container.pid();
        self.events.publish(
            &self.namespace,
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid,
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }),
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let pids = self.get(&req.id)?.pids();
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| containerd_shim::protos::types::task::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let usage = self.get(&req.id)?.usage();
        let metrics: Box<dyn MessageDyn> = if usage.unified {
            use containerd_shim::protos::cgroups_v2::metrics as v2;
            Box::new(v2::Metrics {
                memory: MessageField::some(v2::MemoryStat {
                    usage: usage.memory_bytes,
                    usage_limit: usage.memory_limit,
                    ..Default::default()
                }),
                cpu: MessageField::some(v2::CPUStat {
                    usage_usec: usage.cpu_nanos / 1000,
                    ..Default::default()
                }),
                pids: MessageField::some(v2::PidsStat {
                    current: usage.pids,
                    ..Default::default()
                }),
                ..Default::default()
            })
        } else {
            use containerd_shim::protos::cgroups::metrics as v1;
            // Every message field is set, even when empty: Docker's stats
            // reader dereferences them without checking (it crashed dockerd
            // 28 on a missing `cpu.throttling`).
            Box::new(v1::Metrics {
                memory: MessageField::some(v1::MemoryStat {
                    usage: MessageField::some(v1::MemoryEntry {
                        usage: usage.memory_bytes,
                        limit: usage.memory_limit,
                        ..Default::default()
                    }),
                    hierarchical_memory_limit: usage.memory_limit,
                    swap: MessageField::some(v1::MemoryEntry::default()),
                    kernel: MessageField::some(v1::MemoryEntry::default()),
                    kernel_tcp: MessageField::some(v1::MemoryEntry::default()),
                    ..Default::default()
                }),
                cpu: MessageField::some(v1::CPUStat {
                    usage: MessageField::some(v1::CPUUsage {
                        total: usage.cpu_nanos,
                        ..Default::default()
                    }),
                    throttling: MessageField::some(v1::Throttle::default()),
                    ..Default::default()
                }),
                blkio: MessageField::some(v1::BlkIOStat::default()),
                pids: MessageField::some(v1::PidsStat {
                    current: usage.pids,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let stats = containerd_shim::util::convert_to_any(metrics)
            .map_err(|e| ShimError::Internal(anyhow::Error::from(e).context("encoding metrics")))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let container = self.get(&req.id)?;
        let linux = linux_of(&container)?;
        let process = req
            .spec
            .as_ref()
            .map(|any| any.value.as_slice())
            .unwrap_or_default();
        linux
            .add_exec(
                &req.exec_id,
                process,
                [&req.stdin, &req.stdout, &req.stderr],
                req.terminal,
            )
            .map_err(ShimError::from_create)?;
        self.events.publish(
            &self.namespace,
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(api::Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        // The guest's stdin reader sees end-of-file when the caller closes its end of the FIFO.
        self.get(&req.id)?;
        Ok(api::Empty::new())
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        if req.exec_id.is_empty() {
            self.get(&req.id)?.resize(req.width, req.height)
        } else {
            self.get_exec(&req.id, &req.exec_id)?
                .resize(req.width, req.height)
        }
        .map_err(ShimError::FailedPrecondition)?;
        Ok(api::Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let container = self.get(&req.id)?;
        // A Wasm guest's limits are fixed at create; runc applies a Linux
        // container's.
        if let (Some(linux), Some(resources)) = (container.linux(), req.resources.as_ref()) {
            linux
                .update(&resources.value)
                .map_err(ShimError::from_create)?;
        }
        Ok(api::Empty::new())
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let pid = std::process::id();
        // containerd takes the task's pid from here: a Linux container's
        // is its own process's.
        let task_pid = self.get(&req.id).map_or(pid, |c| c.pid());
        Ok(api::ConnectResponse {
            shim_pid: pid,
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.containers.lock().unwrap().is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
