//! The state of one scope.

use foldhash::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// One log entry. The value is shared so that `scan` takes it under the
/// shard's lock by a reference count and copies the bytes after the lock is
/// released: a scan of a long log does not hold up the shard's writers.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The entry's id.
    pub(crate) id: i64,
    /// The entry's bytes, copied once when appended.
    pub(crate) value: Arc<[u8]>,
}

/// One log: its entries in id order. Ids are taken under the lock of the
/// scope's shard, so every append lands at the end and `scan` finds its start
/// by binary search.
pub(crate) type Log = Vec<Entry>;

/// Logs of one scope: `ns -> key -> log`. Nested maps let a lookup borrow
/// `&[u8]` without building an owned `(ns, key)` pair.
pub(crate) type Logs = HashMap<Vec<u8>, HashMap<Vec<u8>, Log>>;

/// Everything stored under one scope. It lives inside the store's sharded map
/// and is guarded by its shard's lock.
#[derive(Debug, Default)]
pub(crate) struct ScopeState {
    /// `key -> value`.
    pub(crate) kv: HashMap<Vec<u8>, Vec<u8>>,
    /// The scope's append-only logs.
    pub(crate) logs: Logs,
    /// The scope's FIFO work queue.
    pub(crate) queue: VecDeque<Vec<u8>>,
    /// The clock reading of the last write; `None` until the first write lands.
    pub(crate) stamp: Option<i64>,
}
