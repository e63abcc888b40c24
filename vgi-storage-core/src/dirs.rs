//! Owner-only directories and files for the file backends.

use std::fmt;
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
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

/// Why a store's file was refused: another user could read it, write it, or
/// choose where it points.
///
/// Carried inside an `io::Error` of kind `PermissionDenied` by
/// [`check_private_file`] and [`open_private_file`]; find it with
/// [`NotPrivate::find`] to build a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPrivate {
    /// The file refused.
    pub path: PathBuf,
    /// The path is a symbolic link (a side file is never opened through one).
    pub symlink: bool,
    /// The path is not a regular file (a directory, a device, a socket ...).
    pub not_regular: bool,
    /// The uid that owns the file (or the link).
    pub owner: u32,
    /// The permission bits of the file (or the link), e.g. `0o644`.
    pub mode: u32,
    /// The uid of this process.
    pub uid: u32,
}

impl NotPrivate {
    /// The `NotPrivate` inside `err`, if `err` came from [`check_private_file`]
    /// or [`open_private_file`] refusing a file.
    #[must_use]
    pub fn find(err: &io::Error) -> Option<&Self> {
        err.get_ref().and_then(|e| e.downcast_ref::<Self>())
    }

    /// What is wrong with the file and what to do, without its path: for an
    /// error message that names the file already.
    #[must_use]
    pub fn hint(&self) -> String {
        let found = format!(
            "owned by uid {} with mode {:03o}; this process runs as uid {}",
            self.owner, self.mode, self.uid
        );
        if self.symlink {
            format!(
                "the path is a symbolic link ({found}); a store never opens its side files \
                 through a link, nor its database through a link another user made, since a \
                 link can point anywhere; remove the link or pick a path in a directory only \
                 this user can write"
            )
        } else if self.not_regular {
            format!("the path is not a regular file ({found}); give the path of a database file")
        } else {
            format!(
                "the file is {found}, but a store's files must be owned by this user and \
                 neither readable nor writable by group or others; if the file is yours and \
                 its contents are trusted, chmod 600 it (chown it first if needed), otherwise \
                 move it aside or pick a path in a directory only this user can write"
            )
        }
    }

    /// The store error for this refusal: kind
    /// [`PermissionDenied`](crate::ErrorKind::PermissionDenied), naming the file,
    /// its owner and mode, and the fix.
    #[must_use]
    pub fn to_storage_error(&self, store: impl Into<String>) -> crate::StorageError {
        crate::StorageError::open(
            store,
            &self.path,
            crate::ErrorKind::PermissionDenied,
            self.hint(),
            None,
        )
    }

    fn check(path: &Path, meta: &Metadata, uid: u32) -> io::Result<()> {
        let file_type = meta.file_type();
        let refused = Self {
            path: path.to_path_buf(),
            symlink: file_type.is_symlink(),
            not_regular: !file_type.is_file(),
            owner: meta.uid(),
            mode: meta.mode() & 0o7777,
            uid,
        };
        if refused.symlink
            || refused.not_regular
            || refused.owner != uid
            || refused.mode & 0o077 != 0
        {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, refused));
        }
        Ok(())
    }
}

impl fmt::Display for NotPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.hint())
    }
}

impl std::error::Error for NotPrivate {}

/// Check that the existing file at `path` is private to this user: a regular
/// file owned by this process's uid, with no permission bit for group or
/// others. A symbolic link this user owns is followed (the check is on the
/// file it leads to); one another user owns is refused.
///
/// A refused file is an `io::ErrorKind::PermissionDenied` error carrying a
/// [`NotPrivate`]. In a shared directory another user could otherwise
/// pre-create the database readable to them, and our data would land in
/// their file.
pub fn check_private_file(path: &Path) -> io::Result<()> {
    let uid = current_uid()?;
    let link = fs::symlink_metadata(path)?;
    if link.file_type().is_symlink() && link.uid() != uid {
        // Another user's link: they choose, and may change, where it points.
        return NotPrivate::check(path, &link, uid);
    }
    NotPrivate::check(path, &fs::metadata(path)?, uid)
}

/// Open the side file at `path` for reading and writing, creating it with mode
/// 0600 if it does not exist, without following a symbolic link (`O_NOFOLLOW`),
/// then check that it is private to this user as [`check_private_file`] does
/// (on the open file, so it cannot be swapped between check and use).
///
/// A symbolic link or a file that is not private is an
/// `io::ErrorKind::PermissionDenied` error carrying a [`NotPrivate`].
pub fn open_private_file(path: &Path) -> io::Result<File> {
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            // The last component is a link: say so, with the link's owner.
            let meta = fs::symlink_metadata(path)?;
            return NotPrivate::check(path, &meta, current_uid()?).and(Err(e));
        }
        Err(e) => return Err(e),
    };
    NotPrivate::check(path, &file.metadata()?, current_uid()?)?;
    Ok(file)
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

    fn not_private(err: &io::Error) -> Option<NotPrivate> {
        NotPrivate::find(err).cloned()
    }

    #[test]
    fn a_private_file_passes_and_an_exposed_one_is_refused_with_its_mode() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("state.db");
        ensure_private_file(&path)?;
        check_private_file(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        let err = check_private_file(&path)
            .err()
            .ok_or_else(|| io::Error::other("accepted a 0644 file"))?;
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let found = not_private(&err).ok_or_else(|| io::Error::other("no NotPrivate"))?;
        assert_eq!((found.mode, found.symlink), (0o644, false));
        assert!(found.hint().contains("chmod 600"), "{}", found.hint());
        assert!(err.to_string().contains("644"), "{err}");
        let err = found.to_storage_error("sqlite:x");
        assert_eq!(err.kind(), crate::ErrorKind::PermissionDenied);
        let msg = err.to_string();
        assert!(
            msg.contains("state.db") && msg.contains("644") && msg.contains("uid"),
            "{msg}"
        );
        Ok(())
    }

    #[test]
    fn a_side_file_is_created_0600_and_never_through_a_symlink() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let side = tmp.path().join("state.db-turn");
        drop(open_private_file(&side)?);
        assert_eq!(fs::metadata(&side)?.permissions().mode() & 0o777, 0o600);
        drop(open_private_file(&side)?);
        let target = tmp.path().join("chosen-by-someone-else");
        let link = tmp.path().join("other.db-turn");
        std::os::unix::fs::symlink(&target, &link)?;
        let err = open_private_file(&link)
            .err()
            .ok_or_else(|| io::Error::other("opened through a symlink"))?;
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(not_private(&err).is_some_and(|f| f.symlink), "{err}");
        assert!(!target.exists(), "created the link's target");
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
