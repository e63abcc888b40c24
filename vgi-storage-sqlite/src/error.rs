//! The one place SQLite errors become [`StorageError`]s.
//!
//! Classification follows the primary result code; the engine's error is always
//! kept as the source, so the message here only says what it means and what to do.

use std::io;
use std::path::Path;

use rusqlite::ffi;
use vgi_storage_core::{ErrorKind, StorageError, default_hint};

/// The backend's short name, used where no store path is known yet.
pub(crate) const BACKEND: &str = "sqlite";

/// A SQLite error with the OS error number (errno) seen when it happened.
///
/// SQLite reports every failed write(2), fsync(2) and ftruncate(2) that is not
/// ENOSPC as one `SQLITE_IOERR_*` code, and rusqlite does not expose
/// `sqlite3_system_errno`; errno, read on the failing thread before anything
/// else runs, tells a file-size cap (EFBIG) or a quota (EDQUOT) from a
/// read-only file (EPERM, EROFS) and from a device error (EIO).
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) err: rusqlite::Error,
    errno: Option<i32>,
}

impl From<rusqlite::Error> for Failed {
    fn from(err: rusqlite::Error) -> Self {
        // Only the codes of a failed write-side system call set errno; for
        // the others it would be stale.
        let errno = match err.sqlite_error() {
            Some(e)
                if matches!(
                    e.extended_code,
                    ffi::SQLITE_IOERR_WRITE
                        | ffi::SQLITE_IOERR_FSYNC
                        | ffi::SQLITE_IOERR_DIR_FSYNC
                        | ffi::SQLITE_IOERR_TRUNCATE
                        | ffi::SQLITE_IOERR_SHMSIZE
                ) =>
            {
                io::Error::last_os_error().raw_os_error()
            }
            _ => None,
        };
        Self { err, errno }
    }
}

impl Failed {
    /// A copy, for each call of a group that failed together (a
    /// `rusqlite::Error` cannot be cloned; a commit fails with an engine code
    /// and message, which the copy keeps).
    pub(crate) fn duplicate(&self) -> Self {
        let err = match &self.err {
            rusqlite::Error::SqliteFailure(code, msg) => {
                rusqlite::Error::SqliteFailure(*code, msg.clone())
            }
            other => rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ERROR),
                Some(other.to_string()),
            ),
        };
        Self {
            err,
            errno: self.errno,
        }
    }

    /// SQLite wrote the commit's frames to the WAL but could not sync them:
    /// the transaction may be in the file, and a later recovery can find it.
    fn outcome_unknown(&self) -> bool {
        self.err.sqlite_error().is_some_and(|e| {
            matches!(
                e.extended_code,
                ffi::SQLITE_IOERR_FSYNC | ffi::SQLITE_IOERR_DIR_FSYNC
            )
        })
    }
}

/// What kind of failure a SQLite error is.
pub(crate) fn classify(err: &rusqlite::Error) -> ErrorKind {
    classify_with_errno(err, None)
}

/// What kind of failure a SQLite error is, given the errno seen when it happened.
fn classify_with_errno(err: &rusqlite::Error, errno: Option<i32>) -> ErrorKind {
    let Some(e) = err.sqlite_error() else {
        return match err {
            rusqlite::Error::ToSqlConversionFailure(_)
            | rusqlite::Error::InvalidParameterCount(..) => ErrorKind::InvalidInput,
            _ => ErrorKind::Other,
        };
    };
    match e.code {
        ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked => ErrorKind::Busy,
        ffi::ErrorCode::DiskFull => ErrorKind::StorageFull,
        ffi::ErrorCode::ReadOnly => ErrorKind::ReadOnly,
        ffi::ErrorCode::DatabaseCorrupt | ffi::ErrorCode::NotADatabase => ErrorKind::Corrupt,
        ffi::ErrorCode::CannotOpen => ErrorKind::NotFound,
        ffi::ErrorCode::PermissionDenied | ffi::ErrorCode::AuthorizationForStatementDenied => {
            ErrorKind::PermissionDenied
        }
        ffi::ErrorCode::TooBig => ErrorKind::TooLarge,
        // Only a full disk, a quota or a file-size cap is StorageFull; the
        // other failures of a system call (EIO above all) are Io, and a file
        // made read-only under an open store is ReadOnly.
        ffi::ErrorCode::SystemIoFailure => {
            match errno.map(|n| io::Error::from_raw_os_error(n).kind()) {
                _ if e.extended_code == ffi::SQLITE_IOERR_NOMEM => ErrorKind::Other,
                Some(
                    io::ErrorKind::StorageFull
                    | io::ErrorKind::QuotaExceeded
                    | io::ErrorKind::FileTooLarge,
                ) => ErrorKind::StorageFull,
                Some(io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied) => {
                    ErrorKind::ReadOnly
                }
                _ => ErrorKind::Io,
            }
        }
        _ => ErrorKind::Other,
    }
}

/// What to do about a failure of `kind` on an open SQLite store.
fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Busy => {
            "another connection held the database lock past the busy timeout; retry the call \
             or raise busy_timeout"
        }
        ErrorKind::StorageFull => {
            "a write to the database file failed: the disk, a quota or a file size limit is \
             full; free space and retry"
        }
        ErrorKind::Io => {
            "the device reported an I/O error reading, writing or syncing the database file; \
             nothing of this call was written; check the disk and the system log"
        }
        ErrorKind::ReadOnly => {
            "the database file cannot be written (read-only file or directory, or the file was \
             moved or deleted while open); fix permissions or reopen the store"
        }
        ErrorKind::Corrupt => {
            "the database file is damaged; restore it from a backup or move it aside to start \
             empty"
        }
        ErrorKind::NotFound => {
            "a database file could not be opened (its directory may have been removed); check \
             the path"
        }
        ErrorKind::TooLarge => "a row is larger than SQLite accepts; split the value",
        other => default_hint(other),
    }
}

/// Map the error of trait method `operation` on store `store`.
pub(crate) fn operation(store: &str, operation: &'static str, failed: Failed) -> StorageError {
    let kind = classify_with_errno(&failed.err, failed.errno);
    StorageError::operation(store, operation, kind, hint(kind), failed.err)
}

/// Map the failure of the transaction that call `operation` shared with
/// `others` concurrent calls of this process (group commit): it could not
/// start, or its COMMIT failed.
pub(crate) fn group(
    store: &str,
    operation: &'static str,
    failed: Failed,
    others: usize,
) -> StorageError {
    if failed.outcome_unknown() {
        let shared = match others {
            0 => String::new(),
            n => format!(" (shared with {n} other concurrent call(s) of this process)"),
        };
        let hint = format!(
            "syncing this call's commit{shared} failed: SQLite wrote it to the WAL but cannot \
             say whether it is on disk, and a recovery may find it; read the state before \
             repeating a call that is not idempotent, and check the disk"
        );
        return StorageError::operation(
            store,
            operation,
            ErrorKind::OutcomeUnknown,
            hint,
            failed.err,
        );
    }
    if others == 0 {
        return self::operation(store, operation, failed);
    }
    let kind = classify_with_errno(&failed.err, failed.errno);
    let hint = format!(
        "the transaction this call shared with {others} other concurrent call(s) of this \
         process failed to start or commit, so none of them was written; {}",
        hint(kind)
    );
    StorageError::operation(store, operation, kind, hint, failed.err)
}

/// A call whose group's leader panicked: its transaction was rolled back.
pub(crate) fn group_panicked(store: &str, operation: &'static str) -> StorageError {
    internal(
        store,
        operation,
        "the thread running this call's transaction panicked; it was rolled back and nothing \
         of this call was written; retry",
    )
}

/// A bug of this backend, reported rather than panicking.
pub(crate) fn internal(store: &str, operation: &'static str, what: &str) -> StorageError {
    StorageError::Operation {
        store: store.to_owned(),
        operation,
        kind: ErrorKind::Other,
        hint: what.to_owned(),
        source: None,
    }
}

/// Map an engine error met while opening the database at `path`.
pub(crate) fn open(store: &str, path: &Path, err: rusqlite::Error) -> StorageError {
    let kind = classify(&err);
    let hint = match kind {
        ErrorKind::Busy => {
            "another process held the database lock past the busy timeout while opening; retry \
             or raise busy_timeout"
        }
        ErrorKind::Corrupt => {
            "the file is not a SQLite database or is damaged; move it aside (a new store is \
             created in its place) or restore it from a backup"
        }
        ErrorKind::ReadOnly => {
            "the file or its directory is read-only; the store needs to write the file and \
             its -wal and -shm companions: fix permissions"
        }
        ErrorKind::NotFound => {
            "SQLite cannot open the file or create its -wal/-shm companions; check that the \
             directory exists and is writable"
        }
        ErrorKind::StorageFull => "the disk is full; free space and retry",
        other => default_hint(other),
    };
    StorageError::open(store, path, kind, hint, Some(Box::new(err)))
}

/// An open failure found by a check of our own, with no engine error underneath.
pub(crate) fn open_check(
    store: &str,
    path: &Path,
    kind: ErrorKind,
    hint: impl Into<String>,
) -> StorageError {
    StorageError::open(store, path, kind, hint, None)
}

/// Map the failure to create the database file in an existing directory.
pub(crate) fn open_create(store: &str, path: &Path, err: io::Error) -> StorageError {
    match err.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => StorageError::open(
            store,
            path,
            ErrorKind::ReadOnly,
            "cannot create the database file: its directory is read-only for this user; make \
             it writable or pick another path",
            Some(Box::new(err)),
        ),
        _ => open_io(store, path, err),
    }
}

/// SQLite says CANTOPEN both for a missing file and for a -wal/-shm companion
/// it cannot create; tell the second apart by trying to create a file beside it.
pub(crate) fn open_in_dir(store: &str, path: &Path, err: rusqlite::Error) -> StorageError {
    if classify(&err) == ErrorKind::NotFound {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let probe = dir.join(format!(".vgi-storage-probe-{}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                return StorageError::open(
                    store,
                    path,
                    ErrorKind::ReadOnly,
                    "the directory is read-only, so SQLite cannot create the -wal and -shm \
                     files it needs beside the database; make the directory writable",
                    Some(Box::new(err)),
                );
            }
            Err(_) => {}
        }
    }
    open(store, path, err)
}

/// Map a file-system error met while preparing the database file or its directory.
pub(crate) fn open_io(store: &str, path: &Path, err: io::Error) -> StorageError {
    let (kind, hint) = match err.kind() {
        io::ErrorKind::NotFound => (
            ErrorKind::NotFound,
            "the directory does not exist; create it (owner-only, mode 0700) or pick another path",
        ),
        io::ErrorKind::PermissionDenied => (
            ErrorKind::PermissionDenied,
            "the directory is not writable by this user, or is not owned by it; fix its \
             ownership and permissions or pick another path",
        ),
        io::ErrorKind::ReadOnlyFilesystem => (
            ErrorKind::ReadOnly,
            "the file system is read-only; pick a path on a writable one",
        ),
        io::ErrorKind::StorageFull => (ErrorKind::StorageFull, "the disk is full; free space"),
        _ => (
            ErrorKind::Other,
            "the file could not be created; see the source",
        ),
    };
    StorageError::open(store, path, kind, hint, Some(Box::new(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    #[test]
    fn engine_codes_map_to_kinds() {
        let cases = [
            (ffi::SQLITE_BUSY, ErrorKind::Busy),
            (ffi::SQLITE_LOCKED, ErrorKind::Busy),
            (ffi::SQLITE_FULL, ErrorKind::StorageFull),
            (ffi::SQLITE_READONLY, ErrorKind::ReadOnly),
            (ffi::SQLITE_READONLY_DBMOVED, ErrorKind::ReadOnly),
            (ffi::SQLITE_CORRUPT, ErrorKind::Corrupt),
            (ffi::SQLITE_NOTADB, ErrorKind::Corrupt),
            (ffi::SQLITE_CANTOPEN, ErrorKind::NotFound),
            (ffi::SQLITE_PERM, ErrorKind::PermissionDenied),
            (ffi::SQLITE_TOOBIG, ErrorKind::TooLarge),
            (ffi::SQLITE_IOERR_WRITE, ErrorKind::Io),
            (ffi::SQLITE_IOERR_FSYNC, ErrorKind::Io),
            (ffi::SQLITE_IOERR_READ, ErrorKind::Io),
            (ffi::SQLITE_IOERR_NOMEM, ErrorKind::Other),
            (ffi::SQLITE_MISUSE, ErrorKind::Other),
        ];
        for (code, kind) in cases {
            assert_eq!(classify(&failure(code)), kind, "code {code}");
        }
    }

    /// Write and fsync failures were all StorageFull with the hint "free space
    /// and retry", an EIO included. Only a full disk, a quota or a file-size cap
    /// is StorageFull; EIO is Io, and a file made read-only is ReadOnly.
    #[test]
    fn io_errors_are_classified_by_their_errno() {
        let cases = [
            (Some(5), ErrorKind::Io), // EIO
            (None, ErrorKind::Io),
            (Some(27), ErrorKind::StorageFull),  // EFBIG
            (Some(28), ErrorKind::StorageFull),  // ENOSPC
            (Some(122), ErrorKind::StorageFull), // EDQUOT
            (Some(1), ErrorKind::ReadOnly),      // EPERM
            (Some(30), ErrorKind::ReadOnly),     // EROFS
        ];
        for code in [
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_IOERR_TRUNCATE,
        ] {
            for (errno, kind) in cases {
                let failed = Failed {
                    err: failure(code),
                    errno,
                };
                let err = operation("sqlite:/x.db", "kv_put", failed);
                assert_eq!(err.kind(), kind, "code {code}, errno {errno:?}");
                if kind == ErrorKind::Io {
                    assert!(!err.to_string().contains("free space"), "{err}");
                }
            }
        }
    }

    #[test]
    fn busy_is_retryable_and_keeps_the_source() {
        let err = operation(
            "sqlite:/x.db",
            "queue_pop",
            Failed::from(failure(ffi::SQLITE_BUSY)),
        );
        assert!(err.is_retryable());
        assert!(std::error::Error::source(&err).is_some());
        let msg = err.to_string();
        assert!(
            msg.contains("queue_pop") && msg.contains("sqlite:/x.db"),
            "{msg}"
        );
    }
}
