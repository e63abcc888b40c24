//! The inspection checks prove their power: a memory store whose inspection
//! is wrong in one way each must fail the check that covers it, and the
//! correct store must pass them.

use std::sync::Arc;

use vgi_storage_conformance::{CHECKS, Fixture, Outcome, Settings};
use vgi_storage_core::{
    Capabilities, FunctionStorage, GcReport, LogEntry, LogRecord, Result, ScopeInfo, ScopeStats,
    SharedStorage,
};
use vgi_storage_memory::MemoryStorage;

/// How the wrapper breaks inspection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `list_scopes` treats `after` as inclusive, so paging repeats a scope.
    ListsTheCursorAgain,
    /// `import_log` keeps every id, even those at or below the mark.
    ImportKeepsUsedIds,
}

struct BrokenInspect {
    inner: MemoryStorage,
    fault: Fault,
}

impl FunctionStorage for BrokenInspect {
    fn name(&self) -> &'static str {
        "broken-inspect"
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
    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        self.inner.append_batch(scope, ns, key, values)
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
        self.inner.queue_pop(scope)
    }
    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.inner.clear(scope)
    }
    fn gc(&self, ttl: std::time::Duration) -> Result<GcReport> {
        self.inner.gc(ttl)
    }
    fn list_scopes(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<ScopeInfo>> {
        let Some(after) = after.filter(|_| self.fault == Fault::ListsTheCursorAgain) else {
            return self.inner.list_scopes(after, limit);
        };
        let mut all = self.inner.list_scopes(None, usize::MAX)?;
        all.retain(|s| s.scope.as_slice() >= after);
        all.truncate(limit);
        Ok(all)
    }
    fn scope_stats(&self, scope: &[u8]) -> Result<ScopeStats> {
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
    fn import_log(&self, records: &[LogRecord]) -> Result<Vec<i64>> {
        if self.fault != Fault::ImportKeepsUsedIds {
            return self.inner.import_log(records);
        }
        // Raise the mark below the first id so the store "keeps" them all.
        let mut ids = Vec::new();
        for r in records {
            let mut lowered = r.clone();
            lowered.id = self.inner.id_high_water()? + 1;
            self.inner.import_log(std::slice::from_ref(&lowered))?;
            ids.push(r.id);
        }
        Ok(ids)
    }
    fn check(&self) -> Result<Vec<String>> {
        self.inner.check()
    }
}

fn run(check: &str, fault: Option<Fault>) -> vgi_storage_conformance::CheckResult {
    let factory = move |fx: &Fixture| -> Result<SharedStorage> {
        let inner = MemoryStorage::with_clock(fx.clock());
        Ok(match fault {
            None => Arc::new(inner),
            Some(fault) => Arc::new(BrokenInspect { inner, fault }),
        })
    };
    let found = CHECKS.iter().find(|c| c.name() == check);
    let Some(found) = found else {
        panic!("no check named {check}");
    };
    found.run(&factory, &Settings::default())
}

#[test]
fn paging_that_repeats_the_cursor_is_caught() {
    let check = "inspection_lists_and_measures_scopes_as_the_model_says";
    assert!(matches!(run(check, None), Ok(Outcome::Passed)));
    let caught = run(check, Some(Fault::ListsTheCursorAgain));
    assert!(
        caught.is_err(),
        "{check} let a repeated cursor through: {caught:?}"
    );
}

#[test]
fn an_import_that_keeps_used_ids_is_caught() {
    let check = "import_log_keeps_ids_above_the_mark_and_never_reuses_one";
    assert!(matches!(run(check, None), Ok(Outcome::Passed)));
    let caught = run(check, Some(Fault::ImportKeepsUsedIds));
    assert!(
        caught.is_err(),
        "{check} let reused ids through: {caught:?}"
    );
}
