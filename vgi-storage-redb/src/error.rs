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
fn io_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::ReadOnlyFilesystem => ErrorKind::ReadOnly,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorKind::StorageFull,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => ErrorKind::Corrupt,
        io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => ErrorKind::InvalidInput,
        io::ErrorKind::WouldBlock => ErrorKind::AlreadyOpen,
        _ => ErrorKind::Other,
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
            ErrorKind::Other,
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
            let kind = io_kind(io);
            (kind, default_hint(kind))
        }
        redb::Error::PreviousIo => storage_kind(&redb::StorageError::PreviousIo),
        redb::Error::DatabaseClosed => storage_kind(&redb::StorageError::DatabaseClosed),
        redb::Error::TransactionPoisoned => (
            ErrorKind::Other,
            "the transaction was abandoned after an earlier failure; nothing was written",
        ),
        _ => (ErrorKind::Other, default_hint(ErrorKind::Other)),
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
