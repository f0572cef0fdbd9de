//! Running a loaded program to an exit status: the guest's runtime and its
//! threads (in the container's mount namespace and identity), its store,
//! and how a trap, a kill or `proc_exit` becomes the status containerd sees.

use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use wasmtime::{InstancePre, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder, WasiView};

use super::{ComponentState, CoreState, Engine, Linked, Program};
use crate::guest::{cap_resources, enter_identity, metered_limits, resource_table};
use crate::http::server;
use crate::kill::wait_for_kill;
use crate::meter::MeteredLimits;
use crate::run_spec::{RunSpec, Stdio};
use crate::stdio::wasi_builder;
use crate::{ticker, wt};

/// Exit status for a guest killed by a trap (as SIGABRT would).
pub const TRAP_EXIT_STATUS: i32 = 128 + libc::SIGABRT;

/// How long a guest's end waits for file operations already running in its
/// blocking pool. Guests cannot open FIFOs (see `opens`), so only storage
/// that stalls, or a name lookup whose DNS server does not answer, can take
/// this long.
const GUEST_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl Engine {
    /// Runs `spec` to completion on the calling thread and returns the exit
    /// status: the guest's `proc_exit` code, [`TRAP_EXIT_STATUS`] after a trap
    /// (the message goes to the guest's stderr), or 128 + N when killed by N.
    pub fn run(
        &self,
        program: &Program,
        spec: &RunSpec,
        kill: watch::Receiver<Option<i32>>,
    ) -> i32 {
        // First, so that every thread the guest's runtime starts (the
        // blocking pool does file access and name lookups) inherits it.
        if let Some(namespace) = &spec.mount_namespace
            && let Err(e) = enter_mount_namespace(namespace)
        {
            report(
                spec,
                &format!("cannot enter the container's mount namespace: {e}"),
            );
            return TRAP_EXIT_STATUS;
        }
        // A command runs on this thread; a wasi:http server on a worker per
        // core, since requests are independent instances.
        let mut builder = match program.0 {
            Linked::Http(_) => tokio::runtime::Builder::new_multi_thread(),
            _ => tokio::runtime::Builder::new_current_thread(),
        };
        builder.enable_all();
        if let Some(identity) = spec.identity.clone() {
            // The blocking pool does the guest's file access (wasmtime-wasi
            // runs file calls there): its threads are the guest's for good.
            builder.on_thread_start(move || {
                if let Err(e) = identity.apply() {
                    // Unreachable for root with valid ids; never leave such
                    // a thread with the shim's identity.
                    eprintln!("wasmbox: cannot take on the container's identity: {e}");
                    std::process::abort();
                }
            });
        }
        let runtime = match builder.build() {
            Ok(rt) => rt,
            Err(e) => {
                report(spec, &format!("cannot start the guest runtime: {e}"));
                return TRAP_EXIT_STATUS;
            }
        };
        spec.meter.enter();
        let mut kill = kill;
        let status = runtime.block_on(async {
            if let Linked::Http(pre) = &program.0 {
                return server::serve(pre, spec, &mut kill)
                    .await
                    .unwrap_or_else(|e| {
                        report(spec, &format!("{e:#}"));
                        1
                    });
            }
            tokio::select! {
                result = self.run_guest(program, spec) => match result {
                    Ok(status) => status,
                    Err(e) => {
                        report(spec, &explain_trap(spec, format!("{e:#}")));
                        TRAP_EXIT_STATUS
                    }
                },
                signal = wait_for_kill(&mut kill) => 128 + signal,
            }
        });
        // The blocking pool may still be in a file operation of the guest
        // (a write to a volume): the exit is reported only after it ends,
        // as the kernel reports a process's only after its last syscall.
        let stopping = std::time::Instant::now();
        runtime.shutdown_timeout(GUEST_SHUTDOWN_TIMEOUT);
        if stopping.elapsed() >= GUEST_SHUTDOWN_TIMEOUT {
            log::warn!(
                "a file operation of the guest was still running {} s after it ended; it may finish after its exit is reported",
                GUEST_SHUTDOWN_TIMEOUT.as_secs()
            );
        }
        spec.meter.leave();
        status
    }

    async fn run_guest(&self, program: &Program, spec: &RunSpec) -> Result<i32> {
        // Stdio and preopens are opened as the shim (containerd's FIFOs are
        // root's); everything the guest does from here on as the container's user.
        let wasi = wasi_builder(spec)?;
        let _as_user = enter_identity(spec)?;
        let limits = metered_limits(spec);
        match &program.0 {
            Linked::Component(c) => {
                self.run_component(c, wasi, limits, spec.open_files_limit)
                    .await
            }
            Linked::Core(m) => {
                self.run_core(
                    m,
                    spec.export.as_deref(),
                    wasi,
                    limits,
                    spec.open_files_limit,
                )
                .await
            }
            Linked::Http(_) => unreachable!("Engine::run serves HTTP components"),
        }
    }

    async fn run_core(
        &self,
        module: &InstancePre<CoreState>,
        export: Option<&str>,
        mut wasi: WasiCtxBuilder,
        limits: MeteredLimits,
        open_files_limit: Option<usize>,
    ) -> Result<i32> {
        let mut store = Store::new(
            module.module().engine(),
            CoreState {
                wasi: wasi.build_p1(),
                limits,
                activity: Default::default(),
            },
        );
        store.limiter(|s| &mut s.limits);
        ticker::track(&mut store, |s| &mut s.activity);
        store.epoch_deadline_async_yield_and_update(1);
        cap_resources(
            WasiView::ctx(&mut store.data_mut().wasi).table,
            open_files_limit,
        );
        let instance = module.instantiate_async(&mut store).await?;
        let name = export.unwrap_or("_start");
        let func = instance
            .get_func(&mut store, name)
            .with_context(|| format!("the module exports no function `{name}`"))?;
        let mut results = vec![wasmtime::Val::I32(0); func.ty(&store).results().len()];
        let outcome = func.call_async(&mut store, &[], &mut results).await;
        exit_status(outcome)
    }

    async fn run_component(
        &self,
        component: &CommandPre<ComponentState>,
        mut wasi: WasiCtxBuilder,
        limits: MeteredLimits,
        open_files_limit: Option<usize>,
    ) -> Result<i32> {
        let mut store = Store::new(
            component.engine(),
            ComponentState {
                wasi: wasi.build(),
                table: resource_table(open_files_limit),
                limits,
                activity: Default::default(),
            },
        );
        store.limiter(|s| &mut s.limits);
        ticker::track(&mut store, |s| &mut s.activity);
        store.epoch_deadline_async_yield_and_update(1);
        let command = wt(
            component.instantiate_async(&mut store).await,
            "the component is not a wasi:cli command",
        )?;
        let outcome = command.wasi_cli_run().call_run(&mut store).await;
        match outcome {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(e) => exit_status::<()>(Err(e)),
        }
    }
}

/// Moves the calling thread into the mount namespace `namespace`. The
/// thread first stops sharing its root and working directory with the rest
/// of the process (`setns` refuses a thread that shares them).
fn enter_mount_namespace(namespace: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: unshare(CLONE_FS) and setns(2) act on the calling thread only;
    // the descriptor is an open namespace file we own.
    unsafe {
        if libc::unshare(libc::CLONE_FS) != 0
            || libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNS) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Maps the end of a guest call to an exit status.
fn exit_status<T>(outcome: wasmtime::Result<T>) -> Result<i32> {
    match outcome {
        Ok(_) => Ok(0),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(*code),
            None => Err(anyhow::Error::from(e).context("wasm trap")),
        },
    }
}

/// A trap's message, with what it means when the cause is a limit of the spec.
fn explain_trap(spec: &RunSpec, message: String) -> String {
    match spec.open_files_limit {
        Some(limit) if message.contains("resource table has no free keys") => format!(
            "{message}\nthe guest opened more than its limit of {limit} files (RLIMIT_NOFILE)"
        ),
        _ => message,
    }
}

/// Writes a message to the guest's stderr (where `ctr` and CRI logs show it).
fn report(spec: &RunSpec, message: &str) {
    use std::io::Write;
    let line = format!("{message}\n");
    match &spec.stderr {
        Stdio::Fifo(path) => {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .open(path)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
        Stdio::Terminal(tty) => {
            if let Ok(dup) = tty.try_clone() {
                let _ = std::fs::File::from(dup).write_all(line.as_bytes());
            }
        }
        Stdio::Null | Stdio::Inherit => eprint!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kill::KillSwitch;
    use crate::meter::SharedBudget;

    fn run_wat(wat: &str, memory_limit: Option<usize>) -> i32 {
        run_wat_sharing(wat, memory_limit, None)
    }

    fn run_wat_sharing(
        wat: &str,
        memory_limit: Option<usize>,
        shared_budget: Option<Arc<SharedBudget>>,
    ) -> i32 {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.wat");
        std::fs::write(&module, wat).unwrap();
        let spec = RunSpec {
            module,
            args: vec!["m.wat".into()],
            memory_limit,
            shared_budget,
            ..Default::default()
        };
        let engine = Engine::global().unwrap();
        let program = engine.load(&spec).unwrap();
        let (_kill, rx) = KillSwitch::new();
        engine.run(&program, &spec, rx)
    }

    /// Exits 0 when growing memory by 100 pages (6.4 MB) failed, 1 when it worked.
    const GROW: &str = r#"(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (call $exit (i32.ne (memory.grow (i32.const 100)) (i32.const -1)))))"#;

    #[test]
    fn memory_limit_refuses_growth_past_it() {
        assert_eq!(run_wat(GROW, None), 1);
        assert_eq!(run_wat(GROW, Some(1 << 20)), 0);
    }

    /// A module of 16 memories that grows each by 64 pages (4 MiB) and exits
    /// with how many grew.
    fn sixteen_memories() -> String {
        let memories: String = (0..16).map(|i| format!("(memory $m{i} 1)")).collect();
        let grows: String = (0..16)
            .map(|i| {
                format!(
                    "(if (i32.ne (memory.grow $m{i} (i32.const 64)) (i32.const -1))
                       (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))"
                )
            })
            .collect();
        format!(
            r#"(module
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              {memories}
              (export "memory" (memory $m0))
              (func (export "_start") (local $n i32) {grows} (call $exit (local.get $n))))"#
        )
    }

    #[test]
    fn one_memory_budget_covers_every_memory_of_the_guest() {
        assert_eq!(run_wat(&sixteen_memories(), None), 16);
        // 16 × 64 KiB to start, then 4 MiB per growth: 7 fit in 32 MiB.
        assert_eq!(run_wat(&sixteen_memories(), Some(32 << 20)), 7);
    }

    #[test]
    fn growth_must_fit_the_shared_budget_too_and_is_given_back_at_the_end() {
        let shared = Arc::new(SharedBudget::default());
        shared.set_limit(Some(20 << 20));
        // 1 MiB to start, then 4 MiB per growth: the container's own limit
        // allows 7 growths, the shared 20 MiB only 4.
        let grew = run_wat_sharing(&sixteen_memories(), Some(32 << 20), Some(shared.clone()));
        assert_eq!(grew, 4);
        assert_eq!(shared.used(), 0, "the guest's memory was given back");
        shared.set_limit(None);
        let grew = run_wat_sharing(&sixteen_memories(), Some(32 << 20), Some(shared.clone()));
        assert_eq!(grew, 7);
    }

    #[test]
    fn proc_exit_code_and_trap_status() {
        let exit7 = r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))
            (memory (export "memory") 1) (func (export "_start") (call $e (i32.const 7))))"#;
        assert_eq!(run_wat(exit7, None), 7);
        let trap = r#"(module (func (export "_start") unreachable))"#;
        assert_eq!(run_wat(trap, None), TRAP_EXIT_STATUS);
    }

    #[test]
    fn kill_ends_an_infinite_loop() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("loop.wat");
        std::fs::write(
            &module,
            r#"(module (func (export "_start") (loop $l (br $l))))"#,
        )
        .unwrap();
        let spec = RunSpec {
            module,
            ..Default::default()
        };
        let engine = Engine::global().unwrap();
        let program = engine.load(&spec).unwrap();
        let (kill, rx) = KillSwitch::new();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            kill.kill(9);
        });
        assert_eq!(engine.run(&program, &spec, rx), 137);
        killer.join().unwrap();
    }
}
