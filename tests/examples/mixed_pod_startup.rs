//! `make bench`'s mixed-pod measurement: how long the CRI takes to create
//! and start a Wasm container (CreateContainer + StartContainer, module
//! cached) in a Wasm-only pod and in a pod whose Linux sidecar runs with
//! runc, interleaved, on a private containerd with a CNI network (the CRI
//! test harness). Prints one line per case: `NAME<TAB>min / median / p90 ms<TAB>median`.
//!
//! `cargo run --release -p wasmbox-tests --example mixed_pod_startup -- [RUNS]`

use std::time::{Duration, Instant};

use wasmbox_tests::cri::CriNode;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let node = CriNode::start();
    let busybox = node.linux_image();
    let probe = node.image("probe", wasmbox_tests::probe());
    let wasm_only = node.run_pod("wasm-only").expect("RunPodSandbox");
    let mixed = node.run_pod("mixed").expect("RunPodSandbox");
    node.run_container(&mixed, "sidecar", &busybox, &["sleep", "100000"], &[])
        .expect("the Linux sidecar");
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // Run 0 warms the module cache and is not counted.
    for run in 0..=runs {
        for (case, pod) in [&wasm_only, &mixed].into_iter().enumerate() {
            let name = format!("hello-{run}");
            let started = Instant::now();
            let id = node
                .run_container(pod, &name, &probe, &["hello"], &[])
                .expect("a Wasm container");
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(node.wait_exited(&id, Duration::from_secs(30)).exit_code, 0);
            node.remove_container(&id);
            if run > 0 {
                times[case].push(ms);
            }
        }
    }
    for (name, mut t) in ["wasm-only", "mixed"].into_iter().zip(times) {
        t.sort_by(f64::total_cmp);
        let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
        println!(
            "{name}\t{:.1} / {:.1} / {:.1} ms\t{:.1}",
            t[0],
            at(0.5),
            at(0.9),
            at(0.5)
        );
    }
    node.remove_pod(&wasm_only);
    node.remove_pod(&mixed);
}
