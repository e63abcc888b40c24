// A complete small backend, written from scratch, that passes the conformance suite.
//
// One `Mutex` around plain ordered maps: every method takes the lock once, so
// each call is atomic and CAS cannot lose a race. A real backend does the same
// with its engine's transactions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use vgi_storage_conformance::Fixture;
use vgi_storage_core::{
    Capabilities, FunctionStorage, GcReport, LogEntry, Result, SharedClock, SharedStorage,
    check_value_len, gc_cutoff_millis,
};

type Bytes = Vec<u8>;

/// Everything the store holds.
#[derive(Debug, Default)]
struct State {
    kv: BTreeMap<(Bytes, Bytes), Bytes>,
    logs: BTreeMap<(Bytes, Bytes, Bytes), Vec<LogEntry>>,
    queues: BTreeMap<Bytes, VecDeque<Bytes>>,
    /// The last write to each scope, for `gc`.
    stamps: BTreeMap<Bytes, i64>,
    /// The next log id. One counter for the whole store, never reset, so ids
    /// are unique forever and increase within every log.
    next_id: i64,
}

impl State {
    fn clear(&mut self, scope: &[u8]) {
        self.kv.retain(|(s, _), _| s != scope);
        self.logs.retain(|(s, _, _), _| s != scope);
        self.queues.remove(scope);
        self.stamps.remove(scope);
    }
}

/// An in-memory store for one process.
#[derive(Debug)]
pub struct TinyStorage {
    clock: SharedClock,
    caps: Capabilities,
    state: Mutex<State>,
}

impl TinyStorage {
    /// An empty store that stamps writes with `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            caps: Capabilities::new(),
            state: Mutex::default(),
        }
    }

    /// The same store declaring `caps` (its tests use this to try a small value limit).
    #[must_use]
    pub fn with_capabilities(mut self, caps: Capabilities) -> Self {
        self.caps = caps;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every method checks its input before it changes anything, so a panic
        // in another thread cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_len(&self, len: usize) -> Result<()> {
        check_value_len(self.name(), self.caps.max_value_len, len)
    }

    fn stamp(&self, state: &mut State, scope: &[u8]) {
        state.stamps.insert(scope.to_vec(), self.clock.now_millis());
    }
}

impl FunctionStorage for TinyStorage {
    fn name(&self) -> &'static str {
        "tiny"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .state()
            .kv
            .get(&(scope.to_vec(), key.to_vec()))
            .cloned())
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.check_len(value.len())?;
        let mut state = self.state();
        state
            .kv
            .insert((scope.to_vec(), key.to_vec()), value.to_vec());
        self.stamp(&mut state, scope);
        Ok(())
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.state().kv.remove(&(scope.to_vec(), key.to_vec()));
        Ok(())
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        if let Some(new) = new {
            self.check_len(new.len())?;
        }
        let mut state = self.state();
        let entry = (scope.to_vec(), key.to_vec());
        if state.kv.get(&entry).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(new) => state.kv.insert(entry, new.to_vec()),
            None => state.kv.remove(&entry),
        };
        self.stamp(&mut state, scope);
        Ok(true)
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.check_len(value.len())?;
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        let log = (scope.to_vec(), ns.to_vec(), key.to_vec());
        state.logs.entry(log).or_default().push(LogEntry {
            id,
            value: value.to_vec(),
        });
        self.stamp(&mut state, scope);
        Ok(id)
    }

    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        // Check every value first: a batch is written whole or not at all.
        for v in values {
            self.check_len(v.len())?;
        }
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = self.state();
        let ids: Vec<i64> = (state.next_id..).take(values.len()).collect();
        state.next_id += values.len() as i64;
        let log = (scope.to_vec(), ns.to_vec(), key.to_vec());
        state
            .logs
            .entry(log)
            .or_default()
            .extend(ids.iter().zip(values).map(|(id, value)| LogEntry {
                id: *id,
                value: value.clone(),
            }));
        self.stamp(&mut state, scope);
        Ok(ids)
    }

    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        for (_, v) in entries {
            self.check_len(v.len())?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let mut state = self.state();
        for (k, v) in entries {
            state.kv.insert((scope.to_vec(), k.clone()), v.clone());
        }
        self.stamp(&mut state, scope);
        Ok(())
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let state = self.state();
        let Some(log) = state.logs.get(&(scope.to_vec(), ns.to_vec(), key.to_vec())) else {
            return Ok(Vec::new());
        };
        // Ids within a log are ascending, so the start is found by binary search.
        let start = log.partition_point(|e| e.id <= after_id);
        Ok(log[start..].iter().take(limit).cloned().collect())
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        for item in items {
            self.check_len(item.len())?;
        }
        if items.is_empty() {
            return Ok(());
        }
        let mut state = self.state();
        state
            .queues
            .entry(scope.to_vec())
            .or_default()
            .extend(items.iter().cloned());
        self.stamp(&mut state, scope);
        Ok(())
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .state()
            .queues
            .get_mut(scope)
            .and_then(VecDeque::pop_front))
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.state().clear(scope);
        Ok(())
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let mut state = self.state();
        // Read the clock under the lock: a write stamped after this cannot be swept.
        let Some(cutoff) = gc_cutoff_millis(self.clock.now_millis(), ttl) else {
            return Ok(GcReport::default());
        };
        let expired: Vec<Bytes> = state
            .stamps
            .iter()
            .filter(|(_, stamp)| **stamp < cutoff)
            .map(|(scope, _)| scope.clone())
            .collect();
        for scope in &expired {
            state.clear(scope);
        }
        Ok(GcReport { scopes: expired })
    }
}

/// The factory the suite calls: a fresh store per fixture, on the fixture's clock.
#[allow(clippy::unnecessary_wraps)] // the suite's factory signature
fn open(fx: &Fixture) -> Result<SharedStorage> {
    Ok(Arc::new(TinyStorage::new(fx.clock())))
}
