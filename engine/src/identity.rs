//! The container's user, groups and capabilities on the threads that do a
//! guest's file access. Set per thread, with the calls that act on the
//! calling thread only (`setfsuid`, `setfsgid`, and raw `setgroups` and
//! `capset`: glibc's `setgroups` would change every thread of the process),
//! so a pod's shim runs its other guests and its own work as before.

use std::io;
use std::marker::PhantomData;

/// Who a guest's file access runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The capabilities the file access keeps, bit N for capability N (as in
    /// `capget`); `None` keeps the process's own.
    pub capabilities: Option<u64>,
}

/// Kernel numbers of the capabilities, by name (`capability.h`).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability bit mask of `names` (`CAP_CHOWN` or `CHOWN`); unknown names are skipped.
pub fn capability_mask<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names
        .into_iter()
        .filter_map(|n| {
            let n = n.strip_prefix("CAP_").unwrap_or(n);
            CAPABILITY_NAMES
                .iter()
                .position(|c| c.eq_ignore_ascii_case(n))
        })
        .fold(0, |mask, bit| mask | (1 << bit))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn capget() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) with version 3 reads the header and writes two
    // CapData structs (repr(C), the kernel's layout) to valid memory.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset(2) with pid 0 changes the calling thread only; it reads
    // the header and two CapData structs from valid memory.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn thread_setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the raw setgroups(2) system call (not glibc's, which changes
    // every thread) reads `len` gids from a valid slice.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn thread_getgroups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: getgroups(0, NULL) only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0; n as usize];
    // SAFETY: writes at most `n` gids into a buffer of `n`.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

/// Sets the calling thread's file-system uid (or gid) and checks it took.
fn set_fs_id(id: u32, set: unsafe extern "C" fn(u32) -> libc::c_int, what: &str) -> io::Result<()> {
    // SAFETY: setfsuid/setfsgid act on the calling thread and take a plain
    // integer; passing u32::MAX (-1) only reads the current value back.
    let now = unsafe {
        set(id);
        set(u32::MAX)
    };
    if now as u32 != id {
        return Err(io::Error::other(format!(
            "could not set the {what} to {id}"
        )));
    }
    Ok(())
}

/// What [`Identity::enter`] changed, restored when dropped. Not `Send`: it
/// belongs to the thread it changed.
pub struct Entered {
    groups: Vec<libc::gid_t>,
    caps: [CapData; 2],
    fsuid: u32,
    fsgid: u32,
    _thread: PhantomData<*const ()>,
}

impl Identity {
    /// Takes on this identity for the calling thread's file access until
    /// the returned guard drops.
    pub fn enter(&self) -> io::Result<Entered> {
        // SAFETY: reading the current values back with -1 changes nothing.
        let (fsuid, fsgid) = unsafe {
            (
                libc::setfsuid(u32::MAX) as u32,
                libc::setfsgid(u32::MAX) as u32,
            )
        };
        let saved = Entered {
            groups: thread_getgroups()?,
            caps: capget()?,
            fsuid,
            fsgid,
            _thread: PhantomData,
        };
        self.apply()?;
        Ok(saved)
    }

    /// Takes on this identity for good: for threads that only ever do the
    /// guest's work (the blocking pool of a guest's runtime).
    ///
    /// A thread started by a thread that already took this identity on
    /// inherits it (clone(2) copies credentials), and may no longer hold
    /// the capabilities to set ids: then only the capabilities are narrowed,
    /// which is always allowed.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: reading the current values back with -1 changes nothing.
        let (fsuid, fsgid) = unsafe {
            (
                libc::setfsuid(u32::MAX) as u32,
                libc::setfsgid(u32::MAX) as u32,
            )
        };
        let mut groups = thread_getgroups()?;
        groups.sort_unstable();
        let mut wanted = self.additional_gids.clone();
        wanted.sort_unstable();
        if (fsuid, fsgid, &groups) != (self.uid, self.gid, &wanted) {
            thread_setgroups(&self.additional_gids)?;
            set_fs_id(self.gid, libc::setfsgid, "file-system gid")?;
            // From here a non-zero fsuid has cleared the file capabilities
            // (DAC_OVERRIDE, FOWNER, …) from the effective set, as for a
            // process of that user.
            set_fs_id(self.uid, libc::setfsuid, "file-system uid")?;
        }
        if let Some(mask) = self.capabilities {
            let mut caps = capget()?;
            caps[0].effective &= mask as u32;
            caps[1].effective &= (mask >> 32) as u32;
            caps[0].inheritable = 0;
            caps[1].inheritable = 0;
            capset(&caps)?;
        }
        Ok(())
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // Each of these only restores what this thread had, which it was
        // allowed to have; a failure is reported but cannot be undone.
        let restored = capset(&self.caps)
            .and_then(|()| set_fs_id(self.fsuid, libc::setfsuid, "file-system uid"))
            .and_then(|()| set_fs_id(self.fsgid, libc::setfsgid, "file-system gid"))
            .and_then(|()| thread_setgroups(&self.groups));
        if let Err(e) = restored {
            eprintln!("wasmbox: restoring the thread's identity after a guest: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_map_to_kernel_bits() {
        assert_eq!(capability_mask(["CAP_CHOWN"]), 1);
        assert_eq!(
            capability_mask(["CAP_DAC_OVERRIDE", "NET_BIND_SERVICE"]),
            2 | 1 << 10
        );
        assert_eq!(capability_mask(["CAP_CHECKPOINT_RESTORE"]), 1 << 40);
        assert_eq!(capability_mask(["CAP_NOT_A_CAP"]), 0);
    }

    /// Runs as root (as the tests of this workspace do): a 0600 root file is
    /// refused to uid 65534 and to root without DAC_OVERRIDE, and the thread
    /// is root with every capability again afterwards.
    #[test]
    fn file_access_follows_the_identity_on_this_thread_only() {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let nobody = Identity {
            uid: 65534,
            gid: 65534,
            ..Default::default()
        };
        let nobody_without_caps = Identity {
            capabilities: Some(0),
            ..nobody.clone()
        };
        let read = || std::fs::read(&secret).map_err(|e| e.kind());
        let entered = std::sync::Barrier::new(2);
        let checked = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let guard = nobody.enter().unwrap();
                assert_eq!(read(), Err(io::ErrorKind::PermissionDenied));
                entered.wait();
                checked.wait();
                drop(guard);
                assert!(read().is_ok());
                let root_without_dac = Identity {
                    capabilities: Some(capability_mask(["CAP_CHOWN"])),
                    ..Default::default()
                };
                let guard = root_without_dac.enter().unwrap();
                // Owner root may still read its own 0600 file…
                assert!(read().is_ok());
                std::fs::set_permissions(
                    &secret,
                    std::os::unix::fs::PermissionsExt::from_mode(0o000),
                )
                .unwrap();
                // …but not one without permission bits, which DAC_OVERRIDE would allow.
                assert_eq!(read(), Err(io::ErrorKind::PermissionDenied));
                drop(guard);
                assert!(read().is_ok());
            });
            // A thread started under the identity takes it on again
            // without the capabilities to set ids (the guest's blocking pool).
            s.spawn(|| {
                let _guard = nobody_without_caps.enter().unwrap();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        nobody_without_caps.apply().unwrap();
                        assert_eq!(read(), Err(io::ErrorKind::PermissionDenied));
                    });
                });
            });
            // The test's own thread is still root meanwhile. (A thread the
            // guest's thread starts inherits its identity, as clone(2) does.)
            entered.wait();
            assert!(read().is_ok());
            checked.wait();
        });
    }
}
