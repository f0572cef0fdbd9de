//! The one way wasmbox replaces a file: the store's `index.json`, the Docker
//! config, archives, and the installer's shim binary and containerd config.
//! A reader sees the old file or the new one, never half of one, and the new
//! one survives a power cut once the write is committed.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What failed while replacing a file, and on which path.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} {}", path.display())]
pub struct WriteError {
    /// What was being done ("create", "write", "replace", ...).
    pub action: &'static str,
    /// The file it was done to.
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl WriteError {
    /// Turns an I/O error of doing `action` to `path` into a `WriteError`
    /// (for `map_err`).
    pub fn on(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
        let path = path.to_path_buf();
        move |source| WriteError {
            action,
            path,
            source,
        }
    }
}

/// The new content of a file, written to a temporary file next to it and
/// put in its place by [`AtomicFile::commit`]. Dropped uncommitted, it
/// removes the temporary file and leaves the old one as it was.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    mode: u32,
    file: Option<fs::File>,
}

impl AtomicFile {
    /// Starts replacing `dest` with a file of permissions `mode` (whatever the umask).
    pub fn create(dest: &Path, mode: u32) -> Result<AtomicFile, WriteError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = directory_of(dest).join(format!(
            ".{name}.wasmbox-tmp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(WriteError::on("create a temporary file for", dest))?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            mode,
            file: Some(file),
        })
    }

    /// The temporary file, to write the new content into.
    pub fn file(&mut self) -> &mut fs::File {
        self.file
            .as_mut()
            .expect("the file is only taken by commit, which consumes self")
    }

    /// Where the content is being written, for messages.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Syncs the content, sets the mode, renames it over the destination and
    /// syncs the directory so the rename itself is durable.
    pub fn commit(mut self) -> Result<(), WriteError> {
        let file = self.file.take().expect("commit runs once");
        // The umask may have cleared bits of `mode` at creation.
        file.set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(WriteError::on("set permissions of", &self.tmp))?;
        file.sync_all().map_err(WriteError::on("sync", &self.tmp))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(WriteError::on("replace", &self.dest))?;
        // Best effort: some file systems refuse to sync a directory.
        if let Ok(d) = fs::File::open(directory_of(&self.dest)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // After a commit the temporary file has been renamed away: nothing to remove.
        let _ = fs::remove_file(&self.tmp);
    }
}

fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Replaces `dest` with `bytes` through an [`AtomicFile`].
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let mut file = AtomicFile::create(dest, mode)?;
    let tmp = file.temp_path().to_path_buf();
    file.file()
        .write_all(bytes)
        .map_err(WriteError::on("write", &tmp))?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_with_the_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new", 0o640).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_named_with_the_destination() {
        let err = write_atomic(Path::new("/no/such/dir/f"), b"x", 0o644).unwrap_err();
        assert_eq!(
            err.to_string(),
            "could not create a temporary file for /no/such/dir/f"
        );
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn an_uncommitted_file_keeps_the_old_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "old").unwrap();
        let mut file = AtomicFile::create(&path, 0o644).unwrap();
        file.file().write_all(b"half of the new").unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
