//! Processes exec'd into a Linux container with `runc exec` (`ctr task
//! exec`, `kubectl exec`). Their lifecycle is the task's own
//! (`task::Exec`); this is only how runc starts one and where its files go.

use std::path::PathBuf;

use anyhow::Result;

use super::LinuxTask;
use crate::runc::ProcessFiles;
use crate::task::workload::{ExecRequest, ExitNotice, StartedProcess};

impl LinuxTask {
    fn process_file(&self, exec_id: &str) -> PathBuf {
        self.bundle.join(format!("exec-{exec_id}.json"))
    }

    fn pid_file(&self, exec_id: &str) -> PathBuf {
        self.bundle.join(format!("exec-{exec_id}.pid"))
    }

    /// `runc exec` of the process; its exit comes from the reaper.
    pub(super) fn exec(&self, exec: &ExecRequest) -> Result<StartedProcess> {
        let process_file = self.process_file(exec.exec_id);
        let pid_file = self.pid_file(exec.exec_id);
        wasmbox_format::write_atomic(&process_file, exec.process_json, 0o600)?;
        let since = crate::reaper::mark();
        let started = super::io::with_stdio(exec.stdio, exec.terminal, |console, io| {
            let files = ProcessFiles {
                pid_file: &pid_file,
                console_socket: console,
            };
            self.runc.exec(&self.id, &process_file, files, io)
        })
        .and_then(|io| Ok((io, crate::runc::read_pid(&pid_file)?)));
        let _ = std::fs::remove_file(&process_file);
        let (io, pid) = started?;
        Ok(StartedProcess {
            pid,
            io,
            on_exit: Box::new(move |exited: ExitNotice| {
                crate::reaper::on_exit(pid, since, exited);
            }),
        })
    }

    pub(super) fn remove_exec_files(&self, exec_id: &str) {
        let _ = std::fs::remove_file(self.process_file(exec_id));
        let _ = std::fs::remove_file(self.pid_file(exec_id));
    }
}
