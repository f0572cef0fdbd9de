//! The guest's WASI context: its standard streams (containerd's FIFOs, a
//! terminal, or this process's own), args, env, network and preopens.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result, bail};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::run_spec::{RunSpec, Stdio};
use crate::wt;

/// The WASI context: args, env, preopens and stdio from `spec`, nothing inherited.
pub(crate) fn wasi_builder(spec: &RunSpec) -> Result<WasiCtxBuilder> {
    let mut wasi = wasi_without_stdio(spec)?;
    match &spec.stdin {
        Stdio::Null => {}
        Stdio::Inherit => {
            wasi.inherit_stdin();
        }
        Stdio::Fifo(path) => {
            wasi.stdin(AsyncStdinStream::new(stdin_pipe(path)?));
        }
        Stdio::Terminal(tty) => {
            let file = nonblocking_dup(tty)?;
            wasi.stdin(AsyncStdinStream::new(
                tokio::net::unix::pipe::Receiver::from_file_unchecked(file)?,
            ));
        }
    }
    for (stdio, is_stdout) in [(&spec.stdout, true), (&spec.stderr, false)] {
        let stream = match stdio {
            Stdio::Null => continue,
            Stdio::Inherit => {
                if is_stdout {
                    wasi.inherit_stdout();
                } else {
                    wasi.inherit_stderr();
                }
                continue;
            }
            Stdio::Fifo(path) => AsyncStdoutStream::new(64 * 1024, output_fifo(path)?),
            Stdio::Terminal(tty) => AsyncStdoutStream::new(
                64 * 1024,
                tokio::net::unix::pipe::Sender::from_file_unchecked(nonblocking_dup(tty)?)?,
            ),
        };
        if is_stdout {
            wasi.stdout(stream);
        } else {
            wasi.stderr(stream);
        }
    }
    Ok(wasi)
}

/// The guest's WASI context but for its standard streams: args, env,
/// network and preopened directories.
pub(crate) fn wasi_without_stdio(spec: &RunSpec) -> Result<WasiCtxBuilder> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&spec.args);
    wasi.envs(&spec.env);
    if spec.network {
        // wasmtime-wasi allows no protocol by default: each is granted.
        wasi.inherit_network();
        wasi.allow_ip_name_lookup(true);
        wasi.allow_tcp(true);
        wasi.allow_udp(true);
    }
    for p in &spec.preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        wt(
            wasi.preopened_dir(&p.host, &p.guest, perms).map(|_| ()),
            &format!("opening {} for the guest", p.host.display()),
        )?;
    }
    Ok(wasi)
}

/// A non-blocking duplicate of a terminal descriptor, for the guest's async streams.
pub(crate) fn nonblocking_dup(fd: &OwnedFd) -> Result<std::fs::File> {
    let dup = fd
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating the terminal")?;
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL do not touch memory.
    unsafe {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&dup);
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            bail!(
                "making the terminal non-blocking: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(std::fs::File::from(dup))
}

/// Opens an output FIFO without waiting for a reader.
pub(crate) fn output_fifo(path: &Path) -> Result<tokio::net::unix::pipe::Sender> {
    tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// What each thread the engine starts to forward a guest's I/O runs first
/// ([`on_io_thread_start`]).
static IO_THREAD_START: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what each thread that forwards a guest's I/O runs first. Such a
/// thread is started by the guest's own: a shared shim, whose guest threads
/// sit in their containers' cgroups, moves it back to its own, so that the
/// container's delete finds only the guest's thread to account for.
pub fn on_io_thread_start(hook: fn()) {
    let _ = IO_THREAD_START.set(hook);
}

/// A pipe fed from the stdin FIFO by a thread that waits for the writer, so
/// the guest sees data when the caller writes and end-of-file when it closes.
fn stdin_pipe(path: &Path) -> Result<tokio::net::unix::pipe::Receiver> {
    let (tx, rx) = tokio::net::unix::pipe::pipe().context("creating the stdin pipe")?;
    let tx = tx.into_blocking_fd()?;
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("wasm-stdin".into())
        .spawn(move || {
            if let Some(hook) = IO_THREAD_START.get() {
                hook();
            }
            let mut sink = std::fs::File::from(tx);
            if let Ok(mut fifo) = std::fs::File::open(&path) {
                let _ = std::io::copy(&mut fifo, &mut sink);
            }
        })
        .context("starting the stdin thread")?;
    Ok(rx)
}
