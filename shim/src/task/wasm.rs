//! A Wasm guest run inside the shim process: its module loaded and linked
//! at create (so start only instantiates), its rootfs and volumes mounted
//! `nodev,nosuid`, the shim joined to its cgroup (a shared shim's guest
//! thread alone, `shared.rs`), and its program on a thread of its own.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use oci_spec::runtime::Spec;

use super::CreateRequest;
use super::workload::{ExitNotice, Workload, ignored_by_default};
use crate::cgroup::{Membership, ThreadCgroup, Usage};
use crate::content::ImageSource;
use crate::engine::{Engine, KillSwitch, Program, RunSpec, Stdio};
use crate::mounts::ContainerMounts;
use crate::spec::GuestNetwork;
use crate::stdio::{ProcessIo, Pty};

pub struct WasmTask {
    id: String,
    spec: Box<RunSpec>,
    program: Program,
    /// Made at create, so that a kill that comes while `start` is under
    /// way is kept (a watch channel holds the last value) and ends the
    /// guest as soon as it runs.
    kill: KillSwitch,
    /// The switch's receiver, until `start` gives it to the guest.
    kill_rx: Mutex<Option<tokio::sync::watch::Receiver<Option<i32>>>>,
    /// The container's cgroup, which the shim process joined at create.
    cgroup: Mutex<Option<Membership>>,
    /// A shared shim's: the container's cgroup, for the guest's thread only.
    thread_cgroup: Option<Arc<ThreadCgroup>>,
    /// What create mounted; unmounted at cleanup, or when dropped.
    mounts: Mutex<ContainerMounts>,
}

impl WasmTask {
    /// Joins the container's cgroup (a `shared` shim makes it for the
    /// guest's thread instead), mounts its volumes and loads its module, on
    /// the rootfs the caller mounted. On any error nothing stays mounted,
    /// made or joined.
    pub fn create(
        request: &CreateRequest,
        spec: &Spec,
        rootfs: ContainerMounts,
        network: GuestNetwork,
        image: &ImageSource,
        shared: bool,
    ) -> Result<(WasmTask, ProcessIo)> {
        let id = request.id;
        let bundle = request.bundle;
        let root = rootfs.rootfs().to_path_buf();
        let guest_mounts = crate::mounts::guest_mounts(spec)?;
        let volumes = crate::mounts::make_guest_mounts(&guest_mounts, bundle, &root)?;
        let name_service = crate::mounts::name_service_namespace(&guest_mounts)?;
        // The container's cgroup before the module: reading the Wasm layer
        // and compiling are charged to it and held to its limits.
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.to_string_lossy().into_owned());
        let limits = crate::cgroup::Limits::from_spec(spec);
        let (cgroup, thread_cgroup) = match &cgroups_path {
            Some(path) if shared => (None, ThreadCgroup::make(path, limits)?.map(Arc::new)),
            Some(path) => (crate::cgroup::join(path, limits)?, None),
            None => (None, None),
        };
        let loaded = (|| {
            crate::memory::after_join()?;
            let mut run = crate::spec::run_spec(spec, &root, network, || {
                // In the bundle, not the rootfs: containerd removes it at delete.
                image.wasm_layer_to(&bundle.join("wasm-layer.wasm"))
            })?;
            run.preopens.extend(volumes);
            run.mount_namespace = name_service.map(Arc::new);
            stdio_paths(&mut run, request);
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
            let io = open_stdio(request)?;
            Ok::<_, anyhow::Error>((run, program, io))
        })();
        let (run, program, io) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                if let Some(cgroup) = cgroup
                    && let Err(leave) = cgroup.leave()
                {
                    log::warn!(id; "after a failed create: {leave:#}");
                }
                if let Some(cgroup) = thread_cgroup
                    && let Err(remove) = cgroup.remove()
                {
                    log::warn!(id; "after a failed create: {remove:#}");
                }
                return Err(e);
            }
        };
        let (kill, kill_rx) = KillSwitch::new();
        let task = WasmTask {
            id: id.to_string(),
            spec: Box::new(run),
            program,
            kill,
            kill_rx: Mutex::new(Some(kill_rx)),
            cgroup: Mutex::new(cgroup),
            thread_cgroup,
            mounts: Mutex::new(rootfs),
        };
        Ok((task, io))
    }
}

/// Points the guest's standard streams at the FIFOs (with a terminal, the
/// guest gets the pseudo-terminal's slave at start instead).
fn stdio_paths(run: &mut RunSpec, request: &CreateRequest) {
    if request.terminal {
        return;
    }
    let fifo = |p: &str| {
        if p.is_empty() {
            Stdio::Null
        } else {
            Stdio::Fifo(PathBuf::from(p))
        }
    };
    let [stdin, stdout, stderr] = request.stdio;
    run.stdin = fifo(stdin);
    run.stdout = fifo(stdout);
    run.stderr = fifo(stderr);
}

/// What the shim holds of the guest's streams from create on: the output
/// FIFOs' write ends, or a pseudo-terminal relayed to the FIFOs.
/// containerd's client opens the read ends asynchronously and abandons an
/// open still pending when the task is deleted; a writer from create on
/// lets that open finish long before a fast guest exits (runc's shim opens
/// them at create too).
fn open_stdio(request: &CreateRequest) -> Result<ProcessIo> {
    let [stdin, stdout, stderr] = request.stdio;
    if request.terminal {
        let pty = Pty::open(stdin, stdout)?;
        return Ok(ProcessIo {
            terminal_master: Some(pty.master),
            terminal_slave: Some(pty.slave),
            ..Default::default()
        });
    }
    Ok(ProcessIo {
        output_fifos: crate::stdio::open_output_fifos(&[stdout, stderr])?,
        ..Default::default()
    })
}

impl Workload for WasmTask {
    fn start(&self, terminal: Option<OwnedFd>, exited: ExitNotice) -> Result<()> {
        let engine = Engine::for_spec(&self.spec)?;
        let Some(kill_rx) = self.kill_rx.lock().unwrap().take() else {
            anyhow::bail!("container {} was already started", self.id);
        };
        let program = self.program.clone();
        let mut spec = (*self.spec).clone();
        if let Some(slave) = terminal {
            // The guest owns the only slave descriptor, so the terminal hangs up when it ends.
            let tty = Arc::new(slave);
            spec.stdin = Stdio::Terminal(tty.clone());
            spec.stdout = Stdio::Terminal(tty.clone());
            spec.stderr = Stdio::Terminal(tty);
        }
        let id = self.id.clone();
        let thread_cgroup = self.thread_cgroup.clone();
        let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name(format!("wasm-{}", &id[..id.len().min(8)]))
            .spawn(move || {
                // A shared shim's guest: this thread, before it runs a
                // thing, into its container's cgroup; else it never runs.
                if let Some(cgroup) = &thread_cgroup {
                    let entering = cgroup.enter_current_thread();
                    let failed = entering.is_err();
                    let _ = entered_tx.send(entering);
                    if failed {
                        return;
                    }
                } else {
                    let _ = entered_tx.send(Ok(()));
                }
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
                        log::error!("container {id}: the guest's thread panicked: {what}");
                        crate::engine::TRAP_EXIT_STATUS
                    }
                };
                // Out of the cgroup before the exit is reported, so that
                // the delete that may follow finds it empty: moving another
                // thread out would wait for an RCU grace period.
                if let Some(cgroup) = &thread_cgroup
                    && let Err(e) = cgroup.leave_current_thread()
                {
                    log::warn!("container {id}: {e:#}");
                }
                // The terminal's slave (in `spec`) stays open until the
                // output was drained, then hangs up.
                exited(code as u32);
                drop(spec);
            });
        if let Err(e) = spawned {
            return Err(anyhow::Error::from(e).context("starting the guest thread"));
        }
        entered
            .recv()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the guest thread ended at its start")))
    }

    fn ignores(&self, signal: u32) -> bool {
        ignored_by_default(signal)
    }

    fn kill(&self, signal: u32, _all: bool) -> Result<bool> {
        self.kill.kill(signal as i32);
        Ok(true)
    }

    /// Its cgroup's counters when the shim joined that cgroup (a shim's
    /// first container), else the guest's own meter (the containers of a
    /// pod or a shared shim, which share the shim's process), with the
    /// kernel's CPU count of a shared shim's guest thread.
    fn usage(&self, running: bool) -> Usage {
        if let Some(cgroup) = self.cgroup.lock().unwrap().as_ref() {
            return cgroup.usage();
        }
        let cpu_nanos = match &self.thread_cgroup {
            Some(cgroup) => cgroup.cpu_nanos(),
            None => self.spec.meter.cpu_nanos(),
        };
        Usage {
            memory_bytes: self.spec.meter.memory_bytes(),
            memory_limit: self.spec.memory_limit.unwrap_or(0) as u64,
            cpu_nanos,
            pids: u64::from(running),
            unified: crate::cgroup::unified(),
        }
    }

    fn cleanup(&self) -> Result<()> {
        if let Some(cgroup) = self.cgroup.lock().unwrap().take() {
            cgroup.leave_at_exit();
        }
        if let Some(cgroup) = &self.thread_cgroup {
            cgroup.remove()?;
        }
        self.mounts.lock().unwrap().unmount()
    }
}
