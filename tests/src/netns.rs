//! Private network namespaces (`ip netns add`) for daemons that must not touch
//! the machine's own network: a private Docker Engine makes bridges and
//! iptables rules, and those stay inside its namespace.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A named network namespace with its loopback up; deleted on drop.
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// `ip netns add wbx-PID-N` and `ip link set lo up` inside it.
    pub fn create() -> NetNs {
        crate::require_tool("ip");
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "wbx-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        let netns = NetNs {
            path: Path::new("/run/netns").join(&name),
            name,
        };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    /// The name `ip netns` knows it by (unique per test process).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, what `nsenter --net=` takes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `cmd` start inside this namespace (its mounts stay the host's,
    /// unlike `ip netns exec`, which would hide the cgroup mounts under /sys).
    pub fn enter(&self, cmd: &mut Command) {
        let ns: OwnedFd = File::open(&self.path)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path.display()))
            .into();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setns(2), which is async-signal-safe; `ns` is an open
        // descriptor owned by the closure, so it is valid in the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Runs `f` on a thread that has joined this namespace (for connecting
    /// to a server inside it from the test process itself).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = File::open(&self.path).expect("open the netns");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns(2) on an open namespace descriptor; it
                    // changes only this scoped thread, which ends with `f`.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("netns thread")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
