//! The wasi:http server of one container: connections and their caps, one
//! fresh instance per request within the container's memory budget, the
//! guest's output, and the graceful stop. Kept apart from the linking,
//! which is done once per engine: this is what runs per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use wasmtime::Store;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use super::output::OutputSink;
use super::{HttpState, OutgoingRequests, SLOT_KEPT_RESIDENT, check};
use crate::guest::{enter_identity, metered_limits, resource_table};
use crate::kill::wait_for_kill;
use crate::meter::MeteredLimits;
use crate::run_spec::{RunSpec, Stdio};
use crate::stdio::{nonblocking_dup, output_fifo, wasi_without_stdio};

/// What one request's guest may print to stdout or stderr; more is cut.
const REQUEST_OUTPUT_LIMIT: usize = 1 << 20;
/// What a request's store holds on the host besides its linear memories
/// and tables (WASI and HTTP state, resource table, the touched part of
/// its fiber stack): a measured bound, rounded up.
const REQUEST_HOST_STATE: u64 = 512 << 10;
/// What a request takes from its container's memory budget before its
/// instance is made, and gives back when its store goes: the host memory
/// the guest can make it use (its two output buffers, filled up to their
/// cap, and its store), which a memory limit must cover as well as its
/// linear memory.
pub const REQUEST_HOST_BYTES: u64 = 2 * REQUEST_OUTPUT_LIMIT as u64 + REQUEST_HOST_STATE;
/// Connections one container holds open; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// Requests one container runs at a time unless the spec says otherwise
/// (`RunSpec::http_concurrency`); more wait for a free slot.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// A client must send a request's headers within this; a connection idle
/// between requests is closed after it too.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a request may run, response body included.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(300);
/// The largest request body a guest is handed; a longer one fails the read.
pub const MAX_REQUEST_BODY: usize = 64 << 20;
/// The pause after a failed `accept` (EMFILE, ENFILE, ENOBUFS), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Where the guest's stdout or stderr lines go, shared by all requests.
type Sink = Option<Arc<OutputSink>>;

fn sink(stdio: &Stdio, is_stdout: bool) -> Result<Sink> {
    let writer: Box<dyn AsyncWrite + Send + Unpin> = match stdio {
        Stdio::Null => return Ok(None),
        Stdio::Inherit if is_stdout => Box::new(tokio::io::stdout()),
        Stdio::Inherit => Box::new(tokio::io::stderr()),
        Stdio::Fifo(path) => Box::new(output_fifo(path)?),
        Stdio::Terminal(tty) => Box::new(tokio::net::unix::pipe::Sender::from_file_unchecked(
            nonblocking_dup(tty)?,
        )?),
    };
    Ok(Some(Arc::new(OutputSink::new(writer))))
}

struct Server {
    pre: ProxyPre<HttpState>,
    spec: RunSpec,
    stdout: Sink,
    stderr: Sink,
    served: AtomicU64,
    failed: AtomicU64,
    /// Requests in flight, bounded by the spec's concurrency.
    requests: Arc<Semaphore>,
    /// How many requests run now, and the most that ever ran at once with
    /// the budget taken for their warm slots (given back when the server
    /// ends).
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    warm_slots: std::sync::Mutex<(usize, MeteredLimits)>,
}

/// A request that did not fit the container's memory limit: answered 503.
#[derive(Debug, thiserror::Error)]
#[error("the container's memory limit has no room for another request ({needed} bytes)")]
struct OverMemoryLimit {
    needed: u64,
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves until killed. SIGKILL ends at once (137); any other signal stops
/// accepting, lets the requests in flight finish and exits 0.
pub(crate) async fn serve(
    pre: &ProxyPre<HttpState>,
    spec: &RunSpec,
    kill: &mut watch::Receiver<Option<i32>>,
) -> Result<i32> {
    let port = check(spec)?;
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for wasi:http"))?;
    log::info!("serving wasi:http on {addr}");
    let concurrency = spec.http_concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
    let server = Arc::new(Server {
        pre: pre.clone(),
        spec: spec.clone(),
        stdout: sink(&spec.stdout, true)?,
        stderr: sink(&spec.stderr, false)?,
        served: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        requests: Arc::new(Semaphore::new(concurrency)),
        in_flight: Default::default(),
        warm_slots: std::sync::Mutex::new((0, metered_limits(spec))),
    });
    // The listener and the output streams are the shim's; the requests'
    // file access is the container's user's.
    let _as_user = enter_identity(spec)?;
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let signal = loop {
        let accepting = async {
            let slot = connections.clone().acquire_owned().await;
            (slot, listener.accept().await)
        };
        tokio::select! {
            (slot, accepted) = accepting => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        log::warn!("accepting a wasi:http connection: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                // A response goes out as its head and then its body: with
                // Nagle's algorithm the body waits for the client's ACK of
                // the head, which a keep-alive client delays by up to 40 ms.
                if let Err(e) = stream.set_nodelay(true) {
                    log::warn!("wasi:http connection from {peer}: setting TCP_NODELAY: {e}");
                }
                let server = server.clone();
                let connection = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper::service::service_fn(move |request| {
                            let server = server.clone();
                            async move { Ok::<_, std::convert::Infallible>(server.handle(request).await) }
                        }),
                    );
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        log::info!("wasi:http connection from {peer}: {e}");
                    }
                    drop(slot);
                });
            }
            signal = wait_for_kill(kill) => break signal,
        }
    };
    drop(listener);
    let status = if signal == libc::SIGKILL {
        128 + signal
    } else {
        log::info!("signal {signal}: finishing the wasi:http requests in flight");
        tokio::select! {
            _ = graceful.shutdown() => 0,
            _ = wait_for_sigkill(kill) => 128 + libc::SIGKILL,
        }
    };
    log::info!(
        "wasi:http on {addr} stopped: {} requests served, {} failed",
        server.served.load(Ordering::Relaxed),
        server.failed.load(Ordering::Relaxed)
    );
    Ok(status)
}

/// Waits for SIGKILL (the end of the grace period); other signals while
/// draining change nothing.
async fn wait_for_sigkill(kill: &mut watch::Receiver<Option<i32>>) {
    loop {
        if *kill.borrow_and_update() == Some(libc::SIGKILL) {
            return;
        }
        if kill.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Server {
    /// One request in a fresh instance; a guest that fails answers 500.
    async fn handle(
        &self,
        request: hyper::Request<Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let what = format!("{} {}", request.method(), request.uri());
        match self.call_guest(request).await {
            Ok(response) => {
                self.served.fetch_add(1, Ordering::Relaxed);
                response
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                log::warn!("wasi:http request {what} failed: {e:#}");
                let (status, text): (_, &'static [u8]) = if e.is::<OverMemoryLimit>() {
                    (
                        hyper::StatusCode::SERVICE_UNAVAILABLE,
                        b"service unavailable: the container is at its memory limit\n",
                    )
                } else {
                    (
                        hyper::StatusCode::INTERNAL_SERVER_ERROR,
                        b"internal server error\n",
                    )
                };
                let body = http_body_util::Full::new(bytes::Bytes::from_static(text))
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let mut response = hyper::Response::new(body);
                *response.status_mut() = status;
                response
            }
        }
    }

    async fn call_guest(
        &self,
        request: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>> {
        let slot = self
            .requests
            .clone()
            .acquire_owned()
            .await
            .context("the server is stopping")?;
        let mut limits = metered_limits(&self.spec);
        if !limits.take(REQUEST_HOST_BYTES) {
            return Err(OverMemoryLimit {
                needed: REQUEST_HOST_BYTES,
            }
            .into());
        }
        let in_flight = self.enter()?;
        let request = request.map(|body| {
            http_body_util::Limited::new(body, MAX_REQUEST_BODY).map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ErrorCode::HttpRequestBodySize(Some(MAX_REQUEST_BODY as u64))
                } else {
                    ErrorCode::HttpRequestDenied
                }
            })
        });
        let stdout = MemoryOutputPipe::new(REQUEST_OUTPUT_LIMIT);
        let stderr = MemoryOutputPipe::new(REQUEST_OUTPUT_LIMIT);
        let mut wasi = wasi_without_stdio(&self.spec)?;
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        let mut store = Store::new(
            self.pre.engine(),
            HttpState {
                wasi: wasi.build(),
                http: WasiHttpCtx::new(),
                table: resource_table(self.spec.open_files_limit),
                limits,
                hooks: OutgoingRequests {
                    allowed: self.spec.network,
                },
                activity: Default::default(),
            },
        );
        store.limiter(|s| &mut s.limits);
        crate::ticker::track(&mut store, |s| &mut s.activity);
        store.epoch_deadline_async_yield_and_update(1);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(anyhow::Error::from)?;
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(anyhow::Error::from)?;
        let pre = self.pre.clone();
        let (out_sink, err_sink) = (self.stdout.clone(), self.stderr.clone());
        // The guest runs in its own task: it may go on writing the body
        // after it has handed the response over. It ends at the request's
        // deadline, and when the client leaves before the response.
        let guest = tokio::spawn(async move {
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
            };
            let result = match tokio::time::timeout(REQUEST_DEADLINE, run).await {
                Ok(result) => result,
                Err(_) => Err(wasmtime::Error::msg(format!(
                    "the request ran past its {} s deadline",
                    REQUEST_DEADLINE.as_secs()
                ))),
            };
            // The output first: its buffers are part of what the request
            // took from the budget, and of the concurrency it holds.
            for (pipe, sink) in [(stdout, out_sink), (stderr, err_sink)] {
                let bytes = pipe.contents();
                if let (false, Some(sink)) = (bytes.is_empty(), sink) {
                    sink.write(&bytes).await;
                }
            }
            drop(store);
            drop(in_flight);
            drop(slot);
            result.map_err(anyhow::Error::from)
        });
        // Dropped (the client left, hyper dropped this future) before the
        // response: the guest is aborted with it.
        let guest = AbortOnDrop(Some(guest));
        let response = receiver.await;
        let guest = guest.disarm();
        match response {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(error_code(code)),
            Err(_) => match guest.await {
                Ok(Ok(())) => bail!("the guest returned without setting a response"),
                Ok(Err(e)) => Err(e.context("the guest trapped before responding")),
                Err(e) => Err(anyhow::Error::from(e).context("the guest's task failed")),
            },
        }
    }
}

impl Server {
    /// Counts a request in; when more run at once than ever before, one
    /// more pool slot will stay warm after them, and its resident pages
    /// are taken from the container's budget first (for as long as the
    /// server runs). Refused when they do not fit.
    fn enter(&self) -> Result<InFlight> {
        let guard = InFlight(self.in_flight.clone());
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let mut warm = self.warm_slots.lock().unwrap();
        while warm.0 < now {
            if !warm.1.take(SLOT_KEPT_RESIDENT) {
                return Err(OverMemoryLimit {
                    needed: SLOT_KEPT_RESIDENT,
                }
                .into());
            }
            warm.0 += 1;
        }
        Ok(guard)
    }
}

/// Aborts a request's guest task unless disarmed.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    fn disarm(mut self) -> tokio::task::JoinHandle<T> {
        self.0.take().expect("armed")
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

fn error_code(code: ErrorCode) -> anyhow::Error {
    anyhow::anyhow!("the guest answered with error {code:?}")
}
