//! [`MemoryStorage`]: the store itself.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use foldhash::HashMap;
use vgi_storage_core::{
    Capabilities, FunctionStorage, GcReport, LogEntry, LogRecord, LogStats, Result, ScopeInfo,
    ScopeStats, SharedClock, check_import_order, check_value_len, gc_cutoff_millis, system_clock,
};

use crate::error::ids_exhausted;
use crate::scope::{Entry, Log, ScopeState};

/// The store's name in errors and [`FunctionStorage::name`].
const NAME: &str = "memory";

/// What the memory backend promises: nothing survives the process, nothing is
/// shared with other processes, and values may be as large as memory allows.
const CAPABILITIES: Capabilities = Capabilities::new()
    .with_durable(false)
    .with_shared_across_processes(false)
    .with_max_value_len(usize::MAX)
    .with_inspect(true);

/// A push of at most this many items and [`SMALL_PUSH_BYTES`] is copied into
/// the queue under the shard's lock; a larger one is copied before the lock.
const SMALL_PUSH_ITEMS: usize = 1024;

/// See [`SMALL_PUSH_ITEMS`].
const SMALL_PUSH_BYTES: usize = 64 * 1024;

/// The first log id a new store hands out.
const FIRST_ID: i64 = 1;

/// Shards of the scope map. More than dashmap's default (four per core) so
/// that threads working on different scopes rarely meet on a shard on small
/// machines.
const SHARDS: usize = 64;

/// `scope -> state`, hashed with a seeded fast hasher (SipHash was a large
/// share of a small call's cost). A scope's state lives in its shard's table
/// and its shard's lock guards it: a call takes one lock, once.
type Scopes = DashMap<Vec<u8>, ScopeState, foldhash::fast::RandomState>;

/// An in-process [`FunctionStorage`] for tests and single-process workers.
///
/// Scopes live in a map of 64 shards, each behind its own lock, so threads
/// working on different scopes rarely wait for each other, and each operation
/// costs what it touches: one lock, `clear` the size of its scope, `scan`
/// `O(log n + returned)` (a binary search in the log's id-ordered entries),
/// `queue_pop` `O(1)`. Nothing is durable and nothing is shared with other
/// processes; share one store between threads as an `Arc<MemoryStorage>` or a
/// [`SharedStorage`](vgi_storage_core::SharedStorage).
///
/// ```
/// use vgi_storage_core::FunctionStorage;
/// use vgi_storage_memory::MemoryStorage;
///
/// # fn main() -> vgi_storage_core::Result<()> {
/// let store = MemoryStorage::new();
/// store.kv_put(b"query-1", b"k", b"v")?;
/// assert_eq!(store.kv_get(b"query-1", b"k")?, Some(b"v".to_vec()));
/// # Ok(()) }
/// ```
pub struct MemoryStorage {
    /// `scope -> state`. Every read and write of a scope happens under its
    /// shard's lock, and `clear` and `gc` take a scope out under that same
    /// lock, so a write either lands before the scope is removed (and `gc`
    /// sees its stamp) or after (and starts a new scope): it can never go into
    /// a removed one. No call holds two shard locks at once, and none runs
    /// outside code (the caller's clock) under a lock unless a sweep got in
    /// between (see `sweeps`).
    scopes: Scopes,
    /// The next log id, shared by every log so ids are unique per store. Ids
    /// are taken while holding the scope's shard lock, so within one log they
    /// increase in the order entries become visible.
    next_id: AtomicI64,
    /// Sweeps started by `gc`, bumped before each reads the clock. A write
    /// reads the clock before it takes its shard's lock; if a sweep started in
    /// between, the reading may be older than that sweep's cutoff, so the
    /// write reads the clock again under the lock.
    sweeps: AtomicU64,
    /// Stamps writes for `gc`.
    clock: SharedClock,
}

/// A clock reading taken by a write before it locks its scope's shard, with
/// the sweep count it was taken under.
#[derive(Clone, Copy)]
struct Reading {
    /// `sweeps` before the clock was read.
    sweeps: u64,
    /// The clock's reading.
    now: i64,
}

impl MemoryStorage {
    /// An empty store that stamps writes with the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::with_clock(system_clock())
    }

    /// An empty store that stamps writes with `clock` (a
    /// [`ManualClock`](vgi_storage_core::ManualClock) in tests that move time).
    #[must_use]
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            scopes: DashMap::with_hasher_and_shard_amount(
                foldhash::fast::RandomState::default(),
                SHARDS,
            ),
            next_id: AtomicI64::new(FIRST_ID),
            sweeps: AtomicU64::new(0),
            clock,
        }
    }

    /// How many scopes the store holds: a scope counts from its first write
    /// until `clear` or `gc` removes it.
    #[must_use]
    pub fn scope_count(&self) -> usize {
        self.scopes.len()
    }

    /// Run `f` on the state of `scope` under its shard's shared lock; `None`
    /// when the scope has no state. What `f` returns is dropped by the caller,
    /// after the lock is released.
    fn read<T>(&self, scope: &[u8], f: impl FnOnce(&ScopeState) -> T) -> Option<T> {
        self.scopes.get(scope).map(|state| f(&state))
    }

    /// Run `f` on the state of `scope` under its shard's exclusive lock;
    /// `None` when the scope has no state. For changes that do not create a
    /// scope. What `f` returns is dropped by the caller, after the lock is
    /// released.
    fn modify<T>(&self, scope: &[u8], f: impl FnOnce(&mut ScopeState) -> T) -> Option<T> {
        self.scopes.get_mut(scope).map(|mut state| f(&mut state))
    }

    /// The clock, read by a write before it takes a lock, so a slow clock
    /// holds up no other caller.
    fn reading(&self) -> Reading {
        let sweeps = self.sweeps.load(Ordering::SeqCst);
        Reading {
            sweeps,
            now: self.clock.now_millis(),
        }
    }

    /// The stamp of a write that took `before` and now holds its shard's lock:
    /// `before` itself, unless a `gc` started since, whose cutoff may be later
    /// than `before`; then the clock is read again, so a write that lands
    /// after a sweep is never stamped older than the sweep's clock reading.
    fn stamp_under_lock(&self, before: Reading) -> i64 {
        if self.sweeps.load(Ordering::SeqCst) == before.sweeps {
            before.now
        } else {
            self.clock.now_millis()
        }
    }

    /// Run `f` on the state of `scope`, creating it if needed, under its
    /// shard's exclusive lock. `f` gets the write's stamp and stamps the scope
    /// itself when it writes. What `f` returns (a replaced value) is dropped
    /// by the caller, after the lock is released.
    fn write<T>(
        &self,
        scope: &[u8],
        f: impl FnOnce(&mut ScopeState, i64) -> Result<T>,
    ) -> Result<T> {
        let before = self.reading();
        let mut state = match self.scopes.get_mut(scope) {
            Some(state) => state,
            None => self.scopes.entry(scope.to_vec()).or_default(),
        };
        let now = self.stamp_under_lock(before);
        f(&mut state, now)
    }

    /// Reserve `n` consecutive log ids and return the first.
    fn alloc_ids(&self, operation: &'static str, n: usize) -> Result<i64> {
        let count = i64::try_from(n).map_err(|_| ids_exhausted(NAME, operation, n))?;
        // Relaxed is enough: the atomic alone makes ids unique, and the scope's
        // lock orders them against the entries' visibility.
        self.next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                next.checked_add(count)
            })
            .map_err(|_| ids_exhausted(NAME, operation, n))
    }

    /// Refuse a value longer than the store accepts. With no limit (the
    /// default) there is nothing to check, and the per-item loops of the batch
    /// calls compile away.
    #[inline]
    fn check_len(len: usize) -> Result<()> {
        if CAPABILITIES.max_value_len == usize::MAX {
            return Ok(());
        }
        check_value_len(NAME, CAPABILITIES.max_value_len, len)
    }

    /// Start the next id at `next`, to reach the end of the id range in tests.
    #[cfg(test)]
    fn with_next_id(self, next: i64) -> Self {
        self.next_id.store(next, Ordering::Relaxed);
        self
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("scopes", &self.scopes.len())
            .field("next_id", &self.next_id.load(Ordering::Relaxed))
            .field("sweeps", &self.sweeps.load(Ordering::Relaxed))
            .field("clock", &self.clock)
            .finish()
    }
}

/// Set `state`'s value at `key` to `new` if it is `expected`; stamp on success.
fn compare_and_swap(
    state: &mut ScopeState,
    now: i64,
    key: &[u8],
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> bool {
    if state.kv.get(key).map(Vec::as_slice) != expected {
        return false;
    }
    match new {
        Some(value) => {
            put_value(state, key, value.to_vec());
        }
        None => {
            state.kv.remove(key);
        }
    }
    state.stamp = Some(now);
    true
}

/// Set `key` to `value` in `state`, copying the key only when it is new.
/// Returns the replaced value, to be freed after the lock is released.
fn put_value(state: &mut ScopeState, key: &[u8], value: Vec<u8>) -> Option<Vec<u8>> {
    match state.kv.get_mut(key) {
        Some(slot) => Some(std::mem::replace(slot, value)),
        None => state.kv.insert(key.to_vec(), value),
    }
}

impl FunctionStorage for MemoryStorage {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read(scope, |state| state.kv.get(key).cloned())
            .flatten())
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        Self::check_len(value.len())?;
        let value = value.to_vec();
        // The replaced value is returned so it is freed after the lock is released.
        let _old = self.write(scope, |state, now| {
            state.stamp = Some(now);
            Ok(put_value(state, key, value))
        })?;
        Ok(())
    }

    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        entries
            .iter()
            .try_for_each(|(_, value)| Self::check_len(value.len()))?;
        let entries = entries.to_vec();
        let _old = self.write(scope, |state, now| {
            state.stamp = Some(now);
            Ok(entries
                .into_iter()
                .filter_map(|(key, value)| state.kv.insert(key, value))
                .collect::<Vec<_>>())
        })?;
        Ok(())
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        let _old = self.modify(scope, |state| state.kv.remove(key));
        Ok(())
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        if let Some(value) = new {
            Self::check_len(value.len())?;
        }
        if expected.is_some() {
            // A scope without state has no value to match: fail without creating it.
            let before = self.reading();
            return Ok(self
                .modify(scope, |state| {
                    let now = self.stamp_under_lock(before);
                    compare_and_swap(state, now, key, expected, new)
                })
                .unwrap_or(false));
        }
        self.write(scope, |state, now| {
            Ok(compare_and_swap(state, now, key, expected, new))
        })
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        Self::check_len(value.len())?;
        let value = Arc::from(value);
        self.write(scope, |state, now| {
            let id = self.alloc_ids("append", 1)?;
            push_entries(state, ns, key, std::iter::once(Entry { id, value }));
            state.stamp = Some(now);
            Ok(id)
        })
    }

    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        values
            .iter()
            .try_for_each(|value| Self::check_len(value.len()))?;
        let values: Vec<Arc<[u8]>> = values
            .iter()
            .map(|value| Arc::from(value.as_slice()))
            .collect();
        let n = values.len();
        let first = self.write(scope, |state, now| {
            let first = self.alloc_ids("append_batch", n)?;
            let entries = (first..).zip(values).map(|(id, value)| Entry { id, value });
            push_entries(state, ns, key, entries);
            state.stamp = Some(now);
            Ok(first)
        })?;
        Ok((first..).take(n).collect())
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Under the shard's lock only the entries' shared values are taken
        // (a reference count each); the bytes are copied after the lock is
        // released, so a long scan does not hold up writers of the shard.
        let entries = self.read(scope, |state| {
            let Some(log) = state.logs.get(ns).and_then(|logs| logs.get(key)) else {
                return Vec::new();
            };
            let from = log.partition_point(|entry| entry.id <= after_id);
            log.get(from..)
                .unwrap_or_default()
                .iter()
                .take(limit)
                .cloned()
                .collect::<Vec<Entry>>()
        });
        Ok(entries
            .unwrap_or_default()
            .into_iter()
            .map(|entry| LogEntry {
                id: entry.id,
                value: entry.value.to_vec(),
            })
            .collect())
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut bytes = 0_usize;
        for item in items {
            Self::check_len(item.len())?;
            bytes = bytes.saturating_add(item.len());
        }
        if items.len() <= SMALL_PUSH_ITEMS && bytes <= SMALL_PUSH_BYTES {
            // A small push is copied straight into the queue under the lock, a
            // few microseconds: copying it first into a list of its own cost
            // more than the copy (that list's one large allocation made the
            // allocator merge every small block freed by earlier pops).
            return self.write(scope, |state, now| {
                state.queue.extend(items.iter().cloned());
                state.stamp = Some(now);
                Ok(())
            });
        }
        // A large push is copied before the lock, so the lock is held only to
        // move the items in.
        let items = items.to_vec();
        self.write(scope, |state, now| {
            state.queue.extend(items);
            state.stamp = Some(now);
            Ok(())
        })
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .modify(scope, |state| state.queue.pop_front())
            .flatten())
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        // The scope leaves the map under its shard's lock; its data is freed
        // here, after the lock is released: the cost is this scope's size.
        let removed = self.scopes.remove(scope);
        drop(removed);
        Ok(())
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        // Bumped before the clock is read: a write that read the clock before
        // this and locks its shard after sees the bump and stamps anew.
        self.sweeps.fetch_add(1, Ordering::SeqCst);
        let Some(cutoff) = gc_cutoff_millis(self.clock.now_millis(), ttl) else {
            return Ok(GcReport::default());
        };
        let mut report = GcReport::default();
        let mut removed = Vec::new();
        // One pass over each shard under its lock: staleness is decided under
        // the lock writers take, so a write is either seen (its scope is kept)
        // or lands after the removal (in a new scope). A scope without a stamp
        // was made by a write that failed; removing it is safe, but it was
        // never written, so it is not reported. The removed states are moved
        // out and freed after every lock is released.
        self.scopes.retain(|scope, state| {
            if state.stamp.is_some_and(|stamp| stamp >= cutoff) {
                return true;
            }
            if state.stamp.is_some() {
                report.scopes.push(scope.clone());
            }
            removed.push(std::mem::take(state));
            false
        });
        drop(removed);
        Ok(report)
    }

    fn list_scopes(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<ScopeInfo>> {
        // The map is unordered: collect the written scopes past `after`, then sort.
        let mut out: Vec<ScopeInfo> = self
            .scopes
            .iter()
            .filter(|entry| {
                entry.value().stamp.is_some()
                    && after.is_none_or(|after| entry.key().as_slice() > after)
            })
            .map(|entry| ScopeInfo {
                scope: entry.key().clone(),
                last_write_millis: entry.value().stamp,
            })
            .collect();
        out.sort_unstable_by(|a, b| a.scope.cmp(&b.scope));
        out.truncate(limit);
        Ok(out)
    }

    fn scope_stats(&self, scope: &[u8]) -> Result<ScopeStats> {
        let stats = self.read(scope, |state| {
            let mut logs: Vec<LogStats> = state
                .logs
                .iter()
                .flat_map(|(ns, by_key)| by_key.iter().map(move |(key, log)| (ns, key, log)))
                .filter_map(|(ns, key, log)| {
                    // A log is kept in id order: its ends are its first and last ids.
                    let first = log.first()?.id;
                    let last = log.last()?.id;
                    Some(LogStats {
                        ns: ns.clone(),
                        key: key.clone(),
                        entries: log.len() as u64,
                        bytes: log.iter().map(|e| e.value.len() as u64).sum(),
                        first_id: first,
                        last_id: last,
                    })
                })
                .collect();
            logs.sort_unstable_by(|a, b| (&a.ns, &a.key).cmp(&(&b.ns, &b.key)));
            ScopeStats {
                scope: scope.to_vec(),
                last_write_millis: state.stamp,
                kv_entries: state.kv.len() as u64,
                kv_bytes: state
                    .kv
                    .iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .sum(),
                logs,
                queue_depth: state.queue.len() as u64,
                queue_bytes: state.queue.iter().map(|v| v.len() as u64).sum(),
            }
        });
        Ok(stats.unwrap_or_else(|| ScopeStats {
            scope: scope.to_vec(),
            ..ScopeStats::default()
        }))
    }

    fn export_kv(
        &self,
        scope: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let page = self.read(scope, |state| {
            let mut page: Vec<(Vec<u8>, Vec<u8>)> = state
                .kv
                .iter()
                .filter(|(key, _)| after.is_none_or(|after| key.as_slice() > after))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            page.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            page.truncate(limit);
            page
        });
        Ok(page.unwrap_or_default())
    }

    fn export_queue(&self, scope: &[u8], skip: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let page = self.read(scope, |state| {
            state.queue.iter().skip(skip).take(limit).cloned().collect()
        });
        Ok(page.unwrap_or_default())
    }

    fn id_high_water(&self) -> Result<i64> {
        Ok(self.next_id.load(Ordering::Relaxed) - 1)
    }

    fn raise_id_high_water(&self, id: i64) -> Result<()> {
        let next = id
            .checked_add(1)
            .ok_or_else(|| ids_exhausted(NAME, "raise_id_high_water", 1))?;
        self.next_id.fetch_max(next, Ordering::Relaxed);
        Ok(())
    }

    fn import_log(&self, records: &[LogRecord]) -> Result<Vec<i64>> {
        check_import_order(NAME, CAPABILITIES.max_value_len, records)?;
        let mut ids = Vec::with_capacity(records.len());
        let mut remapping = false;
        // One scope's run at a time, under that scope's lock, so an id is
        // reserved and made visible before any append to the same log can.
        for run in records.chunk_by(|a, b| a.scope == b.scope) {
            let scope = run[0].scope.as_slice();
            let run_ids = self.write(scope, |state, now| {
                let first = if remapping {
                    None
                } else {
                    self.keep_ids(run[0].id, run[run.len() - 1].id)
                };
                let first = match first {
                    Some(()) => None,
                    None => Some(self.alloc_ids("import_log", run.len())?),
                };
                let mut out = Vec::with_capacity(run.len());
                for (i, record) in run.iter().enumerate() {
                    let id = first.map_or(record.id, |first| first + i as i64);
                    // Ids of a run ascend and lie above every id the log
                    // holds (kept ones are above the high-water mark, fresh
                    // ones are new), so the log stays in id order.
                    push_entries(
                        state,
                        &record.ns,
                        &record.key,
                        std::iter::once(Entry {
                            id,
                            value: Arc::from(record.value.as_slice()),
                        }),
                    );
                    out.push(id);
                }
                state.stamp = Some(now);
                Ok((out, first.is_some()))
            })?;
            remapping |= run_ids.1;
            ids.extend(run_ids.0);
        }
        Ok(ids)
    }

    fn check(&self) -> Result<Vec<String>> {
        let high = self.id_high_water()?;
        let mut problems = Vec::new();
        for entry in &self.scopes {
            let last = entry
                .value()
                .logs
                .values()
                .flat_map(HashMap::values)
                .filter_map(|log| log.last().map(|entry| entry.id))
                .max();
            if let Some(last) = last.filter(|last| *last > high) {
                problems.push(format!(
                    "scope {} holds log id {last} above the id high-water mark {high}",
                    String::from_utf8_lossy(entry.key())
                ));
            }
        }
        Ok(problems)
    }
}

impl MemoryStorage {
    /// Reserve the ids `first..=last` of imported entries if `first` is above
    /// the high-water mark; `None` when it is not (the caller remaps).
    fn keep_ids(&self, first: i64, last: i64) -> Option<()> {
        let next = last.checked_add(1)?;
        self.next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                (current <= first).then_some(next)
            })
            .ok()
            .map(|_| ())
    }
}

/// Append `entries` (ids increasing, above every id already in it) to the log
/// `(ns, key)` of `state`, making the log if missing. Names are copied only
/// for a new log.
fn push_entries(
    state: &mut ScopeState,
    ns: &[u8],
    key: &[u8],
    entries: impl Iterator<Item = Entry>,
) {
    let Some(logs) = state.logs.get_mut(ns) else {
        let log: Log = entries.collect();
        let logs = HashMap::from_iter([(key.to_vec(), log)]);
        state.logs.insert(ns.to_vec(), logs);
        return;
    };
    match logs.get_mut(key) {
        Some(log) => log.extend(entries),
        None => {
            logs.insert(key.to_vec(), entries.collect());
        }
    }
}
#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Arc;
    use std::sync::Barrier;
    use std::sync::atomic::AtomicBool;

    use vgi_storage_core::{Clock, ErrorKind};

    use super::*;

    /// A clock that panics while `fail` is set.
    #[derive(Debug, Default)]
    struct PanickingClock {
        fail: AtomicBool,
    }

    impl Clock for PanickingClock {
        fn now_millis(&self) -> i64 {
            assert!(
                !self.fail.load(Ordering::SeqCst),
                "clock failure injected by the test"
            );
            7
        }
    }

    /// A clock the test moves by hand that, once armed, holds its next caller
    /// after it has read the time until the test releases it.
    #[derive(Debug)]
    struct HeldClock {
        now: AtomicI64,
        armed: AtomicBool,
        entered: Barrier,
        release: Barrier,
    }

    impl Clock for HeldClock {
        fn now_millis(&self) -> i64 {
            let now = self.now.load(Ordering::SeqCst);
            if self.armed.swap(false, Ordering::SeqCst) {
                self.entered.wait();
                self.release.wait();
            }
            now
        }
    }

    #[test]
    fn running_out_of_ids_is_an_error_and_writes_nothing() -> Result<()> {
        let store = MemoryStorage::new().with_next_id(i64::MAX - 2);
        assert_eq!(store.append(b"s", b"n", b"k", b"a")?, i64::MAX - 2);
        let err = store
            .append_batch(b"s", b"n", b"k", &[b"b".to_vec(), b"c".to_vec()])
            .err()
            .map(|e| e.kind());
        assert_eq!(err, Some(ErrorKind::StorageFull));
        let err = store
            .append(b"other", b"n", b"k", b"x")
            .err()
            .map(|e| e.kind());
        assert_eq!(err, None, "one id is still left");
        let err = store.append(b"s", b"n", b"k", b"y").err();
        let msg = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(msg.contains("memory") && msg.contains("append"), "{msg}");
        let entries = store.scan(b"s", b"n", b"k", -1, usize::MAX)?;
        assert_eq!(entries.len(), 1, "a failed batch must write nothing");
        Ok(())
    }

    #[test]
    fn failed_writes_leave_no_scope_behind_after_gc() -> Result<()> {
        let store = MemoryStorage::new().with_next_id(i64::MAX);
        assert!(store.append(b"s", b"n", b"k", b"v").is_err());
        assert!(!store.kv_compare_and_swap(b"t", b"k", Some(b"x"), None)?);
        assert_eq!(
            store.scope_count(),
            1,
            "the failed append made an empty slot"
        );
        let report = store.gc(Duration::ZERO)?;
        assert!(
            report.scopes.is_empty(),
            "a never-written scope is not reported"
        );
        assert_eq!(store.scope_count(), 0);
        Ok(())
    }

    /// Logs became id-ordered vectors searched by binary search: a scan must
    /// still start strictly after its cursor and stop at its limit.
    #[test]
    fn scans_start_after_the_cursor_and_stop_at_the_limit() -> Result<()> {
        let store = MemoryStorage::new();
        let values: Vec<Vec<u8>> = (0..5_u8).map(|i| vec![i]).collect();
        let ids = store.append_batch(b"s", b"n", b"k", &values)?;
        let id = store.append(b"s", b"n", b"k", b"last")?;
        assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids[4] < id);
        let page = store.scan(b"s", b"n", b"k", ids[1], 2)?;
        let got: Vec<i64> = page.iter().map(|e| e.id).collect();
        assert_eq!(got, ids[2..4].to_vec());
        assert_eq!(store.scan(b"s", b"n", b"k", ids[4], 10)?.len(), 1);
        assert!(store.scan(b"s", b"n", b"k", id, 10)?.is_empty());
        assert!(store.scan(b"s", b"n", b"other", -1, 10)?.is_empty());
        Ok(())
    }

    /// A push is copied under the lock when small and before it when large:
    /// both paths must keep the queue's order and every item whole.
    #[test]
    fn small_and_large_pushes_keep_order() -> Result<()> {
        let store = MemoryStorage::new();
        let many: Vec<Vec<u8>> = (0..=SMALL_PUSH_ITEMS)
            .map(|i| i.to_le_bytes().to_vec())
            .collect();
        let big = vec![
            vec![1_u8; SMALL_PUSH_BYTES / 2 + 1],
            vec![2_u8; SMALL_PUSH_BYTES / 2],
        ];
        let small = vec![b"a".to_vec(), b"b".to_vec()];
        store.queue_push(b"s", &small)?;
        store.queue_push(b"s", &many)?;
        store.queue_push(b"s", &big)?;
        store.queue_push(b"s", &small)?;
        let want: Vec<Vec<u8>> = [&small, &many, &big, &small]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let mut got = Vec::new();
        while let Some(item) = store.queue_pop(b"s")? {
            got.push(item);
        }
        assert_eq!(got.len(), want.len());
        assert!(got == want, "items came back out of order or changed");
        Ok(())
    }

    /// A clock that panics inside a call must leave the store usable and the
    /// scope's state whole: the panic comes before any change, and no lock
    /// stays held.
    #[test]
    fn a_panicking_clock_leaves_the_state_whole() -> Result<()> {
        let clock = Arc::new(PanickingClock::default());
        let store = MemoryStorage::with_clock(clock.clone());
        store.kv_put(b"s", b"k", b"old")?;
        clock.fail.store(true, Ordering::SeqCst);
        let outcome = catch_unwind(AssertUnwindSafe(|| store.kv_put(b"s", b"k", b"new")));
        assert!(outcome.is_err(), "the injected clock panic should unwind");
        clock.fail.store(false, Ordering::SeqCst);
        assert_eq!(store.kv_get(b"s", b"k")?, Some(b"old".to_vec()));
        store.kv_put(b"s", b"k", b"new")?;
        assert_eq!(store.kv_get(b"s", b"k")?, Some(b"new".to_vec()));
        store.clear(b"s")?;
        assert_eq!(store.scope_count(), 0);
        Ok(())
    }

    /// Writes read the clock before they lock their shard. A write that read
    /// it, then waited while a `gc` swept its scope away, must not land with
    /// that old reading: the next sweep would take a write made after the
    /// first sweep as stale. It reads the clock again under the lock.
    #[test]
    fn a_write_that_waited_out_a_sweep_is_stamped_after_it() -> Result<()> {
        let clock = Arc::new(HeldClock {
            now: AtomicI64::new(1_000),
            armed: AtomicBool::new(false),
            entered: Barrier::new(2),
            release: Barrier::new(2),
        });
        let store = MemoryStorage::with_clock(clock.clone());
        store.kv_put(b"s", b"k", b"old")?;
        let hour = 3_600_000;
        clock.armed.store(true, Ordering::SeqCst);
        let (swept, written) = std::thread::scope(|s| {
            let writer = s.spawn(|| store.kv_put(b"s", b"k", b"new"));
            // The writer has read t = 1000 and is held before its lock.
            clock.entered.wait();
            clock.now.store(1_000 + 2 * hour, Ordering::SeqCst);
            let swept = store.gc(Duration::from_secs(3600));
            clock.release.wait();
            (swept, writer.join())
        });
        assert_eq!(swept?.scopes, vec![b"s".to_vec()]);
        assert!(matches!(written, Ok(Ok(()))));
        let again = store.gc(Duration::from_secs(3600))?;
        assert!(
            again.scopes.is_empty(),
            "a write after the sweep was taken as stale"
        );
        assert_eq!(store.kv_get(b"s", b"k")?, Some(b"new".to_vec()));
        Ok(())
    }
}
