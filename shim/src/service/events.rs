//! The events a task's life sends to containerd, and the order they go in.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::ttrpc;
use containerd_shim::publisher::RemotePublisher;

/// Where the service sends events (containerd's event service; a recorder
/// in the service's tests).
pub trait Publish: Send + Sync {
    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>);
}

/// containerd's event service, connected for each event: a standing ttrpc
/// 0.10 client polls its socket every 10 ms, which cost every idle shim 100
/// wake-ups a second. A container has a handful of events in its life.
pub struct Events {
    address: String,
    namespace: String,
}

impl Events {
    pub fn new(address: String, namespace: String) -> Events {
        Events { address, namespace }
    }
}

impl Publish for Events {
    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let published = RemotePublisher::new(&self.address).and_then(|publisher| {
            publisher.publish(
                ttrpc::context::Context::default(),
                topic,
                &self.namespace,
                event,
            )
        });
        if let Err(e) = published {
            log::warn!("publishing {topic} to {}: {e}", self.address);
        }
    }
}

/// Holds a process's exit event back until its start event is out: a
/// program that ends at once must not be reported stopped before started
/// (containerd's runc shim holds exits back the same way).
#[derive(Clone)]
pub struct StartGate(Arc<(Mutex<bool>, Condvar)>);

impl StartGate {
    pub fn new() -> StartGate {
        StartGate(Arc::new((Mutex::new(false), Condvar::new())))
    }

    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    /// Waits until the gate is open (bounded: a start that never returns
    /// must not hold an exit forever).
    pub fn wait(&self) {
        let open = self.0.0.lock().unwrap();
        let _ = self
            .0
            .1
            .wait_timeout_while(open, Duration::from_secs(5), |open| !*open);
    }
}

impl Default for StartGate {
    fn default() -> Self {
        StartGate::new()
    }
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}
