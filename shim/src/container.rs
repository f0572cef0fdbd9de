//! One container's lifecycle: created → running → stopped → deleted, its
//! root filesystem mounts, and the thread its guest runs on. No ttrpc here.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::content::ImageSource;
use crate::engine::{Engine, KillSwitch, Program, RunSpec, Stdio};
pub use crate::mounts::RootfsMount;
use crate::stdio::{OUTPUT_DRAIN, Pty, drain_terminal, wait_until_read};

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

#[derive(Debug, Clone)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

struct Inner {
    status: Status,
    exit: Option<Exit>,
    kill: Option<KillSwitch>,
}

/// What a container runs.
enum Workload {
    Wasm {
        spec: Box<RunSpec>,
        program: Program,
    },
    /// A pod's sandbox: no program; it holds the pod until it is killed.
    Sandbox(crate::pod::Sandbox),
    /// A native Linux program, which runc runs (`linux.rs`).
    Linux(crate::linux::LinuxContainer),
}

/// Called on the guest's thread (or the killer's, for a sandbox) when the container stops.
pub(crate) type OnExit = Box<dyn FnOnce(&Container, &Exit) + Send>;

/// A container the shim runs.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    workload: Workload,
    /// What create mounted; unmounted at delete, or when dropped.
    mounts: Mutex<crate::mounts::ContainerMounts>,
    /// The pseudo-terminal's slave until the guest takes it, and its master for resizes.
    terminal: Mutex<Option<std::os::fd::OwnedFd>>,
    terminal_master: Option<std::fs::File>,
    /// The container's cgroup, which the shim process joined at create.
    cgroup: Mutex<Option<crate::cgroup::Membership>>,
    /// Write ends of the output FIFOs, opened at create and closed when the
    /// guest ends. containerd's client opens its read ends asynchronously and
    /// abandons an open still pending when the task is deleted; a writer from
    /// create on lets that open finish long before a fast guest exits (runc's
    /// shim opens them at create too).
    output_fifos: Mutex<Vec<std::fs::File>>,
    inner: Mutex<Inner>,
    exited: Condvar,
}

impl Container {
    /// Mounts the rootfs and checks the spec; on any error nothing stays mounted.
    pub fn create(
        id: &str,
        bundle: &Path,
        mounts: &[RootfsMount],
        stdio: [&str; 3],
        terminal: bool,
        image: &ImageSource,
    ) -> Result<Container> {
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
            .context("reading the container spec config.json")?;
        if crate::pod::is_sandbox(&spec) {
            return Ok(Container::sandbox(id, bundle, &spec, stdio));
        }
        // containerd's mounts go to `bundle/rootfs`. With none, the caller
        // mounted the root itself and names it in `root.path`, as runc reads
        // it (Docker's containerd image store sends an absolute path): it is
        // bound at `bundle/rootfs` too, so that it is nodev,nosuid. Any
        // error below drops `mounted`, which unmounts everything.
        let root_path = spec
            .root()
            .as_ref()
            .map_or(Path::new("rootfs"), |r| r.path());
        let mounted = crate::mounts::ContainerMounts::mount_rootfs(bundle, mounts, root_path)?;
        let rootfs = mounted.rootfs().to_path_buf();
        if crate::linux::is_linux_program(&spec, &rootfs) {
            // runc mounts it again, as the spec says, without nodev,nosuid.
            drop(mounted);
            return Container::create_linux(
                id,
                bundle,
                mounts,
                &spec,
                stdio,
                terminal,
                &image.namespace,
            );
        }
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.to_string_lossy().into_owned());
        let limits = crate::cgroup::Limits::from_spec(&spec);
        let loaded = (|| {
            let guest_mounts = crate::mounts::guest_mounts(&spec)?;
            let volumes = crate::mounts::make_guest_mounts(&guest_mounts, bundle, &rootfs)?;
            let name_service = crate::mounts::name_service_namespace(&guest_mounts)?;
            // The container's cgroup before the module: reading the Wasm
            // layer and compiling are charged to it and held to its limits.
            let cgroup = match &cgroups_path {
                Some(path) => crate::cgroup::join(path, limits)?,
                None => None,
            };
            let loaded = (|| {
                crate::memory::after_join()?;
                let mut run = crate::spec::run_spec(&spec, &rootfs, || {
                    // In the bundle, not the rootfs: containerd removes it at delete.
                    image.wasm_layer_to(&bundle.join("wasm-layer.wasm"))
                })?;
                run.preopens.extend(volumes);
                run.mount_namespace = name_service.map(std::sync::Arc::new);
                let fifo = |p: &str| {
                    if p.is_empty() {
                        Stdio::Null
                    } else {
                        Stdio::Fifo(PathBuf::from(p))
                    }
                };
                if !terminal {
                    run.stdin = fifo(stdio[0]);
                    run.stdout = fifo(stdio[1]);
                    run.stderr = fifo(stdio[2]);
                }
                log::info!(
                    id,
                    module:% = run.module.display(),
                    memory_limit:? = run.memory_limit,
                    preopens = run.preopens.len();
                    "loading"
                );
                let program = Engine::for_spec(&run)?.load(&run)?;
                // After the load, whose memory is the shim's from now on.
                run.shared_budget = Some(crate::memory::shared_budget());
                if let Some(sized) = crate::memory::size_shared_budget()? {
                    log::info!(
                        id,
                        cgroup_limit = sized.cgroup_limit,
                        shim_bytes = sized.shim_bytes,
                        guest_budget = sized.guest_budget;
                        "the guests' memory budget"
                    );
                }
                let pty = if terminal {
                    Some(Pty::open(stdio[0], stdio[1])?)
                } else {
                    None
                };
                let output_fifos = if terminal {
                    Vec::new()
                } else {
                    crate::stdio::open_output_fifos(&[stdio[1], stdio[2]])?
                };
                Ok::<_, anyhow::Error>((run, program, pty, output_fifos))
            })();
            match loaded {
                Ok((run, program, pty, output_fifos)) => {
                    Ok((run, program, pty, output_fifos, cgroup))
                }
                Err(e) => {
                    if let Some(cgroup) = cgroup
                        && let Err(leave) = cgroup.leave()
                    {
                        log::warn!(id; "after a failed create: {leave:#}");
                    }
                    Err(e)
                }
            }
        })();
        let (spec, program, pty, output_fifos, cgroup) = loaded?;
        let (terminal, terminal_master) = match pty {
            Some(p) => (Some(p.slave), Some(p.master)),
            None => (None, None),
        };
        Ok(Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            rootfs,
            stdin: stdio[0].to_string(),
            stdout: stdio[1].to_string(),
            stderr: stdio[2].to_string(),
            workload: Workload::Wasm {
                spec: Box::new(spec),
                program,
            },
            mounts: Mutex::new(mounted),
            terminal: Mutex::new(terminal),
            terminal_master,
            cgroup: Mutex::new(cgroup),
            output_fifos: Mutex::new(output_fifos),
            inner: Mutex::new(Inner {
                status: Status::Created,
                exit: None,
                kill: None,
            }),
            exited: Condvar::new(),
        })
    }

    /// A Linux container: its rootfs mounted as given and created with runc.
    fn create_linux(
        id: &str,
        bundle: &Path,
        mounts: &[RootfsMount],
        spec: &oci_spec::runtime::Spec,
        stdio: [&str; 3],
        terminal: bool,
        namespace: &str,
    ) -> Result<Container> {
        let mounted = crate::mounts::ContainerMounts::mount_linux_rootfs(bundle, mounts)?;
        let (linux, io) =
            crate::linux::LinuxContainer::create(namespace, id, bundle, spec, stdio, terminal)?;
        Ok(Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            rootfs: mounted.rootfs().to_path_buf(),
            stdin: stdio[0].to_string(),
            stdout: stdio[1].to_string(),
            stderr: stdio[2].to_string(),
            workload: Workload::Linux(linux),
            mounts: Mutex::new(mounted),
            terminal: Mutex::new(None),
            terminal_master: io.terminal_master,
            cgroup: Mutex::new(None),
            output_fifos: Mutex::new(io.output_fifos),
            inner: Mutex::new(Inner {
                status: Status::Created,
                exit: None,
                kill: None,
            }),
            exited: Condvar::new(),
        })
    }

    /// A pod's sandbox: nothing to mount or load (see [`crate::pod::Sandbox`]).
    fn sandbox(
        id: &str,
        bundle: &Path,
        spec: &oci_spec::runtime::Spec,
        stdio: [&str; 3],
    ) -> Container {
        let (sandbox, cgroup) = crate::pod::Sandbox::create(id, spec);
        let mounts = crate::mounts::ContainerMounts::none(bundle);
        Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            rootfs: mounts.rootfs().to_path_buf(),
            stdin: stdio[0].to_string(),
            stdout: stdio[1].to_string(),
            stderr: stdio[2].to_string(),
            workload: Workload::Sandbox(sandbox),
            mounts: Mutex::new(mounts),
            terminal: Mutex::new(None),
            terminal_master: None,
            cgroup: Mutex::new(cgroup),
            output_fifos: Mutex::new(Vec::new()),
            inner: Mutex::new(Inner {
                status: Status::Created,
                exit: None,
                kill: None,
            }),
            exited: Condvar::new(),
        }
    }

    /// The pid containerd knows the container by: a Linux container's init
    /// process, else the shim's own (which runs the Wasm guests and holds
    /// the pod's namespaces).
    pub fn pid(&self) -> u32 {
        match &self.workload {
            Workload::Linux(linux) => linux.init_pid,
            _ => std::process::id(),
        }
    }

    /// The pids of the container's processes.
    pub fn pids(&self) -> Vec<u32> {
        match &self.workload {
            Workload::Linux(linux) => linux.pids(),
            _ => vec![std::process::id()],
        }
    }

    /// The runc side of a Linux container, for exec; Wasm containers have none.
    pub fn linux(&self) -> Option<&crate::linux::LinuxContainer> {
        match &self.workload {
            Workload::Linux(linux) => Some(linux),
            _ => None,
        }
    }

    pub fn status(&self) -> (Status, Option<Exit>) {
        let inner = self.inner.lock().unwrap();
        (inner.status, inner.exit.clone())
    }

    /// Starts the guest on its own thread; `on_exit` runs there when it ends.
    pub fn start(
        self: &std::sync::Arc<Self>,
        on_exit: impl FnOnce(&Container, &Exit) + Send + 'static,
    ) -> Result<()> {
        let (run_spec, program) = match &self.workload {
            Workload::Wasm { spec, program } => (spec, program),
            Workload::Linux(linux) => {
                {
                    let mut inner = self.inner.lock().unwrap();
                    if inner.status != Status::Created {
                        bail!("container {} was already started", self.id);
                    }
                    inner.status = Status::Running;
                }
                let this = self.clone();
                let started = linux.start(Box::new(move |code| {
                    if let Workload::Linux(linux) = &this.workload {
                        linux.init_exited();
                    }
                    if let Some(master) = &this.terminal_master {
                        drain_terminal(master);
                    }
                    this.finish(code, on_exit);
                }));
                if let Err(e) = started {
                    self.inner.lock().unwrap().status = Status::Created;
                    return Err(e);
                }
                return Ok(());
            }
            Workload::Sandbox(sandbox) => {
                let mut inner = self.inner.lock().unwrap();
                if inner.status != Status::Created {
                    bail!("container {} was already started", self.id);
                }
                inner.status = Status::Running;
                sandbox.hold(Box::new(on_exit));
                return Ok(());
            }
        };
        let engine = Engine::for_spec(run_spec)?;
        let (kill, kill_rx) = KillSwitch::new();
        {
            let mut inner = self.inner.lock().unwrap();
            if inner.status != Status::Created {
                bail!("container {} was already started", self.id);
            }
            inner.status = Status::Running;
            inner.kill = Some(kill);
        }
        let program = program.clone();
        let mut spec = run_spec.clone();
        if let Some(slave) = self.terminal.lock().unwrap().take() {
            // The guest owns the only slave descriptor, so the terminal hangs up when it ends.
            let tty = std::sync::Arc::new(slave);
            spec.stdin = Stdio::Terminal(tty.clone());
            spec.stdout = Stdio::Terminal(tty.clone());
            spec.stderr = Stdio::Terminal(tty);
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("wasm-{}", &self.id[..self.id.len().min(8)]))
            .spawn(move || {
                // A panic below wasmtime (a bug, never the guest's doing)
                // ends this container with an exit, not the shim's thread
                // with a container that looks running forever.
                let run = std::panic::AssertUnwindSafe(|| engine.run(&program, &spec, kill_rx));
                let code = match std::panic::catch_unwind(run) {
                    Ok(code) => code,
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        log::error!("container {}: the guest's thread panicked: {what}", this.id);
                        crate::engine::TRAP_EXIT_STATUS
                    }
                };
                if let Some(master) = &this.terminal_master {
                    drain_terminal(master);
                }
                drop(spec);
                this.finish(code as u32, on_exit);
            });
        if let Err(e) = spawned {
            // Back to created: the caller sees the error, and can delete.
            let mut inner = self.inner.lock().unwrap();
            inner.status = Status::Created;
            inner.kill = None;
            return Err(anyhow::Error::from(e).context("starting the guest thread"));
        }
        Ok(())
    }

    /// The program ended with `code`: once its output was read, the
    /// container is stopped and `on_exit` runs.
    fn finish(&self, code: u32, on_exit: impl FnOnce(&Container, &Exit)) {
        {
            let mut fifos = self.output_fifos.lock().unwrap();
            let deadline = std::time::Instant::now() + OUTPUT_DRAIN;
            for fifo in fifos.iter() {
                wait_until_read(fifo, deadline);
            }
            fifos.clear();
        }
        let exit = Exit {
            status: code,
            at: SystemTime::now(),
        };
        {
            let mut inner = self.inner.lock().unwrap();
            inner.status = Status::Stopped;
            inner.exit = Some(exit.clone());
            inner.kill = None;
        }
        self.exited.notify_all();
        on_exit(self, &exit);
    }

    /// Sends `signal` (to every process of a Linux container with `all`); a
    /// container that never started stops at once. Returns false when the
    /// container had already stopped.
    pub fn kill(self: &std::sync::Arc<Self>, signal: u32, all: bool) -> Result<bool> {
        if let Workload::Linux(linux) = &self.workload {
            let status = self.inner.lock().unwrap().status;
            return match status {
                Status::Stopped => Ok(false),
                Status::Running => linux.kill(signal, all),
                Status::Created => {
                    // runc's process waits for `start`; it goes at delete.
                    let _ = linux.kill(signal, all);
                    self.stop_unstarted(signal);
                    Ok(true)
                }
            };
        }
        let mut inner = self.inner.lock().unwrap();
        if ignored_by_default(signal) {
            // As Linux does for a process that did not ask for them.
            return Ok(inner.status != Status::Stopped);
        }
        match inner.status {
            Status::Running => {
                if let Some(k) = &inner.kill {
                    k.kill(signal as i32);
                } else if let Workload::Sandbox(sandbox) = &self.workload {
                    // A sandbox stops at once, whatever the signal, and
                    // with it the pod's process namespace, if one was made.
                    crate::pod::end_pod_pid_namespace();
                    let exit = Exit {
                        status: 128 + signal,
                        at: SystemTime::now(),
                    };
                    inner.status = Status::Stopped;
                    inner.exit = Some(exit.clone());
                    drop(inner);
                    self.exited.notify_all();
                    if let Some(on_exit) = sandbox.release() {
                        // On a thread of its own: the kill's answer goes out
                        // first. containerd answers the exit event with
                        // Delete and Shutdown, and a shim that ended before
                        // answering would fail the kill ("ttrpc: closed").
                        let this = self.clone();
                        let spawned = std::thread::Builder::new()
                            .name("sandbox-exit".into())
                            .spawn(move || on_exit(&this, &exit));
                        if let Err(e) = spawned {
                            log::error!("reporting the sandbox's exit: {e}");
                        }
                    }
                }
                Ok(true)
            }
            Status::Created => {
                drop(inner);
                self.stop_unstarted(signal);
                Ok(true)
            }
            Status::Stopped => Ok(false),
        }
    }

    /// A container that never started stops as if `signal` had ended it:
    /// its output FIFOs and terminal are let go, and waiters learn its exit.
    fn stop_unstarted(&self, signal: u32) {
        let mut inner = self.inner.lock().unwrap();
        if inner.status != Status::Created {
            return;
        }
        inner.status = Status::Stopped;
        inner.exit = Some(Exit {
            status: 128 + signal,
            at: SystemTime::now(),
        });
        drop(inner);
        self.output_fifos.lock().unwrap().clear();
        self.terminal.lock().unwrap().take();
        self.exited.notify_all();
    }

    /// What the container uses: its cgroup's counters when the shim joined
    /// that cgroup (a shim's first container), else the guest's own meter
    /// (the containers of a pod, which share the shim's process).
    pub fn usage(&self) -> crate::cgroup::Usage {
        if let Some(cgroup) = self.cgroup.lock().unwrap().as_ref() {
            return cgroup.usage();
        }
        let running = self.inner.lock().unwrap().status == Status::Running;
        match &self.workload {
            Workload::Wasm { spec, .. } => crate::cgroup::Usage {
                memory_bytes: spec.meter.memory_bytes(),
                memory_limit: spec.memory_limit.unwrap_or(0) as u64,
                cpu_nanos: spec.meter.cpu_nanos(),
                pids: u64::from(running),
                unified: crate::cgroup::unified(),
            },
            Workload::Linux(linux) => linux.usage(),
            Workload::Sandbox(_) => crate::cgroup::Usage {
                unified: crate::cgroup::unified(),
                ..Default::default()
            },
        }
    }

    /// Sets the terminal's window size (`ctr run -t` and `docker run -t` resizes).
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(master) = &self.terminal_master else {
            bail!("container {} has no terminal", self.id);
        };
        crate::stdio::resize(master, width, height)
    }

    /// Blocks until the guest has stopped.
    pub fn wait(&self) -> Exit {
        let mut inner = self.inner.lock().unwrap();
        loop {
            if let Some(exit) = &inner.exit {
                return exit.clone();
            }
            inner = self.exited.wait(inner).unwrap();
        }
    }

    /// Leaves the cgroup (a Linux container: removes it from runc) and
    /// unmounts what `create` mounted.
    pub fn cleanup(&self) -> Result<()> {
        self.output_fifos.lock().unwrap().clear();
        if let Workload::Linux(linux) = &self.workload {
            linux.delete()?;
            // Never started: `runc delete --force` killed its process.
            self.stop_unstarted(libc::SIGKILL as u32);
        }
        if let Some(cgroup) = self.cgroup.lock().unwrap().take() {
            cgroup.leave()?;
        }
        self.mounts.lock().unwrap().unmount()
    }
}

/// Signals whose default action on Linux is to ignore them (a terminal
/// resize, a child's exit, urgent socket data, continue): delivered to a
/// guest, which cannot handle signals, they change nothing.
fn ignored_by_default(signal: u32) -> bool {
    [libc::SIGCHLD, libc::SIGCONT, libc::SIGURG, libc::SIGWINCH]
        .iter()
        .any(|&s| s as u32 == signal)
}
