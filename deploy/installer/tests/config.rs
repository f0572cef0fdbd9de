//! The containerd config edit on realistic configs, the snippet files in
//! `deploy/containerd/`, and the installer binary on a temporary host root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use toml_edit::DocumentMut;
use wasmbox_node_installer::{
    DEFAULT_RUNTIME_TYPE, RuntimeOptions, add_runtime, backup_path, runtimes_path,
};

const BIN: &str = env!("CARGO_BIN_EXE_wasmbox-node-installer");

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    fs::read_to_string(manifest_dir().join("tests/fixtures").join(name)).unwrap()
}

/// `runtime_type` of `handler` under the runtimes table of `version`.
fn runtime_type(text: &str, version: i64, handler: &str) -> Option<String> {
    let doc: DocumentMut = text.parse().unwrap();
    let mut item = doc.as_item();
    for key in runtimes_path(version).iter().chain([&handler]) {
        item = item.get(key)?;
    }
    item.get("runtime_type")?.as_str().map(str::to_owned)
}

/// Every line of `original` appears in `edited`, in the same order.
fn assert_lines_kept(original: &str, edited: &str) {
    let mut edited_lines = edited.lines();
    for (n, line) in original.lines().enumerate() {
        assert!(
            edited_lines.any(|l| l == line),
            "line {} of the original ({line:?}) is missing or out of order",
            n + 1
        );
    }
}

/// The checks every fixture must pass; returns the edited text.
fn check_fixture(name: &str, version: i64) -> String {
    let original = fixture(name);
    let opts = RuntimeOptions::default();
    assert_eq!(
        runtime_type(&original, version, "wasmtime"),
        None,
        "{name} already has it"
    );

    let mut edit = add_runtime(&original, &opts).unwrap();
    assert!(edit.changed, "{name}");
    let full = edit.text.clone();
    if version == 3 {
        // The one key a version-3 edit sets inside the operator's tables
        // (the CRI's local image pull); the rest is appended as for others.
        let set: Vec<&str> = edit
            .text
            .lines()
            .filter(|l| l.trim() == "use_local_image_pull = true")
            .collect();
        assert_eq!(set.len(), 1, "{name}:\n{}", edit.text);
        edit.text = edit
            .text
            .lines()
            .filter(|l| l.trim() != "use_local_image_pull = true")
            .map(|l| format!("{l}\n"))
            .collect();
    }
    assert_eq!(
        runtime_type(&edit.text, version, "wasmtime").as_deref(),
        Some(DEFAULT_RUNTIME_TYPE),
        "{name}:\n{}",
        edit.text
    );
    assert_lines_kept(&original, &edit.text);
    // The new table is appended: the original is a prefix of the result.
    assert!(edit.text.starts_with(&original), "{name}:\n{}", edit.text);
    let added = &edit.text[original.len()..];
    assert_eq!(
        added.matches('[').count(),
        1,
        "one explicit header, no parent headers: {added:?}"
    );
    // Other runtimes stay where they were.
    assert_eq!(
        runtime_type(&edit.text, version, "runc").as_deref(),
        Some("io.containerd.runc.v2")
    );

    let again = add_runtime(&full, &opts).unwrap();
    assert!(!again.changed, "{name}: second run changed it");
    assert_eq!(again.text, full);
    full
}

#[test]
fn containerd_1_6_default_config() {
    let edited = check_fixture("containerd-1.6-default.toml", 2);
    assert!(edited.ends_with(
        "\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\n"
    ));
}

#[test]
fn containerd_2_config() {
    let edited = check_fixture("containerd-2.x.toml", 3);
    // The header reuses the keys as containerd 2 wrote them.
    assert!(
        edited.contains(
            "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\n"
        ),
        "{edited}"
    );
}

#[test]
fn version_1_config() {
    let edited = check_fixture("containerd-version1.toml", 1);
    assert!(edited.contains("[plugins.cri.containerd.runtimes.wasmtime]\n"));
}

#[test]
fn config_with_comments_and_custom_runtime() {
    let original = fixture("containerd-commented.toml");
    let edited = check_fixture("containerd-commented.toml", 2);
    assert_eq!(
        runtime_type(&edited, 2, "runsc").as_deref(),
        Some("io.containerd.runsc.v1")
    );
    // The closing comment stays before the new table.
    let comment = edited.find("# end of platform-managed settings").unwrap();
    assert!(comment < edited.find("runtimes.wasmtime]").unwrap());
    assert_eq!(&edited[..original.len()], original);
}

#[test]
fn other_runtime_type_is_overwritten_keeping_other_keys() {
    let original = fixture("containerd-commented.toml").replace(
        "runtimes.runsc]\n      runtime_type = \"io.containerd.runsc.v1\"",
        "runtimes.wasmtime]\n      runtime_type = \"io.containerd.wasmedge.v1\"",
    );
    let edit = add_runtime(&original, &RuntimeOptions::default()).unwrap();
    assert!(edit.changed);
    assert_eq!(
        edit.text,
        original.replace("io.containerd.wasmedge.v1", "io.containerd.wasmtime.v1")
    );
    assert!(edit.text.contains("pod_annotations = [\"dev.gvisor.*\"]"));
}

#[test]
fn handler_and_runtime_type_are_options() {
    let opts = RuntimeOptions {
        handler: "wasmtime-canary".into(),
        runtime_type: "io.containerd.wasmtime-canary.v1".into(),
        ..Default::default()
    };
    let edit = add_runtime(&fixture("containerd-commented.toml"), &opts).unwrap();
    assert_eq!(
        runtime_type(&edit.text, 2, "wasmtime-canary").as_deref(),
        Some("io.containerd.wasmtime-canary.v1")
    );
    assert_eq!(runtime_type(&edit.text, 2, "wasmtime"), None);
}

/// The tables in `deploy/containerd/*.toml` are what the installer writes.
#[test]
fn snippet_files_match_installer_output() {
    for (file, major, version) in [("config-1.x.toml", 1, 2), ("config-2.x.toml", 2, 3)] {
        let snippet = fs::read_to_string(manifest_dir().join("../containerd").join(file)).unwrap();
        let opts = RuntimeOptions {
            containerd_major: major,
            ..Default::default()
        };
        let fresh = add_runtime("", &opts).unwrap().text;
        let fresh_doc: DocumentMut = fresh.parse().unwrap();
        assert_eq!(fresh_doc["version"].as_integer(), Some(version));

        let table = |text: &str| {
            let doc: DocumentMut = text.parse().unwrap();
            let mut item = doc.as_item().clone();
            for key in runtimes_path(version).iter().chain([&"wasmtime"]) {
                item = item
                    .get(key)
                    .unwrap_or_else(|| panic!("{file}: no {key}"))
                    .clone();
            }
            let table = item.as_table().unwrap();
            table
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_owned(),
                        v.as_value().unwrap().to_string().trim().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(table(&snippet), table(&fresh), "{file} vs\n{fresh}");
    }
}

/// Real containerd (1.6 on the build machines) loads the edited configs and
/// reports the runtime in its effective config; a version-1 config comes out
/// migrated to version 2 with the runtime under the renamed CRI plugin.
/// (The version-3 fixture: `containerd_2_accepts_the_version_3_edit`.)
#[test]
fn containerd_accepts_the_edit() {
    require_containerd();
    for (name, version) in [
        ("containerd-1.6-default.toml", 2),
        ("containerd-commented.toml", 2),
        ("containerd-version1.toml", 1),
    ] {
        let edited = check_fixture(name, version);
        dump_has_both_runtimes(Path::new("containerd"), name, &edited, 2);
    }
}

/// `containerd config dump` of `config` by the containerd at `containerd`,
/// asserted to name the wasmtime and runc runtimes in the schema `version`
/// it writes; the dump is returned.
fn dump_has_both_runtimes(containerd: &Path, name: &str, config: &str, version: i64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    fs::write(&path, config).unwrap();
    let out = Command::new(containerd)
        .arg("--config")
        .arg(&path)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: containerd config dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumped = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        runtime_type(&dumped, version, "wasmtime").as_deref(),
        Some("io.containerd.wasmtime.v1"),
        "{name}:\n{dumped}"
    );
    assert_eq!(
        runtime_type(&dumped, version, "runc").as_deref(),
        Some("io.containerd.runc.v2"),
        "{name}"
    );
    dumped
}

/// containerd 2.x (the private one `make test` fetches, scripts/containerd2.sh)
/// loads the version-3 edit and reports the runtime and the local image pull
/// in its effective config.
#[test]
fn containerd_2_accepts_the_version_3_edit() {
    let containerd = manifest_dir().join("../../.cache/containerd-2/bin/containerd");
    if !containerd.exists() {
        eprintln!(
            "skipping: no containerd 2.x in .cache/containerd-2 (scripts/containerd2.sh fetches it; make test runs it)"
        );
        return;
    }
    let opts = RuntimeOptions {
        containerd_major: 2,
        ..Default::default()
    };
    for (name, original) in [
        ("containerd-2.x.toml", fixture("containerd-2.x.toml")),
        ("a fresh config", String::new()),
    ] {
        let edited = add_runtime(&original, &opts).unwrap().text;
        let dumped = dump_has_both_runtimes(&containerd, name, &edited, 3);
        let doc: toml_edit::DocumentMut = dumped.parse().unwrap();
        assert_eq!(
            doc["plugins"]["io.containerd.cri.v1.images"]["use_local_image_pull"].as_bool(),
            Some(true),
            "{name}"
        );
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A temp dir with a fake shim and a host root whose config is `config`.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new(config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("image/containerd-shim-wasmtime-v1");
        fs::create_dir_all(shim.parent().unwrap()).unwrap();
        fs::write(&shim, b"#!/bin/sh\necho fake shim\n").unwrap();
        fs::set_permissions(&shim, fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir_all(dir.path().join("host/etc/containerd")).unwrap();
        if let Some(config) = config {
            fs::write(dir.path().join("host/etc/containerd/config.toml"), config).unwrap();
        }
        Self { dir }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn config(&self) -> PathBuf {
        self.path("host/etc/containerd/config.toml")
    }
    fn install(&self, extra: &[&str]) -> Output {
        let host = self.path("host");
        let shim = self.path("image/containerd-shim-wasmtime-v1");
        let mut args = vec![
            "install",
            "--host-root",
            host.to_str().unwrap(),
            "--shim",
            shim.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    }
}

#[test]
fn malformed_config_is_left_alone() {
    let broken = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n  sandbox_image = \"x\"\n";
    let host = Host::new(Some(broken));
    let marker = host.path("restarted");
    let restart = format!("touch {}", marker.display());
    let out = host.install(&["--restart-command", restart.as_str()]);
    let config = host.config();
    assert!(!marker.exists(), "containerd restarted");
    assert!(
        !host.path("host/usr/local").exists(),
        "shim installed although the config is broken"
    );
    assert_one_line_error(
        &out,
        &format!(
            "containerd config {} is not valid TOML (line 2, column",
            config.display()
        ),
    );
    assert!(stderr(&out).trim_end().ends_with("it was left unchanged"));
    assert_eq!(fs::read_to_string(&config).unwrap(), broken);
    assert_eq!(dir_entries(config.parent().unwrap()), ["config.toml"]);

    // The same through `config`, with and without --check (2 = error).
    for check in [false, true] {
        let mut args = vec!["config", "--config", config.to_str().unwrap()];
        if check {
            args.push("--check");
        }
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2));
        assert_one_line_error(&out, "is not valid TOML");
        assert_eq!(stdout(&out), "");
    }
    assert_eq!(fs::read_to_string(&config).unwrap(), broken);
    assert_eq!(dir_entries(config.parent().unwrap()), ["config.toml"]);
}

#[test]
fn unsupported_version_is_an_error() {
    let host = Host::new(Some("version = 5\n"));
    let out = host.install(&["--no-restart"]);
    assert_one_line_error(&out, "version = 5");
    assert_eq!(fs::read_to_string(host.config()).unwrap(), "version = 5\n");
}

#[test]
fn install_without_restart_is_idempotent() {
    let original = fixture("containerd-1.6-default.toml");
    let host = Host::new(Some(&original));
    fs::set_permissions(host.config(), fs::Permissions::from_mode(0o600)).unwrap();

    let out = host.install(&["--no-restart"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shim = host.path("host/usr/local/bin/containerd-shim-wasmtime-v1");
    assert_eq!(
        fs::read(&shim).unwrap(),
        fs::read(host.path("image/containerd-shim-wasmtime-v1")).unwrap()
    );
    assert_eq!(
        fs::metadata(&shim).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    let edited = fs::read_to_string(host.config()).unwrap();
    assert_eq!(
        runtime_type(&edited, 2, "wasmtime").as_deref(),
        Some(DEFAULT_RUNTIME_TYPE)
    );
    assert_eq!(
        fs::metadata(host.config()).unwrap().permissions().mode() & 0o7777,
        0o600,
        "config permissions kept"
    );
    assert_eq!(
        fs::read_to_string(backup_path(&host.config())).unwrap(),
        original
    );
    assert!(stdout(&out).contains("not restarting containerd (--no-restart)"));

    let out = host.install(&["--no-restart"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("already up to date"), "{text}");
    assert!(text.contains("already in"), "{text}");
    assert!(!text.contains("not restarting"), "{text}");
    assert_eq!(fs::read_to_string(host.config()).unwrap(), edited);
    assert_eq!(
        dir_entries(&host.path("host/etc/containerd")),
        ["config.toml", "config.toml.wasmbox-backup"]
    );
    assert_eq!(
        dir_entries(&host.path("host/usr/local/bin")),
        ["containerd-shim-wasmtime-v1"]
    );
}

#[test]
fn restart_only_when_something_changed() {
    let host = Host::new(None);
    let marker = host.path("restarted");
    let restart = format!("touch {}", marker.display());
    let args = [
        "--restart-command",
        restart.as_str(),
        "--containerd-major",
        "2",
    ];

    let out = host.install(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists(), "first run restarts containerd");
    assert!(stdout(&out).contains("restarted containerd"));
    // No config before: a fresh containerd 2 config, no backup.
    let written = fs::read_to_string(host.config()).unwrap();
    assert!(written.starts_with("version = 3\n"), "{written}");
    assert_eq!(
        runtime_type(&written, 3, "wasmtime").as_deref(),
        Some(DEFAULT_RUNTIME_TYPE)
    );
    assert_eq!(
        dir_entries(&host.path("host/etc/containerd")),
        ["config.toml"]
    );

    fs::remove_file(&marker).unwrap();
    let out = host.install(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!marker.exists(), "second run must not restart containerd");
    assert!(stdout(&out).contains("nothing changed; containerd not restarted"));

    // A new shim build restarts containerd again.
    fs::write(host.path("image/containerd-shim-wasmtime-v1"), b"new build").unwrap();
    let out = host.install(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists());
}

#[test]
fn failed_restart_is_retried_next_run() {
    let host = Host::new(Some("version = 2\n"));
    let out = host.install(&["--restart-command", "exit 3"]);
    assert_one_line_error(&out, "the restart command `exit 3` failed");

    let marker = host.path("restarted");
    let restart = format!("touch {}", marker.display());
    let out = host.install(&["--restart-command", restart.as_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        marker.exists(),
        "restart retried although files were current"
    );
    assert_eq!(
        dir_entries(&host.path("host/etc/containerd")),
        ["config.toml", "config.toml.wasmbox-backup"]
    );
}

#[test]
fn config_command_prints_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let original = fixture("containerd-commented.toml");
    fs::write(&path, &original).unwrap();
    let p = path.to_str().unwrap();

    let out = run(&["config", "--config", p, "--check"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["config", "--config", p]);
    assert!(out.status.success());
    let printed = stdout(&out);
    assert_eq!(
        printed,
        add_runtime(&original, &RuntimeOptions::default())
            .unwrap()
            .text
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        original,
        "config only prints"
    );

    fs::write(&path, &printed).unwrap();
    let out = run(&["config", "--config", p, "--check"]);
    assert_eq!(out.status.code(), Some(0));
    let out = run(&["config", "--config", p]);
    assert_eq!(stdout(&out), printed);
}

#[test]
fn label_node_without_environment_is_a_clear_error() {
    let host = Host::new(Some("version = 2\n"));
    let mut cmd = Command::new(BIN);
    cmd.env_remove("NODE_NAME")
        .args(["install", "--no-restart", "--label-node", "--host-root"])
        .arg(host.path("host"))
        .arg("--shim")
        .arg(host.path("image/containerd-shim-wasmtime-v1"));
    let out = cmd.output().unwrap();
    assert_one_line_error(&out, "NODE_NAME");
}

/// Fails (never skips) when containerd is missing: `make deps` installs it.
fn require_containerd() {
    assert!(
        Command::new("containerd").arg("--version").output().is_ok(),
        "containerd is not installed; run `make deps`"
    );
}

/// The config the installer writes on a node that had none makes a real
/// containerd 1.6 load its CRI plugin (which it refuses when the default
/// runc runtime is missing from a config that names runtimes).
#[test]
fn containerd_loads_its_cri_plugin_with_a_fresh_config() {
    require_containerd();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let out = run(&["config", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let socket = dir.path().join("containerd.sock");
    // Private root, state and sockets, so the test touches nothing of the host's.
    let config = format!(
        "root = \"{root}\"\nstate = \"{state}\"\n{edited}\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
        root = dir.path().join("root").display(),
        state = dir.path().join("state").display(),
        edited = stdout(&out),
        sock = socket.display(),
    );
    fs::write(&path, config).unwrap();
    let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
    let mut containerd = Command::new("containerd")
        .arg("--config")
        .arg(&path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let plugins = loop {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&socket)
            .args(["plugins", "ls"])
            .output()
            .unwrap();
        if out.status.success() {
            break stdout(&out);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "containerd did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = containerd.kill();
    let _ = containerd.wait();
    let cri = plugins
        .lines()
        .find(|l| {
            let mut columns = l.split_whitespace();
            (columns.next(), columns.next()) == (Some("io.containerd.grpc.v1"), Some("cri"))
        })
        .unwrap_or_default();
    assert!(
        cri.split_whitespace().last() == Some("ok"),
        "the CRI plugin did not load: {cri:?}\n{}",
        fs::read_to_string(dir.path().join("containerd.log")).unwrap_or_default()
    );
}
