//! Wasm images under a real Docker Engine (a private `dockerd` with its own
//! containerd, configured with `deploy/docker/daemon.json` as the README tells
//! users), run with `docker run --runtime io.containerd.wasmtime.v1`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wasmbox_tests::docker::{DockerEngine, RUNTIME, workspace_root};
use wasmbox_tests::{Wasmbox, probe};

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
        cmd.args(["pack", module.to_str().unwrap(), "-t", &image, "--push", "--plain-http"])
            .args(pack_args);
        self.docker.netns().enter(&mut cmd);
        let out = cmd.output().expect("run wasmbox");
        assert!(out.status.success(), "wasmbox pack --push: {}", stderr(&out));
        image
    }

    fn probe_image(&self) -> String {
        self.push("probe", probe(), &[])
    }

    /// `docker run --rm --runtime RUNTIME --platform wasi/wasm OPTS… IMAGE ARGS…`.
    fn run(&self, opts: &[&str], image: &str, args: &[&str]) -> Output {
        let mut full = vec!["run", "--rm", "--runtime", RUNTIME, "--platform", "wasi/wasm"];
        full.extend_from_slice(opts);
        full.push(image);
        full.extend_from_slice(args);
        self.docker.run(&full)
    }

    /// `docker inspect -f FORMAT ID`, trimmed.
    fn inspect(&self, id: &str, format: &str) -> String {
        self.docker
            .ok(&["inspect", "-f", format, id])
            .trim()
            .to_string()
    }

    fn wait_for(&self, what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !ready() {
            assert!(Instant::now() < deadline, "{what} within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
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
    assert!(stderr(&out).contains("cannot write /scratch.txt"), "{}", stderr(&out));

    host.docker.assert_clean();
}

#[test]
fn stdin_is_piped_with_i_and_a_terminal_is_given_with_it() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();

    let mut child = host
        .docker
        .docker()
        .args(["run", "--rm", "-i", "--runtime", RUNTIME, "--platform", "wasi/wasm"])
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
    assert_eq!(stdout(&out), "line one\nline two\n<eof>\n", "{}", stderr(&out));

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
    assert!(stdout(&out).contains("hello from probe\r\n"), "{:?}", stdout(&out));

    host.docker.assert_clean();
}

#[test]
fn detached_containers_log_stop_kill_wait_inspect_and_report_stats() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    let d = &host.docker;
    let run_d = |name: &str, mode: &str| {
        d.ok(&[
            "run", "-d", "--name", name, "--runtime", RUNTIME, "--platform", "wasi/wasm", &image,
            mode,
        ]);
    };

    run_d("sleeper", "sleep");
    host.wait_for("sleeper logs 'sleeping'", Duration::from_secs(10), || {
        stdout(&d.run(&["logs", "sleeper"])) == "sleeping\n"
    });
    assert_eq!(host.inspect("sleeper", "{{.State.Status}}"), "running");

    // `docker logs -f` follows until the container ends.
    let mut follow = d
        .docker()
        .args(["logs", "-f", "sleeper"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let stats = d.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", "sleeper"]);
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
    assert_eq!(host.inspect("sleeper", "{{.State.Status}} {{.State.ExitCode}}"), "exited 143");
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

#[test]
fn memory_flag_caps_the_guests_memory() {
    let Some(host) = Host::start() else { return };
    let image = host.probe_image();
    let out = host.run(&["--memory", "64m"], &image, &["alloc", "16"]);
    assert_eq!(stdout(&out), "allocated 16 MiB\n", "{}", stderr(&out));
    let out = host.run(&["--memory", "64m"], &image, &["alloc", "100"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("allocation of 100 MiB failed"), "{}", stderr(&out));
    assert_no_panic(&out);
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
