//! Types of the inspection surface: what a store holds, scope by scope, and
//! the records an export produces and an import consumes.
//!
//! The methods live on [`FunctionStorage`](crate::FunctionStorage) as provided
//! methods (`list_scopes`, `scope_stats`, `export_kv`, `export_queue`,
//! `id_high_water`, `import_log`, `raise_id_high_water`, `check`) whose default
//! bodies refuse with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported);
//! a backend that implements them natively says so with
//! [`Capabilities::inspect`](crate::Capabilities::inspect).

use crate::{ErrorKind, StorageError};

/// One scope as [`list_scopes`](crate::FunctionStorage::list_scopes) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopeInfo {
    /// The scope's bytes.
    pub scope: Vec<u8>,
    /// The store clock's reading (milliseconds since the Unix epoch) of the
    /// scope's last write, or `None` when the store has no stamp for it.
    pub last_write_millis: Option<i64>,
}

/// One log of a scope, as [`scope_stats`](crate::FunctionStorage::scope_stats) measures it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogStats {
    /// The log's namespace.
    pub ns: Vec<u8>,
    /// The log's key.
    pub key: Vec<u8>,
    /// How many entries the log holds (at least one: empty logs are not listed).
    pub entries: u64,
    /// The sum of the entries' value lengths.
    pub bytes: u64,
    /// The smallest id in the log.
    pub first_id: i64,
    /// The largest id in the log.
    pub last_id: i64,
}

/// What one scope holds, as [`scope_stats`](crate::FunctionStorage::scope_stats) measures it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeStats {
    /// The scope's bytes.
    pub scope: Vec<u8>,
    /// The stamp of the scope's last write (see [`ScopeInfo::last_write_millis`]).
    pub last_write_millis: Option<i64>,
    /// How many kv entries the scope holds.
    pub kv_entries: u64,
    /// The sum of the kv entries' key and value lengths.
    pub kv_bytes: u64,
    /// The scope's non-empty logs, ordered by `(ns, key)` bytes.
    pub logs: Vec<LogStats>,
    /// How many items the scope's queue holds.
    pub queue_depth: u64,
    /// The sum of the queue items' lengths.
    pub queue_bytes: u64,
}

impl ScopeStats {
    /// Whether the scope holds no kv entry, log entry or queue item.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.kv_entries == 0 && self.logs.is_empty() && self.queue_depth == 0
    }

    /// Every byte the scope holds: kv keys and values, log values, queue items.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.logs.iter().fold(
            self.kv_bytes.saturating_add(self.queue_bytes),
            |sum, log| sum.saturating_add(log.bytes),
        )
    }
}

/// One log entry with its address, as [`import_log`](crate::FunctionStorage::import_log) takes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogRecord {
    /// The entry's scope.
    pub scope: Vec<u8>,
    /// The entry's namespace.
    pub ns: Vec<u8>,
    /// The entry's key.
    pub key: Vec<u8>,
    /// The id the entry had in the store it was exported from.
    pub id: i64,
    /// The entry's bytes.
    pub value: Vec<u8>,
}

/// The error a provided inspection method returns when the backend does not
/// implement it.
#[must_use]
pub fn inspection_unsupported(store: &str, operation: &'static str) -> StorageError {
    StorageError::Operation {
        store: store.to_owned(),
        operation,
        kind: ErrorKind::Unsupported,
        hint: "this backend does not implement inspection; use a backend whose \
               capabilities say inspect (memory, sqlite, redb, postgres)"
            .to_owned(),
        source: None,
    }
}
