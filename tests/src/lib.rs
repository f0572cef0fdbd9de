//! The test harness: starts real parts (the CNCF distribution registry,
//! containerd, Docker, containerd's CRI) in temp dirs on loopback, and runs
//! the freshly built binaries against them. Everything started here stops
//! and is cleaned up on `Drop`. One file per part: [`registry`] (and its
//! [`token_server`]), [`containerd`] (and [`containerd_api`]), [`cri`],
//! [`docker`], [`netns`], [`cli`] (the `wasmbox` CLI), [`guests`] and
//! [`linux_image`] (a native busybox image for mixed pods).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod cli;
pub mod containerd;
pub mod containerd_api;
pub mod cri;
pub mod docker;
pub mod guests;
pub mod linux_image;
pub mod netns;
pub mod registry;
pub mod signing;
pub mod token_server;

pub use cli::Wasmbox;
pub use containerd::{Containerd, ContainerdOptions};
pub use guests::{
    allocated_mib, compile_c, component_from_wat, http_hello, lookup_component, probe,
    probe_component, sockets_component,
};
pub use registry::{Registry, RegistryAuth, openssl};
pub use token_server::TokenServer;

/// Fails the test with an install hint when a system tool is missing: tests
/// never skip silently, because a skipped check proves nothing in CI.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed; run `make deps` (it installs the Debian packages the tests use)"
    );
}

/// Path of a binary built from this workspace (`target/<profile>/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("target directory");
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// Starts a daemon with stdin closed and stdout+stderr going to `log`.
pub(crate) fn spawn_logged(mut cmd: Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("create the daemon log");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup the log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// SIGTERM to a daemon we started, then SIGKILL if it has not exited within
/// `grace`; reaps it either way.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    // SAFETY: `kill(2)` on the pid of a child we spawned and have not yet
    // reaped; the pid cannot have been reused before our `wait` below.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The status code of a plain-HTTP GET, or None when nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Polls `check` every 50 ms until it gives `Ok`, and returns that. After
/// `within`, fails the test saying what was awaited and the last `Err`
/// (what the state was instead).
pub fn wait_until<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
