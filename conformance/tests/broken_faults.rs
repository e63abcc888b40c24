//! The fault and crash checks prove their power: a correct file-backed store
//! shared by processes (SQLite), broken one promise at a time, fails the check
//! that covers it in every run. Each test may re-execute itself in child
//! processes, so it calls `run_in_test` with its own libtest name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use vgi_storage_conformance::{Fixture, Outcome, run_in_test};
use vgi_storage_core::{Capabilities, FunctionStorage, GcReport, LogEntry, Result, SharedStorage};
use vgi_storage_sqlite::SqliteStorage;

/// The one promise a [`Faulty`] store breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A write whose commit failed reports success (`Ok`), as SQLite's pop did
    /// when it read its row before the commit: puts, deletes, CAS, pushes,
    /// clears answer `Ok`, a failed pop answers "empty".
    ReportsFailedWritesAsDone,
    /// `kv_put` is acknowledged at once and written later, eight at a time
    /// (a write-behind buffer): a process killed in between loses acknowledged puts.
    AcknowledgesPutsBeforeWriting,
    /// Every fourth pop of a process hands its item out and puts it back at
    /// the end of the queue, as a pop whose delete never committed would.
    HandsSomePoppedItemsOutTwice,
}

/// A buffered `kv_put`: scope, key, value.
type Put = (Vec<u8>, Vec<u8>, Vec<u8>);

/// SQLite, with one [`Fault`].
struct Faulty {
    inner: SqliteStorage,
    fault: Fault,
    pops: AtomicUsize,
    pending: Mutex<Vec<Put>>,
}

impl Faulty {
    fn swallow<T>(&self, result: Result<T>, instead: T) -> Result<T> {
        match result {
            Err(_) if self.fault == Fault::ReportsFailedWritesAsDone => Ok(instead),
            other => other,
        }
    }

    /// Write the buffered puts (all of them with `all`, else only when eight wait).
    fn flush(&self, all: bool) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= 8 || (all && !pending.is_empty()) {
            for (scope, key, value) in pending.drain(..) {
                self.inner.kv_put(&scope, &key, &value)?;
            }
        }
        Ok(())
    }
}

impl FunctionStorage for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.flush(true)?;
        self.inner.kv_get(scope, key)
    }
    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        if self.fault == Fault::AcknowledgesPutsBeforeWriting {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((scope.to_vec(), key.to_vec(), value.to_vec()));
            return self.flush(false);
        }
        let result = self.inner.kv_put(scope, key, value);
        self.swallow(result, ())
    }
    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.flush(true)?;
        let result = self.inner.kv_del(scope, key);
        self.swallow(result, ())
    }
    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.flush(true)?;
        let result = self.inner.kv_compare_and_swap(scope, key, expected, new);
        self.swallow(result, true)
    }
    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.flush(false)?;
        self.inner.append(scope, ns, key, value)
    }
    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        self.flush(false)?;
        self.inner.append_batch(scope, ns, key, values)
    }
    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.flush(true)?;
        let result = self.inner.kv_put_batch(scope, entries);
        self.swallow(result, ())
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
        let result = self.inner.queue_push(scope, items);
        self.swallow(result, ())
    }
    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        let result = self.inner.queue_pop(scope);
        if self.fault == Fault::HandsSomePoppedItemsOutTwice
            && let Ok(Some(item)) = &result
            && self.pops.fetch_add(1, Ordering::SeqCst) % 4 == 3
        {
            self.inner.queue_push(scope, std::slice::from_ref(item))?;
        }
        self.swallow(result, None)
    }
    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.flush(true)?;
        let result = self.inner.clear(scope);
        self.swallow(result, ())
    }
    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        self.flush(true)?;
        self.inner.gc(ttl)
    }
}

fn faulty(fault: Fault) -> impl Fn(&Fixture) -> Result<SharedStorage> + Sync {
    move |fx: &Fixture| {
        fx.declare_file_backed();
        let inner = SqliteStorage::builder(fx.path("state.db"))
            .clock(fx.clock())
            .open()?;
        Ok(Arc::new(Faulty {
            inner,
            fault,
            pops: AtomicUsize::new(0),
            pending: Mutex::new(Vec::new()),
        }) as SharedStorage)
    }
}

fn assert_caught(check: &str, test_name: &str, fault: Fault) {
    match run_in_test(check, test_name, None, &faulty(fault)) {
        Err(failure) => eprintln!("{check} caught {fault:?}: {}", failure.message()),
        Ok(Outcome::Skipped(why)) if why.contains("root") => {
            eprintln!("skipped: {why}");
        }
        Ok(outcome) => panic!("{check} let {fault:?} through: {outcome:?}"),
    }
}

#[test]
fn a_failed_commit_reported_as_done_is_caught_on_a_full_disk() {
    assert_caught(
        "writes_on_a_full_disk_take_full_effect_or_none",
        "a_failed_commit_reported_as_done_is_caught_on_a_full_disk",
        Fault::ReportsFailedWritesAsDone,
    );
}

#[test]
fn a_failed_commit_reported_as_done_is_caught_on_a_read_only_store() {
    assert_caught(
        "writes_on_a_read_only_store_take_full_effect_or_none",
        "a_failed_commit_reported_as_done_is_caught_on_a_read_only_store",
        Fault::ReportsFailedWritesAsDone,
    );
}

#[test]
fn puts_acknowledged_before_they_are_written_are_caught_by_kills() {
    assert_caught(
        "acknowledged_writes_survive_sigkill",
        "puts_acknowledged_before_they_are_written_are_caught_by_kills",
        Fault::AcknowledgesPutsBeforeWriting,
    );
}

#[test]
fn a_pop_that_hands_its_item_out_twice_is_caught_by_kills() {
    assert_caught(
        "queue_pop_loses_at_most_the_item_in_flight_per_kill",
        "a_pop_that_hands_its_item_out_twice_is_caught_by_kills",
        Fault::HandsSomePoppedItemsOutTwice,
    );
}

/// The same checks pass the unbroken backend, so the failures above come from the faults.
#[test]
fn the_unbroken_backend_passes_the_fault_and_crash_checks() {
    let open = |fx: &Fixture| -> Result<SharedStorage> {
        fx.declare_file_backed();
        Ok(Arc::new(
            SqliteStorage::builder(fx.path("state.db"))
                .clock(fx.clock())
                .open()?,
        ))
    };
    for check in [
        "writes_on_a_full_disk_take_full_effect_or_none",
        "writes_on_a_read_only_store_take_full_effect_or_none",
        "acknowledged_writes_survive_sigkill",
        "queue_pop_loses_at_most_the_item_in_flight_per_kill",
    ] {
        let outcome = run_in_test(
            check,
            "the_unbroken_backend_passes_the_fault_and_crash_checks",
            None,
            &open,
        );
        assert!(
            matches!(outcome, Ok(Outcome::Passed | Outcome::Skipped(_))),
            "{check}: {outcome:?}"
        );
    }
}

/// A store that does not declare itself file-backed is skipped by the fault
/// checks, with the reason printed, never silently passed.
#[test]
fn the_fault_checks_skip_a_store_not_declared_file_backed() {
    let open = |fx: &Fixture| -> Result<SharedStorage> {
        Ok(Arc::new(
            SqliteStorage::builder(fx.path("state.db"))
                .clock(fx.clock())
                .open()?,
        ))
    };
    for check in [
        "writes_on_a_full_disk_take_full_effect_or_none",
        "writes_on_a_read_only_store_take_full_effect_or_none",
    ] {
        let outcome = run_in_test(
            check,
            "the_fault_checks_skip_a_store_not_declared_file_backed",
            None,
            &open,
        );
        assert!(
            matches!(&outcome, Ok(Outcome::Skipped(why)) if why.contains("declare_file_backed")),
            "{check}: {outcome:?}"
        );
    }
}
