//! The contract: trait [`FunctionStorage`] and its extension trait.

use std::sync::Arc;
use std::time::Duration;

use crate::inspect::inspection_unsupported;
use crate::{Capabilities, LogRecord, Result, ScopeInfo, ScopeStats, StorageError};

/// One entry of an append-only log, as [`FunctionStorage::scan`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogEntry {
    /// The id [`FunctionStorage::append`] returned for this entry.
    pub id: i64,
    /// The appended bytes.
    pub value: Vec<u8>,
}

/// What one [`FunctionStorage::gc`] pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Every scope the pass removed, in no particular order.
    pub scopes: Vec<Vec<u8>>,
}

impl GcReport {
    /// How many scopes were removed.
    #[must_use]
    pub fn scopes_removed(&self) -> usize {
        self.scopes.len()
    }
}

/// A store shared by the threads of a worker.
pub type SharedStorage = Arc<dyn FunctionStorage>;

/// The storage contract every backend honours.
///
/// State is grouped by `scope` (an execution or transaction id). Scopes,
/// namespaces, keys and values are arbitrary bytes: empty, NUL and 0xFF
/// included. Every method takes `&self`, is safe to call from many threads at
/// once, and returns `Err` rather than panicking on any backend fault (lock
/// contention, full disk, a corrupt or foreign file, a lost connection). A
/// call that returns `Err` has not half-happened: it took no effect (the
/// default bodies of the batch forms and a [`gc`](Self::gc) pass excepted, as
/// their docs say), and the error's [`kind`](StorageError::kind) says whether
/// a retry may help. The one exception is
/// [`ErrorKind::OutcomeUnknown`](crate::ErrorKind::OutcomeUnknown): the request
/// was sent and the reply lost, so the call took full effect or none and the
/// store cannot tell which.
///
/// A "write" to a scope is a `kv_put`, a successful `kv_compare_and_swap`, an
/// `append`, or a non-empty `queue_push` (and their batch forms). Each write
/// stamps the scope with the store's clock; [`gc`](Self::gc) compares against
/// that stamp.
///
/// The trait is object-safe and is usually shared as [`SharedStorage`]
/// (`Arc<dyn FunctionStorage>`). Conveniences live on [`FunctionStorageExt`].
pub trait FunctionStorage: Send + Sync {
    /// The store's name and location, e.g. `sqlite:/tmp/vgi-storage-1000/state.db`.
    ///
    /// Errors name the store with this string.
    fn name(&self) -> &str;

    /// What this backend promises (durability, sharing, value size).
    fn capabilities(&self) -> Capabilities;

    /// Read the value at `(scope, key)`.
    ///
    /// - a key never put gives `Ok(None)`
    /// - a key deleted, cleared or collected by `gc` gives `Ok(None)`
    /// - otherwise gives the bytes of the last successful put or CAS, exactly
    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Set the value at `(scope, key)`, overwriting any earlier one.
    ///
    /// - a later `kv_get` returns `value`, empty values included
    /// - a value longer than [`Capabilities::max_value_len`] is refused with
    ///   [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) and the old value stays
    /// - the write stamps `scope` for `gc`
    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()>;

    /// Delete the value at `(scope, key)`.
    ///
    /// - deleting a missing key succeeds
    /// - a later `kv_get` gives `Ok(None)`; other keys are untouched
    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()>;

    /// Atomically replace the value at `(scope, key)` if it is `expected`.
    ///
    /// - `expected = None` means "absent"; `new = None` means "delete"
    /// - when the current value equals `expected`, it becomes `new` and the call
    ///   returns `true`; otherwise nothing changes and it returns `false`
    /// - atomic across threads and (where the store is shared) processes: of
    ///   several callers swapping from the same value, exactly one wins
    /// - a successful swap stamps `scope` for `gc`
    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool>;

    /// Append `value` to the log `(scope, ns, key)` and return its id.
    ///
    /// - the id is `>= 0` and never returned again by this store, not after
    ///   `clear` and not after `gc`
    /// - within one log, ids increase in the order entries become visible: once
    ///   any `scan` has returned id N, no entry with id <= N can later appear in
    ///   that log, across threads and processes
    /// - the write stamps `scope` for `gc`
    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64>;

    /// Append many values to one log, in order, and return their ids.
    ///
    /// - behaves as one `append` per value, in order; ids are returned in that order
    /// - an empty slice is a no-op that returns no ids
    /// - a value over [`Capabilities::max_value_len`] refuses the whole batch
    /// - backends override this to write the whole batch in one transaction;
    ///   the default body appends one value at a time, so a fault midway can
    ///   leave a prefix of the batch written (each entry whole)
    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        // Refuse an oversized value before anything is written, so a refused
        // batch leaves the log as it was.
        let max = self.capabilities().max_value_len;
        values
            .iter()
            .try_for_each(|v| check_value_len(self.name(), max, v.len()))?;
        values
            .iter()
            .map(|v| self.append(scope, ns, key, v))
            .collect()
    }

    /// Put many kv entries of one scope.
    ///
    /// - behaves as one `kv_put` per entry, in order (a later duplicate key wins)
    /// - an empty slice is a no-op
    /// - a value over [`Capabilities::max_value_len`] refuses the whole batch
    /// - backends override this to write the whole batch in one transaction;
    ///   the default body puts one entry at a time, so a fault midway can leave
    ///   a prefix of the batch written
    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let max = self.capabilities().max_value_len;
        entries
            .iter()
            .try_for_each(|(_, v)| check_value_len(self.name(), max, v.len()))?;
        entries
            .iter()
            .try_for_each(|(k, v)| self.kv_put(scope, k, v))
    }

    /// Read the entries of log `(scope, ns, key)` with id `> after_id`, ascending.
    ///
    /// - at most `limit` entries; `limit == 0` returns none
    /// - any `after_id` is valid; `-1` (or any negative) reads from the start
    /// - a missing log reads as empty
    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>>;

    /// Push `items` to the end of the queue of `scope`.
    ///
    /// - all items become visible at once, or none do (no partial push)
    /// - items of one push are popped in their order
    /// - an empty slice is a no-op and does not stamp the scope
    /// - a non-empty push stamps `scope` for `gc`
    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()>;

    /// Remove and return the oldest item of the queue of `scope`.
    ///
    /// - an empty queue gives `Ok(None)`; a store that cannot tell (it is busy)
    ///   gives `Err`, never `Ok(None)`
    /// - every pushed item is returned by exactly one pop, across all threads and
    ///   processes sharing the store
    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Remove all kv, log and queue data of `scope`, atomically.
    ///
    /// - no other scope is touched
    /// - clearing an empty or unknown scope succeeds
    /// - log ids used in the scope are not reused afterwards
    fn clear(&self, scope: &[u8]) -> Result<()>;

    /// Remove every scope whose last write is older than `now - ttl`.
    ///
    /// - "now" is the store's clock; a scope stamped strictly before `now - ttl`
    ///   is removed as by `clear`
    /// - a scope written within `ttl` is never removed, even when the write races
    ///   the sweep
    /// - a `ttl` reaching before the clock's range (e.g. `Duration::MAX`) removes nothing
    /// - reports the scopes it removed, each once
    /// - unlike the other calls, a pass is not one atomic step: a backend may
    ///   remove stale scopes in several steps (each scope wholly or not at all),
    ///   so that no lock is held for long. When a step fails, the call returns
    ///   [`StorageError::GcInterrupted`], which lists the scopes already removed
    ///   (they were stale, so removing them was right) and keeps the cause as its
    ///   source; every scope not listed there is untouched. Running `gc` again
    ///   finishes the work.
    fn gc(&self, ttl: Duration) -> Result<GcReport>;

    /// List the scopes that hold data, ascending by their bytes, after `after`.
    ///
    /// - `after = None` starts at the first scope; otherwise only scopes
    ///   greater than `after` are listed (page by passing the last one seen)
    /// - at most `limit` scopes; `limit == 0` returns none
    /// - a scope is listed from its first write until `clear` or `gc` removes it
    /// - each page is one consistent read; pages are not one snapshot
    /// - the default body refuses with `ErrorKind::Unsupported`; backends
    ///   that implement it set [`Capabilities::inspect`]
    fn list_scopes(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<ScopeInfo>> {
        let _ = (after, limit);
        Err(inspection_unsupported(self.name(), "list_scopes"))
    }

    /// Measure what `scope` holds: kv entries and bytes, each log, the queue.
    ///
    /// - an unknown or empty scope gives empty stats (`is_empty()`)
    /// - one consistent snapshot where the engine allows: the workspace's
    ///   backends read it in one transaction (SQLite: one WAL read transaction;
    ///   redb: one read transaction; PostgreSQL: `REPEATABLE READ`) or under
    ///   the scope's lock (memory). Separate calls (pages of
    ///   [`list_scopes`](Self::list_scopes) and the exports) are separate
    ///   snapshots
    /// - the default body refuses with `ErrorKind::Unsupported`
    fn scope_stats(&self, scope: &[u8]) -> Result<ScopeStats> {
        let _ = scope;
        Err(inspection_unsupported(self.name(), "scope_stats"))
    }

    /// Read a page of the kv entries of `scope`, ascending by key, after `after`.
    ///
    /// - `after = None` starts at the first key; otherwise only keys greater
    ///   than `after` are returned
    /// - at most `limit` entries; `limit == 0` returns none
    /// - the default body refuses with `ErrorKind::Unsupported`
    fn export_kv(
        &self,
        scope: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let _ = (scope, after, limit);
        Err(inspection_unsupported(self.name(), "export_kv"))
    }

    /// Read a page of the queue of `scope` without popping: the items at
    /// positions `skip..skip + limit`, oldest first.
    ///
    /// - at most `limit` items; `limit == 0` returns none
    /// - pages are consistent with each other only while nobody pops or clears
    ///   the queue (positions shift when the head is popped)
    /// - the default body refuses with `ErrorKind::Unsupported`
    fn export_queue(&self, scope: &[u8], skip: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        let _ = (scope, skip, limit);
        Err(inspection_unsupported(self.name(), "export_queue"))
    }

    /// The highest log id this store has handed out or reserved, `-1` if none.
    ///
    /// - every id `append` returns from now on is greater
    /// - the default body refuses with `ErrorKind::Unsupported`
    fn id_high_water(&self) -> Result<i64> {
        Err(inspection_unsupported(self.name(), "id_high_water"))
    }

    /// Raise the id high-water mark to at least `id`, so the store never hands
    /// out `id` or anything below it. Lowering is a no-op.
    ///
    /// - the default body refuses with `ErrorKind::Unsupported`
    fn raise_id_high_water(&self, id: i64) -> Result<()> {
        let _ = id;
        Err(inspection_unsupported(self.name(), "raise_id_high_water"))
    }

    /// Write log entries exported from another store, keeping their ids when
    /// the contract allows, and return the id each entry got.
    ///
    /// - `records` must be in ascending id order (an export in id order is);
    ///   otherwise the call refuses with `ErrorKind::InvalidInput`
    /// - entries keep their ids while each is above
    ///   [`id_high_water`](Self::id_high_water) when written, and the mark
    ///   rises with them; from the first entry that is not, it and every later
    ///   entry of the call get fresh ids, in order. Either way each log keeps
    ///   its order and no id is reused, so the id rules hold in the target (an
    ///   export of a whole store in id order into an empty store keeps every id)
    /// - all entries are written in one step, or none
    /// - each entry's scope is stamped, as by `append`
    /// - the default body refuses with `ErrorKind::Unsupported`
    fn import_log(&self, records: &[LogRecord]) -> Result<Vec<i64>> {
        let _ = records;
        Err(inspection_unsupported(self.name(), "import_log"))
    }

    /// Check the engine's integrity and the store's own invariants, and
    /// return the problems found (empty when all is well).
    ///
    /// - invariants checked by every backend: every stored log id is at or
    ///   below [`id_high_water`](Self::id_high_water)
    /// - the engine's own check where it has one (each backend's docs say)
    /// - the default body refuses with `ErrorKind::Unsupported`
    fn check(&self) -> Result<Vec<String>> {
        Err(inspection_unsupported(self.name(), "check"))
    }
}

macro_rules! forward_function_storage {
    ($($ptr:ident)::+) => {
        impl<T: FunctionStorage + ?Sized> FunctionStorage for $($ptr)::+<T> {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
                (**self).kv_get(scope, key)
            }
            fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
                (**self).kv_put(scope, key, value)
            }
            fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
                (**self).kv_del(scope, key)
            }
            fn kv_compare_and_swap(
                &self,
                scope: &[u8],
                key: &[u8],
                expected: Option<&[u8]>,
                new: Option<&[u8]>,
            ) -> Result<bool> {
                (**self).kv_compare_and_swap(scope, key, expected, new)
            }
            fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
                (**self).append(scope, ns, key, value)
            }
            fn append_batch(
                &self,
                scope: &[u8],
                ns: &[u8],
                key: &[u8],
                values: &[Vec<u8>],
            ) -> Result<Vec<i64>> {
                (**self).append_batch(scope, ns, key, values)
            }
            fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
                (**self).kv_put_batch(scope, entries)
            }
            fn scan(
                &self,
                scope: &[u8],
                ns: &[u8],
                key: &[u8],
                after_id: i64,
                limit: usize,
            ) -> Result<Vec<LogEntry>> {
                (**self).scan(scope, ns, key, after_id, limit)
            }
            fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
                (**self).queue_push(scope, items)
            }
            fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
                (**self).queue_pop(scope)
            }
            fn clear(&self, scope: &[u8]) -> Result<()> {
                (**self).clear(scope)
            }
            fn gc(&self, ttl: Duration) -> Result<GcReport> {
                (**self).gc(ttl)
            }
            fn list_scopes(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<ScopeInfo>> {
                (**self).list_scopes(after, limit)
            }
            fn scope_stats(&self, scope: &[u8]) -> Result<ScopeStats> {
                (**self).scope_stats(scope)
            }
            fn export_kv(
                &self,
                scope: &[u8],
                after: Option<&[u8]>,
                limit: usize,
            ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
                (**self).export_kv(scope, after, limit)
            }
            fn export_queue(&self, scope: &[u8], skip: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
                (**self).export_queue(scope, skip, limit)
            }
            fn id_high_water(&self) -> Result<i64> {
                (**self).id_high_water()
            }
            fn raise_id_high_water(&self, id: i64) -> Result<()> {
                (**self).raise_id_high_water(id)
            }
            fn import_log(&self, records: &[LogRecord]) -> Result<Vec<i64>> {
                (**self).import_log(records)
            }
            fn check(&self) -> Result<Vec<String>> {
                (**self).check()
            }
        }
    };
}

forward_function_storage!(std::sync::Arc);
forward_function_storage!(Box);

/// Conveniences built from the [`FunctionStorage`] primitives, for every store.
pub trait FunctionStorageExt: FunctionStorage {
    /// Read the whole log `(scope, ns, key)` from `after_id` on, in pages of
    /// `page` entries (a `page` of 0 is treated as 1).
    fn scan_all(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        page: usize,
    ) -> Result<Vec<LogEntry>> {
        let page = page.max(1);
        let mut out = Vec::new();
        let mut after = after_id;
        loop {
            let batch = self.scan(scope, ns, key, after, page)?;
            let done = batch.len() < page;
            if let Some(last) = batch.last() {
                after = last.id;
            }
            out.extend(batch);
            if done {
                return Ok(out);
            }
        }
    }

    /// Pop every item of the queue of `scope` until it is empty.
    fn queue_drain(&self, scope: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        while let Some(item) = self.queue_pop(scope)? {
            out.push(item);
        }
        Ok(out)
    }

    /// Read-modify-write `(scope, key)` through compare-and-swap until it sticks.
    ///
    /// `update` sees the current value (`None` when absent) and returns the new
    /// one (`None` deletes). It may run several times when other writers race;
    /// it must not have side effects. Returns the value that was written.
    ///
    /// ```
    /// # use vgi_storage_core::*;
    /// # fn demo(store: &dyn FunctionStorage) -> Result<()> {
    /// // Add one to a little-endian counter, safely across processes.
    /// store.kv_update(b"query-1", b"count", |old| {
    ///     let n = old.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    ///     Some((n + 1).to_le_bytes().to_vec())
    /// })?;
    /// # Ok(()) }
    /// ```
    fn kv_update(
        &self,
        scope: &[u8],
        key: &[u8],
        mut update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        let mut current = self.kv_get(scope, key)?;
        loop {
            let next = update(current.as_deref());
            if self.kv_compare_and_swap(scope, key, current.as_deref(), next.as_deref())? {
                return Ok(next);
            }
            current = self.kv_get(scope, key)?;
        }
    }
}

impl<T: FunctionStorage + ?Sized> FunctionStorageExt for T {}

/// Refuse a name (`what`: `scope`, `namespace` or `key`) longer than `max` with
/// [`StorageError::NameTooLong`].
///
/// Backends with a [`Capabilities::max_key_len`] call this before writing.
pub fn check_name_len(store: &str, max: usize, what: &'static str, len: usize) -> Result<()> {
    if len > max {
        return Err(StorageError::NameTooLong {
            store: store.to_owned(),
            what,
            len,
            max,
        });
    }
    Ok(())
}

/// Refuse a value longer than `max` with [`StorageError::TooLarge`].
///
/// Backends call this before writing so an oversized value is refused whole.
pub fn check_value_len(store: &str, max: usize, len: usize) -> Result<()> {
    if len > max {
        return Err(StorageError::TooLarge {
            store: store.to_owned(),
            len,
            max,
        });
    }
    Ok(())
}

/// Refuse `records` for [`FunctionStorage::import_log`] unless their ids ascend
/// strictly and every value fits `max`.
pub fn check_import_order(store: &str, max: usize, records: &[LogRecord]) -> Result<()> {
    records
        .iter()
        .try_for_each(|r| check_value_len(store, max, r.value.len()))?;
    if records.windows(2).any(|w| w[0].id >= w[1].id) {
        return Err(StorageError::Operation {
            store: store.to_owned(),
            operation: "import_log",
            kind: crate::ErrorKind::InvalidInput,
            hint: "log records must come in strictly ascending id order;                    export them in id order (as the vgi-storage tool does)"
                .to_owned(),
            source: None,
        });
    }
    Ok(())
}
