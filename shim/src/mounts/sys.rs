//! The mount(2) and mount_setattr(2) calls every mount of the shim goes
//! through, so that forcing `nodev,nosuid` (and reading mount options) is
//! done in one place for the root filesystem and the guest's mounts alike.

use std::ffi::CString;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The mount options the shim recognises, with the mount(2) flag each sets
/// (0: the default, or propagation the guest cannot observe). `-info`
/// reports this list to containerd as the runtime's `mountOptions`.
pub const MOUNT_FLAGS: [(&str, libc::c_ulong); 24] = [
    ("ro", libc::MS_RDONLY),
    ("rw", 0),
    ("bind", libc::MS_BIND),
    ("rbind", libc::MS_BIND | libc::MS_REC),
    ("nosuid", libc::MS_NOSUID),
    ("nodev", libc::MS_NODEV),
    ("noexec", libc::MS_NOEXEC),
    ("relatime", libc::MS_RELATIME),
    ("noatime", libc::MS_NOATIME),
    ("strictatime", libc::MS_STRICTATIME),
    ("private", 0),
    ("rprivate", 0),
    ("shared", 0),
    ("rshared", 0),
    ("slave", 0),
    ("rslave", 0),
    ("suid", 0),
    ("dev", 0),
    ("exec", 0),
    ("atime", 0),
    ("diratime", 0),
    ("nodiratime", 0),
    ("sync", 0),
    ("async", 0),
];

/// A mount option that is a flag (`ro`, `nosuid`, …) rather than file system data.
pub(super) fn mount_flag(option: &str) -> Option<libc::c_ulong> {
    MOUNT_FLAGS
        .iter()
        .find(|(name, _)| *name == option)
        .map(|(_, flag)| *flag)
}

/// mount(2) with Rust strings.
pub(super) fn sys_mount(
    source: Option<&str>,
    target: &Path,
    fs_type: Option<&str>,
    flags: libc::c_ulong,
    data: &str,
) -> Result<()> {
    let cstr = |s: &str| CString::new(s).context("a mount argument contains NUL");
    let source = source.map(cstr).transpose()?;
    let target_c = cstr(&target.to_string_lossy())?;
    let fs_type = fs_type.map(cstr).transpose()?;
    let data = cstr(data)?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a valid NUL-terminated string that
    // outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fs_type),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!("{}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the bind mount at `target` (and, when `recursive`, every mount
/// below it) `nodev,nosuid`, and read-only when asked: a bind mount ignores
/// the flags it was made with until they are set on it.
pub(super) fn restrict(target: &Path, read_only: bool, recursive: bool) -> Result<()> {
    let mut attr: libc::mount_attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    if read_only {
        attr.attr_set |= libc::MOUNT_ATTR_RDONLY;
    }
    let target_c = CString::new(target.to_string_lossy().as_bytes()).context("NUL in path")?;
    let at_flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr(2) reads `attr` (of the size passed) and the
    // NUL-terminated path; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target_c.as_ptr(),
            at_flags,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        bail!("setting nodev,nosuid on the mount: {err}");
    }
    // Kernels before 5.12: remount the top mount (mounts below keep theirs).
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NODEV | libc::MS_NOSUID;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    sys_mount(None, target, None, flags, "").context("remounting nodev,nosuid")
}
