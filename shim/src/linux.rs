//! Linux containers in the Wasm runtime: a pod's sidecars and init
//! containers, and any Linux image run under `io.containerd.wasmtime.v1`.
//! They run with `runc`, from their spec as containerd wrote it, as
//! containerd's own runc shim runs them (the one change: a pod's process
//! namespace, which the shim cannot be, is named by its holder; see
//! `map_pod_namespaces`); only Wasm programs run inside the shim.
//!
//! **Which containers are Linux**: the program the spec starts (`args[0]`,
//! looked up on the spec's `PATH` inside the root filesystem, symlinks
//! resolved within it) is a file that starts with the ELF magic number or
//! with `#!`. Everything else (a Wasm module, or an image whose module is a
//! Wasm layer and not a file) is Wasm. The rule needs no image metadata, so
//! it holds for every client (`ctr`, Docker, the CRI).

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Spec;

use crate::container::{Exit, Status};
use crate::error::InvalidSpec;
use crate::reaper::ExitCode;
use crate::runc::{ProcessFiles, Runc, RuncIo};

/// The exit status of an exec that never ran (containerd's runc shim's).
const FAILED_START_EXIT: ExitCode = 255;

/// The PATH runc and containerd assume when the spec sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `spec`'s program, in the root filesystem at `rootfs`, is a
/// native Linux program (see the module doc).
pub fn is_linux_program(spec: &Spec, rootfs: &Path) -> bool {
    let Some(process) = spec.process() else {
        return false;
    };
    let Some(program) = process.args().as_ref().and_then(|a| a.first()) else {
        return false;
    };
    let Ok(root) = std::fs::File::open(rootfs) else {
        return false;
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![process.cwd().join(program)]
    } else {
        let env = process.env().as_deref().unwrap_or_default();
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new("/").join(d).join(program))
            .collect()
    };
    candidates.iter().any(|candidate| {
        let Ok(mut file) = open_in_root(&root, candidate) else {
            return false;
        };
        let mut magic = [0u8; 4];
        if file.read_exact(&mut magic).is_err() {
            return false;
        }
        magic == *b"\x7fELF" || magic.starts_with(b"#!")
    })
}

/// Opens `path` as if `root` were `/`: absolute symlinks and `..` stay
/// inside it (openat2 with RESOLVE_IN_ROOT), so a symlink in an image
/// never makes the shim read a host file.
fn open_in_root(root: &std::fs::File, path: &Path) -> std::io::Result<std::fs::File> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let c_path = std::ffi::CString::new(relative.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain old data; all-zero is valid, then set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the NUL-terminated path and `how` (of the size
    // passed), both alive for the call, relative to a descriptor we hold.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that only we own.
    let file = unsafe { std::fs::File::from_raw_fd(fd as i32) };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    Ok(file)
}

/// Maps the namespaces of the shim's own process that `spec` names to
/// the pod's. The containers of a pod join the namespaces of the sandbox
/// task, whose pid is the shim's: the shim keeps the pod's network, IPC and
/// UTS namespaces itself (`network.rs`), but runs in the node's process
/// namespace, so a pod that shares one process namespace
/// (`shareProcessNamespace`) gets one of its own from
/// [`crate::pod::pod_pid_namespace`], and the spec in the bundle is
/// rewritten to name it (joining the shim's would show the container every
/// process of the node). Any other namespace of the shim is refused.
fn map_pod_namespaces(spec: &Spec, bundle: &Path) -> Result<()> {
    let own = format!("/proc/{}/ns/", std::process::id());
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for ns in namespaces.into_iter().flatten() {
        let Some(path) = ns.path() else { continue };
        let Some(kind) = path.to_str().and_then(|p| p.strip_prefix(&own)) else {
            continue;
        };
        if crate::network::holds_pod_namespace(kind) {
            continue;
        }
        if kind != "pid" {
            return Err(InvalidSpec(anyhow::anyhow!(
                "the container joins the pod's {kind} namespace, which a Linux container in a \
                 wasmtime pod cannot share (the pod's sandbox is the shim, which keeps the \
                 pod's network, IPC, UTS and process namespaces only)"
            ))
            .into());
        }
        let pod_pid = crate::pod::pod_pid_namespace()
            .context("making the pod's process namespace (shareProcessNamespace)")?;
        rewrite_namespace_path(bundle, "pid", &pod_pid)?;
    }
    Ok(())
}

/// Sets the path of the `kind` namespace in the bundle's config.json,
/// keeping every other byte of meaning (edited as JSON, not through a type
/// that could drop fields it does not know).
fn rewrite_namespace_path(bundle: &Path, kind: &str, path: &Path) -> Result<()> {
    let file = bundle.join("config.json");
    let text = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))?;
    let entry = config
        .pointer_mut("/linux/namespaces")
        .and_then(|n| n.as_array_mut())
        .and_then(|list| list.iter_mut().find(|n| n["type"] == kind))
        .with_context(|| format!("{} has no {kind} namespace", file.display()))?;
    entry["path"] = serde_json::Value::String(path.display().to_string());
    let bytes = serde_json::to_vec(&config)?;
    wasmbox_format::write_atomic(&file, &bytes, 0o644)?;
    Ok(())
}

/// Runs a callback once, with the exit code, whichever comes first: the
/// exit (from the reaper) or the callback (from `start`).
#[derive(Default)]
struct ExitLatch {
    state: Mutex<(Option<ExitCode>, Option<ExitCallback>)>,
}

type ExitCallback = Box<dyn FnOnce(ExitCode) + Send>;

impl ExitLatch {
    fn exited(&self, code: ExitCode) {
        let callback = {
            let mut state = self.state.lock().unwrap();
            match state.1.take() {
                Some(callback) => callback,
                None => {
                    state.0 = Some(code);
                    return;
                }
            }
        };
        callback(code);
    }

    fn then(&self, callback: ExitCallback) {
        let code = {
            let mut state = self.state.lock().unwrap();
            match state.0.take() {
                Some(code) => code,
                None => {
                    state.1 = Some(callback);
                    return;
                }
            }
        };
        callback(code);
    }
}

/// A process's standard streams as runc gets them, and what the shim keeps
/// of them: the output FIFOs until the process's output was read, and a
/// terminal's master (for resizes and draining).
#[derive(Default)]
pub struct ProcessIo {
    pub(crate) output_fifos: Vec<std::fs::File>,
    pub(crate) terminal_master: Option<std::fs::File>,
    pub(crate) stdin: Option<crate::stdio::InputRelay>,
}

/// Runs `run` (a runc create or exec) with the process's stdio: the FIFOs
/// passed through as its descriptors, or with `terminal`, a console socket
/// whose terminal master is then relayed to the FIFOs.
fn with_stdio(
    stdio: [&str; 3],
    terminal: bool,
    run: impl FnOnce(Option<&Path>, RuncIo) -> Result<()>,
) -> Result<ProcessIo> {
    if terminal {
        let console = crate::stdio::ConsoleSocket::new()?;
        run(Some(console.path()), RuncIo::default())?;
        let master = console.receive()?;
        crate::stdio::relay_terminal(&master, stdio[0], stdio[1])?;
        return Ok(ProcessIo {
            output_fifos: Vec::new(),
            terminal_master: Some(master),
            stdin: None,
        });
    }
    let (relay, stdin) = match stdio[0] {
        "" => (None, None),
        path => {
            let (relay, pipe) = crate::stdio::InputRelay::start(path)?;
            (Some(relay), Some(pipe))
        }
    };
    let open = |path: &str| -> Result<Option<std::fs::File>> {
        Ok(crate::stdio::open_output_fifos(&[path])?.pop())
    };
    let (stdout, stderr) = (open(stdio[1])?, open(stdio[2])?);
    let mut kept = Vec::new();
    for f in [&stdout, &stderr].into_iter().flatten() {
        kept.push(f.try_clone()?);
    }
    run(
        None,
        RuncIo {
            stdin,
            stdout,
            stderr,
        },
    )?;
    Ok(ProcessIo {
        output_fifos: kept,
        terminal_master: None,
        stdin: relay,
    })
}

impl ProcessIo {
    /// After the process exited: waits (bounded) until its output was read,
    /// then lets go of the FIFOs.
    pub fn drain(&mut self) {
        if let Some(master) = &self.terminal_master {
            crate::stdio::drain_terminal(master);
        }
        let deadline = std::time::Instant::now() + crate::stdio::OUTPUT_DRAIN;
        for fifo in &self.output_fifos {
            crate::stdio::wait_until_read(fifo, deadline);
        }
        self.output_fifos.clear();
        self.stdin = None;
    }
}

/// What runc runs for one Linux container: its init process and the
/// processes exec'd into it.
pub struct LinuxContainer {
    runc: Runc,
    id: String,
    bundle: PathBuf,
    pub init_pid: u32,
    cgroups_path: Option<String>,
    init_exit: Arc<ExitLatch>,
    /// Set by the reaper the moment the init process is collected: from
    /// then on a kill finds nothing to signal.
    init_reaped: Arc<std::sync::atomic::AtomicBool>,
    /// The init process's stdin relay, let go of when it exits.
    init_stdin: Mutex<Option<crate::stdio::InputRelay>>,
    execs: Mutex<HashMap<String, Arc<ExecProcess>>>,
}

impl LinuxContainer {
    /// `runc create` of the container in `bundle`, whose root filesystem
    /// the caller has mounted as runc expects it. On error nothing of the
    /// container is left in runc.
    pub fn create(
        namespace: &str,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        stdio: [&str; 3],
        terminal: bool,
    ) -> Result<(LinuxContainer, ProcessIo)> {
        map_pod_namespaces(spec, bundle)?;
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.to_string_lossy().into_owned());
        let runc = Runc::new(namespace, bundle, cgroups_path.as_deref());
        std::fs::create_dir_all(&runc.root)
            .with_context(|| format!("creating runc's state root {}", runc.root.display()))?;
        let pid_file = bundle.join("init.pid");
        let since = crate::reaper::mark();
        let created = with_stdio(stdio, terminal, |console, io| {
            let files = ProcessFiles {
                pid_file: &pid_file,
                console_socket: console,
            };
            runc.create(id, bundle, files, io)
        })
        .and_then(|io| Ok((io, crate::runc::read_pid(&pid_file)?)));
        let (mut io, init_pid) = match created {
            Ok(created) => created,
            Err(e) => {
                // runc may have made its state before it failed.
                let _ = runc.delete(id);
                return Err(e);
            }
        };
        let init_exit = Arc::new(ExitLatch::default());
        let init_reaped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (latch, reaped) = (init_exit.clone(), init_reaped.clone());
        crate::reaper::on_exit(init_pid, since, move |code| {
            reaped.store(true, std::sync::atomic::Ordering::SeqCst);
            latch.exited(code);
        });
        log::info!(id, pid = init_pid; "created a Linux container with runc");
        Ok((
            LinuxContainer {
                runc,
                id: id.to_string(),
                bundle: bundle.to_path_buf(),
                init_pid,
                cgroups_path,
                init_exit,
                init_reaped,
                init_stdin: Mutex::new(io.stdin.take()),
                execs: Mutex::new(HashMap::new()),
            },
            io,
        ))
    }

    /// `runc start`; `on_exit` runs on a thread of its own once the init
    /// process has exited and every exec'd process of the container is gone.
    pub fn start(&self, on_exit: ExitCallback) -> Result<()> {
        self.runc.start(&self.id)?;
        self.init_exit.then(Box::new(move |code| {
            let spawned = std::thread::Builder::new()
                .name("linux-exit".into())
                .spawn(move || on_exit(code));
            if let Err(e) = spawned {
                log::error!("handling a Linux container's exit: {e}");
            }
        }));
        Ok(())
    }

    /// After the init process exited: waits (bounded) for the exec'd
    /// processes, which end with the container's process namespace, and
    /// lets go of the init's stdin.
    pub fn init_exited(&self) {
        self.init_stdin.lock().unwrap().take();
        let execs: Vec<Arc<ExecProcess>> = self.execs.lock().unwrap().values().cloned().collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for exec in execs {
            let mut state = exec.state.lock().unwrap();
            while state.status == Status::Running {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return;
                }
                state = exec.changed.wait_timeout(state, deadline - now).unwrap().0;
            }
        }
    }

    /// New limits for the container's cgroup (`UpdateContainerResources`,
    /// `docker update`): `resources` is the JSON runtime-spec
    /// `LinuxResources` containerd sends, which runc applies as given.
    pub fn update(&self, resources: &[u8]) -> Result<()> {
        serde_json::from_slice::<oci_spec::runtime::LinuxResources>(resources)
            .map_err(|e| InvalidSpec(anyhow::anyhow!("the resources to update: {e}")))?;
        let file = self.bundle.join("update-resources.json");
        wasmbox_format::write_atomic(&file, resources, 0o600)?;
        let updated = self.runc.update(&self.id, &file);
        let _ = std::fs::remove_file(&file);
        updated
    }

    /// Calls `on_oom` whenever the OOM killer acts in the container's
    /// cgroup, until the cgroup is removed.
    pub fn watch_oom(&self, on_oom: impl Fn() + Send + 'static) -> Result<()> {
        match &self.cgroups_path {
            Some(path) => crate::cgroup::watch_oom(path, on_oom),
            None => Ok(()),
        }
    }

    /// Signals the init process (every process with `all`); false when it
    /// has exited already (its exit may still be on its way to containerd).
    pub fn kill(&self, signal: u32, all: bool) -> Result<bool> {
        let exited = || self.init_reaped.load(std::sync::atomic::Ordering::SeqCst);
        if exited() {
            return Ok(false);
        }
        match self.runc.kill(&self.id, signal, all) {
            Ok(()) => Ok(true),
            Err(_) if exited() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the container from runc (stopping what is left of it, its
    /// cgroup with it) and the files the shim wrote in its bundle.
    pub fn delete(&self) -> Result<()> {
        self.runc.delete(&self.id)?;
        self.init_stdin.lock().unwrap().take();
        let _ = std::fs::remove_file(self.bundle.join("init.pid"));
        for exec in self.execs.lock().unwrap().drain().map(|(_, e)| e) {
            exec.remove_files();
        }
        Ok(())
    }

    /// The container's cgroup counters.
    pub fn usage(&self) -> crate::cgroup::Usage {
        match &self.cgroups_path {
            Some(path) => crate::cgroup::usage_of(path),
            None => crate::cgroup::Usage {
                unified: crate::cgroup::unified(),
                ..Default::default()
            },
        }
    }

    /// The pids of the container's processes: every process in its cgroup
    /// (as runc's shim lists them), else its init and exec'd processes.
    pub fn pids(&self) -> Vec<u32> {
        if let Some(path) = &self.cgroups_path {
            let procs = crate::cgroup::procs_of(path);
            if !procs.is_empty() {
                return procs;
            }
        }
        let mut pids = vec![self.init_pid];
        for exec in self.execs.lock().unwrap().values() {
            let state = exec.state.lock().unwrap();
            if let (Status::Running, Some(pid)) = (state.status, state.pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Records a process to exec into the container (`ctr task exec`,
    /// `kubectl exec`); [`LinuxContainer::start_exec`] starts it.
    pub fn add_exec(
        &self,
        exec_id: &str,
        process_json: &[u8],
        stdio: [&str; 3],
        terminal: bool,
    ) -> Result<()> {
        let mut execs = self.execs.lock().unwrap();
        if execs.contains_key(exec_id) {
            bail!("exec {exec_id} already exists in container {}", self.id);
        }
        serde_json::from_slice::<oci_spec::runtime::Process>(process_json)
            .map_err(|e| InvalidSpec(anyhow::anyhow!("the exec process spec: {e}")))?;
        execs.insert(
            exec_id.to_string(),
            Arc::new(ExecProcess {
                exec_id: exec_id.to_string(),
                process_file: self.bundle.join(format!("exec-{exec_id}.json")),
                pid_file: self.bundle.join(format!("exec-{exec_id}.pid")),
                process_json: process_json.to_vec(),
                stdio: stdio.map(str::to_string),
                terminal,
                state: Mutex::new(ExecState {
                    status: Status::Created,
                    pid: None,
                    reaped: false,
                    exit: None,
                    io: ProcessIo::default(),
                }),
                changed: Condvar::new(),
            }),
        );
        Ok(())
    }

    pub fn exec(&self, exec_id: &str) -> Result<Arc<ExecProcess>> {
        self.execs
            .lock()
            .unwrap()
            .get(exec_id)
            .cloned()
            .with_context(|| format!("exec {exec_id} not found in container {}", self.id))
    }

    /// Starts exec `exec_id` with `runc exec`; returns its pid. `on_exit`
    /// runs once it has exited and its output was read.
    pub fn start_exec(
        &self,
        exec_id: &str,
        on_exit: impl FnOnce(&ExecProcess, &Exit) + Send + 'static,
    ) -> Result<u32> {
        let exec = self.exec(exec_id)?;
        {
            let state = exec.state.lock().unwrap();
            if state.status != Status::Created {
                bail!("exec {exec_id} was already started");
            }
        }
        wasmbox_format::write_atomic(&exec.process_file, &exec.process_json, 0o600)?;
        let since = crate::reaper::mark();
        let stdio = [
            exec.stdio[0].as_str(),
            exec.stdio[1].as_str(),
            exec.stdio[2].as_str(),
        ];
        let started = with_stdio(stdio, exec.terminal, |console, io| {
            let files = ProcessFiles {
                pid_file: &exec.pid_file,
                console_socket: console,
            };
            self.runc.exec(&self.id, &exec.process_file, files, io)
        })
        .and_then(|io| Ok((io, crate::runc::read_pid(&exec.pid_file)?)));
        let _ = std::fs::remove_file(&exec.process_file);
        let (io, pid) = match started {
            Ok(started) => started,
            Err(e) => {
                // It never ran: a waiter (the CRI waits before it starts)
                // gets an exit instead of waiting forever.
                exec.stop(FAILED_START_EXIT);
                return Err(e);
            }
        };
        {
            let mut state = exec.state.lock().unwrap();
            state.status = Status::Running;
            state.pid = Some(pid);
            state.io = io;
        }
        let process = exec.clone();
        crate::reaper::on_exit(pid, since, move |code| {
            // At once, on the reaper's thread: from here the pid may be reused.
            process.state.lock().unwrap().reaped = true;
            let spawned = std::thread::Builder::new()
                .name("exec-exit".into())
                .spawn(move || {
                    let mut io = std::mem::take(&mut process.state.lock().unwrap().io);
                    io.drain();
                    let exit = Exit {
                        status: code,
                        at: SystemTime::now(),
                    };
                    // Published first: the init's exit, which waits for the
                    // execs to stop, then comes after every exec's.
                    on_exit(&process, &exit);
                    process.stop(code);
                });
            if let Err(e) = spawned {
                log::error!("handling an exec's exit: {e}");
            }
        });
        Ok(pid)
    }

    /// Forgets a stopped (or never started) exec; returns its exit.
    pub fn delete_exec(&self, exec_id: &str) -> Result<Option<Exit>> {
        let exec = self.exec(exec_id)?;
        let state = exec.state.lock().unwrap();
        if state.status == Status::Running {
            bail!("exec {exec_id} is running; kill it first");
        }
        drop(state);
        exec.stop(FAILED_START_EXIT);
        let exit = exec.status().2;
        exec.remove_files();
        self.execs.lock().unwrap().remove(exec_id);
        Ok(exit)
    }
}

struct ExecState {
    status: Status,
    pid: Option<u32>,
    /// The reaper collected the process: its pid is no longer its own.
    reaped: bool,
    exit: Option<Exit>,
    io: ProcessIo,
}

/// A process exec'd into a Linux container.
pub struct ExecProcess {
    pub exec_id: String,
    process_file: PathBuf,
    pid_file: PathBuf,
    process_json: Vec<u8>,
    pub stdio: [String; 3],
    terminal: bool,
    state: Mutex<ExecState>,
    changed: Condvar,
}

impl ExecProcess {
    pub fn status(&self) -> (Status, Option<u32>, Option<Exit>) {
        let state = self.state.lock().unwrap();
        (state.status, state.pid, state.exit.clone())
    }

    /// Marks the process stopped with `code` (unless it already is) and
    /// wakes its waiters.
    fn stop(&self, code: ExitCode) {
        let mut state = self.state.lock().unwrap();
        if state.exit.is_none() {
            state.status = Status::Stopped;
            state.exit = Some(Exit {
                status: code,
                at: SystemTime::now(),
            });
        }
        drop(state);
        self.changed.notify_all();
    }

    pub fn wait(&self) -> Exit {
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(exit) = &state.exit {
                return exit.clone();
            }
            state = self.changed.wait(state).unwrap();
        }
    }

    /// Signals the process; false when it is not running.
    pub fn kill(&self, signal: u32) -> bool {
        let state = self.state.lock().unwrap();
        match (state.status, state.pid) {
            (Status::Running, Some(pid)) if !state.reaped => {
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
        let state = self.state.lock().unwrap();
        match &state.io.terminal_master {
            Some(master) => crate::stdio::resize(master, width, height),
            None => bail!("exec {} has no terminal", self.exec_id),
        }
    }

    fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.process_file);
        let _ = std::fs::remove_file(&self.pid_file);
    }
}
