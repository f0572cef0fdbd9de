//! The container's root filesystem at `bundle/rootfs`, and taking down
//! everything the shim mounted under a bundle: [`ContainerMounts`] ties the
//! two together so that no path out of a create leaves a mount behind.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::sys::{mount_flag, restrict, sys_mount};

/// A mount containerd sent for the root filesystem (overlay, bind, …).
pub struct RootfsMount {
    pub fs_type: String,
    pub source: String,
    pub options: Vec<String>,
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
}
