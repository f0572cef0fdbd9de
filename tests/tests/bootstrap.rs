//! The shim binary's `start` and `-info` actions as containerd calls them:
//! the 2.3+ bootstrap protocol (a `BootstrapParams` on stdin, a
//! `BootstrapResult` on stdout), the legacy one of 1.6–2.2 (runtime options
//! or nothing on stdin, the bare address on stdout), and what either
//! refuses. The messages are containerd's own `bootstrap.proto`, as
//! generated in `containerd-shim-protos`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use containerd_shim::bootstrap::{BootstrapParams, BootstrapResult};
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::types::introspection::RuntimeInfo;
use wasmbox_tests::workspace_bin;

const NAMESPACE: &str = "wasmbox-bootstrap-test";

/// Runs `containerd-shim-wasmtime-v1 ARGS…` in `dir` with `stdin`.
fn shim(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(workspace_bin("containerd-shim-wasmtime-v1"))
        .args(args)
        .current_dir(dir)
        .env("TTRPC_ADDRESS", dir.join("no-containerd.ttrpc"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the shim");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// `start` for container `id`, as containerd's flags name it, in bundle
/// `dir` (where containerd would have made the shim's `log` fifo; a file
/// does here).
fn start(dir: &Path, id: &str, stdin: &[u8]) -> Output {
    std::fs::write(dir.join("log"), "").unwrap();
    let address = dir.join("containerd.sock");
    shim(
        dir,
        &[
            "-namespace",
            NAMESPACE,
            "-id",
            id,
            "-address",
            address.to_str().unwrap(),
            "-publish-binary",
            "/bin/true",
            "start",
        ],
        stdin,
    )
}

/// Kills the shim server listening on `address` (test cleanup: no
/// containerd will shut it down).
fn stop_server(address: &str) {
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", &format!("socket {address}")])
        .status();
    let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
}

fn params(id: &str, socket_dir: Option<&Path>) -> BootstrapParams {
    BootstrapParams {
        instance_id: id.to_string(),
        namespace: NAMESPACE.to_string(),
        containerd_version: "2.4.0-beta".into(),
        containerd_ttrpc_address: "/nonexistent/containerd.sock.ttrpc".into(),
        containerd_grpc_address: "/nonexistent/containerd.sock".into(),
        containerd_binary: "/bin/true".into(),
        socket_dir: socket_dir.map(|d| d.display().to_string()),
        ..Default::default()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bootstrap_params_get_a_bootstrap_result_and_the_socket_lands_in_socket_dir() {
    let dir = tempfile::Builder::new()
        .prefix("boot")
        .tempdir_in("/tmp")
        .unwrap();
    let sockets = dir.path().join("s");
    let sent = params("boot-new", Some(&sockets)).write_to_bytes().unwrap();
    let out = start(dir.path(), "boot-new", &sent);
    assert!(out.status.success(), "start: {}", stderr(&out));
    let result = BootstrapResult::parse_from_bytes(&out.stdout)
        .unwrap_or_else(|e| panic!("not a BootstrapResult ({e}): {:?}", out.stdout));
    assert_eq!(result.version, 3);
    assert_eq!(result.protocol, "ttrpc");
    let path = result
        .address
        .strip_prefix("unix://")
        .unwrap_or_else(|| panic!("address {:?}", result.address));
    assert_eq!(Path::new(path).parent(), Some(sockets.as_path()));
    let serving = std::os::unix::net::UnixStream::connect(path);
    stop_server(&result.address);
    serving.unwrap_or_else(|e| panic!("nothing serves {path}: {e}"));
}

#[test]
fn legacy_runtime_options_get_the_bare_address() {
    let dir = tempfile::Builder::new()
        .prefix("boot")
        .tempdir_in("/tmp")
        .unwrap();
    let options = Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: b"\x12\x04crun".to_vec(),
        ..Default::default()
    };
    for (id, stdin) in [
        ("boot-legacy-options", options.write_to_bytes().unwrap()),
        ("boot-legacy-empty", Vec::new()),
    ] {
        let out = start(dir.path(), id, &stdin);
        assert!(out.status.success(), "start: {}", stderr(&out));
        let address = String::from_utf8(out.stdout).unwrap();
        stop_server(&address);
        assert!(
            address.starts_with("unix:///run/containerd/s/") && !address.contains('\n'),
            "{id}: {address:?}"
        );
    }
}

#[test]
fn a_start_it_cannot_read_is_refused_in_one_sentence_and_starts_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("boot")
        .tempdir_in("/tmp")
        .unwrap();
    let long_dir = dir.path().join("d".repeat(80));
    let mut other = params("someone-else", None);
    other.namespace = "k8s.io".into();
    let cases: Vec<(&str, Vec<u8>, &str)> = [
        (
            "boot-garbage",
            b"\xff\xff\xff\xff garbage".to_vec(),
            "stdin holds 12 bytes that are neither containerd's BootstrapParams nor runtime options",
        ),
        (
            "boot-long",
            params("boot-long", Some(&long_dir)).write_to_bytes().unwrap(),
            "is too long: the shim's socket in it would be a",
        ),
        (
            "boot-mismatch",
            other.write_to_bytes().unwrap(),
            "containerd's BootstrapParams are for k8s.io/someone-else, but the command line names wasmbox-bootstrap-test/boot-mismatch",
        ),
    ]
    .into_iter()
    .collect();
    for (id, stdin, expected) in cases {
        let out = start(dir.path(), id, &stdin);
        assert!(!out.status.success(), "{id}: start accepted it");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{id}: {err}");
        assert!(err.contains(expected), "{id}: {err}");
        assert!(out.stdout.is_empty(), "{id}: {:?}", out.stdout);
        let spawned = Command::new("pgrep")
            .args(["-f", &format!("id {id} ")])
            .output()
            .unwrap();
        assert!(spawned.stdout.is_empty(), "{id}: a server was spawned");
    }
    assert!(!long_dir.exists(), "the too-long socket_dir was created");
}

#[test]
fn info_describes_the_runtime_and_its_features() {
    let dir = tempfile::tempdir().unwrap();
    let out = shim(dir.path(), &["-info"], b"");
    assert!(out.status.success(), "-info: {}", stderr(&out));
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).expect("a RuntimeInfo");
    assert_eq!(info.name, "io.containerd.wasmtime.v1");
    assert!(!info.version.version.is_empty());
    assert_eq!(
        info.features.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    );
    let features: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
    assert_eq!(
        features["linux"]["mountExtensions"]["idmap"]["enabled"],
        false
    );
    assert!(
        features["mountOptions"]
            .as_array()
            .unwrap()
            .contains(&"ro".into())
    );
    assert!(info.annotations.contains_key("dev.wasmbox.wasi.network"));

    // Runtime options containerd sends are echoed; anything else is refused.
    let options = Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: b"\x12\x04crun".to_vec(),
        ..Default::default()
    };
    let out = shim(dir.path(), &["-info"], &options.write_to_bytes().unwrap());
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(info.options.type_url, "containerd.runc.v1.Options");
    let out = shim(dir.path(), &["-info"], b"\xff\xff");
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "io.containerd.wasmtime.v1: -info: stdin holds 2 bytes that are not runtime options (a protobuf Any)"
    );
}

#[test]
fn dash_v_prints_the_version_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = shim(dir.path(), &["-v"], b"");
    assert!(out.status.success(), "-v: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION")))
            && text.contains("io.containerd.wasmtime.v1"),
        "{text}"
    );
}
