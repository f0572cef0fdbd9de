//! The service against a fake workload: routing, registry and error codes,
//! and the order of events, with no ttrpc, containerd or Wasm. Over 400
//! lines: one test per rule of the service, each short, on one fake.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use containerd_shim::api;
use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::Code;

use super::*;
use crate::cgroup::Usage;
use crate::error::InvalidSpec;
use crate::stdio::ProcessIo;
use crate::task::workload::{ExecRequest, ExitNotice, StartedProcess, Workload};

/// What a test sees of and does to one fake task.
#[derive(Default)]
struct Controls {
    /// The exit notice of the started program, until the test ends it.
    exited: Mutex<Option<ExitNotice>>,
    /// Exit notices of started execs, by exec id.
    exec_exited: Mutex<HashMap<String, ExitNotice>>,
    signals: Mutex<Vec<u32>>,
    cleaned: AtomicBool,
    fail_start: AtomicBool,
}

impl Controls {
    /// Ends the program with `code`, as its thread would.
    fn exit(&self, code: u32) {
        let exited = self
            .exited
            .lock()
            .unwrap()
            .take()
            .expect("the program runs");
        std::thread::spawn(move || exited(code));
    }

    fn exit_exec(&self, exec_id: &str, code: u32) {
        let exited = self
            .exec_exited
            .lock()
            .unwrap()
            .remove(exec_id)
            .expect("the exec runs");
        exited(code);
    }
}

struct FakeWorkload {
    controls: Arc<Controls>,
    takes_exec: bool,
    /// Ends at once, before its start has returned.
    quick: bool,
    /// Its cleanup kills a program that never started (as runc's delete does).
    kills_unstarted: bool,
    next_pid: AtomicU32,
}

impl Workload for FakeWorkload {
    fn pid(&self) -> u32 {
        4000
    }

    fn start(&self, _terminal: Option<OwnedFd>, exited: ExitNotice) -> anyhow::Result<()> {
        if self.controls.fail_start.load(Ordering::SeqCst) {
            anyhow::bail!("the program cannot start");
        }
        if self.quick {
            std::thread::spawn(move || exited(0));
            std::thread::sleep(Duration::from_millis(30));
            return Ok(());
        }
        *self.controls.exited.lock().unwrap() = Some(exited);
        Ok(())
    }

    fn kill(&self, signal: u32, _all: bool) -> anyhow::Result<bool> {
        self.controls.signals.lock().unwrap().push(signal);
        Ok(true)
    }

    fn usage(&self, running: bool) -> Usage {
        Usage {
            pids: u64::from(running),
            ..Default::default()
        }
    }

    fn accepts_exec(&self) -> bool {
        self.takes_exec
    }

    fn check_exec(&self, exec: &ExecRequest) -> anyhow::Result<()> {
        if exec.process_json.is_empty() {
            return Err(InvalidSpec(anyhow::anyhow!("the exec process spec is empty")).into());
        }
        Ok(())
    }

    fn start_exec(&self, exec: &ExecRequest) -> anyhow::Result<StartedProcess> {
        let controls = self.controls.clone();
        let exec_id = exec.exec_id.to_string();
        Ok(StartedProcess {
            pid: self.next_pid.fetch_add(1, Ordering::SeqCst),
            io: ProcessIo::default(),
            on_exit: Box::new(move |exited| {
                controls.exec_exited.lock().unwrap().insert(exec_id, exited);
            }),
        })
    }

    fn cleanup(&self) -> anyhow::Result<()> {
        self.controls.cleaned.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn cleanup_kills_unstarted(&self) -> bool {
        self.kills_unstarted
    }
}

/// Makes fake tasks: ids starting `wasm` take no execs, `quick` end as
/// they start, `runc` are killed by their cleanup, `panic` panic in create,
/// `bad` is a wrong
/// spec, `broken` a failure on the node; with `slow`, every create takes
/// a while (so that concurrent creates overlap).
#[derive(Default)]
struct FakeFactory {
    tasks: Arc<Mutex<HashMap<String, Arc<Controls>>>>,
    made: Arc<AtomicU32>,
    slow: bool,
}

impl Factory for FakeFactory {
    fn create(&self, request: &CreateRequest) -> anyhow::Result<Task> {
        if self.slow {
            std::thread::sleep(Duration::from_millis(20));
        }
        if request.id.starts_with("bad") {
            return Err(InvalidSpec(anyhow::anyhow!("annotation x=y: expected ro or rw")).into());
        }
        if request.id.starts_with("panic") {
            panic!("a bug in create");
        }
        if request.id.starts_with("broken") {
            anyhow::bail!("the image has no module");
        }
        self.made.fetch_add(1, Ordering::SeqCst);
        let controls = Arc::new(Controls::default());
        self.tasks
            .lock()
            .unwrap()
            .insert(request.id.to_string(), controls.clone());
        let workload = FakeWorkload {
            controls,
            takes_exec: !request.id.starts_with("wasm"),
            quick: request.id.starts_with("quick"),
            kills_unstarted: request.id.starts_with("runc"),
            next_pid: AtomicU32::new(5000),
        };
        Ok(Task::new(request, Box::new(workload), ProcessIo::default()))
    }
}

/// The events sent, as (topic, id of the process for exits).
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String)>>);

impl Publish for Recorder {
    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let id = event
            .downcast_ref::<TaskExit>()
            .map(|exit| format!("{}={}", exit.id, exit.exit_status))
            .unwrap_or_default();
        self.0.lock().unwrap().push((topic.to_string(), id));
    }
}

impl Recorder {
    fn exits(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(topic, _)| topic == topics::TASK_EXIT_EVENT_TOPIC)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Waits (bounded) until `n` exit events were sent.
    fn until_exits(&self, n: usize) {
        for _ in 0..500 {
            if self.exits().len() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn topics(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }
}

struct Harness {
    service: Arc<TaskService>,
    tasks: Arc<Mutex<HashMap<String, Arc<Controls>>>>,
    made: Arc<AtomicU32>,
    events: Arc<Recorder>,
    exit: Arc<ExitSignal>,
}

fn harness_with(factory: FakeFactory) -> Harness {
    let (tasks, made) = (factory.tasks.clone(), factory.made.clone());
    let events = Arc::new(Recorder::default());
    let exit = Arc::new(ExitSignal::default());
    let service = Arc::new(TaskService::new(
        Box::new(factory),
        events.clone(),
        exit.clone(),
    ));
    Harness {
        service,
        tasks,
        made,
        events,
        exit,
    }
}

fn harness() -> Harness {
    harness_with(FakeFactory::default())
}

impl Harness {
    fn controls(&self, id: &str) -> Arc<Controls> {
        self.tasks.lock().unwrap()[id].clone()
    }

    fn create(&self, id: &str) -> Result<api::CreateTaskResponse> {
        self.service.task_create(&api::CreateTaskRequest {
            id: id.to_string(),
            bundle: format!("/run/fake/{id}"),
            ..Default::default()
        })
    }

    fn start(&self, id: &str, exec_id: &str) -> Result<api::StartResponse> {
        self.service.task_start(&api::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        })
    }

    fn state(&self, id: &str, exec_id: &str) -> Result<api::StateResponse> {
        self.service.task_state(&api::StateRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        })
    }

    fn status(&self, id: &str) -> ApiStatus {
        self.state(id, "").unwrap().status()
    }

    fn kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<api::Empty> {
        self.service.task_kill(&api::KillRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            ..Default::default()
        })
    }

    fn delete(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        self.service.task_delete(&api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        })
    }

    fn wait(&self, id: &str, exec_id: &str) -> Result<api::WaitResponse> {
        self.service.task_wait(&api::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        })
    }

    fn add_exec(&self, id: &str, exec_id: &str, spec: &[u8]) -> Result<api::Empty> {
        self.service.task_exec(&api::ExecProcessRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            spec: MessageField::some(
                containerd_shim::protos::protobuf::well_known_types::any::Any {
                    value: spec.to_vec(),
                    ..Default::default()
                },
            ),
            ..Default::default()
        })
    }

    /// Waits (bounded) until the task's status is `status`.
    fn until(&self, id: &str, status: ApiStatus) {
        for _ in 0..500 {
            if self.status(id) == status {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("{id} never became {status:?}");
    }
}

fn code<T: std::fmt::Debug>(result: Result<T>) -> Code {
    result.unwrap_err().code()
}

#[test]
fn create_start_exit_wait_delete_in_order() {
    let h = harness();
    assert_eq!(h.create("c1").unwrap().pid, 4000);
    assert_eq!(h.status("c1"), ApiStatus::CREATED);
    assert_eq!(h.start("c1", "").unwrap().pid, 4000);
    assert_eq!(h.status("c1"), ApiStatus::RUNNING);
    let waiter = {
        let service = h.service.clone();
        std::thread::spawn(move || {
            service
                .task_wait(&api::WaitRequest {
                    id: "c1".into(),
                    ..Default::default()
                })
                .unwrap()
                .exit_status
        })
    };
    h.controls("c1").exit(7);
    assert_eq!(waiter.join().unwrap(), 7);
    h.until("c1", ApiStatus::STOPPED);
    let deleted = h.delete("c1", "").unwrap();
    assert_eq!(deleted.exit_status, 7);
    assert!(h.controls("c1").cleaned.load(Ordering::SeqCst));
    assert_eq!(code(h.state("c1", "")), Code::NOT_FOUND, "deleted is gone");
    assert_eq!(
        h.events.topics(),
        [
            topics::TASK_CREATE_EVENT_TOPIC,
            topics::TASK_START_EVENT_TOPIC,
            topics::TASK_EXIT_EVENT_TOPIC,
            topics::TASK_DELETE_EVENT_TOPIC,
        ]
    );
}

#[test]
fn a_second_start_fails_with_failed_precondition() {
    let h = harness();
    h.create("c1").unwrap();
    h.start("c1", "").unwrap();
    assert_eq!(code(h.start("c1", "")), Code::FAILED_PRECONDITION);
}

#[test]
fn a_start_that_fails_leaves_the_task_created_and_deletable() {
    let h = harness();
    h.create("c1").unwrap();
    h.controls("c1").fail_start.store(true, Ordering::SeqCst);
    assert_eq!(code(h.start("c1", "")), Code::FAILED_PRECONDITION);
    assert_eq!(h.status("c1"), ApiStatus::CREATED);
    assert!(
        !h.events
            .topics()
            .contains(&topics::TASK_START_EVENT_TOPIC.to_string())
    );
    h.delete("c1", "").unwrap();
}

#[test]
fn killing_an_unstarted_task_stops_it_with_the_signal() {
    let h = harness();
    h.create("c1").unwrap();
    h.kill("c1", "", 15).unwrap();
    assert_eq!(h.status("c1"), ApiStatus::STOPPED);
    assert_eq!(h.wait("c1", "").unwrap().exit_status, 143);
    assert!(h.controls("c1").signals.lock().unwrap().is_empty());
    assert_eq!(
        code(h.kill("c1", "", 9)),
        Code::NOT_FOUND,
        "already stopped"
    );
    assert_eq!(code(h.start("c1", "")), Code::FAILED_PRECONDITION);
}

#[test]
fn kill_reaches_the_running_program() {
    let h = harness();
    h.create("c1").unwrap();
    h.start("c1", "").unwrap();
    h.kill("c1", "", 9).unwrap();
    assert_eq!(*h.controls("c1").signals.lock().unwrap(), [9]);
}

#[test]
fn a_running_task_cannot_be_deleted() {
    let h = harness();
    h.create("c1").unwrap();
    h.start("c1", "").unwrap();
    assert_eq!(code(h.delete("c1", "")), Code::FAILED_PRECONDITION);
    assert!(!h.controls("c1").cleaned.load(Ordering::SeqCst));
    h.controls("c1").exit(0);
    h.until("c1", ApiStatus::STOPPED);
    h.delete("c1", "").unwrap();
}

#[test]
fn unknown_ids_are_not_found() {
    let h = harness();
    assert_eq!(code(h.start("nope", "")), Code::NOT_FOUND);
    assert_eq!(code(h.state("nope", "")), Code::NOT_FOUND);
    assert_eq!(code(h.kill("nope", "", 9)), Code::NOT_FOUND);
    assert_eq!(code(h.delete("nope", "")), Code::NOT_FOUND);
    assert_eq!(code(h.wait("nope", "")), Code::NOT_FOUND);
}

#[test]
fn create_errors_map_to_invalid_argument_or_failed_precondition_and_free_the_id() {
    let h = harness();
    assert_eq!(code(h.create("bad1")), Code::INVALID_ARGUMENT);
    assert_eq!(code(h.create("broken1")), Code::FAILED_PRECONDITION);
    assert_eq!(code(h.state("bad1", "")), Code::NOT_FOUND);
    assert!(h.events.topics().is_empty(), "no event for a failed create");
    // The ids are free again, and the shim may end.
    let waiter = {
        let exit = h.exit.clone();
        std::thread::spawn(move || exit.wait())
    };
    h.service.task_shutdown();
    waiter.join().unwrap();
}

#[test]
fn a_duplicate_id_is_refused_even_under_concurrent_creates() {
    const CALLERS: usize = 8;
    let h = harness_with(FakeFactory {
        slow: true,
        ..Default::default()
    });
    let start = Arc::new(Barrier::new(CALLERS));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (service, start) = (h.service.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                service
                    .task_create(&api::CreateTaskRequest {
                        id: "same".into(),
                        ..Default::default()
                    })
                    .map_err(|e| e.code())
            })
        })
        .collect();
    let results: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    let created = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| **r == Err(Code::ALREADY_EXISTS))
        .count();
    assert_eq!((created, refused), (1, CALLERS - 1), "{results:?}");
    assert_eq!(h.made.load(Ordering::SeqCst), 1, "one task was made");
    assert_eq!(code(h.create("same")), Code::ALREADY_EXISTS);
}

#[test]
fn shutdown_waits_for_the_last_task() {
    let h = harness();
    h.create("c1").unwrap();
    let waiter = {
        let exit = h.exit.clone();
        std::thread::spawn(move || exit.wait())
    };
    h.service.task_shutdown();
    std::thread::sleep(Duration::from_millis(30));
    assert!(!waiter.is_finished(), "the shim ended with a task left");
    h.delete("c1", "").unwrap();
    h.service.task_shutdown();
    waiter.join().unwrap();
}

#[test]
fn exec_is_unimplemented_for_a_task_that_takes_none() {
    let h = harness();
    h.create("wasm1").unwrap();
    assert_eq!(code(h.add_exec("wasm1", "e1", b"{}")), Code::UNIMPLEMENTED);
    assert_eq!(code(h.start("wasm1", "e1")), Code::UNIMPLEMENTED);
    assert_eq!(code(h.state("wasm1", "e1")), Code::UNIMPLEMENTED);
    assert_eq!(code(h.kill("wasm1", "e1", 9)), Code::UNIMPLEMENTED);
    assert_eq!(code(h.delete("wasm1", "e1")), Code::UNIMPLEMENTED);
}

#[test]
fn execs_route_by_exec_id() {
    let h = harness();
    h.create("c1").unwrap();
    h.start("c1", "").unwrap();
    assert_eq!(code(h.add_exec("c1", "e1", b"")), Code::INVALID_ARGUMENT);
    h.add_exec("c1", "e1", b"{}").unwrap();
    assert_eq!(
        code(h.add_exec("c1", "e1", b"{}")),
        Code::FAILED_PRECONDITION,
        "a duplicate exec id"
    );
    assert_eq!(code(h.state("c1", "e2")), Code::NOT_FOUND);
    assert_eq!(h.state("c1", "e1").unwrap().status(), ApiStatus::CREATED);
    let pid = h.start("c1", "e1").unwrap().pid;
    assert_eq!(pid, 5000);
    let state = h.state("c1", "e1").unwrap();
    assert_eq!(
        (state.status(), state.pid, state.exec_id.as_str()),
        (ApiStatus::RUNNING, 5000, "e1")
    );
    assert_eq!(h.status("c1"), ApiStatus::RUNNING, "the init is untouched");
    assert_eq!(
        code(h.delete("c1", "e1")),
        Code::FAILED_PRECONDITION,
        "a running exec"
    );
    h.controls("c1").exit_exec("e1", 3);
    assert_eq!(h.wait("c1", "e1").unwrap().exit_status, 3);
    h.events.until_exits(1);
    assert_eq!(h.events.exits(), ["e1=3"]);
    assert_eq!(h.delete("c1", "e1").unwrap().exit_status, 3);
    assert_eq!(code(h.state("c1", "e1")), Code::NOT_FOUND, "a deleted exec");
    assert_eq!(h.status("c1"), ApiStatus::RUNNING);
}

#[test]
fn an_execs_exit_is_reported_before_the_init_exit_that_ended_it() {
    let h = harness();
    h.create("c1").unwrap();
    h.start("c1", "").unwrap();
    h.add_exec("c1", "e1", b"{}").unwrap();
    h.start("c1", "e1").unwrap();
    // The init ends first; its exec ends a moment later (killed with the
    // container's process namespace).
    h.controls("c1").exit(0);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        h.events.exits().is_empty(),
        "the init was reported before its exec"
    );
    h.controls("c1").exit_exec("e1", 137);
    h.until("c1", ApiStatus::STOPPED);
    h.events.until_exits(2);
    assert_eq!(h.events.exits(), ["e1=137", "c1=0"]);
}

#[test]
fn the_exit_of_a_program_that_ends_at_once_is_sent_after_its_start() {
    let h = harness();
    h.create("quick1").unwrap();
    h.start("quick1", "").unwrap();
    h.until("quick1", ApiStatus::STOPPED);
    h.events.until_exits(1);
    let topics = h.events.topics();
    let start = topics
        .iter()
        .position(|t| t == topics::TASK_START_EVENT_TOPIC);
    let exit = topics
        .iter()
        .position(|t| t == topics::TASK_EXIT_EVENT_TOPIC);
    assert!(start.unwrap() < exit.unwrap(), "{topics:?}");
}

#[test]
fn a_create_that_panics_frees_its_id() {
    let h = harness();
    let service = h.service.clone();
    let panicked = std::thread::spawn(move || {
        service.task_create(&api::CreateTaskRequest {
            id: "panic1".into(),
            ..Default::default()
        })
    })
    .join();
    assert!(panicked.is_err());
    assert_eq!(code(h.state("panic1", "")), Code::NOT_FOUND);
    let waiter = {
        let exit = h.exit.clone();
        std::thread::spawn(move || exit.wait())
    };
    h.service.task_shutdown();
    waiter.join().unwrap();
}

#[test]
fn deleting_a_task_that_never_started_reports_no_exit_but_wakes_its_waiters() {
    let h = harness();
    h.create("runc1").unwrap();
    let waiter = {
        let service = h.service.clone();
        std::thread::spawn(move || {
            service
                .task_wait(&api::WaitRequest {
                    id: "runc1".into(),
                    ..Default::default()
                })
                .unwrap()
                .exit_status
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(h.delete("runc1", "").unwrap().exit_status, 0);
    assert_eq!(
        waiter.join().unwrap(),
        137,
        "its process went with the cleanup"
    );
}

#[test]
fn pids_list_the_running_execs_too() {
    let h = harness();
    h.create("c1").unwrap();
    h.start("c1", "").unwrap();
    h.add_exec("c1", "e1", b"{}").unwrap();
    h.start("c1", "e1").unwrap();
    let pids: Vec<u32> = h
        .service
        .task_pids(&api::PidsRequest {
            id: "c1".into(),
            ..Default::default()
        })
        .unwrap()
        .processes
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(pids, [4000, 5000]);
}
