//! Owner-only directories and files for the file backends.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The effective uid of this process.
///
/// Read from the owner of `/proc/self` (no `unsafe` needed); where `/proc` is not
/// mounted, from the owner of a file this process creates in the temp dir.
pub fn current_uid() -> io::Result<u32> {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return Ok(meta.uid());
    }
    let probe = std::env::temp_dir().join(format!(".vgi-storage-uid-{}", std::process::id()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    let uid = file.metadata()?.uid();
    drop(file);
    fs::remove_file(&probe)?;
    Ok(uid)
}

/// The per-user default directory, `$TMPDIR/vgi-storage-<uid>`, created owner-only.
///
/// See [`ensure_private_dir`] for the checks made on an existing directory.
pub fn default_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vgi-storage-{}", current_uid()?));
    ensure_private_dir(&dir)?;
    Ok(dir)
}

/// Create `dir` (and missing parents) with mode 0700, or check an existing one.
///
/// An existing `dir` must be a real directory (not a symlink) owned by this
/// user; its mode is then tightened to 0700. Anything else is an
/// `io::ErrorKind::PermissionDenied` error, since another user could otherwise
/// read or plant state there.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory (a symlink or file is in the way)",
                dir.display()
            ),
        ));
    }
    let uid = current_uid()?;
    if meta.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is owned by uid {}, not by this user (uid {uid})",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Create `path` empty with mode 0600 if it does not exist; leave an existing file alone.
///
/// File backends call this before handing the path to their engine, so a new
/// database is never readable by other users, whatever the umask.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_created_0700_and_tightened() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir)?;
        assert_eq!(fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        ensure_private_dir(&dir)?;
        assert_eq!(fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
        Ok(())
    }

    #[test]
    fn private_dir_refuses_a_symlink() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let target = tmp.path().join("real");
        fs::create_dir(&target)?;
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link)?;
        let err = ensure_private_dir(&link).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::PermissionDenied));
        Ok(())
    }

    #[test]
    fn private_file_is_0600_and_existing_content_is_kept() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("state.db");
        ensure_private_file(&path)?;
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        fs::write(&path, b"keep me")?;
        ensure_private_file(&path)?;
        assert_eq!(fs::read(&path)?, b"keep me");
        Ok(())
    }

    #[test]
    fn default_dir_is_per_user() -> io::Result<()> {
        let dir = default_dir()?;
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(name, format!("vgi-storage-{}", current_uid()?));
        Ok(())
    }
}
