//! A private Docker Engine for the Docker tests: its own containerd (with the
//! freshly built shim on PATH), data root, exec root, socket and config, all
//! inside a network namespace of its own with a registry beside it. The
//! machine's Docker daemon, its config, bridges and iptables rules are never
//! touched.
//!
//! The engine is the one `scripts/docker-engine.sh` unpacks from Debian's
//! packages into `.cache/docker-engine/` (`make test` runs it first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::NetNs;
use crate::{Containerd, ContainerdOptions, Registry, RegistryAuth, spawn_logged, wait_until};

/// The runtime name users pass to `docker run --runtime`.
pub const RUNTIME: &str = wasmbox::format::RUNTIME_TYPE;

/// The workspace's top directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where `scripts/docker-engine.sh` puts the engine, if it is there.
pub fn engine_dir() -> Option<PathBuf> {
    let dir = workspace_root().join(".cache/docker-engine");
    dir.join("bin/dockerd").is_file().then_some(dir)
}

/// A running private `dockerd`; everything it started is removed on drop.
pub struct DockerEngine {
    dockerd: Child,
    dir: TempDir,
    socket: PathBuf,
    engine: PathBuf,
    /// A registry on loopback inside the engine's network namespace.
    pub registry: Registry,
    pub containerd: Containerd,
    netns: NetNs,
}

impl DockerEngine {
    /// Starts the engine, or prints one line and returns `None` where no
    /// engine has been fetched (a machine without Debian's archive).
    pub fn start() -> Option<DockerEngine> {
        DockerEngine::start_with_env(Vec::new())
    }

    /// [`DockerEngine::start`] with `env` added to its containerd's
    /// environment (so to its shims'), e.g. `WASMBOX_POLICY`.
    pub fn start_with_env(env: Vec<(String, String)>) -> Option<DockerEngine> {
        let Some(engine) = engine_dir() else {
            eprintln!(
                "skipping: no Docker Engine in {} (scripts/docker-engine.sh fetches it; make test runs it)",
                workspace_root().join(".cache/docker-engine").display()
            );
            return None;
        };
        let bin = engine.join("bin");
        let netns = NetNs::create();
        // The engine's own containerd (1.7), unless the suite runs on
        // another (`WASMBOX_TEST_CONTAINERD`, containerd 2.x in `make test`).
        let containerd_bin = crate::containerd::containerd_under_test().unwrap_or(bin.clone());
        let containerd = Containerd::start_opts(ContainerdOptions {
            bin_dir: Some(containerd_bin.clone()),
            top_level: "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]".into(),
            netns: Some(&netns),
            env,
            ..Default::default()
        });
        let registry = Registry::start_in(RegistryAuth::None, Some(&netns));
        let dir = tempfile::Builder::new()
            .prefix("dockerd")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        // The daemon.json the README tells users to write, as it is.
        let config = workspace_root().join("deploy/docker/daemon.json");
        let plugins = d.join("client/cli-plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for plugin in ["docker-compose", "docker-buildx"] {
            std::os::unix::fs::symlink(
                engine.join("cli-plugins").join(plugin),
                plugins.join(plugin),
            )
            .unwrap();
        }
        let socket = d.join("docker.sock");
        let shim = crate::workspace_bin("containerd-shim-wasmtime-v1");
        let path = format!(
            "{}:{}:{}",
            shim.parent().unwrap().display(),
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(bin.join("dockerd"));
        cmd.arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--containerd")
            .arg(&containerd.address)
            // Its own parent, not the machine daemon's `/docker`; removed on drop.
            .arg("--cgroup-parent")
            .arg(format!("/{}", netns.name()))
            .env("PATH", path);
        netns.enter(&mut cmd);
        let dockerd = spawn_logged(cmd, &d.join("dockerd.log"));
        let mut engine = DockerEngine {
            dockerd,
            dir,
            socket,
            engine,
            registry,
            containerd,
            netns,
        };
        engine.wait_ready();
        Some(engine)
    }

    fn wait_ready(&mut self) {
        let out = wait_until(Duration::from_secs(60), "dockerd answering", || {
            if let Ok(Some(status)) = self.dockerd.try_wait() {
                panic!("dockerd exited ({status}): {}", self.log());
            }
            let out = self.run(&["version", "--format", "{{.Server.Version}}"]);
            if out.status.success() {
                Ok(out)
            } else {
                Err(self.log())
            }
        });
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            eprintln!(
                "testing against Docker Engine {}",
                String::from_utf8_lossy(&out.stdout).trim()
            )
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// The engine's network namespace (where the registry and published
    /// ports are).
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// `docker` (the engine's own CLI) talking to this daemon, with its own
    /// client config dir holding the compose and buildx plugins.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(self.engine.join("bin/docker"));
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.docker().args(args).output().expect("run docker")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndockerd log tail: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 20)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Asserts that no container, shim process, mount or task state dir is
    /// left of anything this engine ran.
    pub fn assert_clean(&self) {
        let left = self.ok(&["ps", "-aq"]);
        assert!(left.trim().is_empty(), "containers left: {left}");
        self.containerd.assert_clean_in("moby");
    }
}

/// Removes the (by now empty) cgroup parent `/NAME` from every hierarchy,
/// cgroup v1 and v2.
fn remove_cgroup_parent(name: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let _ = std::fs::remove_dir(root.join(name));
    for hierarchy in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join(name));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        // A failed test may leave containers running: remove them first, so
        // the daemon's shutdown does not wait for their stop timeouts.
        if let Ok(out) = self.docker().args(["ps", "-aq"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = self.docker().args(["rm", "-f"]).args(&ids).output();
            }
        }
        crate::terminate(&mut self.dockerd, Duration::from_secs(20));
        // Mounts the daemon made under its roots (none after a clean stop).
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(str::to_string)
            .collect();
        for m in mounts.iter().rev() {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        remove_cgroup_parent(self.netns.name());
    }
}
