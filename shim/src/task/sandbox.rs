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
    /// With no program to report it, the exit notice `start` gives is kept
    /// until a kill takes it.
    exited: Mutex<Option<ExitNotice>>,
    /// The pod's cgroup, which the shim joined (the pod's accounting: the
    /// pod's containers share this process).
    cgroup: Mutex<Option<Membership>>,
    namespaces: Arc<Namespaces>,
    /// Nothing is mounted; kept so that cleanup is the same for every task.
    mounts: Mutex<ContainerMounts>,
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
            exited: Mutex::new(None),
            cgroup: Mutex::new(cgroup),
            namespaces,
            mounts: Mutex::new(ContainerMounts::none(bundle)),
        }
    }
}

impl Workload for Sandbox {
    fn start(&self, _terminal: Option<OwnedFd>, exited: ExitNotice) -> Result<()> {
        *self.exited.lock().unwrap() = Some(exited);
        Ok(())
    }

    fn ignores(&self, signal: u32) -> bool {
        ignored_by_default(signal)
    }

    /// Stops at once, whatever the signal, and with it the pod's process
    /// namespace, if one was made.
    fn kill(&self, signal: u32, _all: bool) -> Result<bool> {
        let Some(exited) = self.exited.lock().unwrap().take() else {
            return Ok(false);
        };
        self.namespaces.end_pod_pid_namespace();
        // On a thread of its own: the kill's answer goes out first.
        // containerd answers the exit event with Delete and Shutdown, and a
        // shim that ended before answering would fail the kill ("ttrpc: closed").
        let spawned = std::thread::Builder::new()
            .name("sandbox-exit".into())
            .spawn(move || exited(128 + signal));
        if let Err(e) = spawned {
            log::error!("reporting the sandbox's exit: {e}");
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
            cgroup.leave()?;
        }
        self.mounts.lock().unwrap().unmount()
    }
}
