//! The one seam between a task's lifecycle and what it runs: the
//! [`Workload`] trait, implemented by a Wasm guest (`wasm.rs`), a Linux
//! container run by runc (`linux/`) and a pod's sandbox (`sandbox.rs`), and
//! the plain types every kind of task shares. A leaf: it imports nothing of
//! the shim, so each kind depends on it and never on the code that
//! dispatches to it.

use std::os::fd::OwnedFd;
use std::time::SystemTime;

use anyhow::Result;

use crate::cgroup::Usage;
use crate::stdio::ProcessIo;

/// Where a task or an exec'd process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

/// How a task or process ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

impl Exit {
    pub fn now(status: u32) -> Exit {
        Exit {
            status,
            at: SystemTime::now(),
        }
    }
}

/// Told, once and on any thread, the exit status of the program a
/// workload started.
pub type ExitNotice = Box<dyn FnOnce(u32) + Send>;

/// An exec'd process as containerd describes it (`ctr task exec`, `kubectl exec`).
pub struct ExecRequest<'a> {
    pub exec_id: &'a str,
    /// The runtime-spec `Process`, as JSON.
    pub process_json: &'a [u8],
    pub stdio: [&'a str; 3],
    pub terminal: bool,
}

/// A process a workload started for an exec: its pid and standard streams,
/// and how to learn of its exit. Split from starting it so that the task
/// records the pid and streams before any exit can arrive.
pub struct StartedProcess {
    pub pid: u32,
    pub io: ProcessIo,
    /// Arranges for the notice to be told the process's exit (at once if it
    /// has exited already).
    pub on_exit: Box<dyn FnOnce(ExitNotice) + Send>,
}

/// What one kind of task runs. The task (`task/mod.rs`) owns the lifecycle
/// and calls these only in the states each method names; a workload keeps
/// no status of its own.
pub trait Workload: Send + Sync {
    /// The pid containerd knows the task by: the shim's own, unless the
    /// workload is a process of its own.
    fn pid(&self) -> u32 {
        std::process::id()
    }

    /// The pids of the task's processes.
    fn pids(&self) -> Vec<u32> {
        vec![self.pid()]
    }

    /// Starts the program (the task was created). `terminal` is the slave
    /// side of the task's pseudo-terminal, when the workload took one at
    /// create. `exited` is told the exit status once the program has ended.
    fn start(&self, terminal: Option<OwnedFd>, exited: ExitNotice) -> Result<()>;

    /// Whether `signal` changes nothing for this program (a Wasm guest cannot
    /// handle signals, and ignores those Linux ignores by default).
    fn ignores(&self, _signal: u32) -> bool {
        false
    }

    /// Delivers `signal` to the running program (every process with `all`);
    /// false when it had already ended.
    fn kill(&self, signal: u32, all: bool) -> Result<bool>;

    /// A task killed before it started: whatever waits for `start` goes.
    fn kill_unstarted(&self, _signal: u32, _all: bool) {}

    /// What the task uses (`running`: whether its program runs now).
    fn usage(&self, running: bool) -> Usage;

    /// New resource limits (JSON runtime-spec `LinuxResources`). A Wasm
    /// guest's limits are fixed at create, so by default nothing changes.
    fn update(&self, _resources: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Calls `on_oom` whenever the kernel's OOM killer acts in the task's
    /// own cgroup; workloads whose limits the shim enforces itself have none.
    fn watch_oom(&self, _on_oom: Box<dyn Fn() + Send>) -> Result<()> {
        Ok(())
    }

    /// Whether processes can be exec'd into the task.
    fn accepts_exec(&self) -> bool {
        false
    }

    /// Checks an exec's process spec when it is added.
    fn check_exec(&self, _exec: &ExecRequest) -> Result<()> {
        anyhow::bail!("exec is not supported")
    }

    /// Starts an exec'd process (only when [`Workload::accepts_exec`]).
    fn start_exec(&self, _exec: &ExecRequest) -> Result<StartedProcess> {
        anyhow::bail!("exec is not supported")
    }

    /// Removes what the workload kept for an exec that is forgotten.
    fn forget_exec(&self, _exec_id: &str) {}

    /// Releases everything the workload holds on the node (cgroup, mounts,
    /// runc's state). Called once, at delete, when the program is not running.
    fn cleanup(&self) -> Result<()>;

    /// Whether [`Workload::cleanup`] of a task that never started ends a
    /// process waiting for `start` (then waiters learn a SIGKILL exit).
    fn cleanup_kills_unstarted(&self) -> bool {
        false
    }
}

/// Signals whose default action on Linux is to ignore them (a terminal
/// resize, a child's exit, urgent socket data, continue): delivered to a
/// program that cannot handle signals, they change nothing.
pub fn ignored_by_default(signal: u32) -> bool {
    [libc::SIGCHLD, libc::SIGCONT, libc::SIGURG, libc::SIGWINCH]
        .iter()
        .any(|&s| s as u32 == signal)
}
