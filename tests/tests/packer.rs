//! `wasmbox` against a real CNCF registry and skopeo: what a user types, and
//! what they see.

use std::path::PathBuf;
use std::process::Command;

use wasmbox_tests::{Registry, RegistryAuth, Wasmbox, compile_c, guests, require_tool};

fn write(w: &Wasmbox, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
    let path = w.dir().join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn p(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

fn skopeo(args: &[&str]) -> String {
    require_tool("skopeo");
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The files under a store's blob directory (to prove nothing was written).
fn blob_count(w: &Wasmbox) -> usize {
    std::fs::read_dir(w.store_dir().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn pack_push_and_read_back_with_skopeo() {
    let reg = Registry::start(RegistryAuth::None);
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let image = reg.image("demo/hello:v1");
    let out = w.ok(&[
        "pack",
        p(&module),
        "-t",
        &image,
        "--push",
        "--plain-http",
        "--env",
        "GREETING=hi",
        "--arg",
        "--loud",
        "--workdir",
        "/data",
        "--label",
        "org.example.team=wasm",
    ]);
    assert!(out.contains(&format!("Pushed {image} sha256:")), "{out}");

    let raw: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]))
    .unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        raw["annotations"]["dev.wasmbox.wasi.world"],
        "wasi_snapshot_preview1"
    );

    let config: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]))
    .unwrap();
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasi");
    assert_eq!(config["config"]["Entrypoint"][0], "/hello.wasm");
    assert_eq!(config["config"]["Cmd"][0], "--loud");
    assert_eq!(config["config"]["Env"][0], "GREETING=hi");
    assert_eq!(config["config"]["WorkingDir"], "/data");
    assert_eq!(config["config"]["Labels"]["org.example.team"], "wasm");

    // skopeo copies it into an OCI layout; the layer's tar holds the module.
    let layout = w.dir().join("copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:v1", p(&layout)),
    ]);
    let layer_digest = raw["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let listing = Command::new("tar")
        .args(["tzvf", p(&layout.join("blobs/sha256").join(layer_digest))])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("hello.wasm") && listing.contains("0/0"),
        "{listing}"
    );
    assert!(
        listing.contains("data/"),
        "workdir is created in the layer: {listing}"
    );

    // The remote inspect agrees with what was packed.
    let info = w.inspect(&image, &["--remote", "--plain-http"]);
    assert_eq!(info["os"], "wasi");
    assert_eq!(info["architecture"], "wasm");
    assert_eq!(info["entrypoint"][0], "/hello.wasm");
    assert_eq!(info["wasi_world"], "wasi_snapshot_preview1");
}

#[test]
fn pull_reads_what_skopeo_pushed() {
    let reg = Registry::start(RegistryAuth::None);
    let packer = Wasmbox::new();
    let module = write(&packer, "hello.wat", guests::HELLO_WAT);
    let layout = packer.dir().join("layout");
    packer.ok(&[
        "pack",
        p(&module),
        "-t",
        "example.test/hello:v1",
        "--oci-layout",
        p(&layout),
    ]);
    let target = reg.image("copied/hello:v2");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", p(&layout)),
        &format!("docker://{target}"),
    ]);

    let puller = Wasmbox::new();
    let out = puller.ok(&["pull", &target, "--plain-http"]);
    assert!(out.contains(&format!("Pulled {target}")), "{out}");
    assert_eq!(puller.images(), vec![target.clone()]);
    let info = puller.inspect(&target, &[]);
    assert_eq!(info["os"], "wasi");
    assert_eq!(info["entrypoint"][0], "/hello.wasm");
    // The same bytes came back: the digest matches what was packed.
    assert_eq!(
        info["digest"],
        packer.inspect("example.test/hello:v1", &[])["digest"]
    );
}

#[test]
fn second_push_skips_blobs_the_registry_has() {
    let reg = Registry::start(RegistryAuth::None);
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let image = reg.image("hello:v1");
    w.ok(&["pack", p(&module), "-t", &image]);
    let first: serde_json::Value =
        serde_json::from_str(&w.ok(&["push", &image, "--plain-http", "--json"])).unwrap();
    assert!(
        first["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["skipped"] == false)
    );
    let second: serde_json::Value =
        serde_json::from_str(&w.ok(&["push", &image, "--plain-http", "--json"])).unwrap();
    assert!(
        second["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["skipped"] == true)
    );
    assert_eq!(first["digest"], second["digest"]);
}

#[test]
fn artifact_format_follows_the_cncf_wasm_spec() {
    let reg = Registry::start(RegistryAuth::None);
    let w = Wasmbox::new();
    let component = write(&w, "cli.wat", guests::CLI_COMPONENT_WAT);
    let image = reg.image("artifact:v1");
    w.ok(&[
        "pack",
        p(&component),
        "-t",
        &image,
        "--format",
        "artifact",
        "--push",
        "--plain-http",
    ]);
    let raw: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]))
    .unwrap();
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(raw["layers"].as_array().unwrap().len(), 1);
    assert_eq!(raw["layers"][0]["mediaType"], "application/wasm");

    let puller = Wasmbox::new();
    puller.ok(&["pull", &image, "--plain-http"]);
    let info = puller.inspect(&image, &[]);
    assert_eq!(info["format"], "artifact");
    assert_eq!(info["os"], "wasip2");
    assert_eq!(info["wasi_world"], "wasi:cli/command");
    let config_digest = info["config"]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(puller.store_dir().join("blobs/sha256").join(config_digest)).unwrap(),
    )
    .unwrap();
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["layerDigests"][0], raw["layers"][0]["digest"]);
    assert_eq!(config["component"]["exports"][0], "wasi:cli/run@0.2.0");
    assert_eq!(config["component"]["target"], "wasi:cli/command");
}

#[test]
fn basic_auth_registry_needs_login_and_docker_config_holds_it() {
    let reg = Registry::start(RegistryAuth::Basic {
        user: "alice".into(),
        password: "s3cret".into(),
    });
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let image = reg.image("private/hello:v1");
    w.ok(&["pack", p(&module), "-t", &image]);

    let err = w.fails(&["push", &image, "--plain-http"]);
    assert!(
        err.contains("401") && err.contains(&format!("wasmbox login {}", reg.addr)),
        "{err}"
    );

    let bad = w.login(&reg.addr, "alice", "wrong");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        !w.docker_config_dir().join("config.json").exists(),
        "a failed login must not save anything"
    );

    let good = w.login(&reg.addr, "alice", "s3cret");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.docker_config_dir().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["auths"][&reg.addr]["auth"], "YWxpY2U6czNjcmV0"); // base64("alice:s3cret"), as docker writes it

    w.ok(&["push", &image, "--plain-http"]);
    // skopeo reads the same Docker config.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
        .arg(w.docker_config_dir().join("config.json"))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );

    w.ok(&["logout", &reg.addr]);
    let err = w.fails(&["pull", &image, "--plain-http"]);
    assert!(err.contains("401"), "{err}");
}

#[test]
fn https_request_to_plain_http_registry_suggests_plain_http() {
    let reg = Registry::start(RegistryAuth::None);
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let image = reg.image("hello:v1");
    let err = w.fails(&["pack", p(&module), "-t", &image, "--push"]);
    assert!(
        err.contains("answered plain HTTP to an HTTPS request") && err.contains("--plain-http"),
        "{err}"
    );
    assert!(err.contains("the image is in the local store"), "{err}");
    // Nothing reached the registry: the tag does not exist there.
    let err = w.fails(&["inspect", &image, "--remote", "--plain-http"]);
    assert!(err.contains("no such image"), "{err}");
}

#[test]
fn unreachable_registry_is_named() {
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let port = wasmbox_tests::free_port();
    let image = format!("127.0.0.1:{port}/hello:v1");
    w.ok(&["pack", p(&module), "-t", &image]);
    let err = w.fails(&["push", &image, "--plain-http"]);
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn packing_is_reproducible_and_honours_source_date_epoch() {
    let a = Wasmbox::new();
    let b = Wasmbox::new();
    for w in [&a, &b] {
        let module = write(w, "hello.wat", guests::HELLO_WAT);
        let files = w.dir().join("files");
        std::fs::create_dir_all(files.join("sub")).unwrap();
        std::fs::write(files.join("sub/b.txt"), "b").unwrap();
        std::fs::write(files.join("a.txt"), "a").unwrap();
        w.ok(&[
            "pack",
            p(&module),
            "-t",
            "r/hello:1",
            "--add",
            &format!("{}:/etc/app", p(&files)),
        ]);
    }
    let da = a.inspect("r/hello:1", &[])["digest"].clone();
    assert_eq!(da, b.inspect("r/hello:1", &[])["digest"]);

    let module = write(&a, "hello.wat", guests::HELLO_WAT);
    let out = a
        .command()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["pack", p(&module), "-t", "r/hello:2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let info = a.inspect("r/hello:2", &[]);
    assert_eq!(info["created"], "2023-11-14T22:13:20Z");
    assert_ne!(info["digest"], da);
}

#[test]
fn added_files_land_in_the_layer() {
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let cfg = write(&w, "app.toml", "x = 1\n");
    let archive = w.dir().join("img.tar");
    w.ok(&[
        "pack",
        p(&module),
        "-t",
        "r/files:1",
        "--add",
        &format!("{}:/etc/app.toml", p(&cfg)),
        "--compression",
        "none",
        "-o",
        p(&archive),
    ]);
    let info = w.inspect("r/files:1", &[]);
    assert_eq!(
        info["layers"][0]["media_type"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let layer = info["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let listing = Command::new("tar")
        .args(["tvf", p(&w.store_dir().join("blobs/sha256").join(layer))])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["etc/", "etc/app.toml", "hello.wasm"],
        "{listing}"
    );
}

#[test]
fn archive_is_an_oci_layout_with_names_for_ctr_and_docker() {
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let archive = w.dir().join("hello.tar");
    w.ok(&[
        "pack",
        p(&module),
        "-t",
        "example.test/team/hello:v3",
        "-o",
        p(&archive),
    ]);
    let unpacked = w.dir().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    assert!(
        Command::new("tar")
            .args(["xf", p(&archive), "-C", p(&unpacked)])
            .status()
            .unwrap()
            .success()
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(
        ann["io.containerd.image.name"],
        "example.test/team/hello:v3"
    );
    assert_eq!(ann["org.opencontainers.image.ref.name"], "v3");
    let docker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(docker[0]["RepoTags"][0], "example.test/team/hello:v3");
    assert!(unpacked.join("oci-layout").is_file());
    // An independent reader accepts the archive.
    let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{}", p(&archive))]);
    assert!(
        raw.contains("application/vnd.oci.image.manifest.v1+json"),
        "{raw}"
    );
}

#[test]
fn c_program_compiled_with_clang_packs_as_preview1() {
    let w = Wasmbox::new();
    let wasm = w.dir().join("hello.wasm");
    compile_c(
        "#include <stdio.h>\nint main(void){puts(\"hello from C\");return 0;}\n",
        &wasm,
    );
    w.ok(&["pack", p(&wasm), "-t", "r/c-hello:1"]);
    let info = w.inspect("r/c-hello:1", &[]);
    assert_eq!(info["wasi_world"], "wasi_snapshot_preview1");
    assert_eq!(info["entrypoint"][0], "/hello.wasm");
}

#[test]
fn images_get_dockers_wasi_os_artifacts_the_wasi_version_and_both_their_world() {
    let w = Wasmbox::new();
    let cli = write(&w, "cli.wat", guests::CLI_COMPONENT_WAT);
    let http = write(&w, "http.wat", guests::HTTP_COMPONENT_WAT);
    let hello = write(&w, "hello.wat", guests::HELLO_WAT);
    w.ok(&["pack", p(&cli), "-t", "r/cli:1"]);
    w.ok(&["pack", p(&http), "-t", "r/http:1", "--os", "wasip2"]);
    w.ok(&[
        "pack",
        p(&cli),
        "-t",
        "r/cli-artifact:1",
        "--format",
        "artifact",
    ]);
    w.ok(&[
        "pack",
        p(&hello),
        "-t",
        "r/hello-artifact:1",
        "--format",
        "artifact",
    ]);
    let platform = |reference: &str| {
        let info = w.inspect(reference, &[]);
        (
            info["os"].as_str().unwrap().to_string(),
            info["wasi_world"].as_str().unwrap().to_string(),
        )
    };
    let pair = |os: &str, world: &str| (os.to_string(), world.to_string());
    assert_eq!(platform("r/cli:1"), pair("wasi", "wasi:cli/command"));
    assert_eq!(w.inspect("r/cli:1", &[])["entrypoint"][0], "/cli.wasm");
    assert_eq!(platform("r/http:1"), pair("wasip2", "wasi:http/proxy"));
    assert_eq!(
        platform("r/cli-artifact:1"),
        pair("wasip2", "wasi:cli/command")
    );
    assert_eq!(
        platform("r/hello-artifact:1"),
        pair("wasip1", "wasi_snapshot_preview1")
    );
}

#[test]
fn export_flag_makes_a_library_module_runnable() {
    let w = Wasmbox::new();
    let lib = write(&w, "lib.wat", guests::LIBRARY_WAT);
    w.ok(&["pack", p(&lib), "-t", "r/lib:1", "--export", "add"]);
    let info = w.inspect("r/lib:1", &[]);
    assert_eq!(info["entrypoint"][0], "/lib.wasm#add");
    assert_eq!(info["annotations"]["dev.wasmbox.wasm.export"], "add");
}

#[test]
fn bad_modules_are_refused_and_nothing_is_written() {
    let w = Wasmbox::new();
    let text = write(&w, "notes.txt", "hello");
    let wasm_named_text = write(&w, "fake.wasm", "#!/bin/sh\necho hi\n");
    let mut cut = wat::parse_str(guests::HELLO_WAT).unwrap();
    cut.truncate(cut.len() - 10);
    let truncated = write(&w, "cut.wasm", cut);
    let bad_wat = write(
        &w,
        "bad.wat",
        "(module (func (export \"_start\") (i32.add)))",
    );
    let broken_text = write(&w, "broken.wat", "(module (func");
    let lib = write(&w, "lib.wat", guests::LIBRARY_WAT);
    let hello = write(&w, "hello.wat", guests::HELLO_WAT);
    let component = write(&w, "cli.wat", guests::CLI_COMPONENT_WAT);
    let out_tar = w.dir().join("out.tar");
    let missing = w.dir().join("missing.wasm");
    let escape = format!("{}:/a/../../etc", p(&text));
    let clash = format!("{}:/hello.wasm", p(&text));

    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec![p(&text)],
            format!("{} is not a WebAssembly module", p(&text)),
        ),
        (
            vec![p(&wasm_named_text)],
            format!("{} is not a WebAssembly module", p(&wasm_named_text)),
        ),
        (
            vec![p(&truncated)],
            format!("{} is not a valid WebAssembly module", p(&truncated)),
        ),
        (
            vec![p(&bad_wat)],
            format!(
                "{} is not a valid WebAssembly module: type mismatch",
                p(&bad_wat)
            ),
        ),
        (
            vec![p(&broken_text)],
            format!("{} is not valid WebAssembly text", p(&broken_text)),
        ),
        (
            vec![p(&lib)],
            format!("{} is neither a WASI command", p(&lib)),
        ),
        (
            vec![p(&lib), "--export", "mul"],
            "has no exported function named `mul` (exported functions: add)".to_string(),
        ),
        (
            vec![p(&component), "--export", "run"],
            "is a component; --export only applies to core modules".to_string(),
        ),
        (vec![p(&missing)], format!("cannot read {}", p(&missing))),
        (
            vec![p(&hello), "--add", "/nonexistent/file:/x"],
            "--add /nonexistent/file:/x: cannot read /nonexistent/file".to_string(),
        ),
        (
            vec![p(&hello), "--add", &escape],
            "must not contain `..`".to_string(),
        ),
        (
            vec![p(&hello), "--add", &clash],
            "/hello.wasm is already in the image".to_string(),
        ),
        (
            vec![p(&hello), "--env", "NOEQUALS"],
            "--env NOEQUALS: expected KEY=VALUE".to_string(),
        ),
        (
            vec![p(&hello), "--format", "artifact", "--env", "A=1"],
            "--env needs --format image".to_string(),
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["pack"];
        full.extend(args.iter().copied());
        full.extend(["-t", "r/bad:1", "-o", p(&out_tar)]);
        let err = w.fails(&full);
        assert!(
            err.contains(&expected),
            "pack {args:?}: expected {expected:?} in: {err}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one sentence, not a report: {err}"
        );
        assert_eq!(blob_count(&w), 0, "pack {args:?} wrote blobs");
        assert!(!out_tar.exists(), "pack {args:?} wrote the archive");
    }
    assert!(w.images().is_empty());

    let err = w.fails(&["pack", p(&hello), "-t", "Not A Ref"]);
    assert!(err.contains("is not a valid image reference"), "{err}");
}

#[test]
fn rm_removes_the_name_and_unshared_blobs() {
    let w = Wasmbox::new();
    let hello = write(&w, "hello.wat", guests::HELLO_WAT);
    w.ok(&["pack", p(&hello), "-t", "r/a:1"]);
    w.ok(&["pack", p(&hello), "-t", "r/b:1"]);
    let before = blob_count(&w);
    w.ok(&["rm", "r/a:1"]);
    assert_eq!(w.images(), vec!["docker.io/r/b:1"]);
    assert_eq!(blob_count(&w), before, "blobs still used by r/b:1 stay");
    w.ok(&["rm", "r/b:1"]);
    assert_eq!(blob_count(&w), 0);
    let err = w.fails(&["rm", "r/b:1"]);
    assert!(
        err.contains("docker.io/r/b:1 is not in the local store"),
        "{err}"
    );
    let err = w.fails(&["push", "r/b:1"]);
    assert!(err.contains("is not in the local store"), "{err}");
}

#[test]
fn completions_are_generated_for_each_shell() {
    let w = Wasmbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = w.ok(&["completions", shell]);
        assert!(
            out.contains("pack") && out.contains("plain-http"),
            "{shell}: {out}"
        );
    }
}

#[test]
fn bearer_token_registry_works_after_login() {
    let reg = Registry::start(RegistryAuth::Bearer {
        user: "bob".into(),
        password: "t0ken-pass".into(),
    });
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let image = reg.image("bob/hello:v1");
    w.ok(&["pack", p(&module), "-t", &image]);

    let err = w.fails(&["push", &image, "--plain-http"]);
    assert!(
        err.contains(&format!("wasmbox login {}", reg.addr)),
        "{err}"
    );

    let bad = w.login(&reg.addr, "bob", "nope");
    assert!(!bad.status.success(), "a wrong password must not log in");
    let good = w.login(&reg.addr, "bob", "t0ken-pass");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    w.ok(&["push", &image, "--plain-http"]);
    let puller = Wasmbox::new();
    std::fs::create_dir_all(puller.docker_config_dir()).unwrap();
    std::fs::copy(
        w.docker_config_dir().join("config.json"),
        puller.docker_config_dir().join("config.json"),
    )
    .unwrap();
    puller.ok(&["pull", &image, "--plain-http"]);
    assert_eq!(
        puller.inspect(&image, &[])["digest"],
        w.inspect(&image, &[])["digest"]
    );
}

#[test]
fn tls_registry_needs_its_ca_or_an_explicit_skip() {
    let reg = Registry::start(RegistryAuth::Tls);
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let image = reg.image("tls/hello:v1");
    w.ok(&["pack", p(&module), "-t", &image]);

    let err = w.fails(&["push", &image]);
    assert!(
        err.contains("is not trusted") && err.contains("--ca-file"),
        "{err}"
    );
    let ca = reg.ca_file();
    w.ok(&["push", &image, "--ca-file", p(&ca)]);

    let puller = Wasmbox::new();
    puller.ok(&["pull", &image, "--insecure-skip-tls-verify"]);
    let not_pem = write(&puller, "ca.txt", "not a certificate");
    let err = puller.fails(&["pull", &image, "--ca-file", p(&not_pem)]);
    assert!(err.contains("is not a PEM certificate file"), "{err}");
}

#[test]
fn ctr_image_import_accepts_the_archive() {
    let containerd = wasmbox_tests::Containerd::start();
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let archive = w.dir().join("hello.tar");
    w.ok(&[
        "pack",
        p(&module),
        "-t",
        "example.test/import/hello:v1",
        "-o",
        p(&archive),
    ]);
    let out = containerd.ctr(&["image", "import", p(&archive)]);
    assert!(
        out.status.success(),
        "ctr image import failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        containerd.log()
    );
    let list = String::from_utf8(containerd.ctr(&["image", "ls"]).stdout).unwrap();
    let line = list
        .lines()
        .find(|l| l.starts_with("example.test/import/hello:v1 "))
        .unwrap_or_else(|| panic!("imported image not listed: {list}"));
    assert!(line.contains("wasi/wasm"), "{line}");
    assert!(
        line.contains(
            w.inspect("example.test/import/hello:v1", &[])["digest"]
                .as_str()
                .unwrap()
        ),
        "{line}"
    );
}

#[test]
fn refused_upload_names_the_registry_error_and_moves_no_tag() {
    let reg = Registry::start(RegistryAuth::ReadOnly);
    let w = Wasmbox::new();
    let module = write(&w, "hello.wat", guests::HELLO_WAT);
    let image = reg.image("hello:v1");
    let err = w.fails(&["pack", p(&module), "-t", &image, "--push", "--plain-http"]);
    assert!(err.contains("pushing blob sha256:"), "{err}");
    assert!(err.contains(&format!("{} answered", reg.addr)), "{err}");
    assert!(err.contains("UNSUPPORTED") || err.contains("405"), "{err}");
    // The local store still holds the complete image, ready for a retry.
    assert_eq!(w.images(), vec![image.clone()]);
    let err = w.fails(&["inspect", &image, "--remote", "--plain-http"]);
    assert!(err.contains("no such image"), "{err}");
}
