//! The spec's mounts as the guest sees them: which ones it gets (and which
//! are refused, in one sentence), their mount points under the bundle or in
//! the root filesystem, and the mount namespace its name lookups run in.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Spec;

use super::sys::{mount_flag, restrict, sys_mount};
use crate::engine::Preopen;

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

/// Makes `mounts` for a container whose root is mounted at `rootfs`, and
/// returns the preopens of the directories among them. On error, what was
/// made is left for [`unmount_all`](crate::mounts::unmount_all).
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

#[cfg(test)]
mod tests {
    use super::*;

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
