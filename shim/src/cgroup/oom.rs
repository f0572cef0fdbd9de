//! The kernel's OOM kills in a container's memory cgroup: counted for the
//! exit of a shim that died, and watched for a Linux container's, so that
//! containerd hears of each as a `TaskOOM` event.

use std::path::Path;

use anyhow::{Context, Result};

use super::path::{dirs_of, unified};

/// How many times the kernel's OOM killer acted in the memory cgroup at
/// `cgroups_path` (`oom_kill` of v1's `memory.oom_control`, kernel 4.13+,
/// or of v2's `memory.events`); 0 when it cannot be read.
pub fn oom_kills_in(cgroups_path: &str) -> u64 {
    let Some(dir) = dirs_of(cgroups_path, &["memory"]).and_then(|d| d.into_iter().next()) else {
        return 0;
    };
    let file = if unified() {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    oom_kill_count(&dir.join(file)).unwrap_or(0)
}

/// The `oom_kill N` line of v1's `memory.oom_control` or v2's `memory.events`.
fn oom_kill_count(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// Watches the memory cgroup at `cgroups_path` (a Linux container's, made
/// by runc) and calls `on_oom` each time the kernel's OOM killer acts in it,
/// on a thread of its own that ends when the cgroup is removed: cgroup v1
/// through an eventfd on `memory.oom_control`, v2 through inotify on
/// `memory.events` (its `oom_kill` count).
pub fn watch_oom(cgroups_path: &str, on_oom: impl Fn() + Send + 'static) -> Result<()> {
    let Some(dir) = dirs_of(cgroups_path, &["memory"]).and_then(|d| d.into_iter().next()) else {
        return Ok(());
    };
    if unified() {
        watch_oom_v2(&dir, on_oom)
    } else {
        watch_oom_v1(&dir, on_oom)
    }
}

fn watch_oom_v1(dir: &Path, on_oom: impl Fn() + Send + 'static) -> Result<()> {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd};
    let control = std::fs::File::open(dir.join("memory.oom_control"))
        .with_context(|| format!("opening {}/memory.oom_control", dir.display()))?;
    // SAFETY: eventfd(2) with integer arguments; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("making an eventfd");
    }
    // SAFETY: eventfd returned a new descriptor that only we own.
    let mut events = unsafe { std::fs::File::from_raw_fd(fd) };
    std::fs::write(
        dir.join("cgroup.event_control"),
        format!("{} {}", events.as_raw_fd(), control.as_raw_fd()),
    )
    .with_context(|| format!("registering for OOM events in {}", dir.display()))?;
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .name("oom-watch".into())
        .spawn(move || {
            let _control = control;
            let mut count = [0u8; 8];
            // The eventfd also fires when the cgroup is removed.
            while events.read_exact(&mut count).is_ok() && dir.exists() {
                on_oom();
            }
        })?;
    Ok(())
}

fn watch_oom_v2(dir: &Path, on_oom: impl Fn() + Send + 'static) -> Result<()> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let events_file = dir.join("memory.events");
    let path = std::ffi::CString::new(events_file.as_os_str().as_encoded_bytes())
        .context("a cgroup path contains NUL")?;
    // SAFETY: inotify_init1 with a flag; the result is checked.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("making an inotify descriptor");
    }
    // SAFETY: inotify_init1 returned a new descriptor that only we own.
    let mut inotify = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: a valid descriptor and a NUL-terminated path alive for the call.
    if unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MODIFY) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("watching {}", events_file.display()));
    }
    let oom_kills = move || oom_kill_count(&events_file);
    let mut seen = oom_kills().unwrap_or(0);
    std::thread::Builder::new()
        .name("oom-watch".into())
        .spawn(move || {
            let mut buffer = [0u8; 4096];
            // Each read returns at a change; the cgroup's removal ends it
            // (IN_IGNORED, then the file is gone).
            while inotify.read(&mut buffer).is_ok_and(|n| n > 0) {
                let Some(now) = oom_kills() else { return };
                if now > seen {
                    seen = now;
                    on_oom();
                }
            }
        })?;
    Ok(())
}
