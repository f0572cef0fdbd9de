//! `wasmbox copy` between registries, OCI archives, OCI layouts and the
//! store, checked with skopeo as the independent reader; and streaming: a
//! push of a module far bigger than the pusher's memory use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use wasmbox_tests::{Registry, RegistryAuth, Wasmbox, guests, require_tool};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn skopeo(args: &[&str]) -> std::process::Output {
    require_tool("skopeo");
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo")
}

/// The digest of the manifest skopeo reads at `location` (its exact bytes).
fn skopeo_digest(location: &str) -> String {
    let out = skopeo(&["inspect", "--raw", "--tls-verify=false", location]);
    assert!(
        out.status.success(),
        "skopeo cannot read {location}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wasmbox::format::Digest::of(&out.stdout).to_string()
}

/// Packs the hello guest as `tag` into `w`'s store; returns its digest.
fn pack(w: &Wasmbox, tag: &str, extra: &[&str]) -> String {
    let module = w.dir().join("hello.wat");
    std::fs::write(&module, guests::HELLO_WAT).unwrap();
    let mut args = vec!["pack", p(&module), "-t", tag, "--json"];
    args.extend_from_slice(extra);
    let out: serde_json::Value = serde_json::from_str(&w.ok(&args)).unwrap();
    out["digest"].as_str().unwrap().to_string()
}

fn copy(w: &Wasmbox, from: &str, to: &str) -> serde_json::Value {
    serde_json::from_str(&w.ok(&["copy", from, to, "--plain-http", "--json"]))
        .expect("copy --json prints JSON")
}

fn blobs(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["blobs"].as_array().unwrap()
}

#[test]
fn registry_to_registry_keeps_the_digest_and_mounts_blobs_within_one_registry() {
    let a = Registry::start(RegistryAuth::None);
    let b = Registry::start(RegistryAuth::None);
    let w = Wasmbox::new();
    let source = a.image("team/hello:v1");
    let digest = pack(&w, &source, &["--push", "--plain-http"]);

    // Another repository of the same registry: every blob is mounted, none sent.
    let same = a.image("other/hello:v2");
    let report = copy(&w, &source, &same);
    assert_eq!(report["digest"], digest);
    assert_eq!(report["reference"], same);
    assert!(
        blobs(&report).iter().all(|b| b["mounted"] == true),
        "{report:#}"
    );
    assert_eq!(skopeo_digest(&format!("docker://{same}")), digest);

    // Another registry: the blobs travel, and the digest is kept.
    let other = b.image("mirror/hello:v1");
    let report = copy(&w, &format!("docker://{source}"), &other);
    assert_eq!(report["digest"], digest);
    assert!(
        blobs(&report)
            .iter()
            .all(|b| b["skipped"] == false && b.get("mounted").is_none()),
        "{report:#}"
    );
    assert_eq!(skopeo_digest(&format!("docker://{other}")), digest);
    // A second copy finds every blob there.
    let again = copy(&w, &source, &other);
    assert!(
        blobs(&again).iter().all(|b| b["skipped"] == true),
        "{again:#}"
    );
}

#[test]
fn archive_to_registry_and_registry_to_archive_and_layout() {
    let reg = Registry::start(RegistryAuth::None);
    let w = Wasmbox::new();
    let archive = w.dir().join("packed.tar");
    let digest = pack(&w, "example.test/hello:v1", &["-o", p(&archive)]);

    let target = reg.image("from-archive/hello:v1");
    let report = copy(&w, &format!("oci-archive:{}", p(&archive)), &target);
    assert_eq!(report["digest"], digest);
    assert_eq!(skopeo_digest(&format!("docker://{target}")), digest);

    // Back out into an archive skopeo reads, and that names the image for ctr.
    let out = w.dir().join("copied.tar");
    let report = copy(&w, &target, &format!("oci-archive:{}", p(&out)));
    assert_eq!(report["digest"], digest);
    assert_eq!(skopeo_digest(&format!("oci-archive:{}", p(&out))), digest);
    let listing = Command::new("tar")
        .args(["xOf", p(&out), "index.json"])
        .output()
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        target
    );

    // And into an OCI layout under a ref name skopeo finds.
    let layout = w.dir().join("layout");
    copy(&w, &target, &format!("oci:{}:v9", p(&layout)));
    assert_eq!(skopeo_digest(&format!("oci:{}:v9", p(&layout))), digest);
    // A full reference as the name: skopeo finds it by that name, and
    // wasmbox reads it back by it.
    let named = format!("oci:{}:example.test/named:v2", p(&layout));
    copy(&w, &target, &named);
    assert_eq!(skopeo_digest(&named), digest);
    assert_eq!(w.inspect(&named, &[])["digest"], digest);
}

#[test]
fn a_layout_skopeo_wrote_copies_into_the_store_and_runs() {
    let reg = Registry::start(RegistryAuth::None);
    let w = Wasmbox::new();
    let pushed = reg.image("hello:v1");
    let digest = pack(&w, &pushed, &["--push", "--plain-http"]);
    let layout = w.dir().join("skopeo-layout");
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{pushed}"),
        &format!("oci:{}:latest", p(&layout)),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let fresh = Wasmbox::new();
    let report = copy(
        &fresh,
        &format!("oci:{}:latest", p(&layout)),
        "store:example.test/copied/hello:v1",
    );
    assert_eq!(report["digest"], digest);
    assert_eq!(fresh.images(), vec!["example.test/copied/hello:v1"]);
    let info = fresh.inspect("example.test/copied/hello:v1", &[]);
    assert_eq!(info["digest"], digest);
    // inspect reads any location, not only the store and registries.
    let info = fresh.inspect(&format!("oci:{}", p(&layout)), &[]);
    assert_eq!(info["digest"], digest);
    // wasmbox run reads images through the same model: from the store, and
    // straight from a layout or a registry.
    for target in [
        "example.test/copied/hello:v1".to_string(),
        format!("oci:{}:latest", p(&layout)),
        format!("docker://{pushed}"),
    ] {
        let run = fresh.run(&["run", &target, "--plain-http"]);
        assert!(run.status.success(), "run {target}: {run:?}");
        assert_eq!(String::from_utf8_lossy(&run.stdout), "hello from wasm\n");
    }
}

#[test]
fn bad_sources_are_one_sentence_and_write_nothing() {
    let reg = Registry::start(RegistryAuth::None);
    let w = Wasmbox::new();
    let out = w.dir().join("out.tar");
    let out_arg = format!("oci-archive:{}", p(&out));

    let err = w.fails(&[
        "copy",
        "oci-archive:/no/such.tar",
        &reg.image("x:1"),
        "--plain-http",
    ]);
    assert!(
        err.contains("cannot open the archive /no/such.tar"),
        "{err}"
    );

    let not_tar = w.dir().join("not.tar");
    std::fs::write(&not_tar, "this is not a tar file, it is much too short").unwrap();
    let err = w.fails(&["copy", &format!("oci-archive:{}", p(&not_tar)), &out_arg]);
    assert!(
        err.contains("not.tar is not") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!out.exists());

    let err = w.fails(&["copy", "store:example.test/missing:1", &out_arg]);
    assert!(
        err.contains("example.test/missing:1 is not in the local store"),
        "{err}"
    );
    assert!(!out.exists());

    let err = w.fails(&["copy", &format!("oci:{}", p(w.dir())), &out_arg]);
    assert!(err.contains("is not an OCI image layout"), "{err}");

    let err = w.fails(&["copy", "oci-archive:", &out_arg]);
    assert!(err.contains("the path is missing"), "{err}");

    // A blob of the store that rotted: the copy fails when the content ends
    // and leaves neither an archive nor a tag in the registry.
    let good = w.dir().join("good.tar");
    pack(&w, "example.test/rotten:v1", &["-o", p(&good)]);
    let err = w.fails(&["copy", &format!("oci-archive:{}:nope", p(&good)), &out_arg]);
    assert!(
        err.contains(&format!("nope is not in oci-archive:{}", p(&good))),
        "{err}"
    );
    assert!(!out.exists());
    let err = w.fails(&[
        "copy",
        "store:example.test/rotten:v1",
        "oci-archive:/no/such/dir/x.tar",
    ]);
    assert!(
        err.contains("could not create a temporary file for /no/such/dir/x.tar: No such file")
            && err.lines().count() == 1,
        "{err}"
    );
    let info = w.inspect("example.test/rotten:v1", &[]);
    let layer = info["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let path = w.store_dir().join("blobs/sha256").join(layer);
    let mut data = std::fs::read(&path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&path, data).unwrap();
    let err = w.fails(&["copy", "store:example.test/rotten:v1", &out_arg]);
    assert!(err.contains("hashes to sha256:"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(w.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("wasmbox-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let target = reg.image("rotten:v1");
    w.fails(&[
        "copy",
        "store:example.test/rotten:v1",
        &target,
        "--plain-http",
    ]);
    let probe = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert!(
        !probe.status.success(),
        "the registry has a tag for a failed copy"
    );
}

/// Runs `cmd` to completion and returns whether it succeeded, its stderr,
/// and its peak resident set in KiB: the kernel's high-water mark for the
/// process (`VmHWM`), read until it exits. (`wait4`'s `ru_maxrss` would not
/// do: it counts the test process's own memory, copied at the fork.)
fn peak_rss_kib(mut cmd: Command) -> (bool, String, u64) {
    let stderr_path = tempfile::NamedTempFile::new().unwrap();
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr_path.path()).unwrap());
    let mut child = cmd.spawn().expect("spawn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Some(hwm) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let stderr = std::fs::read_to_string(stderr_path.path()).unwrap_or_default();
    (status.success(), stderr, peak)
}

#[test]
fn pushing_a_500_mb_module_streams_it() {
    let reg = Registry::start(RegistryAuth::None);
    let w = Wasmbox::new();
    let module: PathBuf = w.dir().join("big.wasm");
    std::fs::write(&module, guests::big_module(500)).unwrap();
    let image = reg.image("big:v1");
    w.ok(&["pack", p(&module), "-t", &image, "--compression", "none"]);
    std::fs::remove_file(&module).unwrap();

    let mut push = w.command();
    push.args(["push", &image, "--plain-http"]);
    let (ok, stderr, peak_kib) = peak_rss_kib(push);
    assert!(ok, "push failed: {stderr}");
    eprintln!("push peak RSS: {} MiB", peak_kib / 1024);
    // The layer is over 500 MiB; the pusher holds a few 1 MiB chunks of it.
    assert!(
        peak_kib < 100 * 1024,
        "wasmbox push of a 500 MB layer peaked at {} MiB",
        peak_kib / 1024
    );

    let puller = Wasmbox::new();
    let mut pull = puller.command();
    pull.args(["pull", &image, "--plain-http"]);
    let (ok, stderr, peak_kib) = peak_rss_kib(pull);
    assert!(ok, "pull failed: {stderr}");
    eprintln!("pull peak RSS: {} MiB", peak_kib / 1024);
    assert!(
        peak_kib < 100 * 1024,
        "wasmbox pull of a 500 MB layer peaked at {} MiB",
        peak_kib / 1024
    );
}
