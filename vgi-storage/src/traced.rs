//! `TracedStorage`: one `tracing` span per storage call, around any store.

use std::time::{Duration, Instant};

use tracing::{Level, Span, field};
use vgi_storage_core::{
    Capabilities, FunctionStorage, GcReport, LogEntry, LogRecord, Result, ScopeInfo, ScopeStats,
};

/// Wraps any store and emits one `tracing` span per call.
///
/// Each span, named `vgi_storage`, records `backend` (the store's name),
/// `operation`, the sizes involved (`scope_len`, `key_len`, `bytes`, `items`),
/// the `outcome` (`ok`, `hit`, `miss`, `swapped`, `not_swapped`, or the error
/// kind) and `duration_us`. Errors are also logged as a `WARN` event in the span.
///
/// ```
/// use std::sync::Arc;
/// use vgi_storage::{FunctionStorage, TracedStorage, open};
///
/// let store = TracedStorage::new(open("memory:")?);
/// store.kv_put(b"scope", b"key", b"value")?; // one span, operation = "kv_put"
/// # Ok::<(), vgi_storage::StorageError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TracedStorage<S> {
    inner: S,
}

impl<S: FunctionStorage> TracedStorage<S> {
    /// Wrap `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn span(&self, operation: &'static str, scope: &[u8]) -> Span {
        tracing::span!(
            Level::DEBUG,
            "vgi_storage",
            backend = self.inner.name(),
            operation,
            scope_len = scope.len(),
            key_len = field::Empty,
            bytes = field::Empty,
            items = field::Empty,
            outcome = field::Empty,
            duration_us = field::Empty,
        )
    }

    /// Run `call` inside `span`, recording its duration and outcome.
    fn traced<T>(
        span: &Span,
        call: impl FnOnce() -> Result<T>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> Result<T> {
        let _entered = span.enter();
        let start = Instant::now();
        let result = call();
        span.record("duration_us", micros(start.elapsed()));
        match &result {
            Ok(value) => {
                span.record("outcome", outcome(value));
            }
            Err(e) => {
                span.record("outcome", field::debug(e.kind()));
                tracing::warn!(error = %e, "storage call failed");
            }
        }
        result
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ok<T>(_: &T) -> &'static str {
    "ok"
}

#[allow(clippy::ref_option)] // the shape `traced` hands every outcome function
fn hit_or_miss<T>(v: &Option<T>) -> &'static str {
    if v.is_some() { "hit" } else { "miss" }
}

impl<S: FunctionStorage> FunctionStorage for TracedStorage<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        let span = self.span("kv_get", scope);
        span.record("key_len", key.len());
        let result = Self::traced(&span, || self.inner.kv_get(scope, key), hit_or_miss);
        if let Ok(Some(v)) = &result {
            span.record("bytes", v.len());
        }
        result
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        let span = self.span("kv_put", scope);
        span.record("key_len", key.len());
        span.record("bytes", value.len());
        Self::traced(&span, || self.inner.kv_put(scope, key, value), ok)
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        let span = self.span("kv_del", scope);
        span.record("key_len", key.len());
        Self::traced(&span, || self.inner.kv_del(scope, key), ok)
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let span = self.span("kv_compare_and_swap", scope);
        span.record("key_len", key.len());
        span.record("bytes", new.map_or(0, <[u8]>::len));
        Self::traced(
            &span,
            || self.inner.kv_compare_and_swap(scope, key, expected, new),
            |swapped| if *swapped { "swapped" } else { "not_swapped" },
        )
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        let span = self.span("append", scope);
        span.record("key_len", key.len());
        span.record("bytes", value.len());
        Self::traced(&span, || self.inner.append(scope, ns, key, value), ok)
    }

    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        let span = self.span("append_batch", scope);
        span.record("key_len", key.len());
        span.record("items", values.len());
        span.record("bytes", values.iter().map(Vec::len).sum::<usize>());
        Self::traced(
            &span,
            || self.inner.append_batch(scope, ns, key, values),
            ok,
        )
    }

    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let span = self.span("kv_put_batch", scope);
        span.record("items", entries.len());
        span.record("bytes", entries.iter().map(|(_, v)| v.len()).sum::<usize>());
        Self::traced(&span, || self.inner.kv_put_batch(scope, entries), ok)
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let span = self.span("scan", scope);
        span.record("key_len", key.len());
        let result = Self::traced(
            &span,
            || self.inner.scan(scope, ns, key, after_id, limit),
            ok,
        );
        if let Ok(entries) = &result {
            span.record("items", entries.len());
            span.record(
                "bytes",
                entries.iter().map(|e| e.value.len()).sum::<usize>(),
            );
        }
        result
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        let span = self.span("queue_push", scope);
        span.record("items", items.len());
        span.record("bytes", items.iter().map(Vec::len).sum::<usize>());
        Self::traced(&span, || self.inner.queue_push(scope, items), ok)
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        let span = self.span("queue_pop", scope);
        let result = Self::traced(&span, || self.inner.queue_pop(scope), hit_or_miss);
        if let Ok(Some(v)) = &result {
            span.record("bytes", v.len());
        }
        result
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        let span = self.span("clear", scope);
        Self::traced(&span, || self.inner.clear(scope), ok)
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let span = self.span("gc", &[]);
        let result = Self::traced(&span, || self.inner.gc(ttl), ok);
        if let Ok(report) = &result {
            span.record("items", report.scopes_removed());
        }
        result
    }

    fn list_scopes(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<ScopeInfo>> {
        let span = self.span("list_scopes", after.unwrap_or_default());
        let result = Self::traced(&span, || self.inner.list_scopes(after, limit), ok);
        if let Ok(scopes) = &result {
            span.record("items", scopes.len());
        }
        result
    }

    fn scope_stats(&self, scope: &[u8]) -> Result<ScopeStats> {
        let span = self.span("scope_stats", scope);
        Self::traced(&span, || self.inner.scope_stats(scope), ok)
    }

    fn export_kv(
        &self,
        scope: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let span = self.span("export_kv", scope);
        let result = Self::traced(&span, || self.inner.export_kv(scope, after, limit), ok);
        if let Ok(entries) = &result {
            span.record("items", entries.len());
        }
        result
    }

    fn export_queue(&self, scope: &[u8], skip: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        let span = self.span("export_queue", scope);
        let result = Self::traced(&span, || self.inner.export_queue(scope, skip, limit), ok);
        if let Ok(items) = &result {
            span.record("items", items.len());
        }
        result
    }

    fn id_high_water(&self) -> Result<i64> {
        let span = self.span("id_high_water", &[]);
        Self::traced(&span, || self.inner.id_high_water(), ok)
    }

    fn raise_id_high_water(&self, id: i64) -> Result<()> {
        let span = self.span("raise_id_high_water", &[]);
        Self::traced(&span, || self.inner.raise_id_high_water(id), ok)
    }

    fn import_log(&self, records: &[LogRecord]) -> Result<Vec<i64>> {
        let span = self.span("import_log", &[]);
        span.record("items", records.len());
        Self::traced(&span, || self.inner.import_log(records), ok)
    }

    fn check(&self) -> Result<Vec<String>> {
        let span = self.span("check", &[]);
        Self::traced(&span, || self.inner.check(), ok)
    }
}
