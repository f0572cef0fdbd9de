//! A container's standard streams: the FIFOs containerd hands over, and the
//! pseudo-terminal of `-t`, whose two relay threads copy between the FIFOs
//! and the terminal's master. Shared by Wasm guests and runc's containers.

use anyhow::{Context, Result, bail};

/// A pseudo-terminal for `-t`: the guest gets the slave; two threads copy the
/// caller's stdin FIFO into the master and the master into the stdout FIFO.
pub(crate) struct Pty {
    pub(crate) master: std::fs::File,
    pub(crate) slave: std::os::fd::OwnedFd,
}

/// Waits (up to a second) until the tty-out thread has read everything the
/// guest wrote: Linux discards a terminal's unread output once its slave side
/// closes, so the last lines of a fast guest would otherwise be lost.
pub(crate) fn drain_terminal(master: &std::fs::File) {
    wait_until_read(
        master,
        std::time::Instant::now() + std::time::Duration::from_secs(1),
    );
}

/// Waits until nothing written to `file` (a FIFO or terminal) is left
/// unread, or until `deadline`.
pub(crate) fn wait_until_read(file: &std::fs::File, deadline: std::time::Instant) {
    while unread(file) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Bytes written to `file` (a FIFO or terminal) that no reader has taken yet;
/// 0 when that cannot be told.
fn unread(file: &std::fs::File) -> libc::c_int {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer; the fd is ours and open.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(file),
            libc::FIONREAD,
            &mut pending,
        )
    };
    if rc != 0 { 0 } else { pending }
}

/// How long a stopped guest's exit waits for the readers of its output
/// FIFOs to take what it wrote before they are closed (a FIFO's data is
/// lost once no one holds it open). Bounded: a reader that is gone (`ctr
/// run -d`) must not hold the exit up.
pub(crate) const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

impl Pty {
    pub(crate) fn open(stdin: &str, stdout: &str) -> Result<Pty> {
        use std::os::fd::FromRawFd;
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the provided ints; the
        // name, termios and winsize pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            bail!("creating a terminal: {}", std::io::Error::last_os_error());
        }
        for fd in [master, slave] {
            // SAFETY: fcntl with integer arguments on a descriptor openpty
            // just made: close-on-exec, so no runc or container inherits it.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        // SAFETY: openpty succeeded, so both are fresh descriptors we own.
        let (master, slave) = unsafe {
            (
                std::fs::File::from_raw_fd(master),
                std::os::fd::OwnedFd::from_raw_fd(slave),
            )
        };
        relay_terminal(&master, stdin, stdout)?;
        Ok(Pty { master, slave })
    }
}

/// Starts the two threads that copy the caller's `stdin` FIFO into a
/// terminal's `master` and the master into the `stdout` FIFO (either may be
/// empty: not relayed). The output thread ends when the terminal's last
/// slave descriptor closes.
pub(crate) fn relay_terminal(master: &std::fs::File, stdin: &str, stdout: &str) -> Result<()> {
    if !stdout.is_empty() {
        let mut from = master.try_clone()?;
        let mut to = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(stdout)
            .with_context(|| format!("opening {stdout}"))?;
        std::thread::Builder::new()
            .name("tty-out".into())
            .spawn(move || {
                // Ends with EIO once the guest's side of the terminal is closed.
                let _ = std::io::copy(&mut from, &mut to);
            })?;
    }
    if !stdin.is_empty() {
        let mut to = master.try_clone()?;
        let path = stdin.to_string();
        std::thread::Builder::new()
            .name("tty-in".into())
            .spawn(move || {
                if let Ok(mut from) = std::fs::File::open(&path) {
                    let _ = std::io::copy(&mut from, &mut to);
                }
            })?;
    }
    Ok(())
}

/// Opens the output FIFOs `paths` (empty ones skipped) for writing. Read
/// and write, so the open does not wait for a reader: containerd's client
/// opens its read ends asynchronously, and a writer from create on lets
/// that open finish long before a fast program exits (runc's shim opens
/// them at create too).
pub(crate) fn open_output_fifos(paths: &[&str]) -> Result<Vec<std::fs::File>> {
    paths
        .iter()
        .filter(|p| !p.is_empty())
        .map(|path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| format!("opening the output FIFO {path}"))
        })
        .collect()
}

/// A process's stdin fed from the caller's FIFO: the process reads a
/// pipe, and a thread copies into it what the caller writes to the FIFO,
/// then closes it. The process so sees input and end-of-file whenever the
/// caller opens its end, before or after the process starts (as with
/// containerd's runc shim). Dropped, it lets go of the FIFO: a thread still
/// waiting for the caller to open it is released.
pub(crate) struct InputRelay {
    fifo: String,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The thread's open of the FIFO has returned.
    opened: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl InputRelay {
    /// Starts the relay; returns it and the pipe's read end for the process.
    pub(crate) fn start(fifo: &str) -> Result<(InputRelay, std::fs::File)> {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array we pass.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("making the stdin pipe");
        }
        // SAFETY: pipe2 succeeded: both are new descriptors that we own.
        let (read, mut write) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (path, stop, open) = (fifo.to_string(), done.clone(), opened.clone());
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                // Blocks until the caller opens its end (or the drop below).
                let from = std::fs::File::open(&path);
                open.store(true, std::sync::atomic::Ordering::SeqCst);
                let Ok(mut from) = from else {
                    return;
                };
                if !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // Ends at the caller's end-of-file, or when the process
                    // is gone (EPIPE: SIGPIPE is ignored in the shim).
                    let _ = std::io::copy(&mut from, &mut write);
                }
            })
            .context("starting the stdin relay")?;
        Ok((
            InputRelay {
                fifo: fifo.to_string(),
                done,
                opened,
            },
            read,
        ))
    }
}

impl Drop for InputRelay {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::Ordering::SeqCst;
        self.done.store(true, SeqCst);
        // A writer that opens and closes at once releases a reader waiting
        // in open. The open fails (ENXIO) while no reader waits yet, so it
        // is tried again until the thread's open returned (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while !self.opened.load(SeqCst) && std::time::Instant::now() < deadline {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.fifo);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// Sets a terminal's window size through its master.
pub(crate) fn resize(master: &std::fs::File, width: u32, height: u32) -> Result<()> {
    let size = libc::winsize {
        ws_row: height as u16,
        ws_col: width as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is our open master.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(master),
            libc::TIOCSWINSZ,
            &size as *const libc::winsize,
        )
    };
    if rc != 0 {
        bail!("resizing the terminal: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Where runc sends the master of a container's terminal (`runc create
/// --console-socket`): a listening socket under a short temporary path
/// (a bundle path is too long for a socket address), removed on drop.
pub(crate) struct ConsoleSocket {
    path: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    pub(crate) fn new() -> Result<ConsoleSocket> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "wasmbox-console-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .with_context(|| format!("listening on the console socket {}", path.display()))?;
        Ok(ConsoleSocket { path, listener })
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The terminal master runc sent. Call after runc returned: runc sends
    /// it before it exits, so it waits in the socket.
    pub(crate) fn receive(&self) -> Result<std::fs::File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        self.listener.set_nonblocking(true)?;
        let (stream, _) = self
            .listener
            .accept()
            .context("runc sent no terminal to the console socket")?;
        stream.set_nonblocking(false)?;
        let mut name = [0u8; 256];
        let mut iov = libc::iovec {
            iov_base: name.as_mut_ptr().cast(),
            iov_len: name.len(),
        };
        // Room for one descriptor, aligned for cmsghdr.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `msg` points at `iov` and `control`, which outlive the call
        // and are as long as the header says.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(std::io::Error::last_os_error())
                .context("receiving the terminal from runc");
        }
        // SAFETY: CMSG_FIRSTHDR reads the header recvmsg filled in; it
        // returns null or a pointer into `control`.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        let is_rights = !cmsg.is_null() && {
            // SAFETY: a non-null cmsg points at a complete header in `control`.
            let header = unsafe { &*cmsg };
            header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS
        };
        if !is_rights {
            bail!("runc's message on the console socket holds no terminal");
        }
        // SAFETY: an SCM_RIGHTS message carries at least one int, written by
        // the kernel into `control` (maybe unaligned for int, hence the read).
        let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
        // SAFETY: the kernel installed `fd` in this process for us alone.
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A process's standard streams as the shim keeps them: the output FIFOs'
/// write ends until its output was read, a terminal's master (for resizes
/// and draining) and, until the program takes it, its slave, and the relay
/// of its stdin. Shared by Wasm guests, runc's containers and their execs.
#[derive(Default)]
pub struct ProcessIo {
    pub(crate) output_fifos: Vec<std::fs::File>,
    pub(crate) terminal_master: Option<std::fs::File>,
    pub(crate) terminal_slave: Option<std::os::fd::OwnedFd>,
    pub(crate) stdin: Option<InputRelay>,
}

impl ProcessIo {
    /// After the process exited: waits (bounded) until its output was read,
    /// then lets go of the FIFOs and the stdin relay.
    pub fn drain(&mut self) {
        self.stdin = None;
        if let Some(master) = &self.terminal_master {
            drain_terminal(master);
        }
        let deadline = std::time::Instant::now() + OUTPUT_DRAIN;
        for fifo in &self.output_fifos {
            wait_until_read(fifo, deadline);
        }
        self.output_fifos.clear();
    }

    /// A process that will never run (or is gone): lets go of everything but
    /// the terminal's master, at once.
    pub fn abandon(&mut self) {
        self.output_fifos.clear();
        self.terminal_slave = None;
        self.stdin = None;
    }

    /// Sets the terminal's window size (`-t` resizes); `what` names the process.
    pub fn resize(&self, what: &str, width: u32, height: u32) -> Result<()> {
        match &self.terminal_master {
            Some(master) => resize(master, width, height),
            None => bail!("{what} has no terminal"),
        }
    }
}
