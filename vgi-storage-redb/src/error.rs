//! The one place redb's errors become [`StorageError`]s.
//!
//! Each redb error is kept whole as the `source`; the kind and hint say what it means
//! for the caller.

use std::io;
use std::path::Path;

use vgi_storage_core::{ErrorKind, StorageError, default_hint};

/// What to tell the caller when another handle holds the file.
const ALREADY_OPEN_HINT: &str = "another process (or another handle in this process) holds the \
     file open, and redb locks it exclusively by default; close the other handle, open the store \
     with RedbStorage::builder(path).multi_process(true) in every process that shares it, or use \
     the SQLite backend, which processes share";

/// The kind of an I/O error, as a storage error kind.
///
/// Only a full disk, a quota or a file-size cap (ENOSPC, EDQUOT, EFBIG) is
/// `StorageFull`; any other error of the operating system (EIO above all) is `Io`.
fn io_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::ReadOnlyFilesystem => ErrorKind::ReadOnly,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => {
            ErrorKind::StorageFull
        }
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => ErrorKind::Corrupt,
        io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => ErrorKind::InvalidInput,
        io::ErrorKind::WouldBlock => ErrorKind::AlreadyOpen,
        _ if err.raw_os_error().is_some() => ErrorKind::Io,
        _ => ErrorKind::Other,
    }
}

/// The kind of an I/O error met by an operation on an open store: the file
/// refusing a write (EPERM, EACCES) means it was made read-only under us.
fn op_io_kind(err: &io::Error) -> ErrorKind {
    match io_kind(err) {
        ErrorKind::PermissionDenied => ErrorKind::ReadOnly,
        kind => kind,
    }
}

/// What to do about an I/O error of `kind` met by an operation.
fn op_io_hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::StorageFull => {
            "a write to the store's file failed: the disk, a quota or a file size limit is \
             full; free space, then drop the store and open it again (redb refuses every call \
             after a failed write until it is reopened)"
        }
        ErrorKind::ReadOnly => {
            "the store's file cannot be written (read-only file or file system); fix \
             permissions, then drop the store and open it again"
        }
        ErrorKind::Io => {
            "the device reported an I/O error; check the disk and the system log, then drop the \
             store and open it again"
        }
        other => default_hint(other),
    }
}

/// The kind and hint of a redb storage error.
fn storage_kind(err: &redb::StorageError) -> (ErrorKind, &'static str) {
    match err {
        redb::StorageError::Corrupted(_) => (
            ErrorKind::Corrupt,
            "the file is not a redb database or is damaged; restore it from a backup or remove it",
        ),
        redb::StorageError::ValueTooLarge(_) => (
            ErrorKind::TooLarge,
            "a key or value is larger than redb stores (3 GiB); split it",
        ),
        redb::StorageError::Io(io) => {
            let kind = io_kind(io);
            (kind, default_hint(kind))
        }
        redb::StorageError::PreviousIo => (
            ErrorKind::Io,
            "an earlier I/O error left the store unusable; drop it and open it again",
        ),
        redb::StorageError::DatabaseClosed => (
            ErrorKind::Unavailable,
            "the database was closed while the call was running",
        ),
        _ => (ErrorKind::Other, default_hint(ErrorKind::Other)),
    }
}

/// An error from `Builder::create` or the first transaction of an open.
pub(crate) fn open_error(store: &str, path: &Path, err: impl Into<redb::Error>) -> StorageError {
    let err: redb::Error = err.into();
    let (kind, hint): (ErrorKind, String) = match &err {
        redb::Error::DatabaseAlreadyOpen => (ErrorKind::AlreadyOpen, ALREADY_OPEN_HINT.to_owned()),
        redb::Error::LockProtocolMismatch => (
            ErrorKind::AlreadyOpen,
            "another process has the file open with an incompatible version of redb or another \
             concurrency mode; open it the same way (multi_process on or off) in every process"
                .to_owned(),
        ),
        redb::Error::UpgradeRequired(_) => (
            ErrorKind::IncompatibleVersion,
            "the file uses an older redb file format; upgrade it with the redb version that wrote it"
                .to_owned(),
        ),
        redb::Error::RepairAborted => (
            ErrorKind::Corrupt,
            "the file needs a repair that could not be done; open it writable or restore it"
                .to_owned(),
        ),
        redb::Error::TableTypeMismatch { .. } | redb::Error::TypeDefinitionChanged { .. } => (
            ErrorKind::Corrupt,
            "the file is a redb database of another application; use a file of its own".to_owned(),
        ),
        other => {
            let (kind, hint) = match other {
                redb::Error::Corrupted(_) => storage_kind(&redb::StorageError::Corrupted(String::new())),
                redb::Error::Io(io) => {
                    let kind = io_kind(io);
                    if kind == ErrorKind::Corrupt {
                        (kind, "the file is truncated or not a redb database; restore or remove it")
                    } else {
                        (kind, default_hint(kind))
                    }
                }
                redb::Error::ValueTooLarge(_) => (ErrorKind::TooLarge, default_hint(ErrorKind::TooLarge)),
                _ => (ErrorKind::Other, default_hint(ErrorKind::Other)),
            };
            (kind, hint.to_owned())
        }
    };
    StorageError::open(store, path, kind, hint, Some(Box::new(err)))
}

/// An open failure that redb did not report (directory creation, the panic guard).
pub(crate) fn open_io_error(store: &str, path: &Path, hint: &str, err: io::Error) -> StorageError {
    let kind = io_kind(&err);
    StorageError::open(store, path, kind, hint, Some(Box::new(err)))
}

/// An error of an operation on an open store.
pub(crate) fn op_error(
    store: &str,
    operation: &'static str,
    err: impl Into<redb::Error>,
) -> StorageError {
    let err: redb::Error = err.into();
    let (kind, hint) = match &err {
        redb::Error::Corrupted(_) => storage_kind(&redb::StorageError::Corrupted(String::new())),
        redb::Error::ValueTooLarge(_) => storage_kind(&redb::StorageError::ValueTooLarge(0)),
        redb::Error::Io(io) => {
            let kind = op_io_kind(io);
            (kind, op_io_hint(kind))
        }
        redb::Error::PreviousIo => storage_kind(&redb::StorageError::PreviousIo),
        redb::Error::WouldBlock => (
            ErrorKind::Busy,
            "another process held the store's write lock past the busy timeout; nothing was \
             written; retry the call or raise busy_timeout",
        ),
        redb::Error::DatabaseClosed => storage_kind(&redb::StorageError::DatabaseClosed),
        redb::Error::TransactionPoisoned => (
            ErrorKind::Other,
            "the transaction was abandoned after an earlier failure; nothing was written",
        ),
        _ => (ErrorKind::Other, default_hint(ErrorKind::Other)),
    };
    StorageError::operation(store, operation, kind, hint, err)
}

/// A call refused because an earlier write failed with `kind` (redb's
/// `PreviousIo`): the store stays unusable until reopened.
pub(crate) fn previous_io_error(
    store: &str,
    operation: &'static str,
    kind: ErrorKind,
    err: redb::Error,
) -> StorageError {
    let hint = match kind {
        ErrorKind::StorageFull => {
            "an earlier write found the disk, a quota or a file size limit full, and redb \
             refuses every call until the store is reopened; free space, then drop the store \
             and open it again"
        }
        ErrorKind::ReadOnly => {
            "an earlier write found the store's file read-only, and redb refuses every call \
             until the store is reopened; fix permissions, then drop the store and open it again"
        }
        _ => {
            "an earlier write failed with an I/O error, and redb refuses every call until the \
             store is reopened; check the disk and the system log, then drop the store and open \
             it again"
        }
    };
    StorageError::operation(store, operation, kind, hint, err)
}

/// A store state this backend does not accept (schema version, counters).
pub(crate) fn schema_error(store: &str, path: &Path, found: u64, supported: u64) -> StorageError {
    let err = io::Error::new(
        io::ErrorKind::InvalidData,
        format!("schema version {found}, this build reads up to {supported}"),
    );
    StorageError::open(
        store,
        path,
        ErrorKind::IncompatibleVersion,
        "the store was written by a newer vgi-storage-redb; upgrade",
        Some(Box::new(err)),
    )
}
