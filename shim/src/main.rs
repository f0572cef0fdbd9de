//! `containerd-shim-wasmtime-v1`: the containerd runtime v2 shim binary.
//! Only the shim's entry points are here: `start` (spawn the server or find
//! its pod's, print the address), the server (enter the namespaces, serve the
//! task service of `service/`), and `delete` after a dead shim. Everything
//! else is in the library.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::protos::events::task::TaskOOM;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};
use containerd_shim_wasmtime::pod::namespaces::Namespaces;
use containerd_shim_wasmtime::service::{Events, Publish, TaskService, timestamp};
use containerd_shim_wasmtime::shared;
use containerd_shim_wasmtime::task::Kinds;
use log::{info, warn};

/// The runtime type containerd knows this shim by.
const RUNTIME_ID: &str = wasmbox_format::RUNTIME_TYPE;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = containerd_shim::parse(&args[1..]);
    if parsed.as_ref().is_ok_and(|flags| flags.info) {
        if let Err(e) = print_runtime_info() {
            eprintln!("{RUNTIME_ID}: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if parsed.as_ref().is_ok_and(|flags| flags.version) {
        // What containerd's own shims print for -v.
        println!("{}:", env!("CARGO_BIN_NAME"));
        println!("  Version: {}", env!("CARGO_PKG_VERSION"));
        println!("  Runtime: {RUNTIME_ID}");
        return;
    }
    if let Ok(flags) = parsed {
        let result = match flags.action.as_str() {
            "start" => start_and_print_address(flags),
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
    // A shared shim (`shared.rs`) serves containers of a group, and enters
    // none of their namespaces.
    let group = std::env::var(shared::GROUP_ENV).ok();
    // First, while this is the only thread: every later thread inherits
    // the namespaces and the blocked SIGCHLD the reaper takes.
    // The bundle's spec, read once for the namespaces and the cgroup.
    let bundle = std::env::current_dir()?;
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok();
    let namespaces = match &group {
        Some(_) => {
            // Its guests' threads are in their containers' cgroups; the
            // threads they start for I/O are not.
            if !containerd_shim_wasmtime::cgroup::unified() {
                wasmbox_engine::on_io_thread_start(
                    containerd_shim_wasmtime::cgroup::move_current_thread_home,
                );
            }
            Namespaces::host()
        }
        None => Namespaces::enter_for(spec.as_ref())?,
    };
    // Still the only thread: the container's cgroup is joined at its
    // cheapest (`cgroup::join_before_threads`), and taken over by its create.
    if group.is_none()
        && let Some(spec) = &spec
    {
        join_cgroup_before_threads(&bundle, spec);
    }
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
    let level = std::env::var(containerd_shim_wasmtime::bootstrap::SHIM_LOG_LEVEL)
        .unwrap_or_else(|_| "info".into());
    containerd_shim::logger::init(flags.debug, &level, &flags.namespace, &flags.id)
        .context("opening the shim log")?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let shim = WasmShim {
        id: flags.id.clone(),
        namespace: flags.namespace.clone(),
        containerd_address: flags.address.clone(),
        exit: Arc::new(ExitSignal::default()),
    };
    let path = flags.socket.trim_start_matches("unix://").to_string();
    let mut task_service =
        shim.task_service(ttrpc_address.clone(), Arc::new(namespaces), group.is_some());
    let retirement = group
        .as_ref()
        .map(|_| Arc::new(shared::Retirement::new(path.clone().into())));
    if let Some(retirement) = &retirement {
        task_service = task_service.with_retirement(retirement.clone());
    }
    let service: Arc<dyn containerd_shim::Task + Send + Sync> = Arc::new(task_service);
    let mut methods = containerd_shim::protos::shim::shim_ttrpc::create_task(service.clone());
    for (name, handler) in containerd_shim::protos::shim::shim_ttrpc::create_task(service) {
        methods.insert(
            name.replace("containerd.task.v3.", "containerd.task.v2."),
            handler,
        );
    }
    // Started by containerd 2.x's shim sandbox controller: this process
    // serves the pod's Sandbox API (`service/sandbox.rs`).
    if containerd_shim_wasmtime::pod::is_sandbox_controller_bundle(&bundle) {
        use containerd_shim_wasmtime::service::sandbox::{ControllerConfig, SandboxController};
        let controller = SandboxController::new(
            ControllerConfig {
                id: flags.id.clone(),
                namespace: flags.namespace.clone(),
                containerd_address: flags.address.clone(),
                ttrpc_address: ttrpc_address.clone(),
                socket: flags.socket.clone(),
                log_level: level.clone(),
                bundle,
            },
            shim.exit.clone(),
        );
        methods.extend(containerd_shim_protos::sandbox_sync::create_sandbox(
            Arc::new(controller),
        ));
    }

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
    if group.is_some() {
        // Its first container's bundle, where it started, goes long before it.
        let _ = std::env::set_current_dir("/");
    }
    shim.exit.wait();
    server.shutdown();
    // A shared shim removed its socket when it decided to end: the path
    // may be a new shim's by now.
    if retirement.is_none() {
        let _ = std::fs::remove_file(&path);
    }
    // containerd has its answer and the containers are gone: what is left
    // is storing the Cranelift artifacts of modules that started on Winch,
    // outside the last container's cgroup, which this process kept until
    // now (`Membership::leave_at_exit`) and which must be removable as soon
    // as containerd asks.
    if wasmbox_engine::tiering::has_work()
        && let Err(e) = containerd_shim_wasmtime::cgroup::leave_parked()
    {
        warn!("leaving the last container's cgroup: {e:#}");
    }
    wasmbox_engine::tiering::finish();
    Ok(())
}

/// Joins the cgroup of the container of `spec`, if it has one and `bundle`
/// is not containerd 2's pod server's (which runs no container).
fn join_cgroup_before_threads(bundle: &Path, spec: &oci_spec::runtime::Spec) {
    if containerd_shim_wasmtime::pod::is_sandbox_controller_bundle(bundle) {
        return;
    }
    if let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) {
        containerd_shim_wasmtime::cgroup::join_before_threads(
            &path.to_string_lossy(),
            containerd_shim_wasmtime::cgroup::Limits::from_spec(spec),
        );
    }
}

/// The `start` action: spawn the shim server (or find its pod's or its
/// shared group's, `shared.rs`) and answer
/// containerd in the handshake it used (`bootstrap.rs`): a `BootstrapResult`
/// for containerd 2.3+, the bare address for 1.6 to 2.2 (1.6 reads nothing
/// else; the shim crate's JSON answer only parses on ≥ 1.7). Nothing is
/// spawned or written when the handshake is refused.
fn start_and_print_address(flags: Flags) -> anyhow::Result<()> {
    use anyhow::Context;
    use containerd_shim_wasmtime::bootstrap;
    use std::io::Write;
    let input = bootstrap::read_stdin()?;
    let handshake = bootstrap::parse(&input, &flags.id, &flags.namespace)?;
    let opts = handshake.start_opts(&flags);
    let config = match handshake.runtime_options() {
        Some(options) => containerd_shim_wasmtime::options::ShimConfig::from_options(options)?,
        None => Default::default(),
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let spec = oci_spec::runtime::Spec::load(cwd.join("config.json")).ok();
    let level = bootstrap::log_level(&opts);
    let mut env = vec![(bootstrap::SHIM_LOG_LEVEL, level.to_string())];
    // The runtime handler's settings win over containerd's environment.
    if let Some(policy) = &config.policy {
        let policy = policy
            .to_str()
            .context("the policy path is not UTF-8")?
            .to_string();
        env.push((containerd_shim_wasmtime::verification::POLICY_ENV, policy));
    }
    let group = match &spec {
        Some(spec) => shared::group_of(spec, &flags.id, config.shim_group.as_deref())?,
        None => None,
    };
    let controller = containerd_shim_wasmtime::pod::is_sandbox_controller_bundle(&cwd);
    let address = if let Some(group) = group {
        // The group's shim, found or spawned under the lock its decision
        // to end takes too (`shared.rs`).
        let grouping = group.grouping();
        let address = opts.socket_address(&grouping);
        bootstrap::check_socket_address(&address, opts.socket_dir.as_deref())?;
        let socket = shared::socket_path(&address);
        let _lock = shared::StartLock::take(&socket)?;
        if shim_is_serving(&address) {
            shared::claim(&socket)?;
            address
        } else {
            env.push((shared::GROUP_ENV, group.name.clone()));
            let env = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            containerd_shim::spawn(opts, &grouping, env)?.1
        }
    } else {
        // A pod's containers join the shim of its sandbox, or its pod server
        // where containerd's shim sandbox controller made the pod.
        let grouping = containerd_shim_wasmtime::pod::grouping(&cwd, &flags.id);
        let existing = opts.socket_address(&grouping);
        bootstrap::check_socket_address(&existing, opts.socket_dir.as_deref())?;
        let pod_server = opts.socket_address(&containerd_shim_wasmtime::pod::pod_server_grouping(
            &grouping,
        ));
        if grouping != opts.id && shim_is_serving(&pod_server) {
            pod_server
        } else if grouping != opts.id && shim_is_serving(&existing) {
            existing
        } else {
            let env = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            containerd_shim::spawn(opts, &grouping, env)?.1
        }
    };
    let version = if controller {
        2
    } else {
        containerd_shim::protos::TASK_API_VERSION
    };
    containerd_shim::util::write_address(&address)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&handshake.answer(&address, version))
        .and_then(|_| out.flush())
        .context("writing the answer to containerd")
}

/// The `-info` action: the runtime options containerd sends (if any) on
/// stdin, the `RuntimeInfo` (`info.rs`) on stdout.
fn print_runtime_info() -> anyhow::Result<()> {
    use anyhow::Context;
    use containerd_shim::protos::protobuf::Message;
    use containerd_shim::protos::protobuf::well_known_types::any::Any;
    use std::io::Write;
    let input = containerd_shim_wasmtime::bootstrap::read_stdin()?;
    let options = if input.is_empty() {
        None
    } else {
        Some(Any::parse_from_bytes(&input).map_err(|_| {
            anyhow::anyhow!(
                "-info: stdin holds {} bytes that are not runtime options (a protobuf Any)",
                input.len()
            )
        })?)
    };
    let info = containerd_shim_wasmtime::info::runtime_info(RUNTIME_ID, options.as_ref());
    let mut out = std::io::stdout().lock();
    out.write_all(&info.write_to_bytes()?)
        .and_then(|_| out.flush())
        .context("writing the runtime info")
}

/// After a shim died: removes its socket (named in the bundle's `address`
/// file), as runc's shim does, unless a shim answers there again (a
/// pod's or a shared group's next one), under the lock `start` takes.
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let socket = shared::socket_path(address.trim());
    let Ok(_lock) = shared::StartLock::take(&socket) else {
        return;
    };
    if !shim_is_serving(address.trim()) {
        let _ = std::fs::remove_file(&socket);
    }
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
            remove_dead_socket(&bundle);
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
                    Events::new(address, self.namespace.clone()).publish(
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
        self.task_service(address, Arc::new(Namespaces::default()), false)
    }
}

impl WasmShim {
    /// The task service of this shim: its tasks' kinds decided by
    /// [`Kinds`] (a `shared` shim's, `shared.rs`), its events sent to
    /// containerd at `ttrpc_address`.
    fn task_service(
        &self,
        ttrpc_address: String,
        namespaces: Arc<Namespaces>,
        shared: bool,
    ) -> TaskService {
        let kinds = Kinds {
            containerd_address: self.containerd_address.clone(),
            namespace: self.namespace.clone(),
            namespaces,
            shared,
        };
        let events = Events::new(ttrpc_address, self.namespace.clone());
        TaskService::new(Box::new(kinds), Arc::new(events), self.exit.clone())
    }
}
