//! Pods through containerd's CRI plugin, driven the way the kubelet drives
//! them (RunPodSandbox with `runtime_handler: "wasmtime"`, PullImage,
//! CreateContainer, StartContainer, …), with containerd configured by the
//! snippet in `deploy/containerd/` and pods on a real CNI bridge network.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wasmbox_tests::cri::{CriNode, container_config};
use wasmbox_tests::{probe, wait_until};

/// The inode of a network namespace file (`/proc/PID/ns/net`, `/var/run/netns/…`).
fn netns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .ino()
}

#[test]
fn a_wasm_container_runs_in_a_pod_with_its_output_in_the_cri_log() {
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let pod = node.run_pod("hello").expect("RunPodSandbox");
    let (ip, netns) = node.pod_network(&pod);
    assert!(
        ip.starts_with("10.2"),
        "pod IP {ip:?} is not from the CNI range"
    );

    let out = node
        .run_container(&pod, "out", &image, &["hello"], &[])
        .expect("a container");
    let status = node.wait_exited(&out, Duration::from_secs(30));
    assert_eq!(status.exit_code, 0);
    assert_eq!(status.reason, "Completed");
    assert_eq!(
        node.log_lines("hello", "out"),
        vec![("stdout".to_string(), "hello from probe".to_string())]
    );

    let err = node
        .run_container(&pod, "err", &image, &["stderr"], &[])
        .expect("a container");
    let status = node.wait_exited(&err, Duration::from_secs(30));
    assert_eq!(status.exit_code, 0);
    let lines = node.log_lines("hello", "err");
    assert!(
        !lines.is_empty() && lines.iter().all(|(stream, _)| stream == "stderr"),
        "stderr lines in the CRI log: {lines:?}"
    );

    let env = node
        .run_container(&pod, "env", &image, &["env"], &[("GREETING", "hi")])
        .expect("a container");
    node.wait_exited(&env, Duration::from_secs(30));
    let lines = node.log_lines("hello", "env");
    assert!(
        lines.iter().any(|(_, l)| l == "GREETING=hi"),
        "env from the container config: {lines:?}"
    );

    for id in [&out, &err, &env] {
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

#[test]
fn a_container_that_exits_non_zero_is_reported_as_an_error() {
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let pod = node.run_pod("fails").expect("RunPodSandbox");
    let id = node
        .run_container(&pod, "fails", &image, &["exit", "3"], &[])
        .expect("a container");
    let status = node.wait_exited(&id, Duration::from_secs(30));
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.reason, "Error");
    node.remove_container(&id);
    node.remove_pod(&pod);
    node.assert_clean(&[]);
}

#[test]
fn containers_of_a_pod_share_one_shim_in_the_pods_network_namespace() {
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let pod = node.run_pod("two").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    let a = node
        .run_container(&pod, "a", &image, &["sleep"], &[])
        .expect("container a");
    let b = node
        .run_container(&pod, "b", &image, &["sleep"], &[])
        .expect("container b");
    for id in [&a, &b] {
        let status = node.container_status(id);
        assert_eq!(
            status.state(),
            k8s_cri::v1::ContainerState::ContainerRunning,
            "container {id}"
        );
    }
    let shims = node.containerd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod, found {shims:?}");
    assert_eq!(
        netns_inode(&format!("/proc/{}/ns/net", shims[0])),
        netns_inode(&netns),
        "the shim is in the pod's network namespace {netns}"
    );

    // A second pod gets a shim of its own.
    let other = node.run_pod("other").expect("RunPodSandbox");
    assert_eq!(node.containerd.shim_pids().len(), 2);
    node.remove_pod(&other);

    for id in [&a, &b] {
        node.stop_container(id, 2).expect("StopContainer");
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

#[test]
fn stopping_a_guest_that_does_not_exit_ends_within_the_grace_period() {
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let pod = node.run_pod("stubborn").expect("RunPodSandbox");
    let ids: Vec<String> = ["sleep", "spin"]
        .iter()
        .map(|mode| {
            node.run_container(&pod, mode, &image, &[mode], &[])
                .expect("a container")
        })
        .collect();
    for id in &ids {
        let started = Instant::now();
        node.stop_container(id, 5).expect("StopContainer");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "StopContainer took {:?}",
            started.elapsed()
        );
        let status = node.container_status(id);
        assert_eq!(status.state(), k8s_cri::v1::ContainerState::ContainerExited);
        assert_ne!(status.exit_code, 0, "a stopped guest does not exit 0");
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[]);
}

#[test]
fn fifty_pods_created_and_removed_leave_nothing_behind() {
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let mut netns = Vec::new();
    for i in 0..50 {
        let name = format!("pod{i}");
        let pod = node.run_pod(&name).expect("RunPodSandbox");
        netns.push(node.pod_network(&pod).1);
        let id = node
            .run_container(&pod, "c", &image, &["hello"], &[])
            .expect("a container");
        assert_eq!(node.wait_exited(&id, Duration::from_secs(30)).exit_code, 0);
        node.remove_container(&id);
        node.remove_pod(&pod);
    }
    node.assert_clean(&netns);
}

#[test]
fn container_stats_report_memory_and_cpu_of_each_wasm_container() {
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let pod = node.run_pod("stats").expect("RunPodSandbox");
    let spin = node
        .run_container(&pod, "spin", &image, &["spin"], &[])
        .expect("a container");
    let sleep = node
        .run_container(&pod, "sleep", &image, &["sleep"], &[])
        .expect("a container");
    // Wait (under any load) until the spinning guest has used 200 ms of CPU.
    let (spin_memory, spin_cpu) = wait_until(
        Duration::from_secs(20),
        "the spinning guest using 200 ms of CPU",
        || {
            let (memory, cpu) = node.container_stats(&spin);
            if cpu > 200_000_000 {
                Ok((memory, cpu))
            } else {
                Err(format!("its CPU stays at {cpu} ns"))
            }
        },
    );
    let (sleep_memory, sleep_cpu) = node.container_stats(&sleep);
    assert!(
        spin_memory > 0 && sleep_memory > 0,
        "memory of each container"
    );
    assert!(
        sleep_cpu < spin_cpu / 4,
        "the sleeping guest's CPU ({sleep_cpu} ns) is its own, not the pod's ({spin_cpu} ns)"
    );
    for id in [&spin, &sleep] {
        node.stop_container(id, 1).expect("StopContainer");
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[]);
}

/// `curl -s URL` (inside network namespace `netns` when given): status line
/// and body.
fn curl(netns: Option<&str>, url: &str) -> (String, String) {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={ns}")).arg("curl");
            c
        }
        None => Command::new("curl"),
    };
    let out = cmd
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

#[test]
fn an_http_component_serves_at_the_pod_ip_and_finishes_requests_in_flight_on_stop() {
    wasmbox_tests::require_tool("curl");
    let node = CriNode::start();
    let image = node.image("http-hello", wasmbox_tests::http_hello());
    let pod = node.run_pod("web").expect("RunPodSandbox");
    let (ip, netns) = node.pod_network(&pod);
    let port = wasmbox_tests::free_port().to_string();
    let id = node
        .run_container(&pod, "web", &image, &[], &[("PORT", &port)])
        .expect("a container");

    let at_pod_ip = format!("{ip}:{port}");
    wait_until(
        Duration::from_secs(20),
        &format!("an answer at {at_pod_ip}"),
        || match wasmbox_tests::http_status(&at_pod_ip, "/ready") {
            Some(200) => Ok(()),
            _ => Err(format!(
                "{:?}\n{}",
                node.container_status(&id),
                node.containerd.log()
            )),
        },
    );
    assert_eq!(
        curl(None, &format!("http://{at_pod_ip}/hello?x=1")),
        (
            "200".to_string(),
            "hello from wasm at /hello?x=1\n".to_string()
        )
    );
    assert_eq!(
        curl(Some(&netns), &format!("http://127.0.0.1:{port}/inside")),
        (
            "200".to_string(),
            "hello from wasm at /inside\n".to_string()
        ),
        "the pod's own loopback reaches the guest"
    );
    assert_eq!(
        wasmbox_tests::http_status(&format!("127.0.0.1:{port}"), "/"),
        None,
        "the guest listens in the pod's network only, not the host's"
    );
    assert_eq!(
        curl(None, &format!("http://{at_pod_ip}/trap")).0,
        "500",
        "a trapping request answers 500"
    );

    // A request in flight when the kubelet stops the container finishes.
    let slow_url = format!("http://{at_pod_ip}/slow");
    let slow = std::thread::spawn(move || curl(None, &slow_url));
    std::thread::sleep(Duration::from_millis(500));
    let stopping = Instant::now();
    node.stop_container(&id, 10).expect("StopContainer");
    let stop_took = stopping.elapsed();
    assert_eq!(
        slow.join().unwrap(),
        ("200".to_string(), "hello from wasm at /slow\n".to_string()),
        "the request in flight at stop finished; containerd's log:\n{}",
        node.containerd.log()
    );
    assert!(
        stop_took >= Duration::from_secs(1) && stop_took < Duration::from_secs(9),
        "stop waited {stop_took:?} for the 2 s request, not for the grace period"
    );
    let status = node.container_status(&id);
    assert_eq!(status.exit_code, 0, "a drained server exits 0: {status:?}");
    assert!(
        wasmbox_tests::http_status(&at_pod_ip, "/").is_none(),
        "the port is closed after stop"
    );

    // A request that outlasts the grace period does not hold the stop up:
    // the kubelet's SIGKILL ends the container at the deadline.
    let port = wasmbox_tests::free_port().to_string();
    let stubborn = node
        .run_container(&pod, "stubborn", &image, &[], &[("PORT", &port)])
        .expect("a container");
    let addr = format!("{ip}:{port}");
    wait_until(
        Duration::from_secs(20),
        &format!("an answer at {addr}"),
        || match wasmbox_tests::http_status(&addr, "/ready") {
            Some(200) => Ok(()),
            other => Err(format!("status {other:?}")),
        },
    );
    let hang_url = format!("http://{addr}/hang");
    let hang = std::thread::spawn(move || curl(None, &hang_url));
    std::thread::sleep(Duration::from_millis(500));
    let stopping = Instant::now();
    node.stop_container(&stubborn, 1).expect("StopContainer");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stop with a 1 s grace period waited {:?} for a 60 s request",
        stopping.elapsed()
    );
    // 137: SIGKILL ended it at the 1 s deadline, with the request in flight.
    assert_eq!(node.container_status(&stubborn).exit_code, 137);
    assert_ne!(
        hang.join().unwrap().0,
        "200",
        "the request was cut at SIGKILL"
    );
    node.remove_container(&stubborn);

    let lines = node.log_lines("web", "web");
    for path in ["/hello?x=1", "/inside", "/slow"] {
        assert!(
            lines
                .iter()
                .any(|(stream, l)| stream == "stdout" && l == path),
            "the guest's stdout line {path} in the CRI log: {lines:?}"
        );
    }
    let log = node.containerd.log();
    assert!(
        log.contains("1 failed"),
        "the shim logs the requests served and failed: {log}"
    );

    node.remove_container(&id);
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

#[test]
fn a_guest_that_opens_files_without_end_gets_emfile_and_its_pod_shim_serves_on() {
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let pod = node.run_pod("fds").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    let hog = node
        .run_container(&pod, "hog", &image, &["openloop", "hold"], &[])
        .expect("the hog");
    // Past its limit (1024 when the spec sets none), far below the shim's
    // own, its opens fail with EMFILE; it then holds what it opened.
    let lines = wait_until(Duration::from_secs(30), "the hog's log", || {
        let lines = node.log_lines("fds", "hog");
        if lines.is_empty() {
            Err("it is empty".to_string())
        } else {
            Ok(lines)
        }
    });
    assert!(
        lines
            .iter()
            .any(|(_, l)| l.starts_with("opened 10")
                && l.ends_with(": No file descriptors available")),
        "{lines:?}"
    );

    // A sibling in the same shim is created, runs and logs.
    let sibling = node
        .run_container(&pod, "sibling", &image, &["hello"], &[])
        .expect("a sibling next to the hog");
    assert_eq!(
        node.wait_exited(&sibling, Duration::from_secs(30))
            .exit_code,
        0
    );
    assert_eq!(
        node.log_lines("fds", "sibling"),
        vec![("stdout".to_string(), "hello from probe".to_string())]
    );
    assert_eq!(node.containerd.shim_pids().len(), 1);
    for id in [&hog, &sibling] {
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

#[test]
fn a_wasm_layer_image_retagged_between_create_and_start_runs_what_the_container_was_created_from() {
    // containerd 1.6 cannot unpack images of raw Wasm layers; the private
    // Docker Engine's containerd 1.7 can.
    let Some(engine) = wasmbox_tests::docker::engine_dir() else {
        eprintln!("skipping: no containerd 1.7 (scripts/docker-engine.sh fetches it)");
        return;
    };
    // containerd 2.x, where the suite runs on it.
    let bin = wasmbox_tests::containerd::containerd_under_test().unwrap_or(engine.join("bin"));
    let node = CriNode::start_on(Some(bin));
    let artifact = ["--format", "artifact"];
    let image = node.image_packed("moving", probe(), &artifact);
    let pod = node.run_pod("pinned").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    let created = node
        .create_container(&pod, "created", &image, &["hello"], &[])
        .expect("CreateContainer");

    // The tag now names another module, pulled as a kubelet would.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.wat");
    std::fs::write(&other, wasmbox_tests::guests::HELLO_WAT).unwrap();
    assert_eq!(node.image_packed("moving", &other, &artifact), image);

    node.start_container(&created).expect("StartContainer");
    assert_eq!(
        node.wait_exited(&created, Duration::from_secs(30))
            .exit_code,
        0
    );
    assert_eq!(
        node.log_lines("pinned", "created"),
        vec![("stdout".to_string(), "hello from probe".to_string())],
        "the container runs the image it was created from"
    );

    // A container created now runs the new one.
    let later = node
        .run_container(&pod, "later", &image, &["later"], &[])
        .expect("a container of the re-tagged image");
    assert_eq!(
        node.wait_exited(&later, Duration::from_secs(30)).exit_code,
        0
    );
    assert_eq!(
        node.log_lines("pinned", "later"),
        vec![("stdout".to_string(), "hello from wasm".to_string())]
    );
    for id in [&created, &later] {
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

/// A CRI mount of host directory `host` (an `emptyDir`, as the kubelet
/// makes one) at `path`.
fn empty_dir(host: &Path, path: &str) -> k8s_cri::v1::Mount {
    k8s_cri::v1::Mount {
        container_path: path.to_string(),
        host_path: host.to_string_lossy().into_owned(),
        ..Default::default()
    }
}

#[test]
fn a_linux_init_container_fills_an_empty_dir_that_wasm_and_linux_containers_share_both_ways() {
    let node = CriNode::start();
    let busybox = node.linux_image();
    let probe_image = node.image("probe", probe());
    let pod = node.run_pod("mixed-init").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    let volume = tempfile::tempdir().unwrap();

    // The init container runs to completion first, as the kubelet runs it.
    let mut init = container_config(
        "init",
        &busybox,
        &[
            "sh",
            "-c",
            "echo from the init container > /data/greeting; hostname",
        ],
    );
    init.mounts = vec![empty_dir(volume.path(), "/data")];
    let init = node
        .run_container_with(&pod, init)
        .expect("the init container");
    let status = node.wait_exited(&init, Duration::from_secs(30));
    assert_eq!(status.exit_code, 0, "{status:?}");
    assert_eq!(
        node.log_lines("mixed-init", "init"),
        vec![("stdout".to_string(), "mixed-init".to_string())],
        "the Linux container has the pod's hostname (the pod's UTS namespace)"
    );

    // The Wasm container reads what it wrote and writes a file back.
    let mut reader = container_config("reader", &probe_image, &["cat", "/data/greeting"]);
    reader.mounts = vec![empty_dir(volume.path(), "/data")];
    let reader = node
        .run_container_with(&pod, reader)
        .expect("the reader container");
    assert_eq!(
        node.wait_exited(&reader, Duration::from_secs(30)).exit_code,
        0
    );
    assert_eq!(
        node.log_lines("mixed-init", "reader"),
        vec![("stdout".to_string(), "from the init container".to_string())]
    );
    let mut writer = container_config("writer", &probe_image, &["write", "/data/reply"]);
    writer.mounts = vec![empty_dir(volume.path(), "/data")];
    let writer = node
        .run_container_with(&pod, writer)
        .expect("the writer container");
    assert_eq!(
        node.wait_exited(&writer, Duration::from_secs(30)).exit_code,
        0
    );

    // A Linux container reads the Wasm container's file; its exit code and
    // both of its streams reach the CRI.
    let mut last = container_config(
        "last",
        &busybox,
        &["sh", "-c", "cat /data/reply; echo leaving >&2; exit 7"],
    );
    last.mounts = vec![empty_dir(volume.path(), "/data")];
    let last = node
        .run_container_with(&pod, last)
        .expect("the last container");
    let status = node.wait_exited(&last, Duration::from_secs(30));
    assert_eq!(status.exit_code, 7);
    assert_eq!(status.reason, "Error");
    // Two FIFOs, read apart: the streams' lines come in either order.
    let mut lines = node.log_lines("mixed-init", "last");
    lines.sort();
    assert_eq!(
        lines,
        vec![
            ("stderr".to_string(), "leaving".to_string()),
            ("stdout".to_string(), "written".to_string())
        ]
    );

    for id in [&init, &reader, &writer, &last] {
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

#[test]
fn a_linux_sidecar_reaches_the_wasm_http_server_over_localhost_and_takes_exec() {
    let node = CriNode::start();
    let busybox = node.linux_image();
    let hello = node.image("http-hello", wasmbox_tests::http_hello());
    let pod = node.run_pod("mesh").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    let port = wasmbox_tests::free_port().to_string();
    let web = node
        .run_container(&pod, "web", &hello, &[], &[("PORT", &port)])
        .expect("the Wasm server");
    let fetch = format!(
        "until wget -q -O - http://127.0.0.1:{port}/from-sidecar; do sleep 0.2; done; exec sleep 1000"
    );
    let sidecar = node
        .run_container(&pod, "sidecar", &busybox, &["sh", "-c", &fetch], &[])
        .expect("the Linux sidecar");
    let lines = wait_until(Duration::from_secs(30), "the sidecar's answer", || {
        let lines = node.log_lines("mesh", "sidecar");
        if lines
            .iter()
            .any(|(_, l)| l == "hello from wasm at /from-sidecar")
        {
            Ok(lines)
        } else {
            Err(format!("its log is {lines:?}"))
        }
    });
    assert!(lines.iter().all(|(s, _)| s == "stdout"), "{lines:?}");

    // kubectl exec into the sidecar: output, exit code, the pod's network.
    let (code, out, err) = node
        .exec_sync(
            &sidecar,
            &[
                "sh",
                "-c",
                &format!("wget -q -O - http://localhost:{port}/exec; echo oops >&2; exit 3"),
            ],
        )
        .expect("ExecSync");
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (3, "hello from wasm at /exec\n", "oops\n")
    );
    // A program that is not there: a clear error, and the exec ends.
    let missing = node.exec_sync(&sidecar, &["no-such-program"]);
    match &missing {
        Err(e) => assert!(e.message().contains("no-such-program"), "{}", e.message()),
        Ok((code, _, err)) => assert!(*code != 0 && err.contains("no-such-program"), "{missing:?}"),
    }
    let refused = node
        .exec_sync(&web, &["/http-hello.wasm"])
        .expect_err("exec into a Wasm container");
    assert!(
        refused
            .message()
            .contains("not supported for Wasm containers"),
        "{}",
        refused.message()
    );

    // Stats come from the sidecar's own cgroup.
    let (memory, _) = node.container_stats(&sidecar);
    assert!(memory > 0, "the sidecar's memory");

    // The kubelet's stop: each within its grace period (the sidecar's
    // shell, its pid 1, ignores SIGTERM and is killed when it ends).
    for id in [&sidecar, &web] {
        let started = Instant::now();
        node.stop_container(id, 2).expect("StopContainer");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "StopContainer took {:?}",
            started.elapsed()
        );
        assert_eq!(
            node.container_status(id).state(),
            k8s_cri::v1::ContainerState::ContainerExited
        );
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

#[test]
fn twenty_mixed_pods_created_and_removed_leave_nothing_behind() {
    let node = CriNode::start();
    let busybox = node.linux_image();
    let probe_image = node.image("probe", probe());
    let mut netns = Vec::new();
    let mut pids = Vec::new();
    let mut linux_ids = Vec::new();
    for i in 0..20 {
        let name = format!("mixed{i}");
        let pod = node.run_pod(&name).expect("RunPodSandbox");
        netns.push(node.pod_network(&pod).1);
        let wasm = node
            .run_container(&pod, "wasm", &probe_image, &["sleep"], &[])
            .expect("a Wasm container");
        let linux = node
            .run_container(&pod, "linux", &busybox, &["sleep", "1000"], &[])
            .expect("a Linux container");
        pids.push(node.container_pid(&linux));
        linux_ids.push(linux.clone());
        for id in [&linux, &wasm] {
            node.stop_container(id, 0).expect("StopContainer");
            node.remove_container(id);
        }
        node.remove_pod(&pod);
    }
    node.assert_clean(&netns);
    let alive: Vec<_> = pids
        .iter()
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(
        alive.is_empty(),
        "Linux container processes left: {alive:?}"
    );
    // runc made each one's cgroup (`/k8s.io/ID`, no pod cgroup parent here).
    let hierarchies: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .chain([std::path::PathBuf::from("/sys/fs/cgroup")])
        .collect();
    let cgroups_left: Vec<_> = hierarchies
        .iter()
        .flat_map(|h| linux_ids.iter().map(move |id| h.join("k8s.io").join(id)))
        .filter(|p| p.exists())
        .collect();
    assert!(cgroups_left.is_empty(), "cgroups left: {cgroups_left:?}");
}

#[test]
fn linux_containers_of_a_pod_sharing_its_process_namespace_see_each_other_and_not_the_node() {
    let node = CriNode::start();
    let busybox = node.linux_image();
    let pod = node.run_pod("shared-pid").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    // shareProcessNamespace: the kubelet asks for the pod's pid namespace.
    let shared = |name: &str, args: &[&str]| {
        let mut config = container_config(name, &busybox, args);
        config.linux = Some(k8s_cri::v1::LinuxContainerConfig {
            security_context: Some(k8s_cri::v1::LinuxContainerSecurityContext {
                namespace_options: Some(k8s_cri::v1::NamespaceOption {
                    pid: k8s_cri::v1::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        node.run_container_with(&pod, config)
            .expect("a container in the pod's process namespace")
    };
    let sleeper = shared("sleeper", &["sleep", "1000"]);
    let sleeper_pid = node.container_pid(&sleeper);
    let looker = shared(
        "looker",
        &[
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do cat $p/cmdline; echo; done",
        ],
    );
    assert_eq!(
        node.wait_exited(&looker, Duration::from_secs(30)).exit_code,
        0
    );
    let seen: Vec<String> = node
        .log_lines("shared-pid", "looker")
        .into_iter()
        .map(|(_, line)| line)
        .collect();
    assert!(
        seen.iter()
            .any(|l| l.replace('\0', " ").trim() == "sleep 1000"),
        "the other container's process is visible: {seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("containerd")),
        "no process of the node is visible: {seen:?}"
    );
    node.stop_container(&sleeper, 0).expect("StopContainer");
    for id in [&sleeper, &looker] {
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
    assert!(
        !Path::new(&format!("/proc/{sleeper_pid}")).exists(),
        "the sleeper is gone"
    );
    // The process that held the pod's namespace went with the pod.
    let holders = Command::new("pgrep")
        .args(["-f", "unshare --pid --kill-child -- sleep infinity"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&holders.stdout), "", "holders left");
}

#[test]
fn a_linux_container_over_its_memory_limit_is_reported_oom_killed() {
    let node = CriNode::start();
    let busybox = node.linux_image();
    let pod = node.run_pod("oom").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    // The shell doubles a string until the OOM killer ends it.
    let mut config = container_config(
        "hog",
        &busybox,
        &["sh", "-c", "a=x; while true; do a=\"$a$a\"; done"],
    );
    config.linux.as_mut().unwrap().resources = Some(k8s_cri::v1::LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let hog = node.run_container_with(&pod, config).expect("the hog");
    let status = node.wait_exited(&hog, Duration::from_secs(60));
    assert_eq!(status.exit_code, 137, "{status:?}");
    assert_eq!(status.reason, "OOMKilled", "{status:?}");
    node.remove_container(&hog);
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

#[test]
fn a_wasm_hog_at_its_limit_sees_malloc_fail_while_its_wasm_and_linux_neighbours_run_on() {
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let busybox = node.linux_image();
    let pod = node.run_pod("hogs").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    let sibling = node
        .run_container(&pod, "sibling", &image, &["sleep"], &[])
        .expect("the sleeping Wasm sibling");
    let sidecar = node
        .run_container(&pod, "sidecar", &busybox, &["sleep", "1000"], &[])
        .expect("the Linux sidecar");
    let mut config = container_config("hog", &image, &["hog"]);
    config.linux.as_mut().unwrap().resources = Some(k8s_cri::v1::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let hog = node.run_container_with(&pod, config).expect("the hog");
    let status = node.wait_exited(&hog, Duration::from_secs(60));
    // A failed allocation: the guest's own exit, not 137 and OOMKilled.
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    let log: Vec<String> = node
        .log_lines("hogs", "hog")
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    let mib = wasmbox_tests::allocated_mib(&log.join("\n"));
    assert!((32..=64).contains(&mib), "reached {mib} MiB under 64 MiB");
    for neighbour in [&sibling, &sidecar] {
        assert_eq!(
            node.container_status(neighbour).state(),
            k8s_cri::v1::ContainerState::ContainerRunning,
            "{neighbour}"
        );
    }
    for id in [&hog, &sibling, &sidecar] {
        node.stop_container(id, 2).expect("StopContainer");
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

/// The memory limit of process `pid`'s cgroup, in bytes (cgroup v1 or v2).
fn memory_limit_of(pid: u32) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let (root, path, file) = match cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
    {
        Some(path) => ("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes"),
        None => {
            let path = cgroups
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .expect("a cgroup")
                .to_string();
            ("/sys/fs/cgroup", path, "memory.max")
        }
    };
    std::fs::read_to_string(format!("{root}{path}/{file}"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_linux_containers_limits_are_set_from_its_spec_and_updated_in_place() {
    let node = CriNode::start();
    let busybox = node.linux_image();
    let pod = node.run_pod("resize").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    let limit = |bytes: i64| k8s_cri::v1::LinuxContainerResources {
        memory_limit_in_bytes: bytes,
        ..Default::default()
    };
    let mut config = container_config("sized", &busybox, &["sleep", "1000"]);
    config.linux.as_mut().unwrap().resources = Some(limit(32 << 20));
    let sized = node
        .run_container_with(&pod, config)
        .expect("the container");
    let pid = node.container_pid(&sized);
    assert_eq!(memory_limit_of(pid), (32 << 20).to_string());
    node.update_container_resources(&sized, limit(64 << 20))
        .expect("UpdateContainerResources");
    assert_eq!(memory_limit_of(pid), (64 << 20).to_string());
    node.stop_container(&sized, 0).expect("StopContainer");
    node.remove_container(&sized);
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

/// `containerd config default` of the containerd this suite runs on, as a
/// node ships it.
fn containerds_default_config() -> String {
    let containerd = wasmbox_tests::containerd::containerd_under_test()
        .map(|dir| dir.join("containerd"))
        .unwrap_or_else(|| "containerd".into());
    let out = Command::new(&containerd)
        .args(["config", "default"])
        .output()
        .expect("containerd config default");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_installers_edit_of_containerds_default_config_runs_wasm_pods() {
    let default = containerds_default_config();
    // The same config where the operator had turned on runc's systemd
    // cgroup driver: the edit must keep it as it was.
    assert!(default.contains("SystemdCgroup = false"), "{default}");
    let systemd = default.replace("SystemdCgroup = false", "SystemdCgroup = true");
    for (name, base) in [("default", default), ("systemd", systemd)] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, &base).unwrap();
        let out = Command::new(wasmbox_tests::workspace_bin("wasmbox-node-installer"))
            .args(["config", "--config", config.to_str().unwrap()])
            .output()
            .expect("wasmbox-node-installer config");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let edited = String::from_utf8(out.stdout).unwrap();
        // The operator's settings stay (on 2.x the images plugin's
        // `use_local_image_pull` is set: deploy/README.md says why).
        let kept = |text: &str| {
            text.lines()
                .filter(|l| !l.contains("use_local_image_pull"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let edited_lines = kept(&edited);
        assert_eq!(
            kept(&base),
            edited_lines[..kept(&base).len()].to_vec(),
            "{name}: the installer changed the operator's config instead of adding to it"
        );
        // Re-running it on its own output changes nothing.
        std::fs::write(&config, &edited).unwrap();
        let again = Command::new(wasmbox_tests::workspace_bin("wasmbox-node-installer"))
            .args(["config", "--config", config.to_str().unwrap(), "--check"])
            .status()
            .unwrap();
        assert_eq!(
            again.code(),
            Some(0),
            "{name}: the edited config still needs the edit"
        );

        let node = CriNode::start_from(
            wasmbox_tests::containerd::containerd_under_test(),
            Some(edited),
        );
        let image = node.image("probe", probe());
        let pod = node.run_pod(name).expect("RunPodSandbox");
        let (_, netns) = node.pod_network(&pod);
        let id = node
            .run_container(&pod, "out", &image, &["hello"], &[])
            .expect("a container");
        assert_eq!(node.wait_exited(&id, Duration::from_secs(30)).exit_code, 0);
        assert_eq!(
            node.log_lines(name, "out"),
            vec![("stdout".to_string(), "hello from probe".to_string())]
        );
        node.remove_container(&id);
        node.remove_pod(&pod);
        node.assert_clean(&[netns]);
    }
}

/// The pids of this node's shims whose command line has `what`.
fn shims_with(node: &CriNode, what: &str) -> Vec<u32> {
    node.containerd
        .shim_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(what))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn with_sandboxer_shim_a_pod_has_no_sandbox_container_and_runs_wasm_and_linux_containers() {
    use wasmbox_tests::cri::SHIM_SANDBOXER_HANDLER;
    if wasmbox_tests::containerd::major_version_of(None) < 2 {
        eprintln!("skipping: sandboxer = \"shim\" is containerd 2.x's (make test runs it on 2.1)");
        return;
    }
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let busybox = node.linux_image();
    // The kubelet names the pod's cgroup parent (cgroupfs driver here).
    let parent = format!("/wasmbox-test-sandboxer-{}", std::process::id());
    let pod = node
        .run_pod_with("sandboxed", SHIM_SANDBOXER_HANDLER, |config| {
            config.linux.as_mut().unwrap().cgroup_parent = parent.clone();
        })
        .expect("RunPodSandbox through the shim's Sandbox API");
    // The pod server holds the pod's cgroup, under that parent.
    let pod_cgroup = Path::new("/sys/fs/cgroup/memory")
        .join(parent.trim_start_matches('/'))
        .join(&pod.id);
    let members = std::fs::read_to_string(pod_cgroup.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("{}: {e}", pod_cgroup.display()));
    assert!(
        shims_with(&node, &pod.id)
            .iter()
            .any(|pid| members.lines().any(|m| m == pid.to_string())),
        "no shim of the pod in {}: {members:?}",
        pod_cgroup.display()
    );
    // No sandbox ("pause") container: containerd keeps no container for
    // the pod, only the shim's controller and its pod server run.
    let containers = node
        .containerd
        .ctr(&["-n", "k8s.io", "containers", "ls", "-q"]);
    assert!(
        !String::from_utf8_lossy(&containers.stdout).contains(&pod.id),
        "a sandbox container was made: {}",
        String::from_utf8_lossy(&containers.stdout)
    );
    let pod_shims = shims_with(&node, &pod.id);
    assert_eq!(
        pod_shims.len(),
        2,
        "the controller and the pod server: {pod_shims:?}"
    );

    let wasm = node
        .run_container(&pod, "wasm", &image, &["hello"], &[])
        .expect("a Wasm container");
    assert_eq!(
        node.wait_exited(&wasm, Duration::from_secs(30)).exit_code,
        0
    );
    assert_eq!(
        node.log_lines("sandboxed", "wasm"),
        vec![("stdout".to_string(), "hello from probe".to_string())]
    );
    // The Linux container joins the pod's UTS namespace (its hostname) and
    // network (an address of the pod's CNI range), held by the pod server.
    let linux = node
        .run_container(
            &pod,
            "linux",
            &busybox,
            &["sh", "-c", "hostname; busybox ip -4 -o addr show eth0"],
            &[],
        )
        .expect("a Linux container");
    assert_eq!(
        node.wait_exited(&linux, Duration::from_secs(30)).exit_code,
        0
    );
    let lines = node.log_lines("sandboxed", "linux");
    assert_eq!(
        lines.first().map(|l| l.1.as_str()),
        Some("sandboxed"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|(_, l)| l.contains("inet 10.2")),
        "the pod's network: {lines:?}"
    );
    // Both ran in the pod server, not in shims of their own.
    assert_eq!(shims_with(&node, &pod.id).len(), 2);

    for id in [&wasm, &linux] {
        node.remove_container(id);
    }
    node.remove_pod(&pod);
    node.assert_clean(&[]);
    let controller_state = node
        .containerd
        .state_dir()
        .join("io.containerd.sandbox.controller.v1.shim/k8s.io")
        .join(&pod.id);
    assert!(
        !controller_state.exists(),
        "{} left",
        controller_state.display()
    );
    assert!(!pod_cgroup.exists(), "{} left", pod_cgroup.display());
    // The parent is the kubelet's to remove, here the test's.
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join(parent.trim_start_matches('/')));
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/')));
}

#[test]
fn a_wasm_artifact_through_the_cri_needs_a_command_and_runs_with_one() {
    // containerd 1.6 cannot unpack images of raw Wasm layers.
    if wasmbox_tests::containerd::major_version_of(None) < 2 {
        eprintln!(
            "skipping: Wasm-layer images need containerd >= 1.7.7 (make test runs this on 2.1)"
        );
        return;
    }
    let node = CriNode::start();
    let image = node.image_packed("artifact", probe(), &["--format", "artifact"]);
    let pod = node.run_pod("artifact").expect("RunPodSandbox");
    // The CNCF artifact's config has no entrypoint for the CRI to build a
    // command from: said in one sentence, at create.
    let err = node
        .create_container(&pod, "bare", &image, &[], &[])
        .expect_err("an artifact with neither command nor args");
    assert!(
        err.message().contains("no command specified"),
        "{}",
        err.message()
    );
    // With the command a pod spec gives (`command: [/module.wasm]`), it runs.
    let mut config = container_config("with-command", &image, &["hello"]);
    config.command = vec!["/module.wasm".to_string()];
    let id = node.run_container_with(&pod, config).expect("a container");
    assert_eq!(node.wait_exited(&id, Duration::from_secs(30)).exit_code, 0);
    assert_eq!(
        node.log_lines("artifact", "with-command"),
        vec![("stdout".to_string(), "hello from probe".to_string())]
    );
    node.remove_container(&id);
    node.remove_pod(&pod);
    node.assert_clean(&[]);
}

#[test]
fn a_shim_sandboxed_pod_and_its_container_live_on_across_a_containerd_restart() {
    use k8s_cri::v1::{ContainerState, PodSandboxState};
    use wasmbox_tests::cri::SHIM_SANDBOXER_HANDLER;
    if wasmbox_tests::containerd::major_version_of(None) < 2 {
        eprintln!("skipping: sandboxer = \"shim\" is containerd 2.x's (make test runs it on 2.1)");
        return;
    }
    let mut node = CriNode::start();
    let image = node.image("probe", probe());
    let pod = node
        .run_pod_on("survivor", SHIM_SANDBOXER_HANDLER)
        .expect("RunPodSandbox");
    let sleeper = node
        .run_container(&pod, "sleeper", &image, &["sleep"], &[])
        .expect("a container");
    let shims = shims_with(&node, &pod.id);
    node.containerd.restart();
    // The CRI answers a moment after containerd's own API.
    let state = wait_until(Duration::from_secs(20), "the CRI answering again", || {
        node.pod_state(&pod).map_err(|e| e.message().to_string())
    });
    assert_eq!(state, PodSandboxState::SandboxReady);
    assert_eq!(
        node.container_status(&sleeper).state(),
        ContainerState::ContainerRunning
    );
    assert_eq!(
        shims_with(&node, &pod.id),
        shims,
        "the pod's shims are the same"
    );
    node.stop_container(&sleeper, 2).expect("StopContainer");
    node.remove_container(&sleeper);
    node.remove_pod(&pod);
    node.assert_clean(&[]);
}

#[test]
fn a_pods_shim_killed_with_sigkill_leaves_nothing_once_the_pod_is_removed() {
    // containerd 2.0 stopped running `SHIM delete` after an old-protocol
    // shim died (fixed later for shim versions up to 3): on every version
    // this suite runs on, what the dead shim mounted is gone with the pod.
    let node = CriNode::start();
    let image = node.image("probe", probe());
    let pod = node.run_pod("killed").expect("RunPodSandbox");
    let (_, netns) = node.pod_network(&pod);
    let sleeper = node
        .run_container(&pod, "sleeper", &image, &["sleep"], &[])
        .expect("a container");
    let shims = node.containerd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    // SAFETY: kill(2) of the pod's shim, a process this test's containerd started.
    assert_eq!(unsafe { libc::kill(shims[0] as i32, libc::SIGKILL) }, 0);
    let status = node.wait_exited(&sleeper, Duration::from_secs(20));
    assert_ne!(status.exit_code, 0, "a killed container reported success");
    node.remove_container(&sleeper);
    node.remove_pod(&pod);
    node.assert_clean(&[netns]);
}

#[test]
fn a_runtime_handler_with_a_shim_group_refuses_pods_in_one_sentence() {
    // A pod's containers share its pod's shim already: a handler whose
    // options set `shim_group` is the operator's mistake, said at once.
    use wasmbox_tests::cri::CONFIGURED_HANDLER;
    let node = CriNode::start();
    std::fs::write(node.shim_config(), "shim_group = \"pods\"\n").unwrap();
    let Err(err) = node.run_pod_on("grouped", CONFIGURED_HANDLER) else {
        panic!("a pod ran under a handler with shim_group");
    };
    assert!(
        err.message().contains("asks for the shared shim group \"pods\" (the runtime option shim_group), but it is part of pod"),
        "{}",
        err.message()
    );
    node.assert_clean(&[]);
}
