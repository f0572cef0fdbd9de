//! `wasmbox run`: the shim's engine without containerd.

use std::path::PathBuf;

use wasmbox_tests::{Wasmbox, compile_c, guests};

fn write(w: &Wasmbox, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
    let path = w.dir().join(name);
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn runs_a_module_file_and_an_image_from_the_store() {
    let w = Wasmbox::new();
    let hello = write(&w, "hello.wat", guests::HELLO_WAT);
    assert_eq!(w.ok(&["run", hello.to_str().unwrap()]), "hello from wasm\n");

    let dir = w.dir().join("probe");
    std::fs::create_dir_all(&dir).unwrap();
    let probe = dir.join("probe.wasm");
    compile_c(include_str!("../guests/probe.c"), &probe);
    let note = write(&w, "note.txt", "packed note\n");
    w.ok(&[
        "pack",
        probe.to_str().unwrap(),
        "-t",
        "r/probe:1",
        "--env",
        "FROM_IMAGE=yes",
        "--add",
        &format!("{}:/etc/note.txt", note.display()),
    ]);
    assert_eq!(
        w.ok(&["run", "r/probe:1", "--", "cat", "/etc/note.txt"]),
        "packed note\n"
    );
    let env = w.ok(&["run", "r/probe:1", "--env", "EXTRA=1", "--", "env"]);
    assert!(
        env.contains("FROM_IMAGE=yes\n") && env.contains("EXTRA=1\n"),
        "{env}"
    );
    assert!(
        !env.contains("HOME=") && !env.contains("WASMBOX_STORE"),
        "host env leaked: {env}"
    );
    let out = w.run(&["run", "r/probe:1", "--", "exit", "5"]);
    assert_eq!(out.status.code(), Some(5));

    let host = tempfile::tempdir().unwrap();
    let ro = format!("{}:/data:ro", host.path().display());
    let out = w.run(&["run", "r/probe:1", "--dir", &ro, "--", "write", "/data/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!host.path().join("x").exists());
    let rw = format!("{}:/data", host.path().display());
    w.ok(&["run", "r/probe:1", "--dir", &rw, "--", "write", "/data/x"]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("x")).unwrap(),
        "written\n"
    );
}

#[test]
fn runs_a_wasm_artifact_and_reports_bad_targets() {
    let w = Wasmbox::new();
    let hello = write(&w, "hello.wat", guests::HELLO_WAT);
    w.ok(&[
        "pack",
        hello.to_str().unwrap(),
        "-t",
        "r/artifact:1",
        "--format",
        "artifact",
    ]);
    assert_eq!(w.ok(&["run", "r/artifact:1"]), "hello from wasm\n");

    let err = w.fails(&["run", "r/missing:1"]);
    assert!(
        err.contains("docker.io/r/missing:1 is not in the local store"),
        "{err}"
    );
    let junk = write(&w, "junk.wasm", "not wasm");
    let err = w.fails(&["run", junk.to_str().unwrap()]);
    assert!(err.contains("is not a WebAssembly module"), "{err}");
    let err = w.fails(&[
        "run",
        hello.to_str().unwrap(),
        "--dir",
        "/nonexistent-dir:/x",
    ]);
    assert!(err.contains("/nonexistent-dir is not a directory"), "{err}");
}
