//! Linux containers in the Wasm runtime: a pod's sidecars and init
//! containers, and any Linux image run under `io.containerd.wasmtime.v1`.
//! They run with `runc`, from their spec as containerd wrote it, as
//! containerd's own runc shim runs them (the one change: a pod's process
//! namespace, which the shim cannot be, is named by its holder; see
//! `map_pod_namespaces`); only Wasm programs run inside the shim. The shim
//! is runc's subreaper: the sequence-numbered reaper (`crate::reaper`)
//! hands each exit to the one process it belongs to, even one collected
//! before the shim asked for it. `detect.rs` says which containers are
//! Linux, `exec.rs` execs into them, `io.rs` wires their stdio.

pub mod detect;
mod exec;
mod io;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use oci_spec::runtime::Spec;

use super::CreateRequest;
use super::workload::{ExecRequest, ExitNotice, StartedProcess, Workload};
use crate::cgroup::Usage;
use crate::error::InvalidSpec;
use crate::mounts::ContainerMounts;
use crate::pod::namespaces::Namespaces;
use crate::reaper::ExitCode;
use crate::runc::{ProcessFiles, Runc};
use crate::stdio::ProcessIo;

/// What runc runs for one Linux container: its init process, and the
/// processes exec'd into it (`exec.rs`).
pub struct LinuxTask {
    runc: Runc,
    id: String,
    bundle: PathBuf,
    init_pid: u32,
    cgroups_path: Option<String>,
    init_exit: Arc<ExitLatch>,
    /// Set by the reaper the moment the init process is collected: from
    /// then on a kill finds nothing to signal.
    init_reaped: Arc<AtomicBool>,
    /// Its rootfs, mounted as runc expects it; unmounted at cleanup.
    mounts: Mutex<ContainerMounts>,
}

impl LinuxTask {
    /// Mounts the rootfs as given and runs `runc create` of the container.
    /// On error nothing of the container is left mounted or in runc.
    pub fn create(
        namespace: &str,
        request: &CreateRequest,
        spec: &Spec,
        namespaces: &Namespaces,
    ) -> Result<(LinuxTask, ProcessIo)> {
        let (id, bundle) = (request.id, request.bundle);
        let mounts = ContainerMounts::mount_linux_rootfs(bundle, request.mounts)?;
        map_pod_namespaces(spec, bundle, namespaces)?;
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
        let created = io::with_stdio(request.stdio, request.terminal, |console, io| {
            let files = ProcessFiles {
                pid_file: &pid_file,
                console_socket: console,
            };
            runc.create(id, bundle, files, io)
        })
        .and_then(|io| Ok((io, crate::runc::read_pid(&pid_file)?)));
        let (io, init_pid) = match created {
            Ok(created) => created,
            Err(e) => {
                // runc may have made its state before it failed.
                let _ = runc.delete(id);
                return Err(e);
            }
        };
        let init_exit = Arc::new(ExitLatch::default());
        let init_reaped = Arc::new(AtomicBool::new(false));
        let (latch, reaped) = (init_exit.clone(), init_reaped.clone());
        crate::reaper::on_exit(init_pid, since, move |code| {
            reaped.store(true, Ordering::SeqCst);
            latch.exited(code);
        });
        log::info!(id, pid = init_pid; "created a Linux container with runc");
        let task = LinuxTask {
            runc,
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            init_pid,
            cgroups_path,
            init_exit,
            init_reaped,
            mounts: Mutex::new(mounts),
        };
        Ok((task, io))
    }
}

impl Workload for LinuxTask {
    fn pid(&self) -> u32 {
        self.init_pid
    }

    /// Every process in its cgroup (as runc's shim lists them), else its init.
    fn pids(&self) -> Vec<u32> {
        if let Some(path) = &self.cgroups_path {
            let procs = crate::cgroup::procs_of(path);
            if !procs.is_empty() {
                return procs;
            }
        }
        vec![self.init_pid]
    }

    /// `runc start`; the exit notice runs on a thread of its own once the
    /// init process has exited.
    fn start(&self, _terminal: Option<OwnedFd>, exited: ExitNotice) -> Result<()> {
        self.runc.start(&self.id)?;
        self.init_exit.then(Box::new(move |code| {
            let spawned = std::thread::Builder::new()
                .name("linux-exit".into())
                .spawn(move || exited(code));
            if let Err(e) = spawned {
                log::error!("handling a Linux container's exit: {e}");
            }
        }));
        Ok(())
    }

    /// Signals the init process (every process with `all`); false when it
    /// has exited already (its exit may still be on its way to containerd).
    fn kill(&self, signal: u32, all: bool) -> Result<bool> {
        let exited = || self.init_reaped.load(Ordering::SeqCst);
        if exited() {
            return Ok(false);
        }
        match self.runc.kill(&self.id, signal, all) {
            Ok(()) => Ok(true),
            Err(_) if exited() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// runc's process waits for `start`; it goes at cleanup.
    fn kill_unstarted(&self, signal: u32, all: bool) {
        let _ = self.kill(signal, all);
    }

    fn usage(&self, _running: bool) -> Usage {
        match &self.cgroups_path {
            Some(path) => crate::cgroup::usage_of(path),
            None => Usage {
                unified: crate::cgroup::unified(),
                ..Default::default()
            },
        }
    }

    /// New limits for the container's cgroup (`UpdateContainerResources`,
    /// `docker update`): `resources` is the JSON runtime-spec
    /// `LinuxResources` containerd sends, which runc applies as given.
    fn update(&self, resources: &[u8]) -> Result<()> {
        serde_json::from_slice::<oci_spec::runtime::LinuxResources>(resources)
            .map_err(|e| InvalidSpec(anyhow::anyhow!("the resources to update: {e}")))?;
        let file = self.bundle.join("update-resources.json");
        wasmbox_format::write_atomic(&file, resources, 0o600)?;
        let updated = self.runc.update(&self.id, &file);
        let _ = std::fs::remove_file(&file);
        updated
    }

    fn watch_oom(&self, on_oom: Box<dyn Fn() + Send>) -> Result<()> {
        match &self.cgroups_path {
            Some(path) => crate::cgroup::watch_oom(path, on_oom),
            None => Ok(()),
        }
    }

    fn accepts_exec(&self) -> bool {
        true
    }

    fn check_exec(&self, exec: &ExecRequest) -> Result<()> {
        serde_json::from_slice::<oci_spec::runtime::Process>(exec.process_json)
            .map_err(|e| InvalidSpec(anyhow::anyhow!("the exec process spec: {e}")))?;
        Ok(())
    }

    fn start_exec(&self, exec: &ExecRequest) -> Result<StartedProcess> {
        self.exec(exec)
    }

    fn forget_exec(&self, exec_id: &str) {
        self.remove_exec_files(exec_id);
    }

    /// Removes the container from runc (stopping what is left of it, its
    /// cgroup with it), the files the shim wrote in its bundle, and its rootfs mounts.
    fn cleanup(&self) -> Result<()> {
        self.runc.delete(&self.id)?;
        let _ = std::fs::remove_file(self.bundle.join("init.pid"));
        self.mounts.lock().unwrap().unmount()
    }

    /// `runc delete --force` killed the process that waited for `start`.
    fn cleanup_kills_unstarted(&self) -> bool {
        true
    }
}

/// Maps the namespaces of the shim's own process that `spec` names to
/// the pod's. The containers of a pod join the namespaces of the sandbox
/// task, whose pid is the shim's: the shim keeps the pod's network, IPC and
/// UTS namespaces itself (`pod::namespaces`), but runs in the node's process
/// namespace, so a pod that shares one process namespace
/// (`shareProcessNamespace`) gets one of its own from
/// [`Namespaces::pod_pid_namespace`], and the spec in the bundle is
/// rewritten to name it (joining the shim's would show the container every
/// process of the node). Any other namespace of the shim is refused.
fn map_pod_namespaces(spec: &Spec, bundle: &Path, pod: &Namespaces) -> Result<()> {
    let own = format!("/proc/{}/ns/", std::process::id());
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for ns in namespaces.into_iter().flatten() {
        let Some(path) = ns.path() else { continue };
        let Some(kind) = path.to_str().and_then(|p| p.strip_prefix(&own)) else {
            continue;
        };
        if pod.holds_pod_namespace(kind) {
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
        let pod_pid = pod
            .pod_pid_namespace()
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
