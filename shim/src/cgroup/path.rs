//! Where a cgroup is: the rules that turn a spec's `cgroupsPath` (cgroupfs
//! or systemd style) into directories under `/sys/fs/cgroup`, refusing one
//! that would lead out of it, and this process's own place there.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

pub(super) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether the node runs cgroup v2, which decides the metrics type containerd expects.
pub fn unified() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// The directories of the cgroup at `cgroups_path` (as a spec names it):
/// the one of the unified hierarchy, or on cgroup v1 its directory in each
/// of `v1_controllers`, in that order. `None` for a relative or bad path,
/// or one naming the root itself.
pub(super) fn dirs_of(cgroups_path: &str, v1_controllers: &[&str]) -> Option<Vec<PathBuf>> {
    let absolute = cgroupfs_path(cgroups_path).ok()??;
    let relative = absolute.trim_start_matches('/');
    if relative.is_empty() {
        return None;
    }
    Some(if unified() {
        vec![Path::new(CGROUP_ROOT).join(relative)]
    } else {
        v1_controllers
            .iter()
            .map(|c| Path::new(CGROUP_ROOT).join(c).join(relative))
            .collect()
    })
}

/// The cgroupfs directory (absolute within a hierarchy) a spec's
/// `linux.cgroupsPath` names, or `None` for a relative path.
pub(super) fn cgroupfs_path(cgroups_path: &str) -> Result<Option<String>> {
    let path = cgroupfs_path_unchecked(cgroups_path)?;
    // `..` would lead out of the cgroup root.
    if let Some(path) = &path
        && Path::new(path)
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        bail!("cgroupsPath {cgroups_path} leaves the cgroup root: it contains `..`");
    }
    Ok(path)
}

fn cgroupfs_path_unchecked(cgroups_path: &str) -> Result<Option<String>> {
    if cgroups_path.starts_with('/') {
        return Ok(Some(cgroups_path.to_string()));
    }
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Ok(None);
    };
    if name.is_empty() {
        bail!("cgroupsPath {cgroups_path}: the systemd unit name is empty");
    }
    let parent = expand_slice(if slice.is_empty() {
        "system.slice"
    } else {
        slice
    })
    .with_context(|| format!("cgroupsPath {cgroups_path}"))?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(Some(format!("{parent}/{unit}")))
}

/// systemd's slice nesting: `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`.
fn expand_slice(slice: &str) -> Result<String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        bail!("{slice} is not a systemd slice (it does not end in .slice)");
    };
    if stem == "-" {
        return Ok(String::new()); // the root slice
    }
    if stem.is_empty()
        || stem.contains('/')
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
    {
        bail!("{slice} is not a valid systemd slice name");
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(component);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// This process's path in the hierarchy of `controller` ("" for cgroup v2).
pub(super) fn current_path(controller: &str) -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        if matches {
            return Ok(path.to_string());
        }
    }
    Ok("/".to_string())
}

#[cfg(test)]
mod tests {
    use super::cgroupfs_path;

    fn path(p: &str) -> Option<String> {
        cgroupfs_path(p).unwrap()
    }

    #[test]
    fn cgroupfs_paths_stay_as_they_are() {
        assert_eq!(path("/default/abc").as_deref(), Some("/default/abc"));
        assert_eq!(path("relative/abc"), None);
    }

    #[test]
    fn systemd_paths_expand_to_their_slice_directories() {
        assert_eq!(
            path("kubepods-besteffort-pod12.slice:cri-containerd:abc").as_deref(),
            Some(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            path(":wasmbox:abc").as_deref(),
            Some("/system.slice/wasmbox-abc.scope")
        );
        assert_eq!(path("-.slice::abc").as_deref(), Some("/abc.scope"));
        assert_eq!(
            path("machine.slice:x:inner.slice").as_deref(),
            Some("/machine.slice/inner.slice")
        );
    }

    #[test]
    fn malformed_systemd_paths_are_refused() {
        for bad in [
            "kubepods:cri:abc",
            "a--b.slice:p:n",
            "a.slice:p:",
            "../x.slice:p:n",
            "/../../escaped",
            "/default/../../../escaped",
            "x.slice:p:../../escaped",
        ] {
            assert!(cgroupfs_path(bad).is_err(), "{bad} accepted");
        }
    }
}
