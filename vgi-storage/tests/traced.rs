//! `TracedStorage`: a faithful wrapper (the whole conformance suite passes through
//! it) that records one span per call with the fields operators read.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use vgi_storage::memory::MemoryStorage;
use vgi_storage::{
    Capabilities, ErrorKind, FunctionStorage, GcReport, LogEntry, Result, SharedStorage,
    StorageError, TracedStorage,
};

mod suite {
    use super::*;

    #[allow(clippy::unnecessary_wraps)] // the suite's factory signature
    fn open(fx: &vgi_storage_conformance::Fixture) -> Result<SharedStorage> {
        Ok(Arc::new(TracedStorage::new(MemoryStorage::with_clock(
            fx.clock(),
        ))))
    }

    vgi_storage_conformance::conformance_suite!(open);
}

type Fields = BTreeMap<String, String>;

/// A subscriber that keeps every span's fields, and counts warning events.
#[derive(Default)]
struct Recorder {
    spans: Mutex<Vec<Fields>>,
    warnings: AtomicU64,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields::new();
        span.record(&mut Collect(&mut fields));
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        spans.push(fields);
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fields) = usize::try_from(span.into_u64())
            .ok()
            .and_then(|i| spans.get_mut(i - 1))
        {
            values.record(&mut Collect(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.warnings.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn recorded(f: impl FnOnce()) -> (Vec<Fields>, u64) {
    let recorder = Arc::new(Recorder::default());
    tracing::subscriber::with_default(Arc::clone(&recorder), f);
    let spans = recorder
        .spans
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    (spans, recorder.warnings.load(Ordering::SeqCst))
}

fn field<'a>(span: &'a Fields, name: &str) -> &'a str {
    span.get(name).map_or("<unset>", String::as_str)
}

#[test]
fn each_call_is_one_span_with_backend_operation_sizes_outcome_and_duration() -> Result<()> {
    let store = TracedStorage::new(MemoryStorage::new());
    let mut results = Vec::new();
    let (spans, warnings) = recorded(|| {
        results.push(store.kv_put(b"scope", b"key", b"12345").map(|()| 0));
        results.push(
            store
                .kv_get(b"scope", b"key")
                .map(|v| v.map_or(0, |v| v.len())),
        );
        results.push(
            store
                .kv_get(b"scope", b"nope")
                .map(|v| v.map_or(0, |v| v.len())),
        );
        results.push(
            store
                .queue_push(b"scope", &[b"a".to_vec(), b"bc".to_vec()])
                .map(|()| 0),
        );
        results.push(
            store
                .kv_compare_and_swap(b"scope", b"key", Some(b"x"), None)
                .map(usize::from),
        );
    });
    for r in results {
        r?;
    }
    assert_eq!(warnings, 0);
    let ops: Vec<&str> = spans.iter().map(|s| field(s, "operation")).collect();
    assert_eq!(
        ops,
        [
            "kv_put",
            "kv_get",
            "kv_get",
            "queue_push",
            "kv_compare_and_swap"
        ]
    );
    assert!(spans.iter().all(|s| field(s, "backend") == "memory"));
    assert!(
        spans
            .iter()
            .all(|s| field(s, "duration_us").parse::<u64>().is_ok()),
        "{spans:?}"
    );
    assert_eq!(field(&spans[0], "bytes"), "5");
    assert_eq!(field(&spans[0], "key_len"), "3");
    assert_eq!(field(&spans[0], "scope_len"), "5");
    assert_eq!(field(&spans[0], "outcome"), "ok");
    assert_eq!(field(&spans[1], "outcome"), "hit");
    assert_eq!(field(&spans[1], "bytes"), "5");
    assert_eq!(field(&spans[2], "outcome"), "miss");
    assert_eq!(field(&spans[3], "items"), "2");
    assert_eq!(field(&spans[3], "bytes"), "3");
    assert_eq!(field(&spans[4], "outcome"), "not_swapped");
    Ok(())
}

/// A store whose every call fails busy, to see how failures are traced.
struct AlwaysBusy;

fn busy<T>(operation: &'static str) -> Result<T> {
    Err(StorageError::operation(
        "always-busy",
        operation,
        ErrorKind::Busy,
        "retry",
        std::io::Error::other("locked"),
    ))
}

impl FunctionStorage for AlwaysBusy {
    fn name(&self) -> &'static str {
        "always-busy"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }
    fn kv_get(&self, _: &[u8], _: &[u8]) -> Result<Option<Vec<u8>>> {
        busy("kv_get")
    }
    fn kv_put(&self, _: &[u8], _: &[u8], _: &[u8]) -> Result<()> {
        busy("kv_put")
    }
    fn kv_del(&self, _: &[u8], _: &[u8]) -> Result<()> {
        busy("kv_del")
    }
    fn kv_compare_and_swap(
        &self,
        _: &[u8],
        _: &[u8],
        _: Option<&[u8]>,
        _: Option<&[u8]>,
    ) -> Result<bool> {
        busy("kv_compare_and_swap")
    }
    fn append(&self, _: &[u8], _: &[u8], _: &[u8], _: &[u8]) -> Result<i64> {
        busy("append")
    }
    fn scan(&self, _: &[u8], _: &[u8], _: &[u8], _: i64, _: usize) -> Result<Vec<LogEntry>> {
        busy("scan")
    }
    fn queue_push(&self, _: &[u8], _: &[Vec<u8>]) -> Result<()> {
        busy("queue_push")
    }
    fn queue_pop(&self, _: &[u8]) -> Result<Option<Vec<u8>>> {
        busy("queue_pop")
    }
    fn clear(&self, _: &[u8]) -> Result<()> {
        busy("clear")
    }
    fn gc(&self, _: Duration) -> Result<GcReport> {
        busy("gc")
    }
}

#[test]
fn a_failed_call_records_its_error_kind_and_warns_and_the_error_passes_through() {
    let store = TracedStorage::new(AlwaysBusy);
    let mut result = None;
    let (spans, warnings) = recorded(|| result = Some(store.queue_pop(b"q")));
    let err = result.and_then(Result::err).map(|e| e.kind());
    assert_eq!(
        err,
        Some(ErrorKind::Busy),
        "the error is returned unchanged"
    );
    assert_eq!(spans.len(), 1);
    assert_eq!(field(&spans[0], "operation"), "queue_pop");
    assert_eq!(field(&spans[0], "outcome"), "Busy");
    assert_eq!(warnings, 1);
}
