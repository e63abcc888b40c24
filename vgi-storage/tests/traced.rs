//! `TracedStorage`: a faithful wrapper (the whole conformance suite passes through
//! it) that records one span per call with the fields operators read.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
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

/// A span id the recorder hands out for spans of threads that are not
/// recording; their fields are dropped.
const IGNORED: u64 = u64::MAX;

std::thread_local! {
    /// What this thread has recorded since [`recorded`] started on it; `None`
    /// when it is not recording. Only the emitting thread's own calls reach it,
    /// so tests running at once on other threads (the conformance suite, whose
    /// calls go through the same subscriber) neither show up nor cost memory.
    static RECORDING: std::cell::RefCell<Option<Recording>> = const { std::cell::RefCell::new(None) };
}

/// The spans (with their fields) and warning events of one thread.
#[derive(Default)]
struct Recording {
    spans: Vec<Fields>,
    warnings: u64,
}

/// A subscriber that keeps every span's fields, and counts warning events, per
/// recording thread.
///
/// It is installed once as the global default ([`recorded`]), not per test
/// with `with_default`: tracing caches each callsite's interest, and a
/// callsite that another test thread registered at the same moment with no
/// subscriber in scope would be cached as "never" and its spans lost to the
/// scoped one (the same race once failed the vgi adapter's policy test).
struct Recorder;

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
    fn register_callsite(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // Whether a call is recorded depends on its thread, so no callsite's
        // interest may be cached.
        tracing::subscriber::Interest::always()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        RECORDING.with_borrow_mut(|recording| {
            let Some(recording) = recording else {
                return Id::from_u64(IGNORED);
            };
            let mut fields = Fields::new();
            span.record(&mut Collect(&mut fields));
            recording.spans.push(fields);
            Id::from_u64(recording.spans.len() as u64)
        })
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        RECORDING.with_borrow_mut(|recording| {
            if let Some(fields) = recording.as_mut().and_then(|recording| {
                usize::try_from(span.into_u64())
                    .ok()
                    .and_then(|i| recording.spans.get_mut(i.checked_sub(1)?))
            }) {
                values.record(&mut Collect(fields));
            }
        });
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            RECORDING.with_borrow_mut(|recording| {
                if let Some(recording) = recording {
                    recording.warnings += 1;
                }
            });
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Run `f` on this thread with recording on; the spans it opened (with their
/// fields) and the warnings it emitted.
fn recorded(f: impl FnOnce()) -> (Vec<Fields>, u64) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Fails only if another global subscriber was set first, which no test
        // of this binary does; the assertions would then fail, not pass.
        let _ = tracing::subscriber::set_global_default(Recorder);
    });
    RECORDING.set(Some(Recording::default()));
    f();
    let recording = RECORDING.take().unwrap_or_default();
    (recording.spans, recording.warnings)
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
