//! A deliberately broken store, reachable only as `--only broken-queue`: its
//! queue hands the first item out twice. The tests run it to prove that a
//! broken run fails loudly instead of printing numbers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vgi_storage::{Capabilities, FunctionStorage, GcReport, LogEntry, Result, SharedClock};

use crate::ceiling::map::RawMap;

pub(crate) struct BrokenQueue {
    inner: RawMap,
    duplicated: AtomicBool,
}

impl BrokenQueue {
    pub(crate) fn new(clock: SharedClock) -> Self {
        Self {
            inner: RawMap::new(clock),
            duplicated: AtomicBool::new(false),
        }
    }
}

impl FunctionStorage for BrokenQueue {
    fn name(&self) -> &'static str {
        "broken-queue"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.kv_get(scope, key)
    }
    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.kv_put(scope, key, value)
    }
    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.inner.kv_del(scope, key)
    }
    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.inner.kv_compare_and_swap(scope, key, expected, new)
    }
    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.inner.append(scope, ns, key, value)
    }
    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        self.inner.scan(scope, ns, key, after_id, limit)
    }
    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        self.inner.queue_push(scope, items)
    }
    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        let item = self.inner.queue_pop(scope)?;
        if let Some(item) = &item
            && !self.duplicated.swap(true, Ordering::SeqCst)
        {
            self.inner.queue_push(scope, std::slice::from_ref(item))?;
        }
        Ok(item)
    }
    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.inner.clear(scope)
    }
    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        self.inner.gc(ttl)
    }

    fn list_scopes(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<vgi_storage::ScopeInfo>> {
        self.inner.list_scopes(after, limit)
    }
    fn scope_stats(&self, scope: &[u8]) -> Result<vgi_storage::ScopeStats> {
        self.inner.scope_stats(scope)
    }
    fn export_kv(
        &self,
        scope: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.export_kv(scope, after, limit)
    }
    fn export_queue(&self, scope: &[u8], skip: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        self.inner.export_queue(scope, skip, limit)
    }
    fn id_high_water(&self) -> Result<i64> {
        self.inner.id_high_water()
    }
    fn raise_id_high_water(&self, id: i64) -> Result<()> {
        self.inner.raise_id_high_water(id)
    }
    fn import_log(&self, records: &[vgi_storage::LogRecord]) -> Result<Vec<i64>> {
        self.inner.import_log(records)
    }
    fn check(&self) -> Result<Vec<String>> {
        self.inner.check()
    }
}
