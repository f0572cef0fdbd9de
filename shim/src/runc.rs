//! A thin wrapper over the `runc` command line, invoked as containerd's
//! own runc shim invokes it. Each run is waited for through the
//! [`crate::reaper`] (never `Command::wait`), and runc's errors are read
//! from its JSON log, whose last error is what runc printed before it failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The runc binary: `runc` on the shim's PATH (containerd's), as the
/// runc shim finds it, unless `WASMBOX_RUNC` names another. Resolved here,
/// so that a missing runc is one clear error rather than a failed exec.
fn binary() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(named) = std::env::var_os("WASMBOX_RUNC") {
        let path = PathBuf::from(named);
        if !executable(&path) {
            bail!(
                "WASMBOX_RUNC names {}, which is not an executable file",
                path.display()
            );
        }
        return Ok(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join("runc"))
        .find(|p| executable(p))
        .context("runc is not on the shim's PATH, and Linux containers run with runc")
}

/// The soft `RLIMIT_NOFILE` the shim was started with, given back to runc
/// and so to the containers, as containerd's runc shim does: the shim
/// raises its own for the Wasm guests it holds.
static ORIGINAL_OPEN_FILES: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit: a pod's
/// guests share the shim's descriptors, each capped at its own spec's
/// limit (1024 by default), so the process needs room for all of them.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            let _ = ORIGINAL_OPEN_FILES.set(limit);
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
            }
        }
    }
}

/// runc's state for one containerd namespace: `wasmtime-runc/<ns>` in the
/// state directory of the containerd that made `bundle`
/// (`STATE/io.containerd.runtime.v2.task/<ns>/<id>`), so
/// `/run/containerd/wasmtime-runc/<ns>` by default. It is apart from
/// containerd's own runc shim's (`/run/containerd/runc/<ns>`), so neither
/// sees the other's containers, and each containerd of a node has its own.
pub fn state_root(bundle: &Path, namespace: &str) -> PathBuf {
    let state = bundle
        .ancestors()
        .nth(3)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/run/containerd"));
    state.join("wasmtime-runc").join(namespace)
}

/// runc for one container: its state root, its bundle's log and whether
/// its cgroup path is systemd's `slice:prefix:name`.
#[derive(Debug, Clone)]
pub struct Runc {
    pub root: PathBuf,
    pub log: PathBuf,
    pub systemd_cgroup: bool,
}

/// Where runc writes the pid of the process it creates, and the console
/// socket it sends the process's terminal to (with `-t`).
pub struct ProcessFiles<'a> {
    pub pid_file: &'a Path,
    pub console_socket: Option<&'a Path>,
}

impl ProcessFiles<'_> {
    /// `command` then these files' flags, then the container id.
    fn args(&self, command: &[String], id: &str) -> Vec<String> {
        let mut args = command.to_vec();
        args.push("--pid-file".into());
        args.push(self.pid_file.display().to_string());
        if let Some(socket) = self.console_socket {
            args.push("--console-socket".into());
            args.push(socket.display().to_string());
        }
        args.push(id.to_string());
        args
    }
}

/// Standard streams for one runc run: the process's own, when runc passes
/// them through to the container's process.
#[derive(Default)]
pub struct RuncIo {
    pub stdin: Option<std::fs::File>,
    pub stdout: Option<std::fs::File>,
    pub stderr: Option<std::fs::File>,
}

impl Runc {
    pub fn new(namespace: &str, bundle: &Path, cgroups_path: Option<&str>) -> Runc {
        Runc {
            root: state_root(bundle, namespace),
            log: bundle.join("runc-log.json"),
            systemd_cgroup: cgroups_path.is_some_and(|p| !p.starts_with('/') && p.contains(':')),
        }
    }

    /// `runc create`: the container's process exists, stopped before the
    /// user's program, until [`Runc::start`]. runc's own error message says
    /// "runc create failed: …".
    pub fn create(&self, id: &str, bundle: &Path, process: ProcessFiles, io: RuncIo) -> Result<()> {
        let args = [
            "create".to_string(),
            "--bundle".into(),
            bundle.display().to_string(),
        ];
        self.run(&process.args(&args, id), io)
    }

    pub fn start(&self, id: &str) -> Result<()> {
        self.run(&["start".into(), id.into()], RuncIo::default())
            .context("runc start")
    }

    /// Sends `signal` to the container's process (to all of its processes
    /// with `all`).
    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut args = vec!["kill".to_string()];
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.to_string());
        self.run(&args, RuncIo::default()).context("runc kill")
    }

    /// Applies new limits (`resources`: a JSON runtime-spec
    /// `LinuxResources`) to the running container's cgroup.
    pub fn update(&self, id: &str, resources: &Path) -> Result<()> {
        let args = [
            "update".to_string(),
            "--resources".into(),
            resources.display().to_string(),
            id.into(),
        ];
        self.run(&args, RuncIo::default()).context("runc update")
    }

    /// Removes the container, stopping what is left of it: its cgroup and
    /// runc's state go with it.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.run(
            &["delete".into(), "--force".into(), id.into()],
            RuncIo::default(),
        )
        .context("runc delete")
    }

    /// `runc exec --detach`: starts `process` (a JSON runtime-spec process)
    /// in the container.
    pub fn exec(&self, id: &str, process: &Path, files: ProcessFiles, io: RuncIo) -> Result<()> {
        let args = [
            "exec".to_string(),
            "--process".into(),
            process.display().to_string(),
            "--detach".into(),
        ];
        self.run(&files.args(&args, id), io)
    }

    fn run(&self, args: &[String], io: RuncIo) -> Result<()> {
        let mut cmd = Command::new(binary()?);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        let stdio = |f: Option<std::fs::File>| f.map_or_else(Stdio::null, Stdio::from);
        cmd.args(args)
            .stdin(stdio(io.stdin))
            .stdout(stdio(io.stdout))
            .stderr(stdio(io.stderr));
        if let Some(&original) = ORIGINAL_OPEN_FILES.get() {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and
            // calls only setrlimit, which is async-signal-safe, on a copy.
            unsafe {
                cmd.pre_exec(move || {
                    libc::setrlimit(libc::RLIMIT_NOFILE, &original);
                    Ok(())
                });
            }
        }
        let since = crate::reaper::mark();
        let mut child = cmd.spawn().context("starting runc")?;
        let code = if crate::reaper::installed() {
            // The reaper collects it; the handle must not wait.
            let pid = child.id();
            drop(child);
            crate::reaper::wait(pid, since)
        } else {
            let status = child.wait().context("waiting for runc")?;
            status.code().unwrap_or(1) as u32
        };
        if code != 0 {
            match last_error(&self.log) {
                Some(message) => bail!("{message}"),
                None => bail!("runc exited with {code}"),
            }
        }
        Ok(())
    }
}

/// The last error runc logged (its log is JSON lines of `level` and `msg`).
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        (entry["level"] == "error")
            .then(|| entry["msg"].as_str().map(str::to_string))
            .flatten()
    })
}

/// Reads the pid runc wrote to `pid_file`.
pub fn read_pid(pid_file: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("reading the pid file {}", pid_file.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds no pid", pid_file.display()))
}
