//! Stopping a running guest from another thread: the shim's `kill` and
//! `wasmbox run`'s signals end a command, or a wasi:http server, through it.

use tokio::sync::watch;

/// Stops a running guest from another thread.
#[derive(Clone)]
pub struct KillSwitch(watch::Sender<Option<i32>>);

impl KillSwitch {
    pub fn new() -> (KillSwitch, watch::Receiver<Option<i32>>) {
        let (tx, rx) = watch::channel(None);
        (KillSwitch(tx), rx)
    }

    /// Ends the guest as if killed by `signal`: its exit status is 128 + signal.
    pub fn kill(&self, signal: i32) {
        let _ = self.0.send(Some(signal));
    }
}

/// Waits until the guest is killed, and returns the signal.
pub(crate) async fn wait_for_kill(kill: &mut watch::Receiver<Option<i32>>) -> i32 {
    loop {
        if let Some(signal) = *kill.borrow_and_update() {
            return signal;
        }
        if kill.changed().await.is_err() {
            // Nobody can kill us any more: wait for the guest.
            std::future::pending::<()>().await;
        }
    }
}
