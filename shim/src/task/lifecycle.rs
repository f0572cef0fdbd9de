//! The one state machine of every task and every exec'd process:
//! created → running → stopped (→ deleted, which is the registry's).
//!
//! Its rules, written once:
//! - `start` only from created; a start that fails leaves it created.
//! - The first exit wins; later ones are ignored.
//! - An exit is recorded, then waiters wake, then it is reported (the exit
//!   event), then it counts as reported: a task's init waits for its execs
//!   to be *reported*, so their exit events always go out before the init's
//!   (containerd's runc shim keeps the same order with a counter).
//! - A task or process stopped before it started (killed, deleted) ends with
//!   the status given and has nothing to report.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::workload::{Exit, Status};

#[derive(Debug)]
struct State {
    status: Status,
    exit: Option<Exit>,
    /// The exit was reported (or there was nothing to report).
    reported: bool,
}

/// One task's or process's place in its life, and its waiters.
#[derive(Debug)]
pub struct Lifecycle {
    state: Mutex<State>,
    changed: Condvar,
}

/// Why a start was refused.
#[derive(Debug, thiserror::Error)]
#[error("it was already started")]
pub struct AlreadyStarted;

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            state: Mutex::new(State {
                status: Status::Created,
                exit: None,
                reported: false,
            }),
            changed: Condvar::new(),
        }
    }
}

impl Lifecycle {
    pub fn status(&self) -> (Status, Option<Exit>) {
        let state = self.state.lock().unwrap();
        (state.status, state.exit.clone())
    }

    /// Created → running; any other state refuses. Call
    /// [`Lifecycle::start_failed`] if the program could not be started.
    pub fn begin_start(&self) -> Result<(), AlreadyStarted> {
        let mut state = self.state.lock().unwrap();
        if state.status != Status::Created {
            return Err(AlreadyStarted);
        }
        state.status = Status::Running;
        Ok(())
    }

    /// The program did not start: back to created (unless an exit came
    /// first), so the caller may delete it or stop it.
    pub fn start_failed(&self) {
        let mut state = self.state.lock().unwrap();
        if state.status == Status::Running && state.exit.is_none() {
            state.status = Status::Created;
        }
    }

    /// The program ended with `code`: stopped, waiters woken, then
    /// `report` runs (unless an exit was recorded before: the first wins).
    pub fn finish(&self, code: u32, report: impl FnOnce(&Exit)) {
        let exit = {
            let mut state = self.state.lock().unwrap();
            if state.exit.is_some() {
                return;
            }
            let exit = Exit::now(code);
            state.status = Status::Stopped;
            state.exit = Some(exit.clone());
            exit
        };
        self.changed.notify_all();
        report(&exit);
        self.state.lock().unwrap().reported = true;
        self.changed.notify_all();
    }

    /// A task or process that never started stops as if ended with `code`;
    /// false (and nothing changes) when it had started.
    pub fn stop_unstarted(&self, code: u32) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.status != Status::Created {
            return false;
        }
        state.status = Status::Stopped;
        state.exit = Some(Exit::now(code));
        state.reported = true;
        drop(state);
        self.changed.notify_all();
        true
    }

    /// Blocks until stopped.
    pub fn wait(&self) -> Exit {
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(exit) = &state.exit {
                return exit.clone();
            }
            state = self.changed.wait(state).unwrap();
        }
    }

    /// Waits until a started program's exit was reported, or `deadline`;
    /// returns at once for one that never started.
    pub fn wait_reported(&self, deadline: Instant) -> bool {
        let mut state = self.state.lock().unwrap();
        loop {
            if state.status == Status::Created || state.reported {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits up to `timeout` for the exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(exit) = &state.exit {
                return Some(exit.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_task_starts_once_and_a_failed_start_leaves_it_created() {
        let life = Lifecycle::default();
        assert_eq!(life.status().0, Status::Created);
        life.begin_start().unwrap();
        assert_eq!(life.status().0, Status::Running);
        assert!(life.begin_start().is_err(), "a second start is refused");
        life.start_failed();
        assert_eq!(life.status().0, Status::Created);
        life.begin_start().unwrap();
        life.finish(3, |_| {});
        assert!(
            life.begin_start().is_err(),
            "a stopped task does not start again"
        );
        let (status, exit) = life.status();
        assert_eq!(status, Status::Stopped);
        assert_eq!(exit.unwrap().status, 3);
    }

    #[test]
    fn the_first_exit_wins_and_is_reported_once() {
        let life = Lifecycle::default();
        life.begin_start().unwrap();
        let mut reports = Vec::new();
        life.finish(0, |e| reports.push(e.status));
        life.finish(137, |e| reports.push(e.status));
        assert_eq!(reports, [0]);
        assert_eq!(life.wait().status, 0);
        assert!(
            !life.stop_unstarted(9),
            "a stopped task is not stopped again"
        );
    }

    #[test]
    fn a_failed_start_after_the_exit_keeps_the_exit() {
        let life = Lifecycle::default();
        life.begin_start().unwrap();
        life.finish(1, |_| {});
        life.start_failed();
        assert_eq!(life.status().0, Status::Stopped);
    }

    #[test]
    fn wait_before_the_exit_blocks_until_it_and_wait_after_returns_at_once() {
        let life = Arc::new(Lifecycle::default());
        life.begin_start().unwrap();
        assert!(life.wait_timeout(Duration::from_millis(20)).is_none());
        let waiter = {
            let life = life.clone();
            std::thread::spawn(move || life.wait().status)
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "wait returned before the exit");
        life.finish(42, |_| {});
        assert_eq!(waiter.join().unwrap(), 42);
        assert_eq!(life.wait().status, 42, "wait after the exit");
    }

    #[test]
    fn killing_an_unstarted_task_stops_it_and_wakes_waiters() {
        let life = Arc::new(Lifecycle::default());
        let waiter = {
            let life = life.clone();
            std::thread::spawn(move || life.wait().status)
        };
        assert!(life.stop_unstarted(128 + 15));
        assert_eq!(waiter.join().unwrap(), 143);
        assert!(life.begin_start().is_err(), "a stopped task cannot start");
        assert!(life.wait_reported(Instant::now()), "nothing to report");
    }

    #[test]
    fn waiters_wake_before_the_report_and_reported_comes_after_it() {
        let life = Arc::new(Lifecycle::default());
        life.begin_start().unwrap();
        assert!(!life.wait_reported(Instant::now() + Duration::from_millis(10)));
        let seen_in_report = {
            let life2 = life.clone();
            let mut seen = None;
            life.finish(5, |_| {
                // Inside the report: stopped already, not yet reported.
                seen = Some((
                    life2.status().0,
                    life2.wait_reported(Instant::now() + Duration::from_millis(10)),
                ));
            });
            seen.unwrap()
        };
        assert_eq!(seen_in_report, (Status::Stopped, false));
        assert!(life.wait_reported(Instant::now()));
    }

    #[test]
    fn an_unstarted_process_counts_as_reported() {
        let life = Lifecycle::default();
        assert!(life.wait_reported(Instant::now()));
    }
}
