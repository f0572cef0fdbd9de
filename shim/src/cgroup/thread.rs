//! A shared shim's guest in its container's cgroup as a thread (`shared.rs`):
//! cgroup v1's cpu, cpuacct, pids and blkio hierarchies take single
//! threads, so the guest's CPU time is the kernel's count in its own
//! container's cgroup, and its CPU quota the kernel's to enforce. Memory is
//! charged per process, never per thread: the engine meters and limits it.
//! On cgroup v2 a thread moves only inside its process's threaded subtree,
//! so there nothing is placed (and a CPU quota was refused at `start`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::path::{cgroupfs_path, current_path};
use super::{Limits, remove_dirs, v1_hierarchies};

/// The v1 hierarchies that account and limit one thread.
const THREAD_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "pids", "blkio"];

/// Moves the calling thread into the shim process's own cgroup in each
/// thread hierarchy (`0` into `tasks`, which takes no global lock). For the
/// helper threads a guest's thread starts (`wasmbox_engine::on_io_thread_start`);
/// a thread that cannot move stays, and is moved at the container's delete.
pub fn move_current_thread_home() {
    for (controller, root) in v1_hierarchies(&THREAD_CONTROLLERS) {
        if let Ok(home) = current_path(controller) {
            let _ = std::fs::write(root.join(home.trim_start_matches('/')).join("tasks"), "0");
        }
    }
}

/// A container's cgroup, made for its guest thread.
#[derive(Debug)]
pub struct ThreadCgroup {
    /// Its directory in each hierarchy.
    dirs: Vec<PathBuf>,
    /// The ones made here, removed at [`ThreadCgroup::remove`].
    created: Vec<PathBuf>,
    /// The shim process's own cgroup in each hierarchy (as `dirs`), where
    /// a thread still in the container's is moved back at removal.
    home: Vec<PathBuf>,
}

impl ThreadCgroup {
    /// Makes the cgroup at `cgroups_path` in each thread hierarchy, with
    /// `limits` (those of them a thread's hierarchy holds). `None` on
    /// cgroup v2 or for a relative path. On error nothing made stays.
    pub fn make(cgroups_path: &str, limits: Limits) -> Result<Option<ThreadCgroup>> {
        if super::unified() {
            return Ok(None);
        }
        let Some(absolute) = cgroupfs_path(cgroups_path)? else {
            return Ok(None);
        };
        let relative = absolute.trim_start_matches('/');
        let mut cgroup = ThreadCgroup {
            dirs: Vec::new(),
            created: Vec::new(),
            home: Vec::new(),
        };
        let files = limits.files(false);
        for (controller, root) in v1_hierarchies(&THREAD_CONTROLLERS) {
            let home = current_path(controller).map(|p| root.join(p.trim_start_matches('/')));
            if let Err(e) = home.and_then(|home| {
                cgroup.home.push(home);
                cgroup.make_one(&root.join(relative), &files)
            }) {
                let _ = cgroup.remove();
                return Err(e);
            }
        }
        Ok(Some(cgroup))
    }

    fn make_one(&mut self, dir: &Path, files: &[(&'static str, String)]) -> Result<()> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the cgroup {}", dir.display()))?;
            self.created.push(dir.to_path_buf());
        }
        self.dirs.push(dir.to_path_buf());
        for (file, value) in files {
            let path = dir.join(file);
            if path.exists() {
                std::fs::write(&path, value).with_context(|| {
                    format!("setting {file} to {value} in the cgroup {}", dir.display())
                })?;
            }
        }
        Ok(())
    }

    /// Moves the calling thread (only it, and the threads it starts later)
    /// into the cgroup.
    /// It writes `0` (the writing thread) rather than its thread id: the
    /// kernel then skips its global threadgroup lock, whose RCU grace period
    /// (about 9 ms here) would otherwise come before every guest's start.
    pub fn enter_current_thread(&self) -> Result<()> {
        for dir in &self.dirs {
            std::fs::write(dir.join("tasks"), "0")
                .with_context(|| format!("moving the guest's thread into {}", dir.display()))?;
        }
        Ok(())
    }

    /// Moves the calling thread back to the shim's own cgroup, as
    /// [`ThreadCgroup::enter_current_thread`] moved it in.
    pub fn leave_current_thread(&self) -> Result<()> {
        for home in &self.home {
            std::fs::write(home.join("tasks"), "0")
                .with_context(|| format!("moving the guest's thread back to {}", home.display()))?;
        }
        Ok(())
    }

    /// The CPU time the kernel counted for the cgroup's threads.
    pub fn cpu_nanos(&self) -> u64 {
        self.dirs
            .iter()
            .map(|dir| dir.join("cpuacct.usage"))
            .find(|p| p.exists())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Removes what [`ThreadCgroup::make`] made. A thread still in it (the
    /// guest's, finishing after it reported the exit, or one it started
    /// that outlives it) goes back to the shim's own cgroup first.
    pub fn remove(&self) -> Result<()> {
        remove_dirs(&self.created, || {
            for (dir, home) in self.dirs.iter().zip(&self.home) {
                let Ok(tasks) = std::fs::read_to_string(dir.join("tasks")) else {
                    continue;
                };
                for tid in tasks.split_whitespace() {
                    // A thread that ended meanwhile is not an error.
                    let _ = std::fs::write(home.join("tasks"), tid);
                }
            }
            Ok(())
        })
    }
}
