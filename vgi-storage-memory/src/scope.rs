//! The state of one scope, and the lock that guards it.

use foldhash::HashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use vgi_storage_core::LogEntry;

/// One log: its entries in id order. Ids are taken under the scope's lock, so
/// every append lands at the end and `scan` finds its start by binary search.
pub(crate) type Log = Vec<LogEntry>;

/// Logs of one scope: `ns -> key -> log`. Nested maps let a lookup borrow
/// `&[u8]` without building an owned `(ns, key)` pair.
pub(crate) type Logs = HashMap<Vec<u8>, HashMap<Vec<u8>, Log>>;

/// Everything stored under one scope.
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
    /// Set, under this state's lock, when `clear` or `gc` has taken the state
    /// out of the store's map. A caller that locks a removed state must fetch
    /// the scope's slot again: anything written here would be lost.
    pub(crate) removed: bool,
}

/// One scope's state behind its own lock, shared between the map and callers.
pub(crate) type Slot = Arc<Mutex<ScopeState>>;

/// Lock `slot`, recovering from poisoning.
///
/// A panic can only come from inside a caller-supplied [`Clock`](vgi_storage_core::Clock),
/// and every operation reads the clock before it changes anything, so a
/// poisoned state is still whole.
pub(crate) fn lock(slot: &Slot) -> MutexGuard<'_, ScopeState> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}
