//! Everything the shim mounts for a container, all under its bundle: the root
//! filesystem at `bundle/rootfs`, each directory or tmpfs of the spec at
//! `bundle/mounts/N` (preopened for the guest at its destination), and each
//! single-file bind mount over its destination inside the root filesystem.
//!
//! Every one of them is `nodev,nosuid`: the guest's file access runs in the
//! shim's process, as host root, so a device node reached through any of
//! them (an image layer's `b 7 7`, a node another container made in a shared
//! volume, a bind-mounted `/dev/…`) would otherwise open the host's device.

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Spec;

use crate::engine::Preopen;

/// A mount containerd sent for the root filesystem (overlay, bind, …).
pub struct RootfsMount {
    pub fs_type: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Mount types of a Linux container spec that a Wasm guest never sees: they
/// would show the shim's own process (`/proc/self`), the host's devices and
/// kernel state.
const KERNEL_FILESYSTEMS: [&str; 6] = ["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"];

/// Destinations every Linux spec mounts for a Linux process's plumbing
/// (device nodes, terminals, POSIX IPC): a Wasm guest has none of them.
const LINUX_PLUMBING: [&str; 4] = ["/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"];

/// One of the spec's mounts, as the guest will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMount {
    /// A host directory bound at `dest` (a volume, a pod's secret, …).
    Dir {
        source: PathBuf,
        dest: String,
        read_only: bool,
        recursive: bool,
    },
    /// A host file bound over `dest` inside the root filesystem
    /// (`/etc/hosts`, `/etc/resolv.conf`, `/dev/termination-log`, …).
    File {
        source: PathBuf,
        dest: String,
        read_only: bool,
    },
    /// A fresh tmpfs at `dest`; `data` keeps its `size=`, `mode=`, … options.
    Tmpfs {
        dest: String,
        data: Vec<String>,
        read_only: bool,
    },
}

/// The spec's mounts the guest gets, refusing (in one sentence) what the
/// shim cannot give it as asked: an unknown mount type, a missing source, a
/// destination that is not a clean absolute path.
pub fn guest_mounts(spec: &Spec) -> Result<Vec<GuestMount>> {
    let mut out = Vec::new();
    for mount in spec.mounts().clone().unwrap_or_default() {
        let typ = mount.typ().clone().unwrap_or_default();
        let options = mount.options().clone().unwrap_or_default();
        let has = |o: &str| options.iter().any(|x| x == o);
        let dest_path = mount.destination();
        let dest = dest_path.to_string_lossy().into_owned();
        let is_bind = typ == "bind" || has("bind") || has("rbind");
        if LINUX_PLUMBING.contains(&dest.as_str())
            || (!is_bind && KERNEL_FILESYSTEMS.contains(&typ.as_str()))
        {
            continue;
        }
        if !dest_path.is_absolute()
            || dest_path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            bail!("mount destination {dest} is not an absolute path without . or ..");
        }
        if dest_path.components().count() < 2 {
            bail!("a mount at / is not supported: the root filesystem is the image's");
        }
        let read_only = has("ro");
        if is_bind {
            let source = mount
                .source()
                .clone()
                .with_context(|| format!("the bind mount at {dest} has no source"))?;
            let metadata = std::fs::metadata(&source).with_context(|| {
                format!(
                    "the source {} of the mount at {dest} cannot be used",
                    source.display()
                )
            })?;
            out.push(if metadata.is_dir() {
                GuestMount::Dir {
                    source,
                    dest,
                    read_only,
                    recursive: has("rbind"),
                }
            } else {
                GuestMount::File {
                    source,
                    dest,
                    read_only,
                }
            });
        } else if typ == "tmpfs" {
            let data = options
                .iter()
                .filter(|o| mount_flag(o).is_none())
                .cloned()
                .collect();
            out.push(GuestMount::Tmpfs {
                dest,
                data,
                read_only,
            });
        } else {
            bail!(
                "the mount at {dest} has type {typ:?}, which the Wasm shim does not support (bind and tmpfs mounts are)"
            );
        }
    }
    Ok(out)
}

/// A mount option that is a flag (`ro`, `nosuid`, …) rather than file system data.
fn mount_flag(option: &str) -> Option<libc::c_ulong> {
    Some(match option {
        "ro" => libc::MS_RDONLY,
        "rw" => 0,
        "bind" => libc::MS_BIND,
        "rbind" => libc::MS_BIND | libc::MS_REC,
        "nosuid" => libc::MS_NOSUID,
        "nodev" => libc::MS_NODEV,
        "noexec" => libc::MS_NOEXEC,
        "relatime" => libc::MS_RELATIME,
        "noatime" => libc::MS_NOATIME,
        "strictatime" => libc::MS_STRICTATIME,
        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "suid" | "dev"
        | "exec" | "atime" | "diratime" | "nodiratime" | "sync" | "async" => 0,
        _ => return None,
    })
}

/// Mounts containerd's rootfs mounts at `rootfs`, `nodev,nosuid` when
/// `restricted` (a Wasm guest's) or else exactly as given (a Linux
/// container's, as runc's shim mounts them); on error nothing stays mounted.
fn mount_rootfs(mounts: &[RootfsMount], rootfs: &Path, restricted: bool) -> Result<()> {
    std::fs::create_dir_all(rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    for m in mounts {
        let mut flags = if restricted {
            libc::MS_NODEV | libc::MS_NOSUID
        } else {
            0
        };
        let mut data = Vec::new();
        for option in &m.options {
            match (option.as_str(), mount_flag(option)) {
                ("rw", _) => flags &= !libc::MS_RDONLY,
                (_, Some(flag)) => flags |= flag,
                (_, None) => data.push(option.as_str()),
            }
        }
        let fs_type = if m.fs_type == "bind" {
            "none"
        } else {
            m.fs_type.as_str()
        };
        let made = sys_mount(
            Some(&m.source),
            rootfs,
            Some(fs_type),
            flags,
            &data.join(","),
        )
        .and_then(|()| {
            if restricted && flags & libc::MS_BIND != 0 {
                restrict(
                    rootfs,
                    flags & libc::MS_RDONLY != 0,
                    flags & libc::MS_REC != 0,
                )
            } else {
                Ok(())
            }
        });
        if let Err(e) = made {
            let _ = unmount_tree(rootfs);
            return Err(e.context(format!("mounting the root filesystem ({})", m.fs_type)));
        }
    }
    Ok(())
}

/// Binds the root the caller mounted itself (`root.path`, as Docker's
/// containerd image store sends it) at `rootfs`, `nodev,nosuid`.
fn bind_root(root: &Path, rootfs: &Path) -> Result<()> {
    std::fs::create_dir_all(rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    sys_mount(
        Some(&root.to_string_lossy()),
        rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        "",
    )
    .and_then(|()| restrict(rootfs, false, true))
    .map_err(|e| {
        let _ = unmount_tree(rootfs);
        e.context(format!("binding the root filesystem {}", root.display()))
    })
}

/// Makes `mounts` for a container whose root is mounted at `rootfs`, and
/// returns the preopens of the directories among them. On error, what was
/// made is left for [`unmount_all`].
pub fn make_guest_mounts(
    mounts: &[GuestMount],
    bundle: &Path,
    rootfs: &Path,
) -> Result<Vec<Preopen>> {
    let mut preopens = Vec::new();
    for (n, mount) in mounts.iter().enumerate() {
        match mount {
            GuestMount::Dir {
                source,
                dest,
                read_only,
                recursive,
            } => {
                let target = mount_point(bundle, n)?;
                let mut flags = libc::MS_BIND;
                if *recursive {
                    flags |= libc::MS_REC;
                }
                sys_mount(Some(&source.to_string_lossy()), &target, None, flags, "")
                    .and_then(|()| restrict(&target, *read_only, *recursive))
                    .with_context(|| format!("mounting {} at {dest}", source.display()))?;
                preopens.push(Preopen {
                    host: target,
                    guest: dest.clone(),
                    read_only: *read_only,
                });
            }
            GuestMount::Tmpfs {
                dest,
                data,
                read_only,
            } => {
                let target = mount_point(bundle, n)?;
                let mut flags = libc::MS_NODEV | libc::MS_NOSUID;
                if *read_only {
                    flags |= libc::MS_RDONLY;
                }
                sys_mount(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    flags,
                    &data.join(","),
                )
                .with_context(|| format!("mounting a tmpfs at {dest}"))?;
                preopens.push(Preopen {
                    host: target,
                    guest: dest.clone(),
                    read_only: *read_only,
                });
            }
            GuestMount::File {
                source,
                dest,
                read_only,
            } => {
                let target = file_mount_point(rootfs, dest)
                    .with_context(|| format!("mounting the file {} at {dest}", source.display()))?;
                sys_mount(
                    Some(&source.to_string_lossy()),
                    &target,
                    None,
                    libc::MS_BIND,
                    "",
                )
                .and_then(|()| restrict(&target, *read_only, false))
                .with_context(|| format!("mounting the file {} at {dest}", source.display()))?;
            }
        }
    }
    Ok(preopens)
}

/// Destinations of single-file mounts that configure name lookup.
const NAME_SERVICE_FILES: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];

/// A mount namespace in which this process's `/etc/resolv.conf` and
/// `/etc/hosts` are the files the spec mounts at those paths (a pod's DNS
/// configuration, Docker's embedded DNS and `--add-host`), or `None` when it
/// mounts neither. The guest's threads run in it (see
/// `RunSpec::mount_namespace`), so its name lookups, which wasmtime-wasi
/// hands to the C library, go where the container's would under runc. Made
/// after the container's own mounts, which it holds copies of until it is
/// closed and the guest's threads are gone.
pub fn name_service_namespace(mounts: &[GuestMount]) -> Result<Option<std::os::fd::OwnedFd>> {
    let files: Vec<(&Path, &str)> = mounts
        .iter()
        .filter_map(|m| match m {
            GuestMount::File { source, dest, .. }
                if NAME_SERVICE_FILES.contains(&dest.as_str()) =>
            {
                Some((source.as_path(), dest.as_str()))
            }
            _ => None,
        })
        .collect();
    if files.is_empty() {
        return Ok(None);
    }
    // On a thread of its own: unshare(CLONE_NEWNS) needs a thread that
    // shares no root or working directory, and the namespace outlives it
    // through the descriptor it returns.
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Option<std::os::fd::OwnedFd>> {
            // SAFETY: unshare(2) of this thread's fs attributes and mount
            // namespace; no pointers.
            if unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) } != 0 {
                bail!(
                    "making a mount namespace for name lookup: {}",
                    std::io::Error::last_os_error()
                );
            }
            // Nothing done here may reach the host's mounts.
            sys_mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_SLAVE, "")
                .context("making the name-lookup mount namespace a slave")?;
            for (source, dest) in &files {
                let target = Path::new(dest);
                if !target.exists() {
                    log::warn!("{dest} does not exist on this host: the container's is not used for name lookup");
                    continue;
                }
                sys_mount(Some(&source.to_string_lossy()), target, None, libc::MS_BIND, "")
                    .and_then(|()| restrict(target, true, false))
                    .with_context(|| {
                        format!("binding {} over {dest} for name lookup", source.display())
                    })?;
            }
            let namespace = std::fs::File::open("/proc/thread-self/ns/mnt")
                .context("opening the name-lookup mount namespace")?;
            Ok(Some(namespace.into()))
        })
        .join()
        .unwrap_or_else(|_| bail!("the thread making the name-lookup namespace panicked"))
    })
}

/// An empty directory `bundle/mounts/N` to mount on.
fn mount_point(bundle: &Path, n: usize) -> Result<PathBuf> {
    let target = bundle.join("mounts").join(n.to_string());
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    Ok(target)
}

/// The file `dest` inside `rootfs` to bind a file over, made (with its
/// directories) when the image lacks it. A symlink on the way is refused:
/// followed from the host, it could lead out of the root filesystem.
fn file_mount_point(rootfs: &Path, dest: &str) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut path = rootfs.to_path_buf();
    let components: Vec<_> = Path::new(dest)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    for (i, part) in components.iter().enumerate() {
        path.push(part);
        let last = i + 1 == components.len();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => bail!(
                "{} is a symlink in the image, and a mount is never made through one",
                Path::new(dest)
                    .iter()
                    .take(i + 2)
                    .collect::<PathBuf>()
                    .display()
            ),
            Ok(m) if last && m.is_dir() => {
                bail!("{dest} is a directory in the image, and the source is a file")
            }
            Ok(m) if !last && !m.is_dir() => bail!(
                "{} is not a directory in the image",
                Path::new(dest)
                    .iter()
                    .take(i + 2)
                    .collect::<PathBuf>()
                    .display()
            ),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if last {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&path)
                        .with_context(|| format!("creating {dest} in the root filesystem"))?;
                } else {
                    std::fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .with_context(|| format!("creating the directories of {dest}"))?;
                }
            }
            Err(e) => return Err(e).with_context(|| format!("looking up {dest}")),
        }
    }
    Ok(path)
}

/// What the shim mounted for one container under its bundle: the rootfs
/// (containerd's mounts, or the caller's root bound nodev,nosuid) and the
/// guest's volumes. Dropped without [`ContainerMounts::unmount`] (a create
/// that fails halfway, a container dropped without `delete`), it unmounts
/// them, so no path leaves a mount behind.
///
/// containerd-shim's `mount_rootfs` is not used to mount: it cannot force
/// `nodev,nosuid` onto every mount; its `umount_recursive` unmounts.
pub struct ContainerMounts {
    bundle: PathBuf,
    rootfs: PathBuf,
    rootfs_mounted: bool,
    released: bool,
}

impl ContainerMounts {
    /// Mounts the rootfs at `bundle/rootfs`: containerd's `mounts`, or with
    /// none, the root the caller mounted itself and named in `root_path`
    /// (relative to the bundle, as runc reads it).
    pub fn mount_rootfs(bundle: &Path, mounts: &[RootfsMount], root_path: &Path) -> Result<Self> {
        let rootfs = bundle.join("rootfs");
        if mounts.is_empty() {
            bind_root(&bundle.join(root_path), &rootfs)?;
        } else {
            mount_rootfs(mounts, &rootfs, true)?;
        }
        Ok(ContainerMounts {
            bundle: bundle.to_path_buf(),
            rootfs,
            rootfs_mounted: true,
            released: false,
        })
    }

    /// A Linux container's rootfs: containerd's `mounts` at `bundle/rootfs`
    /// exactly as given, or nothing when there are none (the caller mounted
    /// the root itself, and runc finds it at the spec's `root.path`).
    pub fn mount_linux_rootfs(bundle: &Path, mounts: &[RootfsMount]) -> Result<Self> {
        if mounts.is_empty() {
            return Ok(Self::none(bundle));
        }
        let rootfs = bundle.join("rootfs");
        mount_rootfs(mounts, &rootfs, false)?;
        Ok(ContainerMounts {
            bundle: bundle.to_path_buf(),
            rootfs,
            rootfs_mounted: true,
            released: false,
        })
    }

    /// A container that mounts nothing (a pod's sandbox).
    pub fn none(bundle: &Path) -> Self {
        ContainerMounts {
            bundle: bundle.to_path_buf(),
            rootfs: bundle.join("rootfs"),
            rootfs_mounted: false,
            released: true,
        }
    }

    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// Unmounts everything now, reporting failure; later calls and the
    /// drop do nothing.
    pub fn unmount(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        unmount_all(&self.bundle, &self.rootfs, self.rootfs_mounted)
    }
}

impl Drop for ContainerMounts {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            log::warn!("unmounting {}: {e:#}", self.bundle.display());
        }
    }
}

/// Unmounts everything the shim mounted for the container in `bundle`
/// (`rootfs` too when `rootfs_mounted`) and removes the empty mount points.
/// A mount point is removed only once empty, never recursively: a volume
/// still mounted there must not lose its files.
pub fn unmount_all(bundle: &Path, rootfs: &Path, rootfs_mounted: bool) -> Result<()> {
    let mounts = bundle.join("mounts");
    if mounts.exists() {
        unmount_tree(&mounts)?;
        for entry in std::fs::read_dir(&mounts)?.flatten() {
            let _ = std::fs::remove_dir(entry.path());
        }
        std::fs::remove_dir(&mounts)
            .with_context(|| format!("removing the mount points in {}", mounts.display()))?;
    }
    if rootfs_mounted {
        unmount_tree(rootfs)?;
    }
    Ok(())
}

/// Unmounts everything at and below `path`.
pub fn unmount_tree(path: &Path) -> Result<()> {
    let target = path.to_string_lossy().into_owned();
    containerd_shim::mount::umount_recursive(Some(&target), libc::MNT_DETACH)
        .map_err(|e| anyhow::anyhow!("unmounting {target}: {e}"))
}

/// mount(2) with Rust strings.
fn sys_mount(
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
fn restrict(target: &Path, read_only: bool, recursive: bool) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mounted_under(dir: &Path) -> Vec<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&*dir.to_string_lossy()))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_dropped_or_unmounted_rootfs_leaves_no_mount() {
        let source = tempfile::tempdir().unwrap();
        std::fs::write(source.path().join("f"), "x").unwrap();
        let bind = || RootfsMount {
            fs_type: "bind".into(),
            source: source.path().to_string_lossy().into_owned(),
            options: vec!["rbind".into(), "ro".into()],
        };
        for explicit in [false, true] {
            let bundle = tempfile::tempdir().unwrap();
            let mut mounted =
                ContainerMounts::mount_rootfs(bundle.path(), &[bind()], Path::new("rootfs"))
                    .unwrap();
            assert!(bundle.path().join("rootfs/f").exists());
            assert!(!mounted_under(bundle.path()).is_empty());
            if explicit {
                mounted.unmount().unwrap();
                assert!(mounted_under(bundle.path()).is_empty());
            }
            drop(mounted);
            assert!(mounted_under(bundle.path()).is_empty());
            assert!(!bundle.path().join("rootfs/f").exists());
        }
    }

    fn spec_with(mounts: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": mounts,
        }))
        .unwrap()
    }

    #[test]
    fn linux_plumbing_is_skipped_binds_and_tmpfs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "").unwrap();
        let spec = spec_with(serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/shm", "type": "bind", "source": dir.path(), "options": ["rbind"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
            {"destination": "/data", "type": "bind", "source": dir.path(), "options": ["rbind", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": file, "options": ["bind"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]},
        ]));
        assert_eq!(
            guest_mounts(&spec).unwrap(),
            vec![
                GuestMount::Dir {
                    source: dir.path().to_path_buf(),
                    dest: "/data".into(),
                    read_only: true,
                    recursive: true
                },
                GuestMount::File {
                    source: file,
                    dest: "/etc/hosts".into(),
                    read_only: false
                },
                GuestMount::Tmpfs {
                    dest: "/scratch".into(),
                    data: vec!["size=1m".into()],
                    read_only: false
                },
            ]
        );
    }

    #[test]
    fn unsupported_mounts_are_refused_in_one_sentence() {
        let refused =
            |m: serde_json::Value| format!("{:#}", guest_mounts(&spec_with(m)).unwrap_err());
        assert!(
            refused(serde_json::json!([{"destination": "/n", "type": "nfs", "source": "x:/y"}]))
                .contains("has type \"nfs\", which the Wasm shim does not support")
        );
        assert!(
            refused(serde_json::json!([{"destination": "/d", "type": "bind", "source": "/nonexistent-wbx"}]))
                .contains("the source /nonexistent-wbx of the mount at /d cannot be used")
        );
        assert!(
            refused(
                serde_json::json!([{"destination": "/a/../b", "type": "tmpfs", "source": "tmpfs"}])
            )
            .contains("not an absolute path without . or ..")
        );
    }

    #[test]
    fn a_file_mount_point_is_made_but_never_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let made = file_mount_point(root.path(), "/etc/deep/hosts").unwrap();
        assert!(made.is_file());
        std::os::unix::fs::symlink("/etc", root.path().join("link")).unwrap();
        let e = format!(
            "{:#}",
            file_mount_point(root.path(), "/link/passwd").unwrap_err()
        );
        assert!(e.contains("/link is a symlink in the image"), "{e}");
        assert!(
            format!("{:#}", file_mount_point(root.path(), "/etc").unwrap_err())
                .contains("is a directory in the image")
        );
    }
}
