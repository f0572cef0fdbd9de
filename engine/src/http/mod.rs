//! Serving a component that exports `wasi:http/incoming-handler`: an HTTP/1.1
//! server on the container's port, one fresh instance per request from a
//! component pre-instantiated at create, and a graceful stop on SIGTERM that
//! lets requests in flight finish.
//!
//! This module says which components are handlers and links them, once per
//! engine, with their pool and store data; `server` is the server itself.

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::meter::MeteredLimits;
use crate::run_spec::RunSpec;

mod output;
pub(crate) mod server;

pub use server::{
    DEFAULT_CONCURRENCY, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_BODY, REQUEST_DEADLINE,
    REQUEST_HOST_BYTES,
};

/// Port served when neither the annotation nor `PORT` names one.
pub const DEFAULT_PORT: u16 = 8080;
/// The container environment variable that names the port to serve.
pub const PORT_ENV: &str = "PORT";
/// Bytes of a freed pool slot that stay resident (zeroed, not returned):
/// the first pages of each of a request's linear memories and tables, and
/// of its fiber stack.
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 1 << 20;
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
const ASYNC_STACK_KEEP_RESIDENT: usize = 64 << 10;
/// What one request's slot keeps resident after it ends: two memories and
/// two tables (a component and its adapter), and a stack. A container holds
/// this from its budget for each request it ever ran at the same time,
/// since that many slots stay warm (see `Server::enter`).
pub const SLOT_KEPT_RESIDENT: u64 =
    (2 * LINEAR_MEMORY_KEEP_RESIDENT + 2 * TABLE_KEEP_RESIDENT + ASYNC_STACK_KEEP_RESIDENT) as u64;

/// Whether `component` is an HTTP handler (exports `wasi:http/incoming-handler@0.2.x`).
pub fn is_http_handler(engine: &wasmtime::Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2"))
}

/// Whether the component in `bytes` exports `wasi:http/incoming-handler@0.2.x`
/// at its top level: read before compiling, to pick the serving engine.
pub fn exports_incoming_handler(bytes: &[u8]) -> bool {
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::Version { .. }) => depth += 1,
            Ok(wasmparser::Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(wasmparser::Payload::ComponentExportSection(exports)) if depth == 1 => {
                for export in exports.into_iter().flatten() {
                    if export
                        .name
                        .name
                        .starts_with("wasi:http/incoming-handler@0.2")
                    {
                        return true;
                    }
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// How many requests' instances the pool holds at once, over all the HTTP
/// containers of one shim; a request past it waits for a slot.
pub const POOLED_INSTANCES: u32 = 256;

/// The pooling allocator for request instances: slots are reserved once
/// (address space, not memory) and reset between requests instead of
/// mapped and unmapped for each.
pub(crate) fn instance_pool() -> wasmtime::InstanceAllocationStrategy {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(POOLED_INSTANCES)
        .total_core_instances(POOLED_INSTANCES * 4)
        .total_memories(POOLED_INSTANCES * 2)
        .total_tables(POOLED_INSTANCES * 2)
        .total_stacks(POOLED_INSTANCES)
        .total_gc_heaps(POOLED_INSTANCES)
        .max_memories_per_module(4)
        .max_tables_per_module(4)
        // A slot's first pages are zeroed by memset when freed, not
        // returned with madvise: no page faults on the next request, and
        // no TLB shootdown across the cores (as `wasmtime serve` does).
        .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .async_stack_keep_resident(ASYNC_STACK_KEEP_RESIDENT);
    wasmtime::InstanceAllocationStrategy::Pooling(pool)
}

/// WASI 0.2 (with the guarded opens) and `wasi:http`, built once per engine.
pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<Linker<HttpState>> {
    let mut linker: Linker<HttpState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    crate::opens::guard_p2_opens(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)?;
    Ok(linker)
}

/// The component linked once, at create, so each request only instantiates.
pub(crate) fn pre_instantiate(
    linker: &Linker<HttpState>,
    component: &Component,
) -> Result<ProxyPre<HttpState>> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .context("the component imports something neither WASI nor wasi:http provides")?;
    ProxyPre::new(pre)
        .map_err(anyhow::Error::from)
        .context("the component's wasi:http/incoming-handler export has the wrong type")
}

/// One request's store data.
pub struct HttpState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: MeteredLimits,
    hooks: OutgoingRequests,
    activity: crate::ticker::WasmActivity,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Outgoing `wasi:http` requests leave only when the container has a
/// network (its pod's, or the host's by annotation), like its sockets.
struct OutgoingRequests {
    allowed: bool,
}

impl WasiHttpHooks for OutgoingRequests {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let allowed = self.allowed;
        Box::new(async move {
            if !allowed {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Checks, at create, that `spec` can be served; returns the port.
pub fn check(spec: &RunSpec) -> Result<u16> {
    if !spec.network {
        bail!(
            "serving wasi:http needs a network: run the container in a pod, or on the host network with the annotation {}=host",
            wasmbox_format::ANNOTATION_NETWORK
        );
    }
    port(spec)
}

/// The port to serve: the annotation's (already in `spec.http_port`), else
/// the container's `PORT`, else 8080.
fn port(spec: &RunSpec) -> Result<u16> {
    if let Some(port) = spec.http_port {
        return Ok(port);
    }
    match spec.env.iter().rev().find(|(k, _)| k == PORT_ENV) {
        None => Ok(DEFAULT_PORT),
        Some((_, v)) => v.parse().ok().filter(|p| *p != 0).with_context(|| {
            format!("environment variable {PORT_ENV}={v} is not a port number (1-65535)")
        }),
    }
}
