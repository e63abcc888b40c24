//! The memory backend against the contract's bullets, one test each, plus the
//! concurrency and cost claims its docs make.
//!
//! The shared conformance suite runs in `tests/conformance.rs`; these tests pin
//! down what is specific to this backend (no scope left behind, no global lock,
//! cost that follows the work) and keep the contract covered on their own.

use std::collections::HashSet;
use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use vgi_storage_core::{Clock, FunctionStorage, FunctionStorageExt, ManualClock};
use vgi_storage_memory::MemoryStorage;

type TestResult = Result<(), Box<dyn Error>>;

/// A store on a manual clock at t = 1000 ms.
fn store() -> (MemoryStorage, ManualClock) {
    let clock = ManualClock::new(1_000);
    (MemoryStorage::with_clock(Arc::new(clock.clone())), clock)
}

/// Bytes that are easy to get wrong: empty, NUL, 0xFF.
const ODD: [&[u8]; 4] = [b"", b"\0", b"\xff", b"\0\xff\0"];

fn values(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn name_and_capabilities_say_in_process_only() {
    let store = MemoryStorage::default();
    assert_eq!(store.name(), "memory");
    let caps = store.capabilities();
    assert!(!caps.durable && !caps.shared_across_processes && !caps.shared_across_hosts);
    assert_eq!(caps.max_value_len, usize::MAX);
    assert!(format!("{store:?}").contains("MemoryStorage"));
}

#[test]
fn kv_round_trips_odd_bytes_and_overwrites() -> TestResult {
    let (store, _) = store();
    for scope in ODD {
        for key in ODD {
            assert_eq!(store.kv_get(scope, key)?, None);
            for value in ODD {
                store.kv_put(scope, key, value)?;
                assert_eq!(store.kv_get(scope, key)?.as_deref(), Some(value));
            }
        }
    }
    let long_key = vec![0xab; 64 * 1024];
    store.kv_put(b"s", &long_key, b"long")?;
    assert_eq!(store.kv_get(b"s", &long_key)?, Some(b"long".to_vec()));
    assert_eq!(store.kv_get(b"s", &long_key[1..])?, None);
    Ok(())
}

#[test]
fn kv_del_removes_one_key_and_a_missing_key_is_fine() -> TestResult {
    let (store, _) = store();
    store.kv_del(b"nowhere", b"k")?;
    assert_eq!(
        store.scope_count(),
        0,
        "deleting from an unknown scope creates nothing"
    );
    store.kv_put(b"s", b"a", b"1")?;
    store.kv_put(b"s", b"b", b"2")?;
    store.kv_del(b"s", b"a")?;
    store.kv_del(b"s", b"a")?;
    assert_eq!(store.kv_get(b"s", b"a")?, None);
    assert_eq!(store.kv_get(b"s", b"b")?, Some(b"2".to_vec()));
    Ok(())
}

#[test]
fn kv_put_batch_behaves_as_puts_in_order() -> TestResult {
    let (store, _) = store();
    store.kv_put_batch(b"s", &[])?;
    assert_eq!(store.scope_count(), 0, "an empty batch is a no-op");
    let entries = vec![
        (b"a".to_vec(), b"1".to_vec()),
        (b"b".to_vec(), Vec::new()),
        (b"a".to_vec(), b"3".to_vec()),
    ];
    store.kv_put_batch(b"s", &entries)?;
    assert_eq!(
        store.kv_get(b"s", b"a")?,
        Some(b"3".to_vec()),
        "a later duplicate wins"
    );
    assert_eq!(store.kv_get(b"s", b"b")?, Some(Vec::new()));
    Ok(())
}

#[test]
fn cas_on_absent_present_and_deleted_entries() -> TestResult {
    let (store, _) = store();
    assert!(!store.kv_compare_and_swap(b"s", b"k", Some(b"x"), Some(b"y"))?);
    assert_eq!(
        store.scope_count(),
        0,
        "a failed CAS on an unknown scope creates nothing"
    );
    assert!(store.kv_compare_and_swap(b"s", b"k", None, Some(b"1"))?);
    assert!(!store.kv_compare_and_swap(b"s", b"k", None, Some(b"2"))?);
    assert!(!store.kv_compare_and_swap(b"s", b"k", Some(b"2"), Some(b"3"))?);
    assert_eq!(
        store.kv_get(b"s", b"k")?,
        Some(b"1".to_vec()),
        "a failed CAS changes nothing"
    );
    assert!(store.kv_compare_and_swap(b"s", b"k", Some(b"1"), Some(b""))?);
    assert!(store.kv_compare_and_swap(b"s", b"k", Some(b""), None)?);
    assert_eq!(store.kv_get(b"s", b"k")?, None);
    assert!(!store.kv_compare_and_swap(b"s", b"k", Some(b""), Some(b"z"))?);
    assert!(
        store.kv_compare_and_swap(b"s", b"k", None, None)?,
        "absent -> absent succeeds"
    );
    assert_eq!(store.kv_get(b"s", b"k")?, None);
    Ok(())
}

#[test]
fn scan_honours_after_id_and_limit() -> TestResult {
    let (store, _) = store();
    assert!(
        store.scan(b"s", b"n", b"k", -1, usize::MAX)?.is_empty(),
        "a missing log is empty"
    );
    let ids = store.append_batch(b"s", b"n", b"k", &values(&["a", "b", "c", "d"]))?;
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids[0] >= 0,
        "{ids:?}"
    );
    let all = store.scan(b"s", b"n", b"k", i64::MIN, usize::MAX)?;
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(all[2].value, b"c");
    assert!(
        store.scan(b"s", b"n", b"k", -1, 0)?.is_empty(),
        "limit 0 reads nothing"
    );
    let page = store.scan(b"s", b"n", b"k", ids[0], 2)?;
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), ids[1..3]);
    assert!(store.scan(b"s", b"n", b"k", ids[3], 10)?.is_empty());
    assert!(
        store
            .scan(b"s", b"n", b"k", i64::MAX, usize::MAX)?
            .is_empty()
    );
    assert_eq!(store.scan_all(b"s", b"n", b"k", -1, 1)?, all);
    assert_eq!(
        store.append_batch(b"s", b"n", b"k", &[])?,
        Vec::<i64>::new()
    );
    Ok(())
}

#[test]
fn logs_are_keyed_by_scope_ns_and_key() -> TestResult {
    let (store, _) = store();
    // ("ab", "c") and ("a", "bc") must be different logs.
    store.append(b"s", b"ab", b"c", b"1")?;
    store.append(b"s", b"a", b"bc", b"2")?;
    store.append(b"t", b"ab", b"c", b"3")?;
    for (scope, ns, key, want) in [
        (&b"s"[..], &b"ab"[..], &b"c"[..], &b"1"[..]),
        (b"s", b"a", b"bc", b"2"),
        (b"t", b"ab", b"c", b"3"),
    ] {
        let got = store.scan(scope, ns, key, -1, usize::MAX)?;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value, want);
    }
    Ok(())
}

#[test]
fn ids_are_never_reused_after_clear_or_gc() -> TestResult {
    let (store, clock) = store();
    let mut seen = HashSet::new();
    for round in 0..3 {
        for value in ODD {
            let id = store.append(b"s", b"n", b"k", value)?;
            assert!(
                id >= 0 && seen.insert(id),
                "id {id} reused in round {round}"
            );
        }
        if round % 2 == 0 {
            store.clear(b"s")?;
        } else {
            clock.advance(Duration::from_secs(10));
            assert_eq!(
                store.gc(Duration::from_secs(1))?.scopes,
                vec![b"s".to_vec()]
            );
        }
        assert!(store.scan(b"s", b"n", b"k", -1, usize::MAX)?.is_empty());
    }
    Ok(())
}

#[test]
fn queue_is_fifo_and_an_empty_push_is_a_no_op() -> TestResult {
    let (store, _) = store();
    assert_eq!(store.queue_pop(b"s")?, None);
    store.queue_push(b"s", &[])?;
    assert_eq!(store.scope_count(), 0, "an empty push creates nothing");
    store.queue_push(b"s", &values(&["1", "2"]))?;
    store.queue_push(b"s", &[Vec::new(), b"\0\xff".to_vec()])?;
    store.queue_push(b"other", &values(&["x"]))?;
    assert_eq!(store.queue_pop(b"s")?, Some(b"1".to_vec()));
    assert_eq!(
        store.queue_drain(b"s")?,
        vec![b"2".to_vec(), Vec::new(), b"\0\xff".to_vec()]
    );
    assert_eq!(store.queue_pop(b"s")?, None);
    assert_eq!(store.queue_pop(b"other")?, Some(b"x".to_vec()));
    Ok(())
}

#[test]
fn clear_of_one_scope_leaves_the_others() -> TestResult {
    let (store, _) = store();
    for scope in [&b"a"[..], b"b", b"ab", b""] {
        store.kv_put(scope, b"k", scope)?;
        store.append(scope, b"n", b"k", scope)?;
        store.queue_push(scope, &[scope.to_vec()])?;
    }
    store.clear(b"a")?;
    store.clear(b"never-written")?;
    assert_eq!(store.scope_count(), 3);
    assert_eq!(store.kv_get(b"a", b"k")?, None);
    assert!(store.scan(b"a", b"n", b"k", -1, usize::MAX)?.is_empty());
    assert_eq!(store.queue_pop(b"a")?, None);
    for scope in [&b"b"[..], b"ab", b""] {
        assert_eq!(store.kv_get(scope, b"k")?.as_deref(), Some(scope));
        assert_eq!(store.scan(scope, b"n", b"k", -1, usize::MAX)?.len(), 1);
        assert_eq!(store.queue_pop(scope)?.as_deref(), Some(scope));
    }
    Ok(())
}

#[test]
fn gc_removes_stale_scopes_once_and_keeps_fresh_ones() -> TestResult {
    let (store, clock) = store();
    store.kv_put(b"old", b"k", b"v")?;
    store.append(b"old-log", b"n", b"k", b"v")?;
    store.queue_push(b"old-queue", &values(&["v"]))?;
    assert!(store.kv_compare_and_swap(b"old-cas", b"k", None, None)?);
    clock.advance(Duration::from_secs(60));
    store.kv_put(b"fresh", b"k", b"v")?;
    let mut removed = store.gc(Duration::from_secs(30))?.scopes;
    removed.sort();
    assert_eq!(removed, values(&["old", "old-cas", "old-log", "old-queue"]));
    assert!(
        store.gc(Duration::from_secs(30))?.scopes.is_empty(),
        "reported once"
    );
    assert_eq!(store.kv_get(b"fresh", b"k")?, Some(b"v".to_vec()));
    assert_eq!(store.kv_get(b"old", b"k")?, None);
    assert_eq!(store.scope_count(), 1);
    Ok(())
}

#[test]
fn gc_ttl_of_zero_and_beyond_the_clock_range() -> TestResult {
    let (store, clock) = store();
    store.kv_put(b"s", b"k", b"v")?;
    assert!(
        store.gc(Duration::ZERO)?.scopes.is_empty(),
        "written at now: not before now"
    );
    clock.advance(Duration::from_millis(1));
    assert!(
        store.gc(Duration::MAX)?.scopes.is_empty(),
        "a ttl beyond the clock removes nothing"
    );
    assert_eq!(store.gc(Duration::ZERO)?.scopes, values(&["s"]));
    Ok(())
}

#[test]
fn only_writes_stamp_a_scope() -> TestResult {
    let (store, clock) = store();
    store.kv_put(b"s", b"k", b"v")?;
    store.kv_put(b"s", b"gone", b"v")?;
    store.queue_push(b"s", &values(&["1", "2"]))?;
    clock.advance(Duration::from_secs(60));
    // None of these is a write: the scope stays stale.
    store.kv_del(b"s", b"gone")?;
    store.queue_pop(b"s")?;
    store.queue_push(b"s", &[])?;
    store.append_batch(b"s", b"n", b"k", &[])?;
    store.kv_put_batch(b"s", &[])?;
    assert!(!store.kv_compare_and_swap(b"s", b"k", Some(b"nope"), None)?);
    store.kv_get(b"s", b"k")?;
    store.scan(b"s", b"n", b"k", -1, 1)?;
    assert_eq!(store.gc(Duration::from_secs(30))?.scopes, values(&["s"]));
    Ok(())
}

#[test]
fn clear_removes_the_stamp_too() -> TestResult {
    let (store, clock) = store();
    store.kv_put(b"s", b"k", b"v")?;
    store.clear(b"s")?;
    clock.advance(Duration::from_secs(60));
    assert!(store.gc(Duration::ZERO)?.scopes.is_empty());
    Ok(())
}

// ---------------------------------------------------------------- concurrency

/// A clock that, once armed, blocks the first caller until the test releases
/// it: a write held inside the caller's clock for as long as the test wants.
#[derive(Debug)]
struct GateClock {
    armed: AtomicBool,
    entered: Barrier,
    release: Barrier,
}

impl Clock for GateClock {
    fn now_millis(&self) -> i64 {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.wait();
            self.release.wait();
        }
        0
    }
}

/// Threads working on other scopes, in every shard, finish while a write to one
/// scope is held inside the caller's clock: there is no store-wide lock, and a
/// write reads the clock before it takes its shard's lock.
#[test]
fn a_held_scope_does_not_block_other_scopes() -> TestResult {
    let clock = Arc::new(GateClock {
        armed: AtomicBool::new(false),
        entered: Barrier::new(2),
        release: Barrier::new(2),
    });
    let store = MemoryStorage::with_clock(clock.clone());
    store.kv_put(b"held", b"k", b"0")?;
    clock.armed.store(true, Ordering::SeqCst);
    let (outcome, held) = thread::scope(|s| {
        let holder = s.spawn(|| store.kv_put(b"held", b"k", b"1"));
        clock.entered.wait();
        let (tx, rx) = mpsc::channel();
        let store = &store;
        s.spawn(move || {
            // 64 scopes are sure to share a shard with "held".
            let run = || -> vgi_storage_core::Result<()> {
                for i in 0..64 {
                    let scope = format!("other-{i}").into_bytes();
                    store.kv_put(&scope, b"k", b"v")?;
                    store.kv_get(&scope, b"k")?;
                    store.append(&scope, b"n", b"k", b"v")?;
                    store.scan(&scope, b"n", b"k", -1, 10)?;
                    store.queue_push(&scope, &[b"v".to_vec()])?;
                    store.queue_pop(&scope)?;
                    store.clear(&scope)?;
                }
                Ok(())
            };
            let _ = tx.send(run());
        });
        let outcome = rx.recv_timeout(Duration::from_secs(30));
        clock.release.wait();
        (outcome, holder.join())
    });
    assert!(
        matches!(outcome, Ok(Ok(()))),
        "work on other scopes waited for the held one: {outcome:?}"
    );
    assert!(matches!(held, Ok(Ok(()))));
    assert_eq!(store.kv_get(b"held", b"k")?, Some(b"1".to_vec()));
    Ok(())
}

/// A write racing a gc sweep survives it, whether it lands before gc looks at
/// its scope (the scope is fresh) or after gc removed the stale scope (the
/// write starts a new one).
#[test]
fn gc_racing_writers_never_loses_a_write() -> TestResult {
    const SCOPES: usize = 1_000;
    let (store, clock) = store();
    // Several rounds, because one round may interleave too kindly.
    for round in 0..4 {
        let scopes: Vec<Vec<u8>> = (0..SCOPES)
            .map(|i| format!("r{round}-s{i}").into_bytes())
            .collect();
        for scope in &scopes {
            store.kv_put(scope, b"k", b"old")?;
        }
        clock.advance(Duration::from_secs(60));
        let removed = race_gc_with_writers(&store, &scopes)?;
        let unique: HashSet<_> = removed.iter().collect();
        assert_eq!(unique.len(), removed.len(), "a scope was reported twice");
        for scope in &scopes {
            assert_eq!(
                store.kv_get(scope, b"k")?,
                Some(b"new".to_vec()),
                "lost a kv write"
            );
            assert_eq!(
                store.scan(scope, b"n", b"k", -1, 10)?.len(),
                1,
                "lost an append"
            );
        }
        // This round's scopes were all rewritten, so none is stale. (Earlier
        // rounds' scopes may be, if the sweeper did not get to them.)
        let rest = store.gc(Duration::from_secs(30))?.scopes;
        let fresh: HashSet<_> = scopes.iter().collect();
        assert!(
            !rest.iter().any(|scope| fresh.contains(scope)),
            "gc removed a rewritten scope: {rest:?}"
        );
    }
    Ok(())
}

/// Two threads rewrite `scopes` while a third runs gc (ttl 30 s) until they are
/// done; returns what gc reported.
fn race_gc_with_writers(
    store: &MemoryStorage,
    scopes: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, Box<dyn Error>> {
    let done = AtomicBool::new(false);
    let (writes, swept) = thread::scope(|s| {
        let writers: Vec<_> = (0..2)
            .map(|w| {
                s.spawn(move || -> vgi_storage_core::Result<()> {
                    for scope in scopes.iter().skip(w).step_by(2) {
                        store.kv_put(scope, b"k", b"new")?;
                        store.append(scope, b"n", b"k", b"new")?;
                    }
                    Ok(())
                })
            })
            .collect();
        let sweeper = s.spawn(|| -> vgi_storage_core::Result<Vec<Vec<u8>>> {
            let mut removed = Vec::new();
            while !done.load(Ordering::SeqCst) {
                removed.extend(store.gc(Duration::from_secs(30))?.scopes);
            }
            Ok(removed)
        });
        let results: Vec<_> = writers
            .into_iter()
            .map(thread::ScopedJoinHandle::join)
            .collect();
        done.store(true, Ordering::SeqCst);
        (results, sweeper.join())
    });
    for write in writes {
        assert!(matches!(write, Ok(Ok(()))), "{write:?}");
    }
    match swept {
        Ok(Ok(removed)) => Ok(removed),
        _ => Err("the sweeper failed".into()),
    }
}

/// Several threads pop one queue, several push it, and each item comes out once.
#[test]
fn queue_pop_is_exactly_once_across_threads() -> TestResult {
    const PER_PUSHER: usize = 2_000;
    let store = MemoryStorage::new();
    let popped = thread::scope(|s| {
        for p in 0..2 {
            let store = &store;
            s.spawn(move || -> vgi_storage_core::Result<()> {
                for i in 0..PER_PUSHER / 10 {
                    let batch: Vec<Vec<u8>> = (0..10)
                        .map(|j| format!("{p}-{}", i * 10 + j).into_bytes())
                        .collect();
                    store.queue_push(b"q", &batch)?;
                }
                Ok(())
            });
        }
        let poppers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| -> vgi_storage_core::Result<Vec<Vec<u8>>> {
                    let mut mine = Vec::new();
                    let mut idle = 0;
                    while idle < 10_000 {
                        if let Some(item) = store.queue_pop(b"q")? {
                            mine.push(item);
                            idle = 0;
                        } else {
                            idle += 1;
                            thread::yield_now();
                        }
                    }
                    Ok(mine)
                })
            })
            .collect();
        poppers
            .into_iter()
            .map(thread::ScopedJoinHandle::join)
            .collect::<Vec<_>>()
    });
    let mut all = Vec::new();
    for mine in popped {
        let Ok(Ok(mine)) = mine else {
            return Err("a popper failed".into());
        };
        all.extend(mine);
    }
    all.extend(store.queue_drain(b"q")?);
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 2 * PER_PUSHER, "items lost or duplicated");
    assert_eq!(unique.len(), all.len());
    Ok(())
}

/// Threads incrementing one counter through CAS lose no update, while a reader
/// tails a log that several threads append to and misses no entry.
#[test]
fn cas_counter_and_log_tail_across_threads() -> TestResult {
    const THREADS: u64 = 4;
    const EACH: u64 = 300;
    let store = MemoryStorage::new();
    let tailed = thread::scope(|s| {
        for t in 0..THREADS {
            let store = &store;
            s.spawn(move || -> vgi_storage_core::Result<()> {
                for i in 0..EACH {
                    store.kv_update(b"s", b"count", |old| {
                        let n = old.and_then(|b| <[u8; 8]>::try_from(b).ok());
                        Some((n.map_or(0, u64::from_le_bytes) + 1).to_le_bytes().to_vec())
                    })?;
                    store.append(b"s", b"n", b"log", format!("{t}-{i}").as_bytes())?;
                }
                Ok(())
            });
        }
        let reader = s.spawn(|| -> vgi_storage_core::Result<Vec<i64>> {
            let mut ids = Vec::new();
            let mut after = -1;
            while ids.len() < (THREADS * EACH) as usize {
                for entry in store.scan(b"s", b"n", b"log", after, 7)? {
                    after = entry.id;
                    ids.push(entry.id);
                }
            }
            Ok(ids)
        });
        reader.join()
    });
    let Ok(Ok(ids)) = tailed else {
        return Err("the reader failed".into());
    };
    let all: Vec<i64> = store
        .scan(b"s", b"n", b"log", -1, usize::MAX)?
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, all, "the tail missed or reordered entries");
    let count = store
        .kv_get(b"s", b"count")?
        .and_then(|b| <[u8; 8]>::try_from(b).ok());
    assert_eq!(
        count.map(u64::from_le_bytes),
        Some(THREADS * EACH),
        "lost an update"
    );
    Ok(())
}

/// Many threads, each on its own scope and on shared ones, with clear and gc
/// running alongside: nothing errors, and each thread's own scope ends as it left it.
#[test]
fn mixed_operations_from_many_threads() -> TestResult {
    let (store, _) = store();
    let outcomes = thread::scope(|s| {
        let workers: Vec<_> = (0..4u8)
            .map(|t| {
                let store = &store;
                s.spawn(move || -> vgi_storage_core::Result<()> {
                    let mine = [b'w', t];
                    for i in 0..300u32 {
                        let v = i.to_le_bytes();
                        store.kv_put(&mine, b"k", &v)?;
                        store.append(&mine, b"n", b"k", &v)?;
                        store.queue_push(&mine, &[v.to_vec()])?;
                        store.kv_put(b"shared", &[t], &v)?;
                        store.append(b"shared", b"n", b"k", &v)?;
                        if i % 50 == 0 {
                            store.clear(b"shared")?;
                        }
                    }
                    let ok = store.kv_get(&mine, b"k")? == Some(299u32.to_le_bytes().to_vec())
                        && store.scan(&mine, b"n", b"k", -1, usize::MAX)?.len() == 300
                        && store.queue_drain(&mine)?.len() == 300;
                    if ok {
                        Ok(())
                    } else {
                        Err(vgi_storage_core::StorageError::Config {
                            store: "test".into(),
                            hint: format!("thread {t} saw its scope changed"),
                            source: None,
                        })
                    }
                })
            })
            .collect();
        let sweeper = s.spawn(|| -> vgi_storage_core::Result<()> {
            for _ in 0..50 {
                // Nothing is stale at ttl 1 h: the sweep must not remove anything.
                let report = store.gc(Duration::from_secs(3600))?;
                assert!(report.scopes.is_empty(), "{:?}", report.scopes);
                thread::yield_now();
            }
            Ok(())
        });
        let mut all: Vec<_> = workers
            .into_iter()
            .map(thread::ScopedJoinHandle::join)
            .collect();
        all.push(sweeper.join());
        all
    });
    for outcome in outcomes {
        assert!(matches!(outcome, Ok(Ok(()))), "{outcome:?}");
    }
    // The workers drained their queues and left their kv and logs.
    for t in 0..4u8 {
        assert_eq!(store.queue_pop(&[b'w', t])?, None);
        assert_eq!(
            store.kv_get(&[b'w', t], b"k")?,
            Some(299u32.to_le_bytes().to_vec())
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------- cost

/// A bound about 100 times what each cost test needs in a debug build, and far
/// below what an implementation whose cost grows with the store would need.
const COST_BOUND: Duration = Duration::from_secs(10);

#[test]
fn scan_from_the_tail_of_a_long_log_does_not_walk_the_log() -> TestResult {
    let (store, _) = store();
    let values: Vec<Vec<u8>> = (0..100_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let ids = store.append_batch(b"s", b"n", b"k", &values)?;
    let last = ids[ids.len() - 1];
    let start = Instant::now();
    for _ in 0..20_000 {
        let tail = store.scan(b"s", b"n", b"k", last - 1, 1)?;
        assert_eq!(tail.len(), 1);
    }
    // A scan that walked from the start would touch 2e9 entries here.
    let took = start.elapsed();
    assert!(
        took < COST_BOUND,
        "20k tail scans of a 100k log took {took:?}"
    );
    Ok(())
}

#[test]
fn queue_pop_does_not_shift_the_queue() -> TestResult {
    let (store, _) = store();
    let items: Vec<Vec<u8>> = (0..200_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
    store.queue_push(b"s", &items)?;
    let start = Instant::now();
    let mut n = 0u32;
    while let Some(item) = store.queue_pop(b"s")? {
        assert_eq!(item, n.to_le_bytes());
        n += 1;
    }
    // Popping from the front of a Vec would move ~2e10 elements here.
    let took = start.elapsed();
    assert_eq!(n, 200_000);
    assert!(took < COST_BOUND, "popping 200k items took {took:?}");
    Ok(())
}

#[test]
fn clear_costs_its_scope_not_the_store() -> TestResult {
    let (store, _) = store();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..200_000u32)
        .map(|i| (i.to_le_bytes().to_vec(), Vec::new()))
        .collect();
    store.kv_put_batch(b"big", &entries)?;
    let start = Instant::now();
    for i in 0..10_000u32 {
        let scope = i.to_le_bytes();
        store.kv_put(&scope, b"k", b"v")?;
        store.clear(&scope)?;
    }
    // A clear that filtered the whole store would touch 2e9 entries here.
    let took = start.elapsed();
    assert!(
        took < COST_BOUND,
        "10k clears beside a 200k scope took {took:?}"
    );
    assert_eq!(store.scope_count(), 1);
    assert_eq!(store.kv_get(b"big", &7u32.to_le_bytes())?, Some(Vec::new()));
    Ok(())
}
