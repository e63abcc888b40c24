//! Behaviour specific to the redb backend: byte-exact scope ranges, durable id and
//! sequence counters, gc by the time index, group commit.

use std::sync::Arc;
use std::time::Duration;

use vgi_storage_core::{ErrorKind, FunctionStorage, FunctionStorageExt, ManualClock, Result};
use vgi_storage_redb::{Durability, RedbStorage};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn open(dir: &tempfile::TempDir, clock: &ManualClock) -> Result<RedbStorage> {
    RedbStorage::builder(dir.path().join("s.redb"))
        .clock(Arc::new(clock.clone()))
        .open()
}

/// Scopes that are prefixes of each other, or differ only in NUL and 0xFF bytes,
/// are separate: clearing one leaves the others whole.
#[test]
fn scopes_with_tricky_bytes_are_kept_apart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(&dir, &ManualClock::new(1_000))?;
    let scopes: [&[u8]; 8] = [
        b"",
        b"\0",
        b"\0\0",
        b"\xff",
        b"\xff\xff",
        b"a",
        b"a\0",
        b"a\xff",
    ];
    for (i, s) in scopes.iter().enumerate() {
        store.kv_put(s, b"", &[i as u8])?;
        store.kv_put(s, b"\xff", &[i as u8])?;
        store.append(s, b"", b"", &[i as u8])?;
        store.append(s, b"\xff", b"\0", &[i as u8])?;
        store.queue_push(s, &[vec![i as u8]])?;
    }
    for (i, s) in scopes.iter().enumerate() {
        store.clear(s)?;
        for (j, t) in scopes.iter().enumerate() {
            let gone = j <= i;
            assert_eq!(store.kv_get(t, b"")?.is_none(), gone, "{i} {j}");
            assert_eq!(store.kv_get(t, b"\xff")?.is_none(), gone, "{i} {j}");
            assert_eq!(store.scan(t, b"", b"", -1, 10)?.is_empty(), gone, "{i} {j}");
            assert_eq!(store.scan(t, b"\xff", b"\0", -1, 10)?.is_empty(), gone);
        }
    }
    for s in scopes {
        assert_eq!(store.queue_pop(s)?, None);
    }
    Ok(())
}

#[test]
fn logs_differing_in_ns_and_key_bytes_do_not_mix() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(&dir, &ManualClock::new(1_000))?;
    let a = store.append(b"s", b"n", b"\0", b"a")?;
    let b = store.append(b"s", b"n\0", b"", b"b")?;
    let c = store.append(b"s", b"n", b"", b"c")?;
    assert_eq!(store.scan(b"s", b"n", b"\0", -1, 10)?.len(), 1);
    assert_eq!(store.scan(b"s", b"n\0", b"", -1, 10)?[0].id, b);
    let only_c = store.scan(b"s", b"n", b"", -1, 10)?;
    assert_eq!(only_c.len(), 1);
    assert_eq!(only_c[0].id, c);
    assert!(a < b && b < c);
    assert!(store.scan(b"s", b"n", b"", i64::MAX, 10)?.is_empty());
    assert!(store.scan(b"s", b"n", b"", i64::MIN, 0)?.is_empty());
    Ok(())
}

/// Ids come from a durable counter: never reused after clear, gc or reopen.
#[test]
fn ids_are_never_reused_after_clear_gc_and_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(1_000);
    let mut seen = Vec::new();
    {
        let store = open(&dir, &clock)?;
        seen.push(store.append(b"s", b"", b"", b"1")?);
        store.clear(b"s")?;
        seen.push(store.append(b"s", b"", b"", b"2")?);
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            store.gc(Duration::from_secs(1))?.scopes,
            vec![b"s".to_vec()]
        );
        seen.extend(store.append_batch(b"s", b"", b"", &[b"3".to_vec(), b"4".to_vec()])?);
        store.clear(b"s")?;
    }
    let store = open(&dir, &clock)?;
    seen.push(store.append(b"s", b"", b"", b"5")?);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen[0] >= 0);
    Ok(())
}

#[test]
fn queue_order_survives_reopen_and_interleaves_scopes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(1_000);
    {
        let store = open(&dir, &clock)?;
        store.queue_push(b"q", &[b"1".to_vec(), b"2".to_vec()])?;
        store.queue_push(b"q\0", &[b"x".to_vec()])?;
        assert_eq!(store.queue_pop(b"q")?, Some(b"1".to_vec()));
    }
    let store = open(&dir, &clock)?;
    store.queue_push(b"q", &[b"3".to_vec()])?;
    assert_eq!(store.queue_drain(b"q")?, vec![b"2".to_vec(), b"3".to_vec()]);
    assert_eq!(store.queue_drain(b"q\0")?, vec![b"x".to_vec()]);
    Ok(())
}

/// gc removes exactly the scopes whose last write is before the cutoff, found through
/// the by-time index, which must follow every restamp.
#[test]
fn gc_follows_restamps_and_kv_del_does_not_stamp() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(1_000);
    let store = open(&dir, &clock)?;
    store.kv_put(b"old", b"k", b"v")?;
    store.kv_put(b"fresh", b"k", b"v")?;
    clock.set(5_000);
    store.kv_put(b"fresh", b"k", b"v2")?; // restamped at 5000
    store.kv_del(b"old", b"k")?; // not a write for gc
    assert!(!store.kv_compare_and_swap(b"old", b"k", Some(b"nope"), None)?);
    clock.set(6_000);
    let mut removed = store.gc(Duration::from_secs(2))?.scopes;
    removed.sort();
    assert_eq!(removed, vec![b"old".to_vec()]);
    assert_eq!(store.kv_get(b"fresh", b"k")?, Some(b"v2".to_vec()));
    assert!(store.gc(Duration::from_secs(2))?.scopes.is_empty());
    assert!(store.gc(Duration::MAX)?.scopes.is_empty());
    assert_eq!(store.gc(Duration::ZERO)?.scopes, vec![b"fresh".to_vec()]);
    Ok(())
}

#[test]
fn too_large_values_are_refused_before_writing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(&dir, &ManualClock::new(0))?;
    let max = store.capabilities().max_value_len;
    assert!(max >= 1 << 30);
    // Check the refusal without allocating gigabytes: a zero-length check passes and
    // the limit is what the capabilities say.
    let err = vgi_storage_core::check_value_len(store.name(), max, max + 1)
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::TooLarge));
    Ok(())
}

/// Many threads writing at once: every write lands, ids stay unique, CAS stays atomic.
#[test]
fn concurrent_writers_share_commits_without_losing_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(&dir, &ManualClock::new(0))?);
    let threads = 6;
    let per = 40;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> Result<Vec<i64>> {
                let mut ids = Vec::new();
                for i in 0..per {
                    ids.push(store.append(b"s", b"n", b"k", format!("{t}-{i}").as_bytes())?);
                    store.kv_update(b"s", b"count", |old| {
                        let n = old
                            .map_or(0u32, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
                            + 1;
                        Some(n.to_le_bytes().to_vec())
                    })?;
                    store.queue_push(b"s", &[vec![t as u8, i as u8]])?;
                }
                Ok(ids)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.join().map_err(|_| "writer panicked")??);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), threads * per);
    assert_eq!(
        store.scan_all(b"s", b"n", b"k", -1, 50)?.len(),
        threads * per
    );
    let count = store.kv_get(b"s", b"count")?.ok_or("no count")?;
    assert_eq!(
        u32::from_le_bytes(count.as_slice().try_into()?),
        (threads * per) as u32
    );
    assert_eq!(store.queue_drain(b"s")?.len(), threads * per);
    Ok(())
}

#[test]
fn deferred_writes_are_kept_by_a_clean_close_and_flush_works() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("d.redb");
    {
        let store = RedbStorage::builder(&path)
            .durability(Durability::Deferred)
            .open()?;
        assert!(!store.capabilities().durable);
        store.kv_put(b"s", b"a", b"1")?;
        store.flush()?;
        store.kv_put(b"s", b"b", b"2")?;
    }
    let store = RedbStorage::open(&path)?;
    assert!(store.capabilities().durable);
    assert_eq!(store.kv_get(b"s", b"a")?, Some(b"1".to_vec()));
    assert_eq!(store.kv_get(b"s", b"b")?, Some(b"2".to_vec()));
    Ok(())
}

#[test]
fn deferred_with_multi_process_is_a_config_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let err = RedbStorage::builder(dir.path().join("x.redb"))
        .durability(Durability::Deferred)
        .multi_process(true)
        .open()
        .err()
        .ok_or("opened")?;
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    Ok(())
}

/// `gc` removed every stale scope in one write transaction, holding the write
/// lock (in multi-process mode, every other process's too) for the whole
/// sweep. It now removes at most 512 scopes per transaction; the steps
/// together still remove each stale scope once, report it once, and keep a
/// fresh one.
#[test]
fn gc_of_many_scopes_works_in_steps_and_reports_each_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(1_000);
    let store = RedbStorage::builder(dir.path().join("s.redb"))
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Deferred)
        .open()?;
    let scopes: Vec<Vec<u8>> = (0..600u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for scope in &scopes {
        store.queue_push(scope, &[b"x".to_vec()])?;
    }
    clock.advance(Duration::from_secs(10));
    store.kv_put(b"fresh", b"k", b"v")?;
    let mut removed = store.gc(Duration::from_secs(5))?.scopes;
    removed.sort();
    let mut want = scopes.clone();
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(store.kv_get(b"fresh", b"k")?, Some(b"v".to_vec()));
    for scope in scopes.iter().step_by(50) {
        assert_eq!(store.queue_pop(scope)?, None);
    }
    assert!(store.gc(Duration::from_secs(5))?.scopes.is_empty());
    Ok(())
}
