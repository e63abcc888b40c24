//! Group commit (issue 14, target 4): many threads of one process writing at
//! once share transactions, and every write still lands exactly once, with
//! log ids in the order the calls returned.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};

use vgi_storage_core::{FunctionStorage, FunctionStorageExt};
use vgi_storage_sqlite::{SqliteStorage, Synchronous};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const THREADS: usize = 8;
const WRITES: usize = 60;

fn value(t: usize, i: usize) -> Vec<u8> {
    format!("{t}:{i}").into_bytes()
}

/// Every thread appends to one of two logs, puts a key, pushes an item and
/// bumps a shared counter by compare-and-swap, over and over. Then: every
/// append is in its log once, ids ascend in each log and within each thread;
/// an append that started after another returned got a larger id; every key
/// is there; every item pops once; no increment was lost.
fn many_threads_write_and_everything_lands_once(sync: Synchronous) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SqliteStorage::builder(dir.path().join("state.db"))
        .synchronous(sync)
        .open()?;
    let highest_returned = AtomicI64::new(-1);
    std::thread::scope(|s| -> TestResult {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, highest_returned) = (&store, &highest_returned);
                s.spawn(move || -> vgi_storage_core::Result<Vec<i64>> {
                    let mut ids = Vec::new();
                    let log = [b"log-a", b"log-b"][t % 2];
                    for i in 0..WRITES {
                        let before = highest_returned.load(Ordering::SeqCst);
                        let id = store.append(b"s", b"n", log, &value(t, i))?;
                        assert!(
                            id > before,
                            "append returned id {id}, not above {before} returned before it began"
                        );
                        highest_returned.fetch_max(id, Ordering::SeqCst);
                        ids.push(id);
                        store.kv_put(b"s", &value(t, i), &value(t, i))?;
                        store.queue_push(b"s", &[value(t, i)])?;
                        loop {
                            let old = store.kv_get(b"s", b"count")?;
                            let n = old
                                .as_deref()
                                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                            let new = (n + 1).to_le_bytes();
                            if store.kv_compare_and_swap(
                                b"s",
                                b"count",
                                old.as_deref(),
                                Some(&new),
                            )? {
                                break;
                            }
                        }
                    }
                    Ok(ids)
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            let ids = h.join().map_err(|_| "a writer panicked")??;
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "thread {t}: {ids:?}");
        }
        Ok(())
    })?;
    for (parity, log) in [b"log-a", b"log-b"].into_iter().enumerate() {
        let entries = store.scan(b"s", b"n", log, -1, usize::MAX)?;
        assert!(entries.windows(2).all(|w| w[0].id < w[1].id));
        let got: Vec<Vec<u8>> = entries.into_iter().map(|e| e.value).collect();
        let mut want = Vec::new();
        for t in (0..THREADS).filter(|t| t % 2 == parity) {
            let mine: Vec<Vec<u8>> = got
                .iter()
                .filter(|v| v.starts_with(format!("{t}:").as_bytes()))
                .cloned()
                .collect();
            let expected: Vec<Vec<u8>> = (0..WRITES).map(|i| value(t, i)).collect();
            assert_eq!(mine, expected, "thread {t}'s appends, in id order");
            want.extend(expected);
        }
        assert_eq!(
            got.len(),
            want.len(),
            "log {parity} holds something else too"
        );
    }
    for t in 0..THREADS {
        for i in 0..WRITES {
            assert_eq!(store.kv_get(b"s", &value(t, i))?, Some(value(t, i)));
        }
    }
    let items = store.queue_drain(b"s")?;
    let distinct: HashSet<&Vec<u8>> = items.iter().collect();
    assert_eq!(items.len(), THREADS * WRITES);
    assert_eq!(distinct.len(), THREADS * WRITES);
    let count = store.kv_get(b"s", b"count")?.ok_or("no counter")?;
    assert_eq!(
        u64::from_le_bytes(count.as_slice().try_into()?),
        u64::try_from(THREADS * WRITES)?
    );
    Ok(())
}

#[test]
fn many_threads_land_every_write_once_in_order() -> TestResult {
    many_threads_write_and_everything_lands_once(Synchronous::Normal)
}

#[test]
fn many_threads_land_every_write_once_in_order_with_synchronous_full() -> TestResult {
    many_threads_write_and_everything_lands_once(Synchronous::Full)
}

/// Threads popping one queue while others push to it: every item is handed
/// out exactly once, and pops grouped with pushes never see an item before
/// its push is in the same or an earlier transaction.
#[test]
fn pops_grouped_with_pushes_hand_out_each_item_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SqliteStorage::open(dir.path().join("state.db"))?;
    let total = THREADS / 2 * WRITES;
    let popped = std::thread::scope(|s| -> std::result::Result<Vec<Vec<u8>>, String> {
        let pushers: Vec<_> = (0..THREADS / 2)
            .map(|t| {
                let store = &store;
                s.spawn(move || -> vgi_storage_core::Result<()> {
                    for i in 0..WRITES {
                        store.queue_push(b"q", &[value(t, i)])?;
                    }
                    Ok(())
                })
            })
            .collect();
        let poppers: Vec<_> = (0..THREADS / 2)
            .map(|_| {
                let store = &store;
                s.spawn(move || -> vgi_storage_core::Result<Vec<Vec<u8>>> {
                    let mut got = Vec::new();
                    let mut empty = 0;
                    while empty < 200 && got.len() < total {
                        if let Some(item) = store.queue_pop(b"q")? {
                            got.push(item);
                        } else {
                            empty += 1;
                            std::thread::yield_now();
                        }
                    }
                    Ok(got)
                })
            })
            .collect();
        for p in pushers {
            p.join()
                .map_err(|_| "a pusher panicked")?
                .map_err(|e| e.to_string())?;
        }
        let mut all = Vec::new();
        for p in poppers {
            all.extend(
                p.join()
                    .map_err(|_| "a popper panicked")?
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(all)
    })?;
    let mut all = popped;
    all.extend(store.queue_drain(b"q")?);
    let distinct: HashSet<&Vec<u8>> = all.iter().collect();
    assert_eq!(all.len(), total, "an item was popped twice or lost");
    assert_eq!(distinct.len(), total);
    Ok(())
}
