//! The ttrpc Task service: a thin adapter from containerd's requests to the
//! tasks of this shim (`crate::task`). It keeps the registry of tasks
//! (an id is reserved atomically at create), routes a request to a task or
//! to one of its execs, sends the events (`events.rs`, exits held back by
//! the start gate) and maps errors to ttrpc codes ([`ShimError`]), nothing
//! else. Its `task_*` methods are plain functions, tested without ttrpc.
//! `sandbox.rs` is the other service a shim may serve: containerd 2.x's
//! Sandbox API, for pods made with `sandboxer = "shim"`.

pub mod events;
mod exec;
pub mod sandbox;
pub mod stats;
mod ttrpc;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use containerd_shim::ExitSignal;
use containerd_shim::api::{self, Status as ApiStatus};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;

use crate::error::ShimError;
use crate::mounts::RootfsMount;
use crate::task::{CreateRequest, Exit, Factory, Status, Task};
pub use events::{Events, Publish, StartGate, timestamp};

/// A registry entry: an id is taken from the moment its create begins.
enum Entry {
    Creating,
    Ready(Arc<Task>),
}

/// An id taken for a create under way: dropped (the create failed or
/// panicked), it frees the id.
struct Reservation<'a> {
    tasks: &'a Mutex<HashMap<String, Entry>>,
    id: &'a str,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.remove(self.id);
        }
    }
}

/// The Task API for every task of this shim.
pub struct TaskService {
    factory: Box<dyn Factory>,
    events: Arc<dyn Publish>,
    tasks: Arc<Mutex<HashMap<String, Entry>>>,
    /// Signalled at shutdown once no task is left.
    exit: Arc<ExitSignal>,
    /// A shared shim's way to end (`shared.rs`): not while a `create` is
    /// on its way.
    retirement: Option<Arc<crate::shared::Retirement>>,
}

pub(crate) type Result<T> = std::result::Result<T, ShimError>;

impl TaskService {
    pub fn new(
        factory: Box<dyn Factory>,
        events: Arc<dyn Publish>,
        exit: Arc<ExitSignal>,
    ) -> TaskService {
        TaskService {
            factory,
            events,
            tasks: Arc::new(Mutex::new(HashMap::new())),
            exit,
            retirement: None,
        }
    }

    /// Makes this a shared shim's service, which ends as `retirement` decides.
    pub fn with_retirement(mut self, retirement: Arc<crate::shared::Retirement>) -> TaskService {
        self.retirement = Some(retirement);
        self
    }

    fn get(&self, id: &str) -> Result<Arc<Task>> {
        match self.tasks.lock().unwrap().get(id) {
            Some(Entry::Ready(task)) => Ok(task.clone()),
            _ => Err(ShimError::NotFound(id.to_string())),
        }
    }

    pub fn task_create(&self, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        log::info!(id = req.id.as_str(); "create");
        if let Some(retirement) = &self.retirement {
            retirement.created();
        }
        {
            let mut tasks = self.tasks.lock().unwrap();
            if tasks.contains_key(&req.id) {
                return Err(ShimError::AlreadyExists(req.id.clone()));
            }
            tasks.insert(req.id.clone(), Entry::Creating);
        }
        let mounts: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                fs_type: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        // Frees the id if create fails, or panics.
        let reservation = Reservation {
            tasks: &self.tasks,
            id: &req.id,
        };
        let created = self.factory.create(&CreateRequest {
            id: &req.id,
            bundle: Path::new(&req.bundle),
            mounts: &mounts,
            stdio: [&req.stdin, &req.stdout, &req.stderr],
            terminal: req.terminal,
        });
        let task = match created {
            Ok(task) => Arc::new(task),
            Err(e) => {
                log::error!(id = req.id.as_str(); "create failed: {e:#}");
                return Err(ShimError::from_create(e));
            }
        };
        // The kubelet reports OOMKilled from this event.
        let (events, id) = (self.events.clone(), req.id.clone());
        let watched = task.watch_oom(Box::new(move || {
            log::info!(id = id.as_str(); "OOM killer acted in the container's cgroup");
            events.publish(
                topics::TASK_OOM_EVENT_TOPIC,
                Box::new(TaskOOM {
                    container_id: id.clone(),
                    ..Default::default()
                }),
            );
        }));
        if let Err(e) = watched {
            log::warn!(id = req.id.as_str(); "no OOM events: {e:#}");
        }
        let pid = task.pid();
        std::mem::forget(reservation);
        self.tasks
            .lock()
            .unwrap()
            .insert(req.id.clone(), Entry::Ready(task));
        self.events.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    pub fn task_start(&self, req: &api::StartRequest) -> Result<api::StartResponse> {
        if !req.exec_id.is_empty() {
            return self.start_exec(&req.id, &req.exec_id);
        }
        let task = self.get(&req.id)?;
        let pid = task.pid();
        let gate = StartGate::new();
        let report = {
            let (events, gate, id) = (self.events.clone(), gate.clone(), req.id.clone());
            Box::new(move |exit: &Exit| {
                log::info!(id = id.as_str(), exit_status = exit.status; "exited");
                gate.wait();
                events.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    exit_event(&id, &id, pid, exit),
                );
            })
        };
        let result = task.start(report).map_err(ShimError::FailedPrecondition);
        if result.is_ok() {
            self.events.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                }),
            );
        }
        gate.open();
        result?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    pub fn task_state(&self, req: &api::StateRequest) -> Result<api::StateResponse> {
        let task = self.get(&req.id)?;
        let mut resp = api::StateResponse {
            id: task.id.clone(),
            bundle: task.bundle.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let (status, pid, exit) = if req.exec_id.is_empty() {
            [resp.stdin, resp.stdout, resp.stderr] = task.stdio.clone();
            let (status, exit) = task.status();
            (status, task.pid(), exit)
        } else {
            let exec = self.get_exec(&req.id, &req.exec_id)?;
            resp.exec_id = req.exec_id.clone();
            [resp.stdin, resp.stdout, resp.stderr] = exec.stdio.clone();
            let (status, pid, exit) = exec.status();
            (status, pid.unwrap_or(0), exit)
        };
        resp.pid = pid;
        resp.set_status(match status {
            Status::Created => ApiStatus::CREATED,
            Status::Running => ApiStatus::RUNNING,
            Status::Stopped => ApiStatus::STOPPED,
        });
        if let Some(exit) = exit {
            resp.exit_status = exit.status;
            resp.exited_at = MessageField::some(timestamp(exit.at));
        }
        Ok(resp)
    }

    pub fn task_wait(&self, req: &api::WaitRequest) -> Result<api::WaitResponse> {
        let exit = if req.exec_id.is_empty() {
            self.get(&req.id)?.wait()
        } else {
            self.get_exec(&req.id, &req.exec_id)?.wait()
        };
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    pub fn task_kill(&self, req: &api::KillRequest) -> Result<api::Empty> {
        log::info!(id = req.id.as_str(), exec_id = req.exec_id.as_str(), signal = req.signal; "kill");
        let killed = if req.exec_id.is_empty() {
            self.get(&req.id)?
                .kill(req.signal, req.all)
                .map_err(ShimError::Internal)?
        } else {
            self.get_exec(&req.id, &req.exec_id)?.kill(req.signal)
        };
        if !killed {
            return Err(ShimError::NotFound(format!(
                "{}: its process already finished",
                req.id
            )));
        }
        Ok(api::Empty::new())
    }

    pub fn task_delete(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            return self.delete_exec(&req.id, &req.exec_id);
        }
        let task = self.get(&req.id)?;
        if task.status().0 == Status::Running {
            return Err(ShimError::FailedPrecondition(anyhow::anyhow!(
                "container {} is running; kill it first",
                req.id
            )));
        }
        // The exit before cleanup: a Linux task that never started ends
        // with runc's delete, which is not its exit.
        let exit = task.status().1.unwrap_or_else(|| Exit::now(0));
        task.cleanup().map_err(ShimError::Internal)?;
        let others = {
            let mut tasks = self.tasks.lock().unwrap();
            tasks.remove(&req.id);
            !tasks.is_empty()
        };
        // A task's cgroup is left at exit only when none other is served here.
        if others {
            crate::cgroup::leave_parked().map_err(ShimError::Internal)?;
        }
        let pid = task.pid();
        self.events.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid,
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }),
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    pub fn task_pids(&self, req: &api::PidsRequest) -> Result<api::PidsResponse> {
        let pids = self.get(&req.id)?.pids();
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| containerd_shim::protos::types::task::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    pub fn task_stats(&self, req: &api::StatsRequest) -> Result<api::StatsResponse> {
        let usage = self.get(&req.id)?.usage();
        let stats = containerd_shim::util::convert_to_any(stats::metrics(&usage))
            .map_err(|e| ShimError::Internal(anyhow::Error::from(e).context("encoding metrics")))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    pub fn task_resize_pty(&self, req: &api::ResizePtyRequest) -> Result<api::Empty> {
        if req.exec_id.is_empty() {
            self.get(&req.id)?.resize(req.width, req.height)
        } else {
            self.get_exec(&req.id, &req.exec_id)?
                .resize(req.width, req.height)
        }
        .map_err(ShimError::FailedPrecondition)?;
        Ok(api::Empty::new())
    }

    pub fn task_update(&self, req: &api::UpdateTaskRequest) -> Result<api::Empty> {
        let task = self.get(&req.id)?;
        if let Some(resources) = req.resources.as_ref() {
            task.update(&resources.value)
                .map_err(ShimError::from_create)?;
        }
        Ok(api::Empty::new())
    }

    pub fn task_connect(&self, req: &api::ConnectRequest) -> api::ConnectResponse {
        let pid = std::process::id();
        // containerd takes the task's pid from here: a Linux container's
        // is its own process's.
        let task_pid = self.get(&req.id).map_or(pid, |t| t.pid());
        api::ConnectResponse {
            shim_pid: pid,
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }
    }

    /// Ends the shim once no task is left (not even one being created); a
    /// shared shim once no `create` is on its way either.
    pub fn task_shutdown(&self) {
        if !self.tasks.lock().unwrap().is_empty() {
            return;
        }
        match &self.retirement {
            None => self.exit.signal(),
            Some(retirement) => {
                let tasks = self.tasks.clone();
                let exit = self.exit.clone();
                retirement.retire_when_idle(
                    move || tasks.lock().unwrap().is_empty(),
                    move || exit.signal(),
                );
            }
        }
    }
}

fn exit_event(
    container_id: &str,
    id: &str,
    pid: u32,
    exit: &Exit,
) -> Box<dyn containerd_shim::protos::protobuf::MessageDyn> {
    Box::new(TaskExit {
        container_id: container_id.to_string(),
        id: id.to_string(),
        pid,
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.at)),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
