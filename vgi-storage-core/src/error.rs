//! The one error type every backend returns.

use std::error::Error as StdError;
use std::path::PathBuf;

/// A boxed error from the engine underneath a backend, kept as the source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// `Result` with [`StorageError`] as the default error.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What went wrong, as a small `Copy` enum callers can match on.
///
/// Use [`ErrorKind::is_retryable`] to decide whether trying the same call again
/// may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Another connection or process holds a lock the call needed, past the
    /// store's timeout. Retrying may succeed.
    Busy,
    /// The store could not be reached (a server went away, a connection broke,
    /// a pool had no free connection in time). Retrying may succeed.
    Unavailable,
    /// A transaction conflicted with a concurrent one and was rolled back.
    /// Retrying may succeed.
    Conflict,
    /// The store is held exclusively by another process or handle.
    AlreadyOpen,
    /// The file or data is not a store of this backend, or is damaged.
    Corrupt,
    /// The store was written by a newer version of this backend.
    IncompatibleVersion,
    /// The store or its directory cannot be written.
    ReadOnly,
    /// The disk, a quota or a file-size limit left no room for the write.
    StorageFull,
    /// The device reported an I/O error (EIO) while reading, writing or syncing.
    /// Not retryable: check the disk and the system log.
    Io,
    /// The request was sent but its outcome cannot be known (the connection was
    /// lost before the reply arrived): the call may or may not have taken effect.
    ///
    /// Not plainly retryable. Repeating is safe for the calls whose effect does
    /// not depend on how often they run: `kv_get`, `scan`, `kv_put`,
    /// `kv_put_batch`, `kv_del`, `clear` and `gc`. Repeating `append`,
    /// `append_batch` or `queue_push` may write twice; a lost `queue_pop` may
    /// have removed an item nobody received; a repeated `kv_compare_and_swap` may
    /// answer `false` for a swap that the first attempt made: read the state
    /// before deciding.
    OutcomeUnknown,
    /// The file or directory does not exist or cannot be opened.
    NotFound,
    /// Permission to the file, directory or database was denied.
    PermissionDenied,
    /// A value is larger than the backend accepts (see [`crate::Capabilities`]).
    TooLarge,
    /// An argument or a configuration option is not valid.
    InvalidInput,
    /// A backend was asked for that is not compiled in or not known.
    Unsupported,
    /// Anything else the engine reported; the source says what.
    Other,
}

impl ErrorKind {
    /// Whether trying the same call again, unchanged, may succeed.
    ///
    /// `Busy`, `Unavailable` and `Conflict` are transient; every other kind is
    /// permanent until something outside the call changes.
    /// [`ErrorKind::OutcomeUnknown`] is not retryable as such: see its docs for
    /// which calls are safe to repeat.
    #[must_use]
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::Busy | Self::Unavailable | Self::Conflict)
    }
}

/// An error from a storage backend.
///
/// Every variant names the store (`store`: the backend's name and location, e.g.
/// `sqlite:/tmp/vgi/state.db`) and keeps the engine's error as its
/// [`source`](StdError::source). Match on [`StorageError::kind`] rather than on
/// variants: the enum is `#[non_exhaustive]` and grows with backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The store could not be opened or created.
    #[error("cannot open store {store} at {path}: {hint}", path = path.display())]
    Open {
        /// The store that failed, e.g. `sqlite`.
        store: String,
        /// The file or directory that could not be opened.
        path: PathBuf,
        /// What kind of failure this is.
        kind: ErrorKind,
        /// What the caller can do about it.
        hint: String,
        /// The engine's error, if there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// An operation on an open store failed.
    #[error("{operation} failed on store {store}: {hint}")]
    Operation {
        /// The store that failed.
        store: String,
        /// The trait method that failed, e.g. `queue_pop`.
        operation: &'static str,
        /// What kind of failure this is.
        kind: ErrorKind,
        /// What the caller can do about it.
        hint: String,
        /// The engine's error.
        #[source]
        source: Option<BoxError>,
    },
    /// A value is larger than the store accepts; nothing was written.
    #[error(
        "value of {len} bytes is larger than store {store} accepts ({max} bytes); \
         split it or pick a backend with a larger limit"
    )]
    TooLarge {
        /// The store that refused the value.
        store: String,
        /// The length of the value that was refused.
        len: usize,
        /// The largest value the store accepts.
        max: usize,
    },
    /// A scope, namespace or key is longer than the store accepts; nothing was written.
    #[error(
        "{what} of {len} bytes is longer than store {store} accepts ({max} bytes); \
         use a shorter name, e.g. a digest of it"
    )]
    NameTooLong {
        /// The store that refused the name.
        store: String,
        /// Which name: `scope`, `namespace` or `key`.
        what: &'static str,
        /// The length of the name that was refused.
        len: usize,
        /// The longest name the store accepts (see [`crate::Capabilities::max_key_len`]).
        max: usize,
    },
    /// A [`gc`](crate::FunctionStorage::gc) pass stopped partway.
    ///
    /// `gc` removes stale scopes in steps, each scope wholly or not at all. When
    /// a step fails, the scopes removed by the earlier steps stay removed (they
    /// were stale) and are listed in `removed`; `source` says why the pass
    /// stopped, and [`StorageError::kind`] is its kind. Running `gc` again
    /// finishes the work.
    #[error("gc on store {store} stopped after removing {} stale scopes", removed.len())]
    GcInterrupted {
        /// The store that was swept.
        store: String,
        /// The scopes removed before the pass stopped.
        removed: Vec<Vec<u8>>,
        /// Why the pass stopped.
        #[source]
        source: Box<StorageError>,
    },
    /// A configuration option or URL is not valid.
    #[error("invalid configuration for {store}: {hint}")]
    Config {
        /// The store or backend being configured.
        store: String,
        /// What is wrong and how to fix it.
        hint: String,
        /// The underlying parse error, if there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A backend was asked for that this build does not include.
    #[error("backend {backend} is not compiled in: {hint}")]
    Unsupported {
        /// The backend that was asked for.
        backend: String,
        /// What to do, e.g. which Cargo feature to enable.
        hint: String,
    },
}

impl StorageError {
    /// What went wrong, for matching.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Open { kind, .. } | Self::Operation { kind, .. } => *kind,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::NameTooLong { .. } | Self::Config { .. } => ErrorKind::InvalidInput,
            Self::GcInterrupted { source, .. } => source.kind(),
            Self::Unsupported { .. } => ErrorKind::Unsupported,
        }
    }

    /// Whether trying the same call again may succeed (see [`ErrorKind::is_retryable`]).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Build an [`StorageError::Operation`] error with the engine's error as source.
    pub fn operation(
        store: impl Into<String>,
        operation: &'static str,
        kind: ErrorKind,
        hint: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Operation {
            store: store.into(),
            operation,
            kind,
            hint: hint.into(),
            source: Some(source.into()),
        }
    }

    /// Build an [`StorageError::Open`] error with the engine's error as source.
    pub fn open(
        store: impl Into<String>,
        path: impl Into<PathBuf>,
        kind: ErrorKind,
        hint: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Self::Open {
            store: store.into(),
            path: path.into(),
            kind,
            hint: hint.into(),
            source,
        }
    }
}

/// A default hint for each kind, for backends that have nothing more specific to say.
#[must_use]
pub fn default_hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Busy => "the store is locked by another connection; retry the call",
        ErrorKind::Unavailable => "the store cannot be reached right now; retry the call",
        ErrorKind::Conflict => "a concurrent transaction conflicted; retry the call",
        ErrorKind::AlreadyOpen => "another process holds the store; close it or use a shared store",
        ErrorKind::Corrupt => "the data is damaged or not this backend's; restore or remove it",
        ErrorKind::IncompatibleVersion => "the store was written by a newer version; upgrade",
        ErrorKind::ReadOnly => "the store cannot be written; check file and directory permissions",
        ErrorKind::StorageFull => "the disk or a size limit is full; free space and retry",
        ErrorKind::Io => "the device reported an I/O error; check the disk and the system log",
        ErrorKind::OutcomeUnknown => {
            "the connection was lost after the request was sent, so the call may or may not \
             have taken effect; read the state before repeating a call that is not idempotent"
        }
        ErrorKind::NotFound => "the path does not exist; create its directory first",
        ErrorKind::PermissionDenied => "permission denied; check ownership and permissions",
        ErrorKind::TooLarge => "the value is too large for this store; split it",
        ErrorKind::InvalidInput => "the input is not valid; fix the call or configuration",
        ErrorKind::Unsupported => "this backend is not available in this build",
        ErrorKind::Other => "the storage engine reported an error; see the source",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_kinds_are_retryable_and_others_are_not() {
        assert!(ErrorKind::Busy.is_retryable());
        assert!(ErrorKind::Unavailable.is_retryable());
        assert!(ErrorKind::Conflict.is_retryable());
        for kind in [
            ErrorKind::Corrupt,
            ErrorKind::StorageFull,
            ErrorKind::ReadOnly,
            ErrorKind::TooLarge,
            ErrorKind::AlreadyOpen,
            ErrorKind::Io,
            ErrorKind::OutcomeUnknown,
        ] {
            assert!(!kind.is_retryable(), "{kind:?}");
        }
    }

    #[test]
    fn operation_error_keeps_its_source_and_names_the_store() {
        let io = std::io::Error::other("disk on fire");
        let err = StorageError::operation(
            "sqlite:/tmp/x.db",
            "kv_put",
            ErrorKind::StorageFull,
            default_hint(ErrorKind::StorageFull),
            io,
        );
        assert_eq!(err.kind(), ErrorKind::StorageFull);
        let msg = err.to_string();
        assert!(
            msg.contains("sqlite:/tmp/x.db") && msg.contains("kv_put"),
            "{msg}"
        );
        assert!(
            !msg.contains("disk on fire"),
            "message repeats the source: {msg}"
        );
        let source = StdError::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk on fire"));
    }

    #[test]
    fn too_large_says_what_to_do() {
        let err = StorageError::TooLarge {
            store: "memory".into(),
            len: 10,
            max: 5,
        };
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(err.to_string().contains("split it"));
    }
}
