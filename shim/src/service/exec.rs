//! Requests for processes exec'd into a task, routed by exec id. Only
//! tasks whose workload takes execs (Linux containers) have any; a Wasm
//! guest answers UNIMPLEMENTED.

use std::sync::Arc;

use containerd_shim::api;
use containerd_shim::protos::events::task::{TaskExecAdded, TaskExecStarted};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;

use super::{Result, StartGate, TaskService, exit_event, timestamp};
use crate::error::ShimError;
use crate::task::{Exec, ExecRequest, Exit, Task};

impl TaskService {
    /// The exec `exec_id` of task `id`; only tasks that take execs have any.
    pub(super) fn get_exec(&self, id: &str, exec_id: &str) -> Result<Arc<Exec>> {
        let task = self.exec_host(id)?;
        task.exec(exec_id)
            .map_err(|e| ShimError::NotFound(format!("{e:#}")))
    }

    fn exec_host(&self, id: &str) -> Result<Arc<Task>> {
        let task = self.get(id)?;
        if !task.accepts_exec() {
            return Err(ShimError::Unimplemented(
                "exec is not supported for Wasm containers",
            ));
        }
        Ok(task)
    }

    pub(super) fn start_exec(&self, id: &str, exec_id: &str) -> Result<api::StartResponse> {
        let task = self.exec_host(id)?;
        let exec = self.get_exec(id, exec_id)?;
        let gate = StartGate::new();
        let report = {
            let (events, gate, id) = (self.events.clone(), gate.clone(), id.to_string());
            Box::new(move |exit: &Exit| {
                let pid = exec.status().1.unwrap_or(0);
                gate.wait();
                events.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    exit_event(&id, &exec.exec_id, pid, exit),
                );
            })
        };
        let result = task
            .start_exec(exec_id, report)
            .map_err(ShimError::FailedPrecondition);
        if let Ok(pid) = result {
            self.events.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    pid,
                    ..Default::default()
                }),
            );
        }
        gate.open();
        Ok(api::StartResponse {
            pid: result?,
            ..Default::default()
        })
    }

    pub(super) fn delete_exec(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        let task = self.exec_host(id)?;
        let pid = self.get_exec(id, exec_id)?.status().1;
        let exit = task
            .delete_exec(exec_id)
            .map_err(ShimError::FailedPrecondition)?
            .unwrap_or_else(|| Exit::now(0));
        Ok(api::DeleteResponse {
            pid: pid.unwrap_or(0),
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    pub fn task_exec(&self, req: &api::ExecProcessRequest) -> Result<api::Empty> {
        let task = self.exec_host(&req.id)?;
        let process = req
            .spec
            .as_ref()
            .map(|any| any.value.as_slice())
            .unwrap_or_default();
        task.add_exec(&ExecRequest {
            exec_id: &req.exec_id,
            process_json: process,
            stdio: [&req.stdin, &req.stdout, &req.stderr],
            terminal: req.terminal,
        })
        .map_err(ShimError::from_create)?;
        self.events.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(api::Empty::new())
    }
}
