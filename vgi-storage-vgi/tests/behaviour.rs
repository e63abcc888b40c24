//! The adapter over the memory and SQLite backends, through the `vgi` trait
//! alone: the checks of the `vgi` crate's own storage test module
//! (`src/storage/conformance.rs`: kv, log, queue, clear, and from 0.34 on
//! append_many), rewritten here, plus the byte and sharing cases a worker relies on.

use std::sync::Arc;
use std::time::Duration;

use vgi::storage::FunctionStorage as VgiFunctionStorage;
use vgi_storage_core::SharedStorage;
use vgi_storage_memory::MemoryStorage;
use vgi_storage_sqlite::SqliteStorage;
use vgi_storage_vgi::VgiStorage;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn adapt(store: SharedStorage) -> vgi::storage::SharedStorage {
    VgiStorage::new(store).into_shared()
}

fn values(entries: &[(i64, Vec<u8>)]) -> Vec<Vec<u8>> {
    entries.iter().map(|(_, v)| v.clone()).collect()
}

fn check_kv(store: &dyn VgiFunctionStorage) {
    assert_eq!(store.kv_get(b"e1", b"k"), None);
    store.kv_put(b"e1", b"k", b"v1");
    assert_eq!(store.kv_get(b"e1", b"k").as_deref(), Some(&b"v1"[..]));
    store.kv_put(b"e1", b"k", b"v2");
    assert_eq!(store.kv_get(b"e1", b"k").as_deref(), Some(&b"v2"[..]));
    assert_eq!(store.kv_get(b"e2", b"k"), None, "scopes are isolated");
    store.kv_del(b"e1", b"k");
    assert_eq!(store.kv_get(b"e1", b"k"), None);
    store.kv_del(b"e1", b"k");
    assert_eq!(
        store.kv_get(b"e1", b"k"),
        None,
        "deleting a missing key is fine"
    );
}

fn check_log(store: &dyn VgiFunctionStorage) {
    let id0 = store.append(b"e1", b"ns", b"", b"a".to_vec());
    let id1 = store.append(b"e1", b"ns", b"", b"b".to_vec());
    assert!(
        id0 >= 0 && id1 > id0,
        "log ids must be monotonic: {id0} then {id1}"
    );
    let all = store.scan(b"e1", b"ns", b"", -1, usize::MAX);
    assert_eq!(
        all.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [id0, id1]
    );
    assert_eq!(values(&all), [b"a".to_vec(), b"b".to_vec()]);
    let after = store.scan(b"e1", b"ns", b"", id0, usize::MAX);
    assert_eq!(after, [(id1, b"b".to_vec())]);
    assert_eq!(store.scan(b"e1", b"ns", b"", -1, 1).len(), 1);
    assert!(store.scan(b"e1", b"ns", b"", -1, 0).is_empty());
    assert!(store.scan(b"e1", b"other", b"", -1, usize::MAX).is_empty());
    assert!(store.scan(b"e1", b"ns", b"k2", -1, usize::MAX).is_empty());
}

/// What `vgi`'s check_append_many asks of `append_many`, through the calls
/// every `vgi` version in range has; with the `append-many` feature (a `vgi`
/// of 0.34 or later) the same check runs through `append_many` itself.
fn check_append_many(store: &dyn VgiFunctionStorage) {
    let first = store.append(b"am", b"ns", b"k", b"0".to_vec());
    #[cfg(feature = "append-many")]
    let ids = store.append_many(
        b"am",
        b"ns",
        b"k",
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()],
    );
    #[cfg(not(feature = "append-many"))]
    let ids: Vec<i64> = [b"1", b"2", b"3"]
        .iter()
        .map(|v| store.append(b"am", b"ns", b"k", v.to_vec()))
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids[0] > first && ids[1] > ids[0] && ids[2] > ids[1],
        "{first} then {ids:?}"
    );
    let last = store.append(b"am", b"ns", b"k", b"4".to_vec());
    assert!(last > ids[2]);
    let all = store.scan(b"am", b"ns", b"k", -1, usize::MAX);
    let expected: Vec<Vec<u8>> = [b"0", b"1", b"2", b"3", b"4"]
        .iter()
        .map(|v| v.to_vec())
        .collect();
    assert_eq!(values(&all), expected);
    // The one-row-at-a-time cursor walk vgi's FINALIZE flush does.
    let mut cursor = -1;
    let mut walked = Vec::new();
    while let Some((id, v)) = store.scan(b"am", b"ns", b"k", cursor, 1).into_iter().next() {
        cursor = id;
        walked.push(v);
    }
    assert_eq!(walked, expected);
    store.clear(b"am");
    assert!(store.scan(b"am", b"ns", b"k", -1, usize::MAX).is_empty());
}

fn check_queue(store: &dyn VgiFunctionStorage) {
    store.queue_push(b"q", &[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    assert_eq!(store.queue_pop(b"q").as_deref(), Some(&b"one"[..]));
    assert_eq!(store.queue_pop(b"q").as_deref(), Some(&b"two"[..]));
    assert_eq!(store.queue_pop(b"q").as_deref(), Some(&b"three"[..]));
    assert_eq!(store.queue_pop(b"q"), None);
    assert_eq!(store.queue_pop(b"nope"), None);
    store.queue_push(b"q", &[]);
    assert_eq!(store.queue_pop(b"q"), None, "an empty push adds nothing");
}

fn check_clear(store: &dyn VgiFunctionStorage) {
    store.kv_put(b"c", b"k", b"v");
    store.append(b"c", b"ns", b"", b"x".to_vec());
    store.queue_push(b"c", &[b"i".to_vec()]);
    store.kv_put(b"keep", b"k", b"v");
    store.clear(b"c");
    assert_eq!(store.kv_get(b"c", b"k"), None);
    assert!(store.scan(b"c", b"ns", b"", -1, usize::MAX).is_empty());
    assert_eq!(store.queue_pop(b"c"), None);
    assert_eq!(
        store.kv_get(b"keep", b"k").as_deref(),
        Some(&b"v"[..]),
        "other scopes stay"
    );
}

/// Names and values are bytes: empty, NUL and 0xFF pass through unchanged.
fn check_bytes(store: &dyn VgiFunctionStorage) {
    let odd: &[u8] = b"\0\xff\0";
    store.kv_put(odd, b"", b"");
    assert_eq!(store.kv_get(odd, b"").as_deref(), Some(&b""[..]));
    let id = store.append(b"", odd, odd, odd.to_vec());
    assert_eq!(
        store.scan(b"", odd, odd, -1, usize::MAX),
        [(id, odd.to_vec())]
    );
    store.queue_push(odd, &[Vec::new(), odd.to_vec()]);
    assert_eq!(store.queue_pop(odd).as_deref(), Some(&b""[..]));
    assert_eq!(store.queue_pop(odd).as_deref(), Some(odd));
}

/// gc with a day's TTL removes nothing just written; with zero it may.
fn check_gc(store: &dyn VgiFunctionStorage) {
    store.kv_put(b"fresh", b"k", b"v");
    store.gc(Duration::from_secs(86_400));
    assert_eq!(store.kv_get(b"fresh", b"k").as_deref(), Some(&b"v"[..]));
}

fn run_all(store: &dyn VgiFunctionStorage) {
    check_kv(store);
    check_log(store);
    check_append_many(store);
    check_queue(store);
    check_clear(store);
    check_bytes(store);
    check_gc(store);
}

#[test]
fn memory_backend_behaves_as_vgi_expects() {
    let store = adapt(Arc::new(MemoryStorage::new()));
    run_all(store.as_ref());
}

#[test]
fn sqlite_backend_behaves_as_vgi_expects() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = adapt(Arc::new(SqliteStorage::open(dir.path().join("state.db"))?));
    run_all(store.as_ref());
    Ok(())
}

/// Two handles on one SQLite file, as two pooled workers hold it: what one
/// writes through the vgi trait the other reads, and each queue item goes to
/// exactly one of them.
#[test]
fn two_sqlite_handles_share_state_through_the_vgi_trait() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let sink = adapt(Arc::new(SqliteStorage::open(&path)?));
    let source = adapt(Arc::new(SqliteStorage::open(&path)?));
    sink.kv_put(b"exec-1", b"bufattach", b"attach");
    let ids: Vec<i64> = (0..5_u8)
        .map(|i| sink.append(b"exec-1", b"buf", b"", vec![i]))
        .collect();
    sink.queue_push(b"exec-1", &[b"a".to_vec(), b"b".to_vec()]);

    assert_eq!(
        source.kv_get(b"exec-1", b"bufattach").as_deref(),
        Some(&b"attach"[..])
    );
    let read = source.scan(b"exec-1", b"buf", b"", -1, usize::MAX);
    assert_eq!(read.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert_eq!(
        values(&read),
        (0..5_u8).map(|i| vec![i]).collect::<Vec<_>>()
    );
    assert_eq!(source.queue_pop(b"exec-1").as_deref(), Some(&b"a"[..]));
    assert_eq!(sink.queue_pop(b"exec-1").as_deref(), Some(&b"b"[..]));
    assert_eq!(source.queue_pop(b"exec-1"), None);
    Ok(())
}

/// The adapter hands the wrapped store back for what the vgi trait lacks
/// (compare-and-swap), and both views see the same state.
#[test]
fn the_wrapped_store_is_reachable_for_compare_and_swap() -> TestResult {
    let adapter = VgiStorage::new(Arc::new(MemoryStorage::new()));
    assert!(
        adapter
            .store()
            .kv_compare_and_swap(b"s", b"n", None, Some(b"1"))?
    );
    assert!(
        !adapter
            .store()
            .kv_compare_and_swap(b"s", b"n", None, Some(b"2"))?
    );
    assert_eq!(
        VgiFunctionStorage::kv_get(&adapter, b"s", b"n").as_deref(),
        Some(&b"1"[..])
    );
    Ok(())
}
