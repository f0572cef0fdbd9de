//! The wasmtime-specific part of wasmbox: one [`Engine`] per process, and
//! running one [`RunSpec`] to an exit status. It never sees an OCI or
//! containerd type; the shim and `wasmbox run` each build a `RunSpec`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;
use wasmtime::component::{Component, Linker as ComponentLinker, ResourceTable};
use wasmtime::{InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub mod cache;
mod features;
pub mod http;
pub mod identity;
mod meter;
mod opens;
mod stdio;
mod ticker;
pub mod tiering;

use features::{Features, config};
pub use features::{known_features, parse_features};
pub use identity::Identity;
use meter::MeteredLimits;
pub use meter::{GuestMeter, SharedBudget};
pub use stdio::Stdio;
use stdio::{wasi_builder, wasi_without_stdio};

/// Everything the engine needs to run one program. Built from an OCI spec
/// (the shim) or from CLI flags (`wasmbox run`).
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// Host path of the `.wasm` (or `.wat`) file.
    pub module: PathBuf,
    /// Export to call instead of `_start` (core modules only).
    pub export: Option<String>,
    /// argv, argv[0] included.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Directories the guest may open, with their guest paths.
    pub preopens: Vec<Preopen>,
    /// Cap on the bytes of linear memory and tables the guest may have, all
    /// its memories and instances together (and, for `wasi:http`, all its
    /// requests in flight together).
    pub memory_limit: Option<usize>,
    /// The user, groups and capabilities the guest's file access runs as;
    /// `None` runs it as this process.
    pub identity: Option<Identity>,
    /// `wasi:http` requests one container serves at a time; more wait.
    pub http_concurrency: Option<usize>,
    /// The mount namespace the guest's threads run in: one where the
    /// process's `/etc/resolv.conf` and `/etc/hosts` are the container's, so
    /// that name lookups (WASI sockets, outgoing `wasi:http`) use its resolver
    /// configuration; `None` keeps this process's.
    pub mount_namespace: Option<Arc<OwnedFd>>,
    /// Files the guest may hold open at once (the spec's `RLIMIT_NOFILE`);
    /// past it opening fails with EMFILE, for this guest only.
    pub open_files_limit: Option<usize>,
    /// WASI sockets and name lookup in this process's network namespace.
    pub network: bool,
    /// Wasm features turned on (`true`) or off beyond wasmtime's defaults.
    pub features: Vec<(String, bool)>,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// Port to serve a `wasi:http` component on, when set by annotation;
    /// else the container's `PORT`, else 8080.
    pub http_port: Option<u16>,
    /// What the guest uses while it runs; shared by every clone of the spec.
    pub meter: Arc<GuestMeter>,
    /// The budget this guest shares with the others of its process, on top
    /// of `memory_limit`: the shim's cgroup limit less the shim's own memory.
    pub shared_budget: Option<Arc<SharedBudget>>,
}

/// `KEY=VALUE` strings (OCI `process.env`, image `Env`) as pairs; entries
/// without `=` are dropped.
pub fn env_pairs(list: impl IntoIterator<Item = String>) -> Vec<(String, String)> {
    list.into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// A host directory visible to the guest at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

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

/// A compiled module or component, linked against WASI and ready to
/// instantiate (every import resolved once, at create).
#[derive(Clone)]
pub struct Program(Linked);

#[derive(Clone)]
enum Linked {
    Core(InstancePre<CoreState>),
    /// A `wasi:cli` command.
    Component(CommandPre<ComponentState>),
    /// A `wasi:http/incoming-handler`, served on a port.
    Http(ProxyPre<http::HttpState>),
}

/// Exit status for a guest killed by a trap (as SIGABRT would).
pub const TRAP_EXIT_STATUS: i32 = 128 + libc::SIGABRT;

/// The process-wide wasmtime engine: compiled code and the epoch ticker are
/// shared by every container this process runs.
pub struct Engine {
    engine: wasmtime::Engine,
    /// Serves `wasi:http` handlers, which instantiate once per request:
    /// the same features on the pooling allocator (or `engine` where the
    /// host cannot reserve the pool's address space), made on first use.
    serving: OnceLock<wasmtime::Engine>,
    /// Compiles big core modules with Winch for their first start (see
    /// [`tiering`]): the same features, made on first use; `None` where
    /// Winch cannot take them.
    baseline: OnceLock<Option<Baseline>>,
    features: Features,
    /// Linkers are built once per engine, on first use of each kind.
    core_linker: OnceLock<Linker<CoreState>>,
    command_linker: OnceLock<ComponentLinker<ComponentState>>,
    http_linker: OnceLock<ComponentLinker<http::HttpState>>,
}

/// A Winch engine and its linker for core modules.
struct Baseline {
    engine: wasmtime::Engine,
    core_linker: OnceLock<Linker<CoreState>>,
}

/// The most distinct feature sets (so engines) one process keeps.
pub const MAX_ENGINES: usize = 8;

impl Engine {
    /// The shared engine with wasmtime's default features, created on first use.
    pub fn global() -> Result<&'static Engine> {
        Self::with_features(&[])
    }

    /// The shared engine for `spec`'s feature set.
    pub fn for_spec(spec: &RunSpec) -> Result<&'static Engine> {
        Self::with_features(&spec.features)
    }

    /// One engine per distinct feature set, created once and kept for the
    /// life of the process, and at most [`MAX_ENGINES`] of them: each has
    /// its own code memory and ticker thread, and the sets come from
    /// annotations anyone who can create a container may write.
    pub fn with_features(features: &[(String, bool)]) -> Result<&'static Engine> {
        static ENGINES: OnceLock<std::sync::Mutex<Vec<(Features, &'static Engine)>>> =
            OnceLock::new();
        let engines = ENGINES.get_or_init(Default::default);
        let mut engines = engines.lock().unwrap_or_else(|e| e.into_inner());
        // The same features in another order or repeated are the same set.
        let mut canonical: Features = Vec::new();
        for (name, on) in features {
            canonical.retain(|(n, _)| n != name);
            canonical.push((name.clone(), *on));
        }
        canonical.sort();
        let features = canonical.as_slice();
        if let Some((_, e)) = engines.iter().find(|(f, _)| f.as_slice() == features) {
            return Ok(e);
        }
        if engines.len() >= MAX_ENGINES {
            bail!(
                "this shim already runs guests with {MAX_ENGINES} different Wasm feature sets, the most it keeps engines for"
            );
        }
        let engine: &'static Engine = Box::leak(Box::new(Engine::new(features)?));
        engines.push((features.to_vec(), engine));
        Ok(engine)
    }

    fn new(features: &[(String, bool)]) -> Result<Engine> {
        let engine = wt(
            wasmtime::Engine::new(&config(features)?),
            "configuring wasmtime with these features",
        )?;
        ticker::register(&engine).context("starting the epoch ticker")?;
        Ok(Engine {
            engine,
            serving: OnceLock::new(),
            baseline: OnceLock::new(),
            features: features.to_vec(),
            core_linker: OnceLock::new(),
            command_linker: OnceLock::new(),
            http_linker: OnceLock::new(),
        })
    }

    /// The engine `wasi:http` handlers are compiled for and served by.
    fn serving_engine(&self) -> &wasmtime::Engine {
        self.serving.get_or_init(|| {
            let pooled = config(&self.features).and_then(|mut config| {
                config.allocation_strategy(http::instance_pool());
                wt(wasmtime::Engine::new(&config), "reserving the instance pool")
            });
            let registered = pooled.and_then(|engine| {
                ticker::register(&engine).context("starting the epoch ticker")?;
                Ok(engine)
            });
            registered.unwrap_or_else(|e| {
                log::warn!(
                    "serving wasi:http without the pooling allocator (slower instantiation per request): {e:#}"
                );
                self.engine.clone()
            })
        })
    }

    /// The Winch engine for this feature set, or `None` (logged once) where
    /// Winch does not support one of the features.
    fn baseline(&self) -> Option<&Baseline> {
        self.baseline
            .get_or_init(|| {
                let engine = config(&self.features).and_then(|mut config| {
                    config.strategy(wasmtime::Strategy::Winch);
                    let engine = wt(wasmtime::Engine::new(&config), "configuring Winch")?;
                    ticker::register(&engine).context("starting the epoch ticker")?;
                    Ok(engine)
                });
                match engine {
                    Ok(engine) => Some(Baseline {
                        engine,
                        core_linker: OnceLock::new(),
                    }),
                    Err(e) => {
                        log::info!("big modules compile with Cranelift only: {e:#}");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// `bytes` (read from `path`) compiled for this engine: from the cache,
    /// or with Winch first when it is big and uncached (see [`tiering`]),
    /// else with Cranelift.
    fn compile_core(&self, bytes: &[u8], path: &Path) -> Result<(Module, &Linker<CoreState>)> {
        let cache = cache::ModuleCache::shared();
        // Hashed once: the cache keys of every compiler derive from it.
        let digest = wasmbox_format::Digest::of(bytes);
        if let Some(cache) = cache
            && tiering::wanted(bytes.len())
            && let Some(baseline) = self.baseline()
        {
            if let Some(module) = cache::load_cached::<Module>(cache, &self.engine, &digest, path) {
                let linker = self.linker(&self.core_linker, &self.engine, core_linker)?;
                return Ok((module, linker));
            }
            match cache::compile_cached::<Module>(
                Some(cache),
                &baseline.engine,
                bytes,
                &digest,
                path,
                "Winch",
            ) {
                Ok(module) => {
                    tiering::tier_up_in_background(
                        cache,
                        self.engine.clone(),
                        bytes.to_vec(),
                        cache.entry_path(&baseline.engine, cache::Kind::Module, &digest),
                        digest,
                        path.to_path_buf(),
                    );
                    let linker =
                        self.linker(&baseline.core_linker, &baseline.engine, core_linker)?;
                    return Ok((module, linker));
                }
                // A feature Winch lacks (tail calls, GC, ...): Cranelift
                // decides, and explains an invalid module.
                Err(e) => log::info!("Winch cannot compile {}: {e:#}", path.display()),
            }
        }
        let module = cache::compile_cached(cache, &self.engine, bytes, &digest, path, "Cranelift")?;
        let linker = self.linker(&self.core_linker, &self.engine, core_linker)?;
        Ok((module, linker))
    }
}

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
                return http::serve(pre, spec, &mut kill).await.unwrap_or_else(|e| {
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

    /// Reads, compiles (or loads from the module cache) and links the
    /// program `spec` names. Done at container create, so a corrupt module
    /// fails there with a clear error.
    pub fn load(&self, spec: &RunSpec) -> Result<Program> {
        let bytes = read_module(&spec.module)?;
        let cache = cache::ModuleCache::shared();
        if wasmparser::Parser::is_component(&bytes) {
            let serves_http = http::exports_incoming_handler(&bytes);
            let engine = if serves_http {
                self.serving_engine()
            } else {
                &self.engine
            };
            let component: Component = cache::compile_cached(
                cache,
                engine,
                &bytes,
                &wasmbox_format::Digest::of(&bytes),
                &spec.module,
                "Cranelift",
            )?;
            if serves_http && http::is_http_handler(engine, &component) {
                http::check(spec)?;
                let linker = self.linker(&self.http_linker, engine, http::linker)?;
                let pre = http::pre_instantiate(linker, &component)
                    .with_context(|| format!("{} cannot be served", spec.module.display()))?;
                return Ok(Program(Linked::Http(pre)));
            }
            let linker = self.linker(&self.command_linker, engine, command_linker)?;
            let pre = wt(
                linker.instantiate_pre(&component),
                "the component imports something WASI does not provide",
            )
            .and_then(|pre| {
                wt(
                    CommandPre::new(pre),
                    "the component is not a wasi:cli command",
                )
            })
            .with_context(|| format!("{} cannot run", spec.module.display()))?;
            Ok(Program(Linked::Component(pre)))
        } else if bytes.starts_with(b"\0asm") || spec.module.extension().is_some_and(|e| e == "wat")
        {
            let (module, linker) = self.compile_core(&bytes, &spec.module)?;
            let pre = wt(
                linker.instantiate_pre(&module),
                "the module imports something WASI does not provide",
            )
            .with_context(|| format!("{} cannot run", spec.module.display()))?;
            Ok(Program(Linked::Core(pre)))
        } else {
            bail!(
                "{} is not a WebAssembly module (it does not start with \\0asm)",
                spec.module.display()
            )
        }
    }

    /// The linker in `slot` (always for `engine`), built on first use.
    fn linker<'a, L>(
        &self,
        slot: &'a OnceLock<L>,
        engine: &wasmtime::Engine,
        build: fn(&wasmtime::Engine) -> Result<L>,
    ) -> Result<&'a L> {
        if let Some(linker) = slot.get() {
            return Ok(linker);
        }
        let linker = build(engine).context("linking WASI")?;
        Ok(slot.get_or_init(|| linker))
    }

    async fn run_guest(&self, program: &Program, spec: &RunSpec) -> Result<i32> {
        // Stdio and preopens are opened as the shim (containerd's FIFOs are
        // root's); everything the guest does from here on as the container's user.
        let wasi = wasi_builder(spec)?;
        let _as_user = enter_identity(spec)?;
        let limits = MeteredLimits::new(spec);
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

/// WASI preview 1 for core modules, with the guarded opens.
fn core_linker(engine: &wasmtime::Engine) -> Result<Linker<CoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut CoreState| &mut s.wasi)?;
    opens::guard_p1_opens(&mut linker, |s| &mut s.wasi)?;
    Ok(linker)
}

/// WASI 0.2 for `wasi:cli` commands, with the guarded opens.
fn command_linker(engine: &wasmtime::Engine) -> Result<ComponentLinker<ComponentState>> {
    let mut linker = ComponentLinker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    opens::guard_p2_opens(&mut linker)?;
    Ok(linker)
}

/// A guest's resource table (its open files and directories, streams,
/// sockets), capped at its open-files limit, so that it cannot use up the
/// descriptors of the process it shares with the other containers of its
/// pod. Its opens past the cap get EMFILE (see `opens`); any other resource
/// past it ends the guest by a trap, as wasmtime-wasi reports a full table.
pub(crate) fn cap_resources(table: &mut ResourceTable, open_files_limit: Option<usize>) {
    if let Some(limit) = open_files_limit {
        table.set_max_capacity(limit.max(MIN_RESOURCES));
    }
}

/// How long a guest's end waits for file operations already running in its
/// blocking pool. Guests cannot open FIFOs (see `opens`), so only storage
/// that stalls, or a name lookup whose DNS server does not answer, can take
/// this long.
const GUEST_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The fewest resources a guest is allowed, whatever its limit says: its
/// standard streams and preopens take some before it opens anything.
const MIN_RESOURCES: usize = 64;

pub(crate) fn resource_table(open_files_limit: Option<usize>) -> ResourceTable {
    let mut table = ResourceTable::new();
    cap_resources(&mut table, open_files_limit);
    table
}

struct CoreState {
    wasi: WasiP1Ctx,
    limits: MeteredLimits,
    activity: ticker::WasmActivity,
}

struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MeteredLimits,
    activity: ticker::WasmActivity,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

async fn wait_for_kill(kill: &mut watch::Receiver<Option<i32>>) -> i32 {
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

/// Takes on `spec`'s identity on this thread until the guard drops.
fn enter_identity(spec: &RunSpec) -> Result<Option<identity::Entered>> {
    spec.identity
        .as_ref()
        .map(|id| {
            id.enter()
                .with_context(|| format!("taking on the container's user {}:{}", id.uid, id.gid))
        })
        .transpose()
}

/// Adds context to a wasmtime error.
fn wt<T>(r: wasmtime::Result<T>, what: &str) -> Result<T> {
    r.map_err(|e| anyhow::Error::from(e).context(what.to_string()))
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

/// The largest module [`read_module`] reads, and the shim reads from an
/// image's Wasm layer, unless [`MAX_MODULE_ENV`] says otherwise: far above
/// real programs (components of tens of MiB), far below what would let a
/// hostile image drive the shim out of memory.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Environment variable of the process (for the shim: containerd's, which
/// its shims inherit) that sets the module cap in MiB.
pub const MAX_MODULE_ENV: &str = "WASMBOX_MAX_MODULE_MIB";

/// The module cap in effect: [`MAX_MODULE_ENV`] when it is a number of MiB
/// from 1 to 4096, else [`MAX_MODULE_BYTES`].
pub fn max_module_bytes() -> u64 {
    static CAP: OnceLock<u64> = OnceLock::new();
    *CAP.get_or_init(|| module_cap_from(std::env::var(MAX_MODULE_ENV).ok().as_deref()))
}

fn module_cap_from(value: Option<&str>) -> u64 {
    match value.map(|v| v.trim().parse::<u64>()) {
        Some(Ok(mib)) if (1..=4096).contains(&mib) => mib << 20,
        Some(_) => {
            eprintln!(
                "wasmbox: {MAX_MODULE_ENV}={} is not a number of MiB from 1 to 4096; using {} MiB",
                value.unwrap_or_default(),
                MAX_MODULE_BYTES >> 20
            );
            MAX_MODULE_BYTES
        }
        None => MAX_MODULE_BYTES,
    }
}

/// Reads the module at `path`: a regular file of at most
/// [`MAX_MODULE_BYTES`]. A FIFO (which would block the reader forever), a
/// device (`/dev/zero` never ends), a socket or a directory is refused by its
/// type before it is read, and checked again on the open descriptor.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    read_module_capped(path, max_module_bytes())
}

/// [`read_module`] with the cap `max` bytes.
fn read_module_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let kind = |t: std::fs::FileType| {
        if t.is_file() {
            None
        } else if t.is_fifo() {
            Some("a FIFO")
        } else if t.is_char_device() {
            Some("a character device")
        } else if t.is_block_device() {
            Some("a block device")
        } else if t.is_socket() {
            Some("a socket")
        } else if t.is_dir() {
            Some("a directory")
        } else {
            Some("not a file")
        }
    };
    let refuse = |what: &str| {
        anyhow::anyhow!(
            "{} is {what}, not a regular file: a module must be a regular file",
            path.display()
        )
    };
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read the module {}", path.display()))?;
    if let Some(what) = kind(metadata.file_type()) {
        return Err(refuse(what));
    }
    // O_NONBLOCK: were it swapped for a FIFO since the check, the open still
    // returns at once (and the check below refuses it).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot read the module {}", path.display()))?;
    let metadata = file.metadata()?;
    if let Some(what) = kind(metadata.file_type()) {
        return Err(refuse(what));
    }
    let too_big = || {
        anyhow::anyhow!(
            "{} is larger than {} MiB, the most a module may be ({MAX_MODULE_ENV} sets it)",
            path.display(),
            max >> 20
        )
    };
    if metadata.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the module {}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(too_big()); // it grew while being read
    }
    Ok(bytes)
}

/// Resolves an absolute guest path to a host path inside `rootfs`, refusing
/// anything (`..`, symlinks) that would lead outside it.
pub fn resolve_in_root(rootfs: &Path, guest: &str) -> Result<PathBuf> {
    let mut path = rootfs.to_path_buf();
    for c in Path::new(guest).components() {
        match c {
            std::path::Component::Normal(p) => path.push(p),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            std::path::Component::ParentDir | std::path::Component::Prefix(_) => {
                bail!("{guest} leaves the container's root filesystem")
            }
        }
    }
    let real = path
        .canonicalize()
        .with_context(|| format!("{guest} does not exist in the container's root filesystem"))?;
    let root = rootfs.canonicalize()?;
    if !real.starts_with(&root) {
        bail!("{guest} is a link that leaves the container's root filesystem");
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn only_regular_files_up_to_the_size_cap_are_read_as_modules() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.wasm");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let refused = |path: &Path| format!("{:#}", read_module(path).unwrap_err());
        // Returns at once: a FIFO with no writer is never opened for reading.
        assert!(refused(&fifo).contains("is a FIFO, not a regular file"));
        assert!(refused(Path::new("/dev/zero")).contains("is a character device"));
        assert!(refused(dir.path()).contains("is a directory"));

        // A sparse file: its size is refused before anything is read.
        let big = dir.path().join("big.wasm");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_MODULE_BYTES + 1)
            .unwrap();
        assert!(refused(&big).contains("larger than 256 MiB"));

        let ok = dir.path().join("ok.wasm");
        std::fs::write(&ok, b"\0asm\x01\0\0\0").unwrap();
        assert_eq!(read_module(&ok).unwrap(), b"\0asm\x01\0\0\0");
        assert!(
            format!("{:#}", read_module_capped(&ok, 4).unwrap_err()).contains("larger than 0 MiB")
        );

        // The cap can be set in MiB; nonsense falls back to the default.
        assert_eq!(module_cap_from(Some("16")), 16 << 20);
        assert_eq!(module_cap_from(Some("0")), MAX_MODULE_BYTES);
        assert_eq!(module_cap_from(Some("lots")), MAX_MODULE_BYTES);
        assert_eq!(module_cap_from(None), MAX_MODULE_BYTES);
    }

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
    fn engines_are_shared_per_feature_set_and_bounded() {
        // The other tests of this process use the default engine: make it first.
        Engine::global().unwrap();
        let a = Engine::with_features(&parse_features("simd,tail-call").unwrap()).unwrap();
        let b = Engine::with_features(&parse_features("tail-call,+simd,simd").unwrap()).unwrap();
        assert!(
            std::ptr::eq(a, b),
            "the same set in another order got its own engine"
        );
        let sets = [
            "memory64",
            "-memory64",
            "multi-memory",
            "-multi-memory",
            "-tail-call",
            "extended-const",
            "wide-arithmetic",
            "custom-page-sizes",
            "-extended-const",
        ];
        let refused = sets
            .iter()
            .map(|set| Engine::with_features(&parse_features(set).unwrap()))
            .filter_map(Result::err)
            .next()
            .expect("more feature sets than MAX_ENGINES were all given engines");
        assert!(
            format!("{refused}").contains("different Wasm feature sets"),
            "{refused}"
        );
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
