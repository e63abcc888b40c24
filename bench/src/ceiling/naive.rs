//! A naive store: every scope in one `BTreeMap` behind one `Mutex`. Not a
//! ceiling but a floor: the memory backend must be at least this fast on every
//! single-threaded row, or its per-scope machinery costs more than it buys.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use vgi_storage::{
    Capabilities, FunctionStorage, GcReport, LogEntry, Result, SharedClock, gc_cutoff_millis,
};

#[derive(Default)]
struct Scope {
    kv: HashMap<Vec<u8>, Vec<u8>>,
    logs: HashMap<(Vec<u8>, Vec<u8>), Vec<LogEntry>>,
    queue: VecDeque<Vec<u8>>,
    stamp: i64,
}

/// Every scope in one `Mutex<BTreeMap>`: one lock for every call.
pub(crate) struct NaiveMap {
    scopes: Mutex<BTreeMap<Vec<u8>, Scope>>,
    next_id: AtomicI64,
    clock: SharedClock,
}

impl NaiveMap {
    pub(crate) fn new(clock: SharedClock) -> Self {
        Self {
            scopes: Mutex::new(BTreeMap::new()),
            next_id: AtomicI64::new(0),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Scope>> {
        self.scopes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write<T>(&self, scope: &[u8], f: impl FnOnce(&mut Scope) -> T) -> T {
        let now = self.clock.now_millis();
        let mut scopes = self.lock();
        let entry = match scopes.get_mut(scope) {
            Some(e) => e,
            None => scopes.entry(scope.to_vec()).or_default(),
        };
        entry.stamp = now;
        f(entry)
    }
}

impl FunctionStorage for NaiveMap {
    fn name(&self) -> &'static str {
        "naive-map"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().get(scope).and_then(|s| s.kv.get(key).cloned()))
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.write(scope, |s| s.kv.insert(key.to_vec(), value.to_vec()));
        Ok(())
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        if let Some(s) = self.lock().get_mut(scope) {
            s.kv.remove(key);
        }
        Ok(())
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let now = self.clock.now_millis();
        let mut scopes = self.lock();
        let entry = match scopes.get_mut(scope) {
            Some(e) => e,
            None => scopes.entry(scope.to_vec()).or_default(),
        };
        if entry.kv.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(v) => entry.kv.insert(key.to_vec(), v.to_vec()),
            None => entry.kv.remove(key),
        };
        entry.stamp = now;
        Ok(true)
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        Ok(self.write(scope, |s| {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let log = s.logs.entry((ns.to_vec(), key.to_vec())).or_default();
            log.push(LogEntry {
                id,
                value: value.to_vec(),
            });
            id
        }))
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let scopes = self.lock();
        let Some(s) = scopes.get(scope) else {
            return Ok(Vec::new());
        };
        let Some(log) = s.logs.get(&(ns.to_vec(), key.to_vec())) else {
            return Ok(Vec::new());
        };
        let from = log.partition_point(|e| e.id <= after_id);
        Ok(log[from..].iter().take(limit).cloned().collect())
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        if !items.is_empty() {
            self.write(scope, |s| s.queue.extend(items.iter().cloned()));
        }
        Ok(())
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().get_mut(scope).and_then(|s| s.queue.pop_front()))
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        let removed = self.lock().remove(scope);
        drop(removed);
        Ok(())
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let Some(cutoff) = gc_cutoff_millis(self.clock.now_millis(), ttl) else {
            return Ok(GcReport::default());
        };
        let mut scopes = self.lock();
        let stale: Vec<Vec<u8>> = scopes
            .iter()
            .filter(|(_, s)| s.stamp < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &stale {
            scopes.remove(k);
        }
        Ok(GcReport { scopes: stale })
    }
}
