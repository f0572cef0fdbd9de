//! Wasm images under a real Docker Engine (a private `dockerd` with its own
//! containerd, configured with `deploy/docker/daemon.json` as the README tells
//! users), run with `docker run --runtime io.containerd.wasmtime.v1`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wasmbox_tests::docker::{DockerEngine, RUNTIME, workspace_root};
use wasmbox_tests::{Wasmbox, probe, wait_until};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A private Docker Engine with a registry, and a `wasmbox` to pack with.
struct Host {
    docker: DockerEngine,
    w: Wasmbox,
}

impl Host {
    /// `None` (after one printed line) where no Docker Engine was fetched.
    fn start() -> Option<Host> {
        Some(Host {
            docker: DockerEngine::start()?,
            w: Wasmbox::new(),
        })
    }

    /// `wasmbox pack MODULE -t REGISTRY/NAME:v1 --push` (in the engine's
    /// network namespace, where the registry is).
    fn push(&self, name: &str, module: &Path, pack_args: &[&str]) -> String {
        let image = format!("{}:v1", self.docker.registry.image(name));
        let mut cmd = self.w.command();
        cmd.args([
            "pack",
            module.to_str().unwrap(),
            "-t",
            &image,
            "--push",
            "--plain-http",
        ])
        .args(pack_args);
        self.docker.netns().enter(&mut cmd);
        let out = cmd.output().expect("run wasmbox");
        assert!(
            out.status.success(),
            "wasmbox pack --push: {}",
            stderr(&out)
        );
        image
    }

    fn probe_image(&self) -> String {
        self.push("probe", probe(), &[])
    }

    /// `docker run --rm --runtime RUNTIME --platform wasi/wasm OPTS… IMAGE ARGS…`.
    fn run(&self, opts: &[&str], image: &str, args: &[&str]) -> Output {
        let mut full = vec![
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasi/wasm",
        ];
        full.extend_from_slice(opts);
        full.push(image);
        full.extend_from_slice(args);
        self.docker.run(&full)
    }

    /// `docker run -d --name NAME --runtime RUNTIME --platform wasi/wasm
    /// OPTS… IMAGE ARGS…`, asserted to succeed.
    fn run_detached(&self, name: &str, opts: &[&str], image: &str, args: &[&str]) {
        let mut full = vec![
            "run",
            "-d",
            "--name",
            name,
            "--runtime",
            RUNTIME,
            "--platform",
            "wasi/wasm",
        ];
        full.extend_from_slice(opts);
        full.push(image);
        full.extend_from_slice(args);
        self.docker.ok(&full);
    }

    /// Waits for container `name` to exit; returns its exit code and
    /// `OOMKilled`, and removes it.
    fn exit_and_oom_killed(&self, name: &str) -> (String, String) {
        let code = self.docker.ok(&["wait", name]).trim().to_string();
        let oom_killed = self.inspect(name, "{{.State.OOMKilled}}");
        self.docker.ok(&["rm", name]);
        (code, oom_killed)
    }

    /// `docker inspect -f FORMAT ID`, trimmed.
    fn inspect(&self, id: &str, format: &str) -> String {
        self.docker
            .ok(&["inspect", "-f", format, id])
            .trim()
            .to_string()
    }

    fn wait_for(&self, what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
        wait_until(within, what, || {
            ready().then_some(()).ok_or_else(|| "not yet".to_string())
        });
    }
}

fn assert_no_panic(out: &Output) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "panic: {err}");
}

#[test]
fn docker_run_prints_and_exits_with_the_guests_status() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();

    let out = host.run(&[], &image, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello from probe\n");

    let out = host.run(&[], &image, &["exit", "42"]);
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));

    let trap = host.w.dir().join("trap.wat");
    std::fs::write(
        &trap,
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    )
    .unwrap();
    let trap_image = host.push("trap", &trap, &[]);
    let out = host.run(&[], &trap_image, &[]);
    assert_eq!(out.status.code(), Some(134), "{}", stderr(&out));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    assert_no_panic(&out);

    host.docker.assert_clean();
}

#[test]
fn env_arguments_workdir_volumes_and_a_read_only_root_reach_the_guest() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();

    let out = host.run(&["-e", "GREETING=hi", "-w", "/srv"], &image, &["env"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let env = stdout(&out);
    assert!(env.lines().any(|l| l == "GREETING=hi"), "{env}");
    assert!(env.lines().any(|l| l == "PWD=/srv"), "{env}");

    let out = host.run(&[], &image, &["args", "one", "two words"]);
    assert_eq!(
        stdout(&out),
        "arg[0]=/probe.wasm\narg[1]=args\narg[2]=one\narg[3]=two words\n",
        "{}",
        stderr(&out)
    );

    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "from the host\n").unwrap();
    let rw = format!("{}:/data", data.path().display());
    let ro = format!("{}:/data:ro", data.path().display());

    let out = host.run(&["-v", &rw], &image, &["cat", "/data/in.txt"]);
    assert_eq!(stdout(&out), "from the host\n", "{}", stderr(&out));
    let out = host.run(&["-v", &rw], &image, &["write", "/data/out.txt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(data.path().join("out.txt")).unwrap(),
        "written\n"
    );

    let out = host.run(&["-v", &ro], &image, &["write", "/data/refused.txt"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(!data.path().join("refused.txt").exists());

    // The root filesystem is writable by default and read-only with --read-only.
    let out = host.run(&[], &image, &["write", "/scratch.txt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = host.run(&["--read-only"], &image, &["write", "/scratch.txt"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("cannot write /scratch.txt"),
        "{}",
        stderr(&out)
    );

    host.docker.assert_clean();
}

#[test]
fn stdin_is_piped_with_i_and_a_terminal_is_given_with_it() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();

    let mut child = host
        .docker
        .docker()
        .args([
            "run",
            "--rm",
            "-i",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasi/wasm",
        ])
        .args([image.as_str(), "stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\nline two\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        stdout(&out),
        "line one\nline two\n<eof>\n",
        "{}",
        stderr(&out)
    );

    // `docker run -it` under a pseudo-terminal of its own (script(1)).
    let docker = host.docker.docker();
    let envs: Vec<String> = docker
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
        .collect();
    let line = format!(
        "env {} {} run --rm -it --runtime {RUNTIME} --platform wasi/wasm {image} hello",
        envs.join(" "),
        docker.get_program().to_str().unwrap()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // The terminal turns "\n" into "\r\n": the guest wrote to a tty.
    assert!(
        stdout(&out).contains("hello from probe\r\n"),
        "{:?}",
        stdout(&out)
    );

    host.docker.assert_clean();
}

#[test]
fn detached_containers_log_stop_kill_wait_inspect_and_report_stats() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    let d = &host.docker;
    let run_d = |name: &str, mode: &str| {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--runtime",
            RUNTIME,
            "--platform",
            "wasi/wasm",
            &image,
            mode,
        ]);
    };

    run_d("sleeper", "sleep");
    host.wait_for("sleeper logs 'sleeping'", Duration::from_secs(10), || {
        stdout(&d.run(&["logs", "sleeper"])) == "sleeping\n"
    });
    assert_eq!(host.inspect("sleeper", "{{.State.Status}}"), "running");

    // `docker logs -f` follows until the container ends.
    let follow = d
        .docker()
        .args(["logs", "-f", "sleeper"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let stats = d.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        "sleeper",
    ]);
    assert!(
        !stats.trim().starts_with("0B"),
        "docker stats shows no memory: {stats}"
    );

    let started = Instant::now();
    d.ok(&["stop", "sleeper"]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "docker stop took {:?}: SIGTERM did not stop the guest",
        started.elapsed()
    );
    assert_eq!(d.ok(&["wait", "sleeper"]).trim(), "143");
    assert_eq!(
        host.inspect("sleeper", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 143"
    );
    let followed = follow.wait_with_output().unwrap();
    assert_eq!(stdout(&followed), "sleeping\n");
    d.ok(&["rm", "sleeper"]);

    run_d("spinner", "spin");
    host.wait_for("spinner running", Duration::from_secs(10), || {
        host.inspect("spinner", "{{.State.Status}}") == "running"
    });
    d.ok(&["kill", "spinner"]);
    assert_eq!(d.ok(&["wait", "spinner"]).trim(), "137");
    d.ok(&["rm", "spinner"]);

    run_d("removed", "sleep");
    d.ok(&["rm", "-f", "removed"]);

    run_d("quick", "exit");
    assert_eq!(d.ok(&["wait", "quick"]).trim(), "2");
    d.ok(&["rm", "quick"]);

    host.docker.assert_clean();
}

/// The value of `file` in the cgroup of `controller` that process `pid` is
/// in (cgroup v1 or v2).
fn cgroup_file(pid: &str, controller: &str, file: &str) -> String {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let dir = membership
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if controllers.split(',').any(|c| c == controller) {
                Some(format!("/sys/fs/cgroup/{controller}{path}"))
            } else if controllers.is_empty()
                && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
            {
                Some(format!("/sys/fs/cgroup{path}"))
            } else {
                None
            }
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in {membership}"));
    std::fs::read_to_string(Path::new(&dir).join(file))
        .unwrap_or_else(|e| panic!("{dir}/{file}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn memory_pids_and_cpu_flags_limit_the_container() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    // The limits are written into the container's cgroup, as runc does.
    host.run_detached(
        "limited",
        &["--memory", "64m", "--pids-limit", "50", "--cpus", "0.5"],
        &image,
        &["sleep"],
    );
    let pid = host.inspect("limited", "{{.State.Pid}}");
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if unified {
        assert_eq!(cgroup_file(&pid, "memory", "memory.max"), "67108864");
        assert_eq!(cgroup_file(&pid, "cpu", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            cgroup_file(&pid, "memory", "memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(cgroup_file(&pid, "cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(cgroup_file(&pid, "cpu", "cpu.cfs_period_us"), "100000");
    }
    assert_eq!(cgroup_file(&pid, "pids", "pids.max"), "50");
    host.docker.ok(&["rm", "-f", "limited"]);

    let out = host.run(&["--memory", "64m"], &image, &["alloc", "16"]);
    assert_eq!(stdout(&out), "allocated 16 MiB\n", "{}", stderr(&out));
    let out = host.run(&["--memory", "64m"], &image, &["alloc", "100"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("allocation of 100 MiB failed"),
        "{}",
        stderr(&out)
    );
    assert_no_panic(&out);
    host.docker.assert_clean();
}

#[test]
fn a_guest_filling_its_memory_under_docker_memory_sees_malloc_fail_not_an_oom_kill() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    host.run_detached("hog", &["--memory", "64m"], &image, &["hog"]);
    let logs = host.docker.ok(&["logs", "-f", "hog"]);
    let mib = wasmbox_tests::allocated_mib(&logs);
    assert!((32..=64).contains(&mib), "reached {mib} MiB under 64m");
    // A kernel OOM kill would read (137, true) here.
    assert_eq!(
        host.exit_and_oom_killed("hog"),
        ("0".into(), "false".into())
    );
    host.docker.assert_clean();
}

#[test]
fn a_shim_the_kernel_oom_kills_shows_in_docker_inspect_as_oom_killed_137() {
    // A tmpfs's files are memory no guest budget covers: filling one past
    // --memory makes the kernel kill the shim, and Docker must say so.
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    host.run_detached(
        "tmpfs-hog",
        &["--memory", "64m", "--tmpfs", "/scratch:size=256m"],
        &image,
        &["fill", "/scratch/big"],
    );
    assert_eq!(
        host.exit_and_oom_killed("tmpfs-hog"),
        ("137".into(), "true".into())
    );
    host.docker.assert_clean();
}

#[test]
fn twenty_docker_runs_in_parallel_all_succeed_and_leave_nothing() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| host.run(&[], &image, &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        assert_eq!(stdout(out), "hello from probe\n");
    }
    host.docker.assert_clean();
}

/// Polls `curl URL` inside the engine's network namespace until it answers
/// 200; returns the body.
fn curl_in(host: &Host, url: &str) -> String {
    wait_until(
        Duration::from_secs(15),
        &format!("an answer at {url}"),
        || {
            let mut cmd = Command::new("curl");
            cmd.args(["-fsS", "--max-time", "2", url]);
            host.docker.netns().enter(&mut cmd);
            let out = cmd.output().expect("run curl");
            if out.status.success() {
                Ok(stdout(&out))
            } else {
                Err(stderr(&out))
            }
        },
    )
}

#[test]
fn a_wasi_http_component_is_served_on_a_published_port() {
    let Some(host) = Host::start() else { return };
    let image = host.push("http-hello", wasmbox_tests::http_hello(), &[]);
    let d = &host.docker;
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "18080:8080",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasi/wasm",
        &image,
    ]);
    assert_eq!(
        curl_in(&host, "http://127.0.0.1:18080/hi"),
        "hello from wasm at /hi\n"
    );
    // The container's own address on the bridge answers too.
    let ip = host.inspect("web", "{{.NetworkSettings.IPAddress}}");
    assert_eq!(
        curl_in(&host, &format!("http://{ip}:8080/direct")),
        "hello from wasm at /direct\n"
    );
    d.ok(&["stop", "web"]);
    assert_eq!(host.inspect("web", "{{.State.ExitCode}}"), "0");
    let logs = stdout(&d.run(&["logs", "web"]));
    assert!(logs.contains("/hi") && logs.contains("/direct"), "{logs}");
    d.ok(&["rm", "web"]);
    host.docker.assert_clean();
}

/// A Linux image of Debian's static busybox, built `FROM scratch` (no base
/// image can be pulled here), tagged `tag`.
fn build_busybox_image(host: &Host, tag: &str) {
    wasmbox_tests::require_tool("busybox");
    let ctx = tempfile::tempdir().unwrap();
    let bin = ctx.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let busybox = Command::new("sh")
        .args(["-c", "command -v busybox"])
        .output()
        .unwrap();
    std::fs::copy(stdout(&busybox).trim(), bin.join("busybox")).unwrap();
    for applet in ["sh", "wget", "seq", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY bin/ /bin/\nENV PATH=/bin\n",
    )
    .unwrap();
    host.docker
        .ok(&["build", "-q", "-t", tag, ctx.path().to_str().unwrap()]);
}

#[test]
fn compose_runs_a_wasm_service_beside_a_linux_container_that_calls_it() {
    let Some(host) = Host::start() else { return };
    let hello = host.push("examples/http-hello", wasmbox_tests::http_hello(), &[]);
    build_busybox_image(&host, "wasmbox-test/busybox:local");
    let compose_file = workspace_root().join("examples/compose/compose.yaml");
    let compose = |args: &[&str]| {
        let mut cmd = host.docker.docker();
        cmd.args(["compose", "-f", compose_file.to_str().unwrap()])
            .args(args)
            .env("HELLO_IMAGE", &hello)
            .env("CALLER_IMAGE", "wasmbox-test/busybox:local");
        let out = cmd.output().expect("run docker compose");
        assert!(
            out.status.success(),
            "docker compose {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    };
    compose(&["up", "-d"]);
    host.wait_for("the caller to finish", Duration::from_secs(30), || {
        compose(&["ps", "-a", "--format", "{{.Service}} {{.State}}"])
            .lines()
            .any(|l| l == "caller exited")
    });
    let logs = compose(&["logs", "--no-log-prefix", "caller"]);
    assert_eq!(logs, "hello from wasm at /from-compose\n");
    let states = compose(&[
        "ps",
        "-a",
        "--format",
        "{{.Service}} {{.State}} {{.ExitCode}}",
    ]);
    assert!(states.lines().any(|l| l == "caller exited 0"), "{states}");
    assert!(states.lines().any(|l| l == "hello running 0"), "{states}");

    compose(&["down"]);
    let networks = host.docker.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !networks.contains("wasmbox-compose"),
        "compose network left: {networks}"
    );
    host.docker.assert_clean();
}

#[test]
fn images_from_docker_build_and_docker_load_run_like_a_pushed_one() {
    let Some(host) = Host::start() else { return };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(probe(), ctx.path().join("probe.wasm")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY probe.wasm /probe.wasm\nENTRYPOINT [\"/probe.wasm\"]\n",
    )
    .unwrap();
    host.docker.ok(&[
        "build",
        "-q",
        "--platform",
        "wasi/wasm",
        "-t",
        "built/probe:v1",
        ctx.path().to_str().unwrap(),
    ]);
    // `docker load` of the archive `wasmbox pack -o` writes.
    let archive = host.w.dir().join("probe.tar");
    host.w.ok(&[
        "pack",
        probe().to_str().unwrap(),
        "-t",
        "loaded/probe:v1",
        "-o",
        archive.to_str().unwrap(),
    ]);
    let loaded = host.docker.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded, "Loaded image: loaded/probe:v1\n");
    let packed = host.probe_image();
    for image in ["built/probe:v1", "loaded/probe:v1", packed.as_str()] {
        let out = host.run(&["-e", "X=1"], image, &["args", "a"]);
        assert_eq!(
            stdout(&out),
            "arg[0]=/probe.wasm\narg[1]=args\narg[2]=a\n",
            "{image}: {}",
            stderr(&out)
        );
        let out = host.run(&[], image, &["exit", "3"]);
        assert_eq!(out.status.code(), Some(3), "{image}");
    }
    host.docker.assert_clean();
}

#[test]
fn platform_wasi_wasm_runs_default_images_and_wasip1_runs_images_packed_with_os_wasip1() {
    let Some(host) = Host::start() else { return };
    let default = host.probe_image();
    let wasip1 = host.push("probe-wasip1", probe(), &["--os", "wasip1"]);
    let run = |platform: &str, image: &str| {
        host.docker.run(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--platform",
            platform,
            image,
        ])
    };
    let out = run("wasi/wasm", &default);
    assert_eq!(stdout(&out), "hello from probe\n", "{}", stderr(&out));
    let out = run("wasip1/wasm", &wasip1);
    assert_eq!(stdout(&out), "hello from probe\n", "{}", stderr(&out));
    // Docker matches a single manifest's os exactly: the mismatch is its own error.
    let out = run("wasi/wasm", &wasip1);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("does not provide the specified platform (wasi/wasm)"),
        "{}",
        stderr(&out)
    );
    host.docker.assert_clean();
}

#[test]
fn wasm_artifacts_pull_on_containerd_1_7_and_run_under_docker_given_a_command() {
    let Some(host) = Host::start() else { return };
    let image = host.push("probe-artifact", probe(), &["--format", "artifact"]);
    let ctr = |args: &[&str]| {
        // In the engine's network namespace, where the registry is.
        let mut cmd = Command::new(wasmbox_tests::docker::engine_dir().unwrap().join("bin/ctr"));
        cmd.arg("-a")
            .arg(&host.docker.containerd.address)
            .args(args)
            .stdin(Stdio::null());
        host.docker.netns().enter(&mut cmd);
        cmd.output().expect("run ctr")
    };
    // containerd 1.7 pulls and unpacks it (1.6 refused the raw Wasm layer)...
    let out = ctr(&["image", "pull", "--plain-http", &image]);
    assert!(out.status.success(), "ctr image pull: {}", stderr(&out));
    // ...and runs it through its API, as the CRI does.
    let run = host
        .docker
        .containerd
        .run_via_api(RUNTIME, &image, "artifact", None)
        .unwrap();
    assert_eq!(
        (run.exit_status, run.stdout.as_str()),
        (0, "hello from probe\n")
    );
    // `ctr run` itself reads the image config client-side and knows only
    // Docker's and OCI's config types: its own refusal.
    let out = ctr(&["run", "--rm", "--runtime", RUNTIME, &image, "by-ctr"]);
    assert!(
        stderr(&out)
            .contains("unknown image config media type application/vnd.wasm.config.v0+json"),
        "{}",
        stderr(&out)
    );
    ctr(&["containers", "rm", "by-ctr"]);

    // Docker runs it once given a command (an artifact has no entrypoint);
    // the module is the layer, whatever the path says.
    let docker_run = |args: &[&str]| {
        let mut full = vec![
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasip1/wasm",
            &image,
        ];
        full.extend_from_slice(args);
        host.docker.run(&full)
    };
    let out = docker_run(&["/module.wasm", "args", "x"]);
    assert_eq!(
        stdout(&out),
        "arg[0]=/module.wasm\narg[1]=args\narg[2]=x\n",
        "{}",
        stderr(&out)
    );
    let out = docker_run(&[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no command specified"),
        "{}",
        stderr(&out)
    );
    host.docker.assert_clean();
    host.docker.containerd.assert_clean();
}

/// An OCI layout tar of the image `name`: an OCI image config whose
/// entrypoint is `entrypoint` and one raw Wasm layer of `media_type` holding
/// `module` (runwasi's image shape; no tar layer, so no `diff_ids`).
fn wasm_layer_image_archive(
    dir: &Path,
    name: &str,
    entrypoint: &str,
    media_type: &str,
    module: &[u8],
) -> std::path::PathBuf {
    let file_name = name.replace(['/', ':', '.'], "-");
    let layout = dir.join(&file_name);
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = |data: &[u8]| {
        let digest = wasmbox::format::Digest::of(data);
        std::fs::write(blobs.join(digest.hex()), data).unwrap();
        serde_json::json!({"digest": digest, "size": data.len()})
    };
    let with_type = |mut desc: serde_json::Value, media_type: &str| {
        desc["mediaType"] = media_type.into();
        desc
    };
    let layer = with_type(blob(module), media_type);
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasi",
        "config": {"Entrypoint": [entrypoint]},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let config = with_type(
        blob(&serde_json::to_vec(&config).unwrap()),
        "application/vnd.oci.image.config.v1+json",
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    let mut manifest = with_type(
        blob(&serde_json::to_vec(&manifest).unwrap()),
        "application/vnd.oci.image.manifest.v1+json",
    );
    manifest["annotations"] = serde_json::json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap(),
    });
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [manifest]}))
            .unwrap(),
    )
    .unwrap();
    let archive = dir.join(format!("{file_name}.tar"));
    let out = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", stderr(&out));
    archive
}

#[test]
fn oci_images_of_wasm_layers_run_with_ctr_run_and_docker_run_on_containerd_1_7() {
    let Some(host) = Host::start() else { return };
    let dir = host.w.dir();
    let probe_image = "example.test/probe-layer:v1";
    let probe_archive = wasm_layer_image_archive(
        dir,
        probe_image,
        "/probe.wasm",
        "application/vnd.wasm.content.layer.v1+wasm",
        &std::fs::read(probe()).unwrap(),
    );
    let http_image = "example.test/http-layer:v1";
    let http_archive = wasm_layer_image_archive(
        dir,
        http_image,
        "/http-hello.wasm",
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
        &std::fs::read(wasmbox_tests::http_hello()).unwrap(),
    );

    // ctr image import unpacks it on containerd 1.7, and ctr run runs it.
    let containerd = &host.docker.containerd;
    containerd.import(&probe_archive);
    let out = containerd.ctr(&["run", "--rm", "--runtime", RUNTIME, probe_image, "plain"]);
    assert_eq!(stdout(&out), "hello from probe\n", "{}", stderr(&out));
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        probe_image,
        "exits",
        "/probe.wasm",
        "exit",
        "6",
    ]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    containerd.assert_clean();

    // docker load + docker run, the component served on a published port.
    let d = &host.docker;
    for archive in [&probe_archive, &http_archive] {
        d.ok(&["load", "-i", archive.to_str().unwrap()]);
    }
    let out = host.run(&[], probe_image, &["args", "z"]);
    assert_eq!(
        stdout(&out),
        "arg[0]=/probe.wasm\narg[1]=args\narg[2]=z\n",
        "{}",
        stderr(&out)
    );
    d.ok(&[
        "run",
        "-d",
        "--name",
        "layer-web",
        "-p",
        "18081:8080",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasi/wasm",
        http_image,
    ]);
    assert_eq!(
        curl_in(&host, "http://127.0.0.1:18081/layer"),
        "hello from wasm at /layer\n"
    );
    d.ok(&["rm", "-f", "layer-web"]);
    host.docker.assert_clean();
}

#[test]
fn the_machines_own_docker_and_network_are_left_as_they_were() {
    let snapshot = || {
        let run = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .output()
                .map(|o| stdout(&o))
                .unwrap_or_default()
        };
        (
            run("ip", &["-o", "link", "show"])
                .lines()
                .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
                .filter(|n| !n.starts_with("veth") && !n.starts_with("wbx"))
                .collect::<Vec<_>>(),
            run("iptables-save", &[])
                .lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
                .map(str::to_string)
                .collect::<Vec<_>>(),
            std::fs::read("/etc/docker/daemon.json").ok(),
            // Top-level cgroups, but the private engines' own parents (wbx-…).
            std::fs::read_dir("/sys/fs/cgroup/memory")
                .or_else(|_| std::fs::read_dir("/sys/fs/cgroup"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("wbx-"))
                .collect::<std::collections::BTreeSet<_>>(),
        )
    };
    let before = snapshot();
    {
        let Some(host) = Host::start() else { return };
        let image = host.push("http-hello", wasmbox_tests::http_hello(), &[]);
        host.docker.ok(&[
            "run",
            "-d",
            "-p",
            "18082:8080",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasi/wasm",
            &image,
        ]);
        assert_eq!(
            curl_in(&host, "http://127.0.0.1:18082/x"),
            "hello from wasm at /x\n"
        );
        // The published port is the engine's, not the machine's.
        assert_eq!(wasmbox_tests::http_status("127.0.0.1:18082", "/"), None);
    }
    assert_eq!(
        snapshot(),
        before,
        "the machine's interfaces, iptables rules, daemon.json or cgroups changed"
    );
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

#[test]
fn the_guests_file_access_is_the_containers_user_with_its_capabilities() {
    use std::os::unix::fs::MetadataExt;
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    let data = tempfile::tempdir().unwrap();
    chmod(data.path(), 0o777);
    let secret = data.path().join("secret.txt");
    std::fs::write(&secret, "root only\n").unwrap();
    chmod(&secret, 0o600);
    let locked = data.path().join("locked.txt");
    std::fs::write(&locked, "no bits\n").unwrap();
    chmod(&locked, 0o000);
    let v = format!("{}:/data", data.path().display());

    let out = host.run(
        &["--user", "65534:65534", "-v", &v],
        &image,
        &["cat", "/data/secret.txt"],
    );
    assert_eq!(out.status.code(), Some(1), "nobody read root's 0600 file");
    assert!(
        stderr(&out).contains("cannot open /data/secret.txt: Permission denied"),
        "{}",
        stderr(&out)
    );
    let out = host.run(
        &["--user", "0:0", "-v", &v],
        &image,
        &["cat", "/data/secret.txt"],
    );
    assert_eq!(stdout(&out), "root only\n", "{}", stderr(&out));

    // Root reads a file without permission bits through CAP_DAC_OVERRIDE,
    // which Docker grants by default, and not once it is dropped.
    let out = host.run(&["-v", &v], &image, &["cat", "/data/locked.txt"]);
    assert_eq!(stdout(&out), "no bits\n", "{}", stderr(&out));
    let out = host.run(
        &["--cap-drop", "DAC_OVERRIDE", "-v", &v],
        &image,
        &["cat", "/data/locked.txt"],
    );
    assert_eq!(out.status.code(), Some(1), "read without DAC_OVERRIDE");

    // What the guest makes belongs to the container's user and group.
    let out = host.run(
        &["--user", "1234:5678", "-v", &v],
        &image,
        &["write", "/data/made.txt"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let made = std::fs::metadata(data.path().join("made.txt")).unwrap();
    assert_eq!((made.uid(), made.gid()), (1234, 5678));
    host.docker.assert_clean();
}

#[test]
fn dockers_own_files_and_tmpfs_mounts_reach_the_guest() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    // /etc/hosts is a single-file bind mount Docker makes.
    let out = host.run(
        &["--add-host", "wasm-peer:10.9.8.7"],
        &image,
        &["cat", "/etc/hosts"],
    );
    assert!(
        stdout(&out).contains("10.9.8.7\twasm-peer"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = host.run(&["--hostname", "wasmy"], &image, &["cat", "/etc/hostname"]);
    assert_eq!(stdout(&out), "wasmy\n", "{}", stderr(&out));
    // --tmpfs: writable, even under --read-only.
    let out = host.run(
        &["--read-only", "--tmpfs", "/scratch:size=1m"],
        &image,
        &["write", "/scratch/x.txt"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    host.docker.assert_clean();
}

#[test]
fn a_container_runs_the_image_it_was_created_from_when_its_tag_moves_before_docker_start() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    let id = host
        .docker
        .ok(&[
            "create",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasi/wasm",
            &image,
        ])
        .trim()
        .to_string();
    // The tag now names another module, pulled before the container starts.
    // Docker prepared the container's root filesystem (the module is in a
    // tar layer) at create; containerd's container record, made at start,
    // names the image only, so images of raw Wasm layers are not pinned
    // this way (see the README).
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.wat");
    std::fs::write(&other, wasmbox_tests::guests::HELLO_WAT).unwrap();
    assert_eq!(host.push("probe", &other, &[]), image);
    host.docker.ok(&["pull", "--platform", "wasi/wasm", &image]);
    let out = host.docker.run(&["start", "-a", &id]);
    assert_eq!(stdout(&out), "hello from probe\n", "{}", stderr(&out));
    host.docker.ok(&["rm", &id]);
    host.docker.assert_clean();
}

#[test]
fn a_linux_image_under_the_wasm_runtime_runs_with_runc_on_dockers_network_and_takes_exec() {
    let Some(host) = Host::start() else { return };
    build_busybox_image(&host, "wasmbox-test/busybox:local");
    let web = host.push("http-hello", wasmbox_tests::http_hello(), &[]);
    let d = &host.docker;
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasi/wasm",
        &web,
    ]);
    let ip = host.inspect("web", "{{.NetworkSettings.IPAddress}}");
    // A Linux program under the Wasm runtime, on Docker's bridge: it
    // reaches the Wasm server by its address, and its exit code is Docker's.
    let fetch =
        format!("until wget -q -O - http://{ip}:8080/from-linux; do sleep 0.2; done; exit 5");
    let out = d.run(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "wasmbox-test/busybox:local",
        "sh",
        "-c",
        &fetch,
    ]);
    assert_eq!(
        (stdout(&out).as_str(), out.status.code()),
        ("hello from wasm at /from-linux\n", Some(5)),
        "{}",
        stderr(&out)
    );

    d.ok(&[
        "run",
        "-d",
        "--name",
        "side",
        "--runtime",
        RUNTIME,
        "wasmbox-test/busybox:local",
        "sleep",
        "1000",
    ]);
    let exec = d.run(&["exec", "side", "sh", "-c", "echo in the sidecar; exit 4"]);
    assert_eq!(
        (stdout(&exec).as_str(), exec.status.code()),
        ("in the sidecar\n", Some(4)),
        "{}",
        stderr(&exec)
    );
    d.ok(&["rm", "-f", "side"]);
    d.ok(&["rm", "-f", "web"]);
    host.docker.assert_clean();
}

#[test]
fn a_shared_shim_group_serves_docker_containers_in_one_process_and_is_refused_on_the_bridge() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    let d = &host.docker;
    let group = [
        "--network",
        "host",
        "--annotation",
        "dev.wasmbox.shim.group=web",
    ];
    host.run_detached("shared-1", &group, &image, &["sleep"]);
    host.run_detached("shared-2", &group, &image, &["sleep"]);
    let pid = host.inspect("shared-1", "{{.State.Pid}}");
    assert_eq!(host.inspect("shared-2", "{{.State.Pid}}"), pid, "one shim");
    host.wait_for("shared-2 logs 'sleeping'", Duration::from_secs(10), || {
        stdout(&d.run(&["logs", "shared-2"])) == "sleeping\n"
    });
    let stats = d.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        "shared-2",
    ]);
    assert!(
        !stats.trim().starts_with("0B"),
        "docker stats shows no memory: {stats}"
    );
    let out = host.run(&group, &image, &["exit", "3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = host.run(&group, &image, &[]);
    assert_eq!(stdout(&out), "hello from probe\n", "{}", stderr(&out));
    assert_eq!(host.inspect("shared-1", "{{.State.Pid}}"), pid);

    // Docker's bridge moves an interface into the network namespace of
    // the task's pid: one process cannot give each container its own.
    let out = host.run(&["--annotation", "dev.wasmbox.shim.group=web"], &image, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("also asks for a network namespace of its own"),
        "{}",
        stderr(&out)
    );
    assert_no_panic(&out);

    d.ok(&["stop", "shared-1"]);
    assert_eq!(host.inspect("shared-1", "{{.State.ExitCode}}"), "143");
    assert_eq!(host.inspect("shared-2", "{{.State.Status}}"), "running");
    d.ok(&["rm", "-f", "shared-1", "shared-2"]);
    host.docker.assert_clean();
}
