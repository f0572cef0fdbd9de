//! Tasks: what the shim runs for containerd, one per container id.
//!
//! A [`Task`] is a [`Workload`] (a Wasm guest, a Linux container run by
//! runc, or a pod's sandbox) driven by one [`Lifecycle`], with the processes
//! exec'd into it ([`Exec`]), which share that state machine. [`create`] is
//! the only code that decides which kind a container is, once, from its spec
//! and root filesystem. No ttrpc here: the service (`service/`) maps
//! requests onto these calls.

pub mod lifecycle;
pub mod linux;
pub mod sandbox;
pub mod wasm;
pub mod workload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use lifecycle::Lifecycle;
pub use workload::{ExecRequest, Exit, ExitNotice, Status, Workload};

use crate::cgroup::Usage;
use crate::content::ImageSource;
use crate::mounts::RootfsMount;
use crate::pod::namespaces::Namespaces;
use crate::stdio::ProcessIo;

/// How long a task's exit waits for the exits of its exec'd processes
/// (which end with the container's process namespace) to be reported first.
const EXECS_REPORTED_WAIT: Duration = Duration::from_secs(2);

/// The exit status of an exec that never ran (containerd's runc shim's).
pub const FAILED_START_EXIT: u32 = 255;

/// Told a task's or process's exit, once, after waiters woke (the exit event).
pub type Report = Box<dyn FnOnce(&Exit) + Send>;

/// What containerd's `Create` asks for.
pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub mounts: &'a [RootfsMount],
    pub stdio: [&'a str; 3],
    pub terminal: bool,
}

/// Makes tasks: the service's only way to create one, so that its tests
/// can hand it tasks of a workload of their own.
pub trait Factory: Send + Sync {
    fn create(&self, request: &CreateRequest) -> Result<Task>;
}

/// The shim's factory: it reads the bundle's spec and picks the kind.
pub struct Kinds {
    /// containerd's gRPC socket and namespace, for modules kept in Wasm layers.
    pub containerd_address: String,
    pub namespace: String,
    /// The namespaces this shim process holds (its container's or its pod's).
    pub namespaces: Arc<Namespaces>,
    /// It is a shared shim (`shared.rs`): Wasm guests only, each in its
    /// container's cgroup as a thread.
    pub shared: bool,
}

impl Factory for Kinds {
    fn create(&self, request: &CreateRequest) -> Result<Task> {
        create(self, request)
    }
}

/// Creates the task `request` describes. The kind is decided here, and
/// only here: a pod's sandbox by its CRI annotation; a Linux container when
/// its program is a native one (`linux::detect`); else a Wasm guest. On any
/// error nothing stays mounted, joined or registered with runc.
pub fn create(kinds: &Kinds, request: &CreateRequest) -> Result<Task> {
    let bundle = request.bundle;
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .context("reading the container spec config.json")?;
    if crate::pod::is_sandbox(&spec) {
        let sandbox = sandbox::Sandbox::create(request.id, &spec, kinds.namespaces.clone(), bundle);
        return Ok(Task::new(request, Box::new(sandbox), ProcessIo::default()));
    }
    let image = ImageSource {
        containerd_address: kinds.containerd_address.clone(),
        namespace: kinds.namespace.clone(),
        container_id: request.id.to_string(),
    };
    // Every container but the pod's sandbox (containerd's own pause image,
    // set by the node's config) meets the policy, Wasm and Linux alike,
    // before anything of it is mounted, joined or started.
    if let Some(policy) = crate::verification::configured_policy()? {
        kinds
            .namespaces
            .in_host_network(|| crate::verification::check_container(&policy, &image))?;
    }
    // The rootfs is mounted nodev,nosuid for a Wasm guest: the kind is
    // read from it (`linux::detect`). A Linux container's is then mounted
    // again as runc expects it (exactly as containerd gave it).
    let rootfs =
        crate::mounts::ContainerMounts::mount_rootfs(bundle, request.mounts, root_path(&spec))?;
    if linux::detect::is_linux_program(&spec, rootfs.rootfs()) {
        drop(rootfs);
        if kinds.shared {
            bail!(crate::error::InvalidSpec(anyhow::anyhow!(
                "container {} runs a Linux program, but a shared shim runs Wasm guests only: \
                 run it without the annotation dev.wasmbox.shim.group",
                request.id
            )));
        }
        // runc makes and fills a Linux container's cgroup.
        crate::cgroup::leave_early()?;
        let (linux, io) =
            linux::LinuxTask::create(&kinds.namespace, request, &spec, &kinds.namespaces)?;
        return Ok(Task::new(request, Box::new(linux), io));
    }
    let network = kinds.namespaces.guest_network(&spec);
    let (wasm, io) = wasm::WasmTask::create(request, &spec, rootfs, network, &image, kinds.shared)?;
    Ok(Task::new(request, Box::new(wasm), io))
}

/// Where the caller mounted the root itself when containerd sends no
/// mounts: `root.path`, as runc reads it (relative to the bundle, or
/// absolute, as Docker's containerd image store sends it). A Wasm guest's is
/// then bound at `bundle/rootfs`, so that it is nodev,nosuid too.
fn root_path(spec: &oci_spec::runtime::Spec) -> &Path {
    spec.root()
        .as_ref()
        .map_or(Path::new("rootfs"), |r| r.path())
}

/// A task the shim runs.
pub struct Task {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: [String; 3],
    workload: Box<dyn Workload>,
    lifecycle: Lifecycle,
    io: Mutex<ProcessIo>,
    execs: Mutex<HashMap<String, Arc<Exec>>>,
}

impl Task {
    pub fn new(request: &CreateRequest, workload: Box<dyn Workload>, io: ProcessIo) -> Task {
        Task {
            id: request.id.to_string(),
            bundle: request.bundle.to_path_buf(),
            stdio: request.stdio.map(str::to_string),
            workload,
            lifecycle: Lifecycle::default(),
            io: Mutex::new(io),
            execs: Mutex::new(HashMap::new()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.workload.pid()
    }

    /// The workload's pids, and those of running execs it does not list.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = self.workload.pids();
        for exec in self.execs.lock().unwrap().values() {
            if let (Status::Running, Some(pid), _) = exec.status()
                && !pids.contains(&pid)
            {
                pids.push(pid);
            }
        }
        pids
    }

    pub fn status(&self) -> (Status, Option<Exit>) {
        self.lifecycle.status()
    }

    /// Starts the program; `report` is told its exit, after the exits of
    /// the processes exec'd into it.
    pub fn start(self: &Arc<Self>, report: Report) -> Result<()> {
        self.lifecycle
            .begin_start()
            .with_context(|| format!("container {}", self.id))?;
        let terminal = self.io.lock().unwrap().terminal_slave.take();
        let this = self.clone();
        let exited: ExitNotice = Box::new(move |code| this.exited(code, report));
        if let Err(e) = self.workload.start(terminal, exited) {
            self.lifecycle.start_failed();
            return Err(e);
        }
        Ok(())
    }

    /// The program ended: once its execs' exits and its own output are out,
    /// it is stopped and reported.
    fn exited(&self, code: u32, report: Report) {
        self.io.lock().unwrap().stdin = None;
        let deadline = Instant::now() + EXECS_REPORTED_WAIT;
        let execs: Vec<Arc<Exec>> = self.execs.lock().unwrap().values().cloned().collect();
        for exec in execs {
            if !exec.lifecycle.wait_reported(deadline) {
                break;
            }
        }
        drain(&self.io);
        self.lifecycle.finish(code, report);
    }

    /// Sends `signal` (to every process with `all`); a task that never
    /// started stops at once. False when it had already stopped.
    pub fn kill(&self, signal: u32, all: bool) -> Result<bool> {
        let status = self.lifecycle.status().0;
        if self.workload.ignores(signal) {
            // As Linux does for a process that did not ask for them.
            return Ok(status != Status::Stopped);
        }
        match status {
            Status::Stopped => Ok(false),
            Status::Running => self.workload.kill(signal, all),
            Status::Created => {
                self.workload.kill_unstarted(signal, all);
                self.stop_unstarted(128 + signal);
                Ok(true)
            }
        }
    }

    fn stop_unstarted(&self, code: u32) {
        if self.lifecycle.stop_unstarted(code) {
            self.io.lock().unwrap().abandon();
        }
    }

    pub fn wait(&self) -> Exit {
        self.lifecycle.wait()
    }

    pub fn usage(&self) -> Usage {
        self.workload
            .usage(self.lifecycle.status().0 == Status::Running)
    }

    pub fn update(&self, resources: &[u8]) -> Result<()> {
        self.workload.update(resources)
    }

    pub fn watch_oom(&self, on_oom: Box<dyn Fn() + Send>) -> Result<()> {
        self.workload.watch_oom(on_oom)
    }

    /// Sets the terminal's window size (`ctr run -t` and `docker run -t` resizes).
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let what = format!("container {}", self.id);
        self.io.lock().unwrap().resize(&what, width, height)
    }

    /// Releases what the task holds on the node; the caller checked that
    /// it is not running.
    pub fn cleanup(&self) -> Result<()> {
        self.io.lock().unwrap().abandon();
        let cleaned = self.workload.cleanup();
        for exec_id in self.execs.lock().unwrap().drain().map(|(id, _)| id) {
            self.workload.forget_exec(&exec_id);
        }
        if self.workload.cleanup_kills_unstarted() {
            self.lifecycle.stop_unstarted(128 + libc::SIGKILL as u32);
        }
        cleaned
    }

    /// Whether processes can be exec'd into the task.
    pub fn accepts_exec(&self) -> bool {
        self.workload.accepts_exec()
    }

    /// Records a process to exec; [`Task::start_exec`] starts it.
    pub fn add_exec(&self, request: &ExecRequest) -> Result<()> {
        let mut execs = self.execs.lock().unwrap();
        if execs.contains_key(request.exec_id) {
            bail!(
                "exec {} already exists in container {}",
                request.exec_id,
                self.id
            );
        }
        self.workload.check_exec(request)?;
        execs.insert(
            request.exec_id.to_string(),
            Arc::new(Exec {
                exec_id: request.exec_id.to_string(),
                stdio: request.stdio.map(str::to_string),
                terminal: request.terminal,
                process_json: request.process_json.to_vec(),
                lifecycle: Lifecycle::default(),
                pid: Mutex::new(None),
                reaped: AtomicBool::new(false),
                io: Mutex::new(ProcessIo::default()),
            }),
        );
        Ok(())
    }

    pub fn exec(&self, exec_id: &str) -> Result<Arc<Exec>> {
        self.execs
            .lock()
            .unwrap()
            .get(exec_id)
            .cloned()
            .with_context(|| format!("exec {exec_id} not found in container {}", self.id))
    }

    /// Starts exec `exec_id`; returns its pid. `report` is told its exit
    /// once its output was read (and always before the task's own exit).
    pub fn start_exec(&self, exec_id: &str, report: Report) -> Result<u32> {
        let exec = self.exec(exec_id)?;
        exec.lifecycle
            .begin_start()
            .with_context(|| format!("exec {exec_id}"))?;
        let started = self.workload.start_exec(&ExecRequest {
            exec_id,
            process_json: &exec.process_json,
            stdio: exec.stdio.each_ref().map(String::as_str),
            terminal: exec.terminal,
        });
        let started = match started {
            Ok(started) => started,
            Err(e) => {
                // It never ran: a waiter (the CRI waits before it starts)
                // gets an exit instead of waiting forever.
                exec.lifecycle.start_failed();
                exec.lifecycle.stop_unstarted(FAILED_START_EXIT);
                return Err(e);
            }
        };
        *exec.pid.lock().unwrap() = Some(started.pid);
        *exec.io.lock().unwrap() = started.io;
        let process = exec.clone();
        (started.on_exit)(Box::new(move |code| {
            // At once, where the exit is collected: from here the pid may be reused.
            process.reaped.store(true, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name("exec-exit".into())
                .spawn(move || {
                    drain(&process.io);
                    process.lifecycle.finish(code, report);
                });
            if let Err(e) = spawned {
                log::error!("handling an exec's exit: {e}");
            }
        }));
        Ok(started.pid)
    }

    /// Forgets a stopped (or never started) exec; returns its exit.
    pub fn delete_exec(&self, exec_id: &str) -> Result<Option<Exit>> {
        let exec = self.exec(exec_id)?;
        if exec.lifecycle.status().0 == Status::Running {
            bail!("exec {exec_id} is running; kill it first");
        }
        exec.lifecycle.stop_unstarted(FAILED_START_EXIT);
        exec.io.lock().unwrap().abandon();
        self.workload.forget_exec(exec_id);
        self.execs.lock().unwrap().remove(exec_id);
        Ok(exec.lifecycle.status().1)
    }
}

/// Drains a stopped process's output (see [`ProcessIo::drain`]) without
/// holding its lock for the wait: a resize meanwhile still finds the
/// terminal.
fn drain(io: &Mutex<ProcessIo>) {
    let mut draining = {
        let mut io = io.lock().unwrap();
        ProcessIo {
            output_fifos: std::mem::take(&mut io.output_fifos),
            terminal_master: io.terminal_master.as_ref().and_then(|m| m.try_clone().ok()),
            terminal_slave: None,
            stdin: io.stdin.take(),
        }
    };
    draining.drain();
}

/// A process exec'd into a task.
pub struct Exec {
    pub exec_id: String,
    pub stdio: [String; 3],
    terminal: bool,
    process_json: Vec<u8>,
    lifecycle: Lifecycle,
    pid: Mutex<Option<u32>>,
    /// Its exit was collected: its pid is no longer its own.
    reaped: AtomicBool,
    io: Mutex<ProcessIo>,
}

impl Exec {
    pub fn status(&self) -> (Status, Option<u32>, Option<Exit>) {
        let (status, exit) = self.lifecycle.status();
        (status, *self.pid.lock().unwrap(), exit)
    }

    pub fn wait(&self) -> Exit {
        self.lifecycle.wait()
    }

    /// Signals the process; false when it is not running.
    pub fn kill(&self, signal: u32) -> bool {
        let pid = *self.pid.lock().unwrap();
        match (self.lifecycle.status().0, pid) {
            (Status::Running, Some(pid)) if !self.reaped.load(Ordering::SeqCst) => {
                // SAFETY: kill(2) with integers only, touching no memory. Not
                // reaped means the pid is still this process's (a zombie at
                // worst), short of the instant between the reaper's waitpid
                // and its marking it reaped.
                unsafe { libc::kill(pid as i32, signal as i32) };
                true
            }
            _ => false,
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let what = format!("exec {}", self.exec_id);
        self.io.lock().unwrap().resize(&what, width, height)
    }
}
