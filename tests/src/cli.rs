//! The freshly built `wasmbox` CLI, with its own store, module cache and
//! Docker config, so tests never touch the user's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::workspace_bin;

/// The `wasmbox` CLI with its own empty store and Docker config dir.
pub struct Wasmbox {
    bin: PathBuf,
    home: TempDir,
}

impl Default for Wasmbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Wasmbox {
    pub fn new() -> Wasmbox {
        Wasmbox {
            bin: workspace_bin("wasmbox"),
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.home.path().join("store")
    }

    pub fn docker_config_dir(&self) -> PathBuf {
        self.home.path().join("docker")
    }

    /// A scratch directory that lives as long as this value.
    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    /// A command with this instance's store and Docker config, and nothing
    /// inherited that could change its behaviour.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("WASMBOX_STORE", self.store_dir())
            .env("WASMBOX_CACHE_DIR", self.dir().join("module-cache"))
            .env("DOCKER_CONFIG", self.docker_config_dir())
            .env("HOME", self.home.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run wasmbox")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "wasmbox {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs and asserts a failure exit; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "wasmbox {args:?} should have failed:\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "wasmbox {args:?} panicked: {stderr}"
        );
        stderr
    }

    /// Runs with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wasmbox");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("wait for wasmbox")
    }

    /// `login ADDR -u USER --password-stdin --plain-http` with `password` on stdin.
    pub fn login(&self, addr: &str, user: &str, password: &str) -> Output {
        self.run_with_stdin(
            &[
                "login",
                addr,
                "-u",
                user,
                "--password-stdin",
                "--plain-http",
            ],
            &format!("{password}\n"),
        )
    }

    /// `inspect --json` parsed.
    pub fn inspect(&self, reference: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["inspect", reference, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).expect("inspect --json prints JSON")
    }

    /// Names of the images in the local store.
    pub fn images(&self) -> Vec<String> {
        let list: serde_json::Value =
            serde_json::from_str(&self.ok(&["images", "--json"])).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| i["reference"].as_str().unwrap().to_string())
            .collect()
    }
}
