//! Reading a module from disk, safely: the shim reads paths an image names,
//! so a FIFO, a device or a huge file must be refused before it is read,
//! and a path must not lead out of the container's root filesystem.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// The largest module [`read_module`] reads, and the shim reads from an
/// image's Wasm layer, unless [`MAX_MODULE_ENV`] says otherwise: far above
/// real programs (components of tens of MiB), far below what would let a
/// hostile image drive the shim out of memory.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Environment variable of the process (for the shim: containerd's, which
/// its shims inherit) that sets the module cap in MiB.
pub const MAX_MODULE_ENV: &str = "WASMBOX_MAX_MODULE_MIB";

/// The module cap in effect: [`MAX_MODULE_ENV`] when it is a number of MiB
/// from 1 to 4096, else [`MAX_MODULE_BYTES`].
pub fn max_module_bytes() -> u64 {
    static CAP: OnceLock<u64> = OnceLock::new();
    *CAP.get_or_init(|| module_cap_from(std::env::var(MAX_MODULE_ENV).ok().as_deref()))
}

fn module_cap_from(value: Option<&str>) -> u64 {
    match value.map(|v| v.trim().parse::<u64>()) {
        Some(Ok(mib)) if (1..=4096).contains(&mib) => mib << 20,
        Some(_) => {
            eprintln!(
                "wasmbox: {MAX_MODULE_ENV}={} is not a number of MiB from 1 to 4096; using {} MiB",
                value.unwrap_or_default(),
                MAX_MODULE_BYTES >> 20
            );
            MAX_MODULE_BYTES
        }
        None => MAX_MODULE_BYTES,
    }
}

/// Reads the module at `path`: a regular file of at most
/// [`MAX_MODULE_BYTES`]. A FIFO (which would block the reader forever), a
/// device (`/dev/zero` never ends), a socket or a directory is refused by its
/// type before it is read, and checked again on the open descriptor.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    read_module_capped(path, max_module_bytes())
}

/// [`read_module`] with the cap `max` bytes.
fn read_module_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let kind = |t: std::fs::FileType| {
        if t.is_file() {
            None
        } else if t.is_fifo() {
            Some("a FIFO")
        } else if t.is_char_device() {
            Some("a character device")
        } else if t.is_block_device() {
            Some("a block device")
        } else if t.is_socket() {
            Some("a socket")
        } else if t.is_dir() {
            Some("a directory")
        } else {
            Some("not a file")
        }
    };
    let refuse = |what: &str| {
        anyhow::anyhow!(
            "{} is {what}, not a regular file: a module must be a regular file",
            path.display()
        )
    };
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read the module {}", path.display()))?;
    if let Some(what) = kind(metadata.file_type()) {
        return Err(refuse(what));
    }
    // O_NONBLOCK: were it swapped for a FIFO since the check, the open still
    // returns at once (and the check below refuses it).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot read the module {}", path.display()))?;
    let metadata = file.metadata()?;
    if let Some(what) = kind(metadata.file_type()) {
        return Err(refuse(what));
    }
    let too_big = || {
        anyhow::anyhow!(
            "{} is larger than {} MiB, the most a module may be ({MAX_MODULE_ENV} sets it)",
            path.display(),
            max >> 20
        )
    };
    if metadata.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the module {}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(too_big()); // it grew while being read
    }
    Ok(bytes)
}

/// Resolves an absolute guest path to a host path inside `rootfs`, refusing
/// anything (`..`, symlinks) that would lead outside it.
pub fn resolve_in_root(rootfs: &Path, guest: &str) -> Result<PathBuf> {
    let mut path = rootfs.to_path_buf();
    for c in Path::new(guest).components() {
        match c {
            std::path::Component::Normal(p) => path.push(p),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            std::path::Component::ParentDir | std::path::Component::Prefix(_) => {
                bail!("{guest} leaves the container's root filesystem")
            }
        }
    }
    let real = path
        .canonicalize()
        .with_context(|| format!("{guest} does not exist in the container's root filesystem"))?;
    let root = rootfs.canonicalize()?;
    if !real.starts_with(&root) {
        bail!("{guest} is a link that leaves the container's root filesystem");
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_up_to_the_size_cap_are_read_as_modules() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.wasm");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let refused = |path: &Path| format!("{:#}", read_module(path).unwrap_err());
        // Returns at once: a FIFO with no writer is never opened for reading.
        assert!(refused(&fifo).contains("is a FIFO, not a regular file"));
        assert!(refused(Path::new("/dev/zero")).contains("is a character device"));
        assert!(refused(dir.path()).contains("is a directory"));

        // A sparse file: its size is refused before anything is read.
        let big = dir.path().join("big.wasm");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_MODULE_BYTES + 1)
            .unwrap();
        assert!(refused(&big).contains("larger than 256 MiB"));

        let ok = dir.path().join("ok.wasm");
        std::fs::write(&ok, b"\0asm\x01\0\0\0").unwrap();
        assert_eq!(read_module(&ok).unwrap(), b"\0asm\x01\0\0\0");
        assert!(
            format!("{:#}", read_module_capped(&ok, 4).unwrap_err()).contains("larger than 0 MiB")
        );

        // The cap can be set in MiB; nonsense falls back to the default.
        assert_eq!(module_cap_from(Some("16")), 16 << 20);
        assert_eq!(module_cap_from(Some("0")), MAX_MODULE_BYTES);
        assert_eq!(module_cap_from(Some("lots")), MAX_MODULE_BYTES);
        assert_eq!(module_cap_from(None), MAX_MODULE_BYTES);
    }
}
