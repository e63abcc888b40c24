//! The error policy, shown with a fault-injecting wrapper: retryable errors are
//! retried until the call succeeds; a permanent error, or a retryable one past
//! the deadline, panics with the whole error and never turns into an empty
//! answer or a dropped write.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use vgi::storage::FunctionStorage as VgiFunctionStorage;
use vgi_storage_core::{
    Capabilities, ErrorKind, FunctionStorage, GcReport, LogEntry, Result, StorageError,
    default_hint,
};
use vgi_storage_memory::MemoryStorage;
use vgi_storage_vgi::{RetryPolicy, VgiStorage};

/// A store that fails its next `failures` calls with `kind`, then passes
/// every call to a memory store. Counts every call it receives.
struct Faulty {
    inner: MemoryStorage,
    kind: ErrorKind,
    failures: AtomicU32,
    calls: AtomicU32,
}

impl Faulty {
    fn new(kind: ErrorKind, failures: u32) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStorage::new(),
            kind,
            failures: AtomicU32::new(failures),
            calls: AtomicU32::new(0),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Count the call, and fail it while failures remain.
    fn fault(&self, operation: &'static str) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failed = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            return Err(StorageError::operation(
                "faulty:test",
                operation,
                self.kind,
                default_hint(self.kind),
                std::io::Error::other("injected fault"),
            ));
        }
        Ok(())
    }
}

impl FunctionStorage for Faulty {
    fn name(&self) -> &'static str {
        "faulty:test"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.fault("kv_get")?;
        self.inner.kv_get(scope, key)
    }
    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.fault("kv_put")?;
        self.inner.kv_put(scope, key, value)
    }
    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.fault("kv_del")?;
        self.inner.kv_del(scope, key)
    }
    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.fault("kv_compare_and_swap")?;
        self.inner.kv_compare_and_swap(scope, key, expected, new)
    }
    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.fault("append")?;
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
        self.fault("scan")?;
        self.inner.scan(scope, ns, key, after_id, limit)
    }
    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        self.fault("queue_push")?;
        self.inner.queue_push(scope, items)
    }
    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        self.fault("queue_pop")?;
        self.inner.queue_pop(scope)
    }
    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.fault("clear")?;
        self.inner.clear(scope)
    }
    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        self.fault("gc")?;
        self.inner.gc(ttl)
    }
}

/// Fast backoff so the retry tests take milliseconds; the deadline is long
/// enough never to be reached by the failures these tests inject.
const QUICK: RetryPolicy = RetryPolicy::DEFAULT
    .with_initial_backoff(Duration::from_millis(1))
    .with_max_backoff(Duration::from_millis(4))
    .with_deadline(Duration::from_secs(600));

fn adapter(store: &Arc<Faulty>, policy: RetryPolicy) -> VgiStorage {
    // Every test installs the recorder before any call can emit an event, so
    // no callsite's interest is settled without it.
    recorder();
    VgiStorage::new(store.clone()).with_policy(policy)
}

/// The panic message of `f`, or `None` if it did not panic.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let payload = catch_unwind(AssertUnwindSafe(f)).err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    )
}

#[test]
fn busy_store_is_retried_until_the_call_succeeds() {
    for kind in [ErrorKind::Busy, ErrorKind::Unavailable, ErrorKind::Conflict] {
        let store = Faulty::new(kind, 3);
        let vgi = adapter(&store, QUICK);
        vgi.kv_put(b"s", b"k", b"v");
        assert_eq!(store.calls(), 4, "{kind:?}: three failures, then the put");
        assert_eq!(vgi.kv_get(b"s", b"k").as_deref(), Some(&b"v"[..]));
    }
}

#[test]
fn a_retried_append_writes_once_and_a_retried_pop_returns_the_item() {
    let store = Faulty::new(ErrorKind::Busy, 0);
    let vgi = adapter(&store, QUICK);
    vgi.queue_push(b"s", &[b"item".to_vec()]);
    store.failures.store(2, Ordering::SeqCst);
    let id = vgi.append(b"s", b"ns", b"k", b"x".to_vec());
    assert_eq!(
        vgi.scan(b"s", b"ns", b"k", -1, usize::MAX),
        [(id, b"x".to_vec())]
    );
    store.failures.store(2, Ordering::SeqCst);
    assert_eq!(vgi.queue_pop(b"s").as_deref(), Some(&b"item"[..]));
}

#[test]
fn a_permanent_error_panics_at_once_with_the_whole_error() {
    let store = Faulty::new(ErrorKind::Corrupt, u32::MAX);
    let vgi = adapter(&store, QUICK);
    let msg = panic_message(|| {
        let _ = vgi.kv_get(b"s", b"k");
    })
    .unwrap_or_else(|| panic!("kv_get on a corrupt store answered instead of panicking"));
    assert_eq!(store.calls(), 1, "a permanent error is not retried");
    for part in [
        "kv_get",
        "faulty:test",
        "1 attempt",
        "the error is permanent",
        "restore or remove it",
        "injected fault",
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
}

/// An operation's name and a call of it that should panic.
type Call<'a> = (&'static str, Box<dyn Fn() + 'a>);

/// A read that fails must not look like an empty store, and a write that
/// fails must not look done: each call panics instead.
#[test]
fn failures_never_become_empty_reads_or_dropped_writes() {
    let store = Faulty::new(ErrorKind::Io, u32::MAX);
    let vgi = adapter(&store, RetryPolicy::NO_RETRY);
    let calls: [Call<'_>; 7] = [
        ("kv_get", Box::new(|| drop(vgi.kv_get(b"s", b"k")))),
        (
            "scan",
            Box::new(|| drop(vgi.scan(b"s", b"n", b"k", -1, 10))),
        ),
        ("queue_pop", Box::new(|| drop(vgi.queue_pop(b"s")))),
        ("kv_put", Box::new(|| vgi.kv_put(b"s", b"k", b"v"))),
        (
            "append",
            Box::new(|| {
                let _ = vgi.append(b"s", b"n", b"k", b"v".to_vec());
            }),
        ),
        (
            "queue_push",
            Box::new(|| vgi.queue_push(b"s", &[b"i".to_vec()])),
        ),
        ("clear", Box::new(|| vgi.clear(b"s"))),
    ];
    for (operation, call) in calls {
        let msg = panic_message(call);
        assert!(
            msg.as_deref().is_some_and(|m| m.contains(operation)),
            "{operation}: {msg:?}"
        );
    }
}

#[test]
fn a_retryable_error_past_the_deadline_panics_saying_so() {
    let store = Faulty::new(ErrorKind::Busy, u32::MAX);
    let policy = QUICK.with_deadline(Duration::from_millis(30));
    let vgi = adapter(&store, policy);
    let msg = panic_message(|| vgi.kv_put(b"s", b"k", b"v")).unwrap_or_default();
    assert!(
        msg.contains("still failing at the retry deadline"),
        "{msg:?}"
    );
    assert!(store.calls() >= 1);
    store.failures.store(0, Ordering::SeqCst);
    assert_eq!(vgi.kv_get(b"s", b"k"), None, "the failed put wrote nothing");
}

/// A lost reply is retried for calls that are safe to repeat, and fails at
/// once for those that could write twice or lose a popped item.
#[test]
fn an_unknown_outcome_is_retried_only_where_repeating_is_safe() {
    let store = Faulty::new(ErrorKind::OutcomeUnknown, 1);
    let vgi = adapter(&store, QUICK);
    vgi.kv_put(b"s", b"k", b"v");
    assert_eq!(store.calls(), 2);

    for (operation, call) in [
        (
            "append",
            Box::new(|| {
                let _ = vgi.append(b"s", b"n", b"k", b"v".to_vec());
            }) as Box<dyn Fn()>,
        ),
        (
            "queue_push",
            Box::new(|| vgi.queue_push(b"s", &[b"i".to_vec()])),
        ),
        ("queue_pop", Box::new(|| drop(vgi.queue_pop(b"s")))),
    ] {
        store.failures.store(1, Ordering::SeqCst);
        let before = store.calls();
        let msg = panic_message(call).unwrap_or_default();
        assert!(
            msg.contains(operation) && msg.contains("1 attempt") && msg.contains("apply it twice"),
            "{msg:?}"
        );
        assert_eq!(store.calls(), before + 1, "{operation} was repeated");
    }
}

/// A failed gc pass loses nothing, so it is logged rather than raised.
#[test]
fn a_failed_gc_pass_does_not_panic() {
    let store = Faulty::new(ErrorKind::Corrupt, 1);
    let vgi = adapter(&store, QUICK);
    vgi.gc(Duration::ZERO);
    assert_eq!(store.calls(), 1);
    vgi.kv_put(b"s", b"k", b"v");
    assert_eq!(vgi.kv_get(b"s", b"k").as_deref(), Some(&b"v"[..]));
}

/// An event as the recorder keeps it: the thread that emitted it, its level
/// and every field, as text.
type Recorded = (std::thread::ThreadId, tracing::Level, Vec<(String, String)>);

/// A subscriber that keeps every event it sees; clones share the list.
///
/// It is installed once as the global default ([`recorder`]), not per test
/// with `with_default`: a scoped subscriber misses an event whose callsite
/// another test thread, with no subscriber, registered at the same moment
/// (the callsite's interest is cached as "never"), which made the event test
/// fail now and then under the parallel test runner.
#[derive(Clone, Default)]
struct Recorder(Arc<std::sync::Mutex<Vec<Recorded>>>);

/// The process's recorder, installed as the global subscriber on first use;
/// tests read back the events of their own thread.
fn recorder() -> &'static Recorder {
    static RECORDER: std::sync::OnceLock<Recorder> = std::sync::OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = Recorder::default();
        // Nothing else in this binary installs a subscriber; should one have,
        // the test below finds no event and says so.
        let _ = tracing::subscriber::set_global_default(recorder.clone());
        recorder
    })
}

struct Fields(Vec<(String, String)>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        if let Ok(mut events) = self.0.lock() {
            events.push((
                std::thread::current().id(),
                *event.metadata().level(),
                fields.0,
            ));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Before panicking, the adapter emits an error event with the store, the
/// operation and the whole error, for workers whose panics go unseen.
#[test]
fn a_failure_is_a_tracing_error_event_before_the_panic() {
    let recorder = recorder();
    let store = Faulty::new(ErrorKind::StorageFull, u32::MAX);
    let vgi = adapter(&store, QUICK);
    let panicked = panic_message(|| vgi.kv_put(b"s", b"k", b"v"));
    assert!(panicked.is_some());
    let me = std::thread::current().id();
    let events: Vec<_> = recorder
        .0
        .lock()
        .map(|e| e.iter().filter(|(t, ..)| *t == me).cloned().collect())
        .unwrap_or_default();
    let errors: Vec<_> = events
        .iter()
        .filter(|(_, level, _)| *level == tracing::Level::ERROR)
        .collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    let field = |name: &str| {
        errors[0]
            .2
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("store"), "faulty:test");
    assert_eq!(field("operation"), "kv_put");
    assert_eq!(field("kind"), "StorageFull");
    assert!(field("error").contains("injected fault"), "{events:?}");
}
