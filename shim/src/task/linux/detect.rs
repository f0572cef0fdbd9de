//! Which containers are Linux: the program the spec starts (`args[0]`,
//! looked up on the spec's `PATH` inside the root filesystem, symlinks
//! resolved within it) is a file that starts with the ELF magic number or
//! with `#!`. Everything else (a Wasm module, or an image whose module is a
//! Wasm layer and not a file) is Wasm. The rule needs no image metadata, so
//! it holds for every client (`ctr`, Docker, the CRI), and reading through
//! `openat2(RESOLVE_IN_ROOT)` means a symlink in an image never makes the
//! shim read a host file.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// The PATH runc and containerd assume when the spec sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `spec`'s program, in the root filesystem at `rootfs`, is a
/// native Linux program (see the module doc).
pub fn is_linux_program(spec: &Spec, rootfs: &Path) -> bool {
    let Some(process) = spec.process() else {
        return false;
    };
    let Some(program) = process.args().as_ref().and_then(|a| a.first()) else {
        return false;
    };
    let Ok(root) = std::fs::File::open(rootfs) else {
        return false;
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![process.cwd().join(program)]
    } else {
        let env = process.env().as_deref().unwrap_or_default();
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new("/").join(d).join(program))
            .collect()
    };
    candidates.iter().any(|candidate| {
        let Ok(mut file) = open_in_root(&root, candidate) else {
            return false;
        };
        let mut magic = [0u8; 4];
        if file.read_exact(&mut magic).is_err() {
            return false;
        }
        magic == *b"\x7fELF" || magic.starts_with(b"#!")
    })
}

/// Opens `path` as if `root` were `/`: absolute symlinks and `..` stay
/// inside it (openat2 with RESOLVE_IN_ROOT), so a symlink in an image
/// never makes the shim read a host file.
fn open_in_root(root: &std::fs::File, path: &Path) -> std::io::Result<std::fs::File> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let c_path = std::ffi::CString::new(relative.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain old data; all-zero is valid, then set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the NUL-terminated path and `how` (of the size
    // passed), both alive for the call, relative to a descriptor we hold.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that only we own.
    let file = unsafe { std::fs::File::from_raw_fd(fd as i32) };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    fn spec_running(args: &[&str], env: &[&str]) -> Spec {
        let process = ProcessBuilder::default()
            .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .env(env.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .cwd("/")
            .build()
            .unwrap();
        let mut spec = Spec::default();
        spec.set_process(Some(process));
        spec
    }

    fn rootfs() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for dir in ["bin", "usr/local/bin", "opt"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        std::fs::write(root.path().join("bin/elf"), b"\x7fELF\x02\x01\x01").unwrap();
        std::fs::write(
            root.path().join("usr/local/bin/script"),
            b"#!/bin/sh\necho hi\n",
        )
        .unwrap();
        std::fs::write(root.path().join("opt/app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        root
    }

    #[test]
    fn elf_and_script_programs_are_linux_and_wasm_modules_are_not() {
        let root = rootfs();
        let linux = |args: &[&str]| is_linux_program(&spec_running(args, &[]), root.path());
        assert!(linux(&["/bin/elf"]));
        assert!(linux(&["/usr/local/bin/script", "arg"]));
        assert!(!linux(&["/opt/app.wasm"]));
        assert!(!linux(&["/bin/missing"]));
        assert!(!linux(&[]), "no args: a Wasm artifact's module is a layer");
        assert!(!linux(&["/bin"]), "a directory");
    }

    #[test]
    fn a_bare_name_is_looked_up_on_the_specs_path_or_the_default_one() {
        let root = rootfs();
        let default_path = spec_running(&["script"], &[]);
        assert!(is_linux_program(&default_path, root.path()));
        let own_path = spec_running(&["elf"], &["PATH=/nowhere:/bin"]);
        assert!(is_linux_program(&own_path, root.path()));
        let elsewhere = spec_running(&["elf"], &["PATH=/usr/local/bin"]);
        assert!(!is_linux_program(&elsewhere, root.path()));
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs_never_to_host_files() {
        let root = rootfs();
        // An absolute link to the host's shell: inside the rootfs there is none.
        std::os::unix::fs::symlink("/bin/sh", root.path().join("opt/host-shell")).unwrap();
        std::os::unix::fs::symlink("../../../../../../bin/sh", root.path().join("opt/up")).unwrap();
        // An absolute link that stays in the image is followed.
        std::os::unix::fs::symlink("/bin/elf", root.path().join("opt/inner")).unwrap();
        let linux = |args: &[&str]| is_linux_program(&spec_running(args, &[]), root.path());
        assert!(
            std::path::Path::new("/bin/sh").exists(),
            "the host has a shell"
        );
        assert!(!linux(&["/opt/host-shell"]));
        assert!(!linux(&["/opt/up"]));
        assert!(linux(&["/opt/inner"]));
    }
}
