//! A pod's sandbox ("pause") container, held by the shim itself: it runs
//! no program (there is no pause process; the shim keeps the pod's
//! namespaces, see `pod::namespaces`) and holds the pod until it is killed.
//! Its stop path is its own: any signal that Linux does not ignore ends it at
//! once, and with it the pod's process namespace.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use oci_spec::runtime::Spec;

use super::workload::{ExitNotice, Workload, ignored_by_default};
use crate::cgroup::{Membership, Usage};
use crate::mounts::ContainerMounts;
use crate::pod::namespaces::Namespaces;

pub struct Sandbox {
    held: Mutex<Held>,
    /// The pod's cgroup, which the shim joined (the pod's accounting: the
    /// pod's containers share this process).
    cgroup: Mutex<Option<Membership>>,
    namespaces: Arc<Namespaces>,
    /// Nothing is mounted; kept so that cleanup is the same for every task.
    mounts: Mutex<ContainerMounts>,
}

/// With no program to report it, the exit notice `start` gives is kept
/// until a kill takes it; a kill that comes while `start` is under way is
/// kept until the notice is there.
#[derive(Default)]
struct Held {
    exited: Option<ExitNotice>,
    killed_by: Option<u32>,
}

impl Sandbox {
    /// The sandbox of `spec`. A cgroup the shim cannot join is logged and
    /// skipped, as the pod still runs without it.
    pub fn create(
        id: &str,
        spec: &Spec,
        namespaces: Arc<Namespaces>,
        bundle: &std::path::Path,
    ) -> Sandbox {
        let cgroup = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .and_then(|p| {
                let limits = crate::cgroup::Limits::from_spec(spec);
                match crate::cgroup::join(&p.to_string_lossy(), limits) {
                    Ok(membership) => membership,
                    Err(e) => {
                        log::warn!(id; "not joining the pod's cgroup: {e:#}");
                        None
                    }
                }
            });
        log::info!(id; "pod sandbox");
        Sandbox {
            held: Mutex::new(Held::default()),
            cgroup: Mutex::new(cgroup),
            namespaces,
            mounts: Mutex::new(ContainerMounts::none(bundle)),
        }
    }
}

impl Sandbox {
    /// Ends the pod's process namespace, then the sandbox, on a thread of
    /// its own: the kill's answer goes out first. containerd answers the exit
    /// event with Delete and Shutdown, and a shim that ended before
    /// answering would fail the kill ("ttrpc: closed").
    fn stop(&self, exited: ExitNotice, signal: u32) {
        self.namespaces.end_pod_pid_namespace();
        let notice = Arc::new(Mutex::new(Some(exited)));
        let on_thread = notice.clone();
        let spawned = std::thread::Builder::new()
            .name("sandbox-exit".into())
            .spawn(move || {
                if let Some(exited) = on_thread.lock().unwrap().take() {
                    exited(128 + signal);
                }
            });
        if let Err(e) = spawned {
            // Stopped all the same, here: a sandbox that stays running
            // could never be deleted.
            log::error!("reporting the sandbox's exit on a thread of its own: {e}");
            if let Some(exited) = notice.lock().unwrap().take() {
                exited(128 + signal);
            }
        }
    }
}

impl Workload for Sandbox {
    fn start(&self, _terminal: Option<OwnedFd>, exited: ExitNotice) -> Result<()> {
        let mut held = self.held.lock().unwrap();
        match held.killed_by {
            Some(signal) => {
                drop(held);
                self.stop(exited, signal);
            }
            None => held.exited = Some(exited),
        }
        Ok(())
    }

    fn ignores(&self, signal: u32) -> bool {
        ignored_by_default(signal)
    }

    /// Stops at once, whatever the signal, and with it the pod's process
    /// namespace, if one was made.
    fn kill(&self, signal: u32, _all: bool) -> Result<bool> {
        let mut held = self.held.lock().unwrap();
        if held.killed_by.is_some() {
            return Ok(false);
        }
        held.killed_by = Some(signal);
        if let Some(exited) = held.exited.take() {
            drop(held);
            self.stop(exited, signal);
        }
        Ok(true)
    }

    fn usage(&self, _running: bool) -> Usage {
        if let Some(cgroup) = self.cgroup.lock().unwrap().as_ref() {
            return cgroup.usage();
        }
        Usage {
            unified: crate::cgroup::unified(),
            ..Default::default()
        }
    }

    fn cleanup(&self) -> Result<()> {
        if let Some(cgroup) = self.cgroup.lock().unwrap().take() {
            cgroup.leave_at_exit();
        }
        self.mounts.lock().unwrap().unmount()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn sandbox() -> (Sandbox, tempfile::TempDir) {
        let bundle = tempfile::tempdir().unwrap();
        let sandbox = Sandbox {
            held: Mutex::new(Held::default()),
            cgroup: Mutex::new(None),
            namespaces: Arc::new(Namespaces::default()),
            mounts: Mutex::new(ContainerMounts::none(bundle.path())),
        };
        (sandbox, bundle)
    }

    fn notice() -> (ExitNotice, mpsc::Receiver<u32>) {
        let (tx, rx) = mpsc::channel();
        (Box::new(move |code| tx.send(code).unwrap()), rx)
    }

    #[test]
    fn a_started_sandbox_stops_at_the_first_signal_only() {
        let (sandbox, _bundle) = sandbox();
        let (exited, rx) = notice();
        sandbox.start(None, exited).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(20)).is_err(),
            "it holds"
        );
        assert!(sandbox.kill(15, false).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 143);
        assert!(!sandbox.kill(9, false).unwrap(), "stopped already");
        assert!(sandbox.ignores(libc::SIGWINCH as u32));
    }

    #[test]
    fn a_kill_that_comes_while_it_starts_is_not_lost() {
        let (sandbox, _bundle) = sandbox();
        // The task is running (its lifecycle moved first) but the workload's
        // start has not stored the notice yet.
        assert!(sandbox.kill(9, false).unwrap());
        let (exited, rx) = notice();
        sandbox.start(None, exited).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 137);
    }
}
