//! The shim as its children's reaper. Linux containers are started by
//! `runc`, whose container processes outlive it: as a child subreaper the
//! shim inherits them, and one thread collects every child's exit (runc's
//! own runs too) and hands each to whoever waits for that pid.
//!
//! One thread waits for all children, so no other code may call `wait` on
//! a child of the shim (`Command::output`, `Child::wait`): use [`wait`].
//! Each exit carries a sequence number, and a waiter takes only exits newer
//! than the [`mark`] it took before the process was started, so a pid the
//! kernel reused never delivers an older process's exit.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, OnceLock};

/// A reaped child's status as containerd reports it: its exit code, or
/// 128 + the signal that killed it.
pub type ExitCode = u32;

type Callback = Box<dyn FnOnce(ExitCode) + Send>;

#[derive(Default)]
struct Table {
    /// Every exit so far is numbered; this is the last number given.
    sequence: u64,
    /// Exits nobody waited for yet: pid → (sequence, code).
    unclaimed: HashMap<u32, (u64, ExitCode)>,
    /// Callbacks for pids not reaped yet: pid → (taken after, callback).
    watchers: HashMap<u32, (u64, Callback)>,
}

/// Bound on exits kept for nobody (processes that left the container and
/// were reparented to the shim, such as a daemon's forks).
const UNCLAIMED_KEPT: usize = 1024;

struct Reaper {
    table: Mutex<Table>,
    reaped: Condvar,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();
/// Whether [`install`] ran: the shim's `delete` action, which cleans up
/// after a dead shim, waits for its children itself.
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process reaps its children on the reaper's thread.
pub fn installed() -> bool {
    INSTALLED.load(std::sync::atomic::Ordering::Relaxed)
}

fn reaper() -> &'static Reaper {
    REAPER.get_or_init(|| Reaper {
        table: Mutex::new(Table::default()),
        reaped: Condvar::new(),
    })
}

/// Makes this process the subreaper of its descendants and starts the
/// reaping thread. Call once, before the process starts any other thread:
/// SIGCHLD is blocked here and in every thread started later, and the
/// reaping thread takes it with `sigwaitinfo`.
pub fn install() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only; it changes a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // An inherited SIG_IGN would make the kernel reap children itself, and
    // every wait here would wait for an exit that never comes.
    // SAFETY: signal(2) with a constant signal and disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let set = sigchld_set();
    // SAFETY: `set` is an initialised sigset_t; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    reaper();
    INSTALLED.store(true, std::sync::atomic::Ordering::Relaxed);
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            loop {
                // SAFETY: `set` lives on this thread's stack for the call;
                // a null siginfo pointer is allowed.
                let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
                if signal == libc::SIGCHLD {
                    reap_all();
                }
            }
        })?;
    Ok(())
}

fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset adds
    // a valid signal number to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Collects every child that has exited and delivers its exit.
fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let code = if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status) as u32
        } else {
            libc::WEXITSTATUS(status) as u32
        };
        deliver(pid as u32, code);
    }
}

fn deliver(pid: u32, code: ExitCode) {
    let r = reaper();
    let callback = {
        let mut table = r.table.lock().unwrap();
        table.sequence += 1;
        let sequence = table.sequence;
        match table.watchers.remove(&pid) {
            Some((_, callback)) => Some(callback),
            None => {
                if table.unclaimed.len() >= UNCLAIMED_KEPT
                    && let Some(oldest) = table
                        .unclaimed
                        .iter()
                        .min_by_key(|(_, (seq, _))| *seq)
                        .map(|(pid, _)| *pid)
                {
                    table.unclaimed.remove(&oldest);
                }
                table.unclaimed.insert(pid, (sequence, code));
                None
            }
        }
    };
    r.reaped.notify_all();
    if let Some(callback) = callback {
        // A callback's panic must not end the one thread that reaps.
        let run = std::panic::AssertUnwindSafe(|| callback(code));
        if std::panic::catch_unwind(run).is_err() {
            log::error!("the exit handler of pid {pid} panicked");
        }
    }
}

/// The current position in the exit sequence: take it before starting a
/// process, and pass it to [`wait`] or [`on_exit`] for that process.
pub fn mark() -> u64 {
    reaper().table.lock().unwrap().sequence
}

/// Blocks until child `pid`, started after `since`, has exited.
pub fn wait(pid: u32, since: u64) -> ExitCode {
    let r = reaper();
    let mut table = r.table.lock().unwrap();
    loop {
        if let Some(&(seq, code)) = table.unclaimed.get(&pid)
            && seq > since
        {
            table.unclaimed.remove(&pid);
            return code;
        }
        table = r.reaped.wait(table).unwrap();
    }
}

/// Runs `callback` when `pid`, started after `since`, exits: on the reaping
/// thread, so it must not block (hand longer work to a thread of its own).
/// An exit already collected runs it at once, on the caller's thread.
pub fn on_exit(pid: u32, since: u64, callback: impl FnOnce(ExitCode) + Send + 'static) {
    let r = reaper();
    let mut table = r.table.lock().unwrap();
    if let Some(&(seq, code)) = table.unclaimed.get(&pid)
        && seq > since
    {
        table.unclaimed.remove(&pid);
        drop(table);
        callback(code);
        return;
    }
    table.watchers.insert(pid, (since, Box::new(callback)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_is_delivered_once_and_only_to_waiters_from_before_it() {
        let since = mark();
        deliver(4_000_001, 3);
        assert_eq!(wait(4_000_001, since), 3);
        // A later waiter for the same pid does not get the old exit.
        let later = mark();
        let (tx, rx) = std::sync::mpsc::channel();
        on_exit(4_000_001, later, move |code| tx.send(code).unwrap());
        assert!(rx.try_recv().is_err(), "an old exit was delivered again");
        deliver(4_000_001, 137);
        assert_eq!(rx.recv().unwrap(), 137);
    }
}
