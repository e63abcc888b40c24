//! Checks with several threads sharing one store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use vgi_storage_core::{FunctionStorage, FunctionStorageExt, LogEntry};

use crate::harness::{CheckResult, Failure, OrFail, Outcome, Run, ensure, ensure_eq, retry};

const THREADS: usize = 4;
/// How long a check waits for items that should have arrived before calling them lost.
const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) fn join<T>(
    handle: thread::ScopedJoinHandle<'_, Result<T, Failure>>,
) -> Result<T, Failure> {
    handle.join().map_err(|_| {
        Failure::new("a worker thread panicked (a store call must return Err, never panic)")
    })?
}

/// Item `i` as bytes, and back.
pub(crate) fn item(i: usize) -> Vec<u8> {
    format!("item-{i:06}").into_bytes()
}

pub(crate) fn item_index(bytes: &[u8]) -> Option<usize> {
    std::str::from_utf8(bytes)
        .ok()?
        .strip_prefix("item-")?
        .parse()
        .ok()
}

/// Check that popped items are each pushed item exactly once, and that each
/// popper saw them in push order.
pub(crate) fn check_popped(total: usize, per_popper: &[Vec<Vec<u8>>]) -> Result<(), Failure> {
    let mut seen = BTreeMap::new();
    for (p, items) in per_popper.iter().enumerate() {
        let mut last = None;
        for bytes in items {
            let Some(i) = item_index(bytes).filter(|i| *i < total) else {
                return Err(Failure::new(format!(
                    "popper {p} got an item never pushed: {}",
                    crate::harness::show(bytes)
                )));
            };
            if let Some(other) = seen.insert(i, p) {
                return Err(Failure::new(format!(
                    "item {i} was popped twice (by poppers {other} and {p})"
                )));
            }
            ensure!(
                last.is_none_or(|l| l < i),
                "popper {p} got item {i} after item {last:?}: the queue is not FIFO"
            );
            last = Some(i);
        }
    }
    let missing: Vec<usize> = (0..total)
        .filter(|i| !seen.contains_key(i))
        .take(10)
        .collect();
    ensure!(
        missing.is_empty(),
        "{} of {total} pushed items were never popped, e.g. {missing:?}",
        total - seen.len()
    );
    Ok(())
}

pub(crate) fn queue_pop_is_exactly_once_across_threads(run: &Run<'_>) -> CheckResult {
    const TOTAL: usize = 2000;
    const BATCH: usize = 25;
    let env = run.env()?;
    let st = &*env.store;
    let pushed_all = AtomicBool::new(false);
    let per_popper = thread::scope(|scope| -> Result<Vec<Vec<Vec<u8>>>, Failure> {
        let pusher = scope.spawn(|| -> Result<(), Failure> {
            let result = (0..TOTAL)
                .collect::<Vec<_>>()
                .chunks(BATCH)
                .try_for_each(|chunk| {
                    let items: Vec<Vec<u8>> = chunk.iter().map(|i| item(*i)).collect();
                    retry(|| st.queue_push(b"q", &items)).or_fail("queue_push")
                });
            pushed_all.store(true, Ordering::SeqCst);
            result
        });
        let poppers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<Vec<u8>>, Failure> {
                    let mut mine = Vec::new();
                    loop {
                        // An empty pop that started after the last push means the queue is drained.
                        let finished = pushed_all.load(Ordering::SeqCst);
                        match retry(|| st.queue_pop(b"q")).or_fail("queue_pop")? {
                            Some(bytes) => mine.push(bytes),
                            None if finished => return Ok(mine),
                            None => thread::yield_now(),
                        }
                    }
                })
            })
            .collect();
        join(pusher)?;
        poppers.into_iter().map(join).collect()
    })?;
    check_popped(TOTAL, &per_popper)?;
    ensure_eq!(
        st.queue_pop(b"q").or_fail("queue_pop")?,
        None,
        "queue_pop after every item was popped"
    );
    Ok(Outcome::Passed)
}

/// Read the log from `after` until `done` says the writers finished and a scan
/// after that finds nothing new; check the tail is increasing as it goes.
pub(crate) fn tail_log(
    st: &dyn FunctionStorage,
    log: (&[u8], &[u8], &[u8]),
    done: &dyn Fn() -> bool,
) -> Result<Vec<LogEntry>, Failure> {
    let start = Instant::now();
    let mut tail: Vec<LogEntry> = Vec::new();
    let mut after = -1;
    loop {
        let finished = done();
        let page = retry(|| st.scan(log.0, log.1, log.2, after, 64)).or_fail("scan")?;
        for e in &page {
            ensure!(
                e.id > after,
                "a tailing scan(after_id {after}) returned id {} (ids must be above after_id, ascending)",
                e.id
            );
            after = e.id;
        }
        let empty = page.is_empty();
        tail.extend(page);
        if finished && empty {
            return Ok(tail);
        }
        ensure!(
            start.elapsed() < PATIENCE * 2,
            "tailing the log did not finish in {:?}",
            PATIENCE * 2
        );
        if empty {
            thread::yield_now();
        }
    }
}

/// Compare a tail with a full scan and with what the writers appended.
pub(crate) fn check_tail(
    tail: &[LogEntry],
    full: &[LogEntry],
    writers: usize,
    per_writer: usize,
    appended_ids: Option<&BTreeSet<i64>>,
) -> Result<(), Failure> {
    ensure_eq!(
        full.len(),
        writers * per_writer,
        "entries in the log after {writers} writers appended {per_writer} each"
    );
    if tail != full {
        let missing: Vec<i64> = full
            .iter()
            .filter(|e| !tail.contains(e))
            .map(|e| e.id)
            .take(10)
            .collect();
        return Err(Failure::new(format!(
            "a reader tailing the log with after_id saw {} entries, a full scan afterwards has {}; the tail missed ids {missing:?}: an entry became visible below an id already read",
            tail.len(),
            full.len()
        )));
    }
    if let Some(ids) = appended_ids {
        let scanned: BTreeSet<i64> = full.iter().map(|e| e.id).collect();
        ensure!(
            &scanned == ids,
            "the ids in the log are not the ids append returned"
        );
    }
    let mut next = vec![0usize; writers];
    for e in full {
        let text = String::from_utf8_lossy(&e.value);
        let parsed = text
            .strip_prefix('w')
            .and_then(|r| r.split_once('-'))
            .and_then(|(w, i)| Some((w.parse::<usize>().ok()?, i.parse::<usize>().ok()?)));
        let Some((w, i)) = parsed.filter(|(w, _)| *w < writers) else {
            return Err(Failure::new(format!(
                "the log holds a value never appended: {text}"
            )));
        };
        ensure!(
            next[w] == i,
            "writer {w}'s entry {i} comes where its entry {} should: one writer's appends must keep their order",
            next[w]
        );
        next[w] += 1;
    }
    Ok(())
}

pub(crate) fn log_tail_sees_every_entry_in_order_across_threads(run: &Run<'_>) -> CheckResult {
    const WRITERS: usize = 3;
    const PER_WRITER: usize = 200;
    let env = run.env()?;
    let st = &*env.store;
    let log: (&[u8], &[u8], &[u8]) = (b"s", b"n", b"k");
    let finished = AtomicUsize::new(0);
    let (tail, ids) = thread::scope(|scope| -> Result<_, Failure> {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let finished = &finished;
                scope.spawn(move || -> Result<Vec<i64>, Failure> {
                    let mut ids = Vec::new();
                    let result = (|| {
                        for i in 0..PER_WRITER {
                            let value = format!("w{w}-{i}").into_bytes();
                            // Some appends go through append_batch, which must tail the same.
                            let id = if i % 5 == 4 {
                                let got = retry(|| {
                                    st.append_batch(
                                        log.0,
                                        log.1,
                                        log.2,
                                        std::slice::from_ref(&value),
                                    )
                                })
                                .or_fail("append_batch")?;
                                ensure_eq!(got.len(), 1, "ids from an append_batch of one value");
                                got[0]
                            } else {
                                retry(|| st.append(log.0, log.1, log.2, &value))
                                    .or_fail("append")?
                            };
                            ensure!(
                                ids.last().is_none_or(|l| *l < id),
                                "writer {w} got id {id} after its id {:?}",
                                ids.last()
                            );
                            ids.push(id);
                        }
                        Ok(())
                    })();
                    finished.fetch_add(1, Ordering::SeqCst);
                    result.map(|()| ids)
                })
            })
            .collect();
        let reader =
            scope.spawn(|| tail_log(st, log, &|| finished.load(Ordering::SeqCst) == WRITERS));
        let mut ids = BTreeSet::new();
        for w in writers {
            for id in join(w)? {
                ensure!(ids.insert(id), "two appends returned the same id {id}");
            }
        }
        Ok((join(reader)?, ids))
    })?;
    let full = st
        .scan(log.0, log.1, log.2, -1, usize::MAX)
        .or_fail("scan")?;
    check_tail(&tail, &full, WRITERS, PER_WRITER, Some(&ids))?;
    Ok(Outcome::Passed)
}

/// Add one to the little-endian counter at `(scope, key)` through CAS; returns the new count.
pub(crate) fn increment(
    st: &dyn FunctionStorage,
    scope: &[u8],
    key: &[u8],
) -> Result<u64, Failure> {
    let written = retry(|| {
        st.kv_update(scope, key, |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_le_bytes);
            Some((n + 1).to_le_bytes().to_vec())
        })
    })
    .or_fail("kv_update (CAS)")?;
    written
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| Failure::new("kv_update wrote no 8-byte counter"))
}

pub(crate) fn read_counter(
    st: &dyn FunctionStorage,
    scope: &[u8],
    key: &[u8],
) -> Result<Option<u64>, Failure> {
    let v = st.kv_get(scope, key).or_fail("kv_get")?;
    Ok(v.and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes))
}

pub(crate) fn cas_counter_loses_no_update_across_threads(run: &Run<'_>) -> CheckResult {
    const PER_THREAD: usize = 150;
    let env = run.env()?;
    let st = &*env.store;
    let counts = thread::scope(|scope| -> Result<Vec<u64>, Failure> {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    (0..PER_THREAD)
                        .map(|_| increment(st, b"s", b"counter"))
                        .collect::<Result<Vec<u64>, Failure>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(join(w)?);
        }
        Ok(all)
    })?;
    let total = (THREADS * PER_THREAD) as u64;
    ensure_eq!(
        read_counter(st, b"s", b"counter")?,
        Some(total),
        "counter after {THREADS} threads added {PER_THREAD} each through CAS"
    );
    let distinct: BTreeSet<u64> = counts.iter().copied().collect();
    ensure!(
        distinct.len() == counts.len(),
        "two CAS updates both won from the same value (they wrote the same count)"
    );
    Ok(Outcome::Passed)
}

#[allow(clippy::too_many_lines)]
pub(crate) fn gc_racing_writers_never_removes_a_fresh_scope(run: &Run<'_>) -> CheckResult {
    const WRITERS: usize = 3;
    const WRITES: usize = 120;
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    let ttl = Duration::from_secs(60);
    let scopes: Vec<Vec<u8>> = (0..WRITERS)
        .map(|w| format!("racer-{w}").into_bytes())
        .collect();
    // Every racing scope starts stale, so gc has reason to sweep it just as a writer writes.
    for s in &scopes {
        st.kv_put(s, b"old", b"stale").or_fail("kv_put")?;
        st.append(s, b"n", b"k", b"stale").or_fail("append")?;
    }
    st.kv_put(b"bystander", b"k", b"stale").or_fail("kv_put")?;
    clock.advance(Duration::from_secs(3600));
    let writing = AtomicBool::new(true);
    let reports = thread::scope(|scope| -> Result<Vec<Vec<Vec<u8>>>, Failure> {
        let writers: Vec<_> = scopes
            .iter()
            .map(|s| {
                scope.spawn(move || -> Result<(), Failure> {
                    for i in 0..WRITES {
                        let v = format!("{i}").into_bytes();
                        match i % 3 {
                            0 => retry(|| st.append(s, b"n", b"k", &v)).map(drop),
                            1 => retry(|| st.kv_put(s, &v, &v)),
                            _ => retry(|| st.queue_push(s, std::slice::from_ref(&v))),
                        }
                        .or_fail("a racing write")?;
                    }
                    Ok(())
                })
            })
            .collect();
        let sweeper = scope.spawn(|| -> Result<Vec<Vec<Vec<u8>>>, Failure> {
            let mut reports = Vec::new();
            loop {
                reports.push(retry(|| st.gc(ttl)).or_fail("gc")?.scopes);
                if !writing.load(Ordering::SeqCst) {
                    break;
                }
                thread::yield_now();
            }
            Ok(reports)
        });
        let written: Result<(), Failure> = writers.into_iter().try_for_each(join);
        writing.store(false, Ordering::SeqCst);
        let reports = join(sweeper)?;
        written?;
        Ok(reports)
    })?;
    for s in &scopes {
        let removals = reports.iter().flatten().filter(|r| *r == s).count();
        ensure!(
            removals <= 1,
            "gc removed racing scope {} {removals} times while it was written within the ttl",
            crate::harness::show(s)
        );
        // Every racing write returned Ok within the ttl, so all of it must still be there.
        let log: Vec<Vec<u8>> = st
            .scan(s, b"n", b"k", -1, usize::MAX)
            .or_fail("scan")?
            .into_iter()
            .map(|e| e.value)
            .collect();
        let fresh: Vec<Vec<u8>> = (0..WRITES)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("{i}").into_bytes())
            .collect();
        ensure!(
            log.ends_with(&fresh),
            "gc racing writers lost log entries of scope {} written within the ttl: the log has {} entries",
            crate::harness::show(s),
            log.len()
        );
        for i in (0..WRITES).filter(|i| i % 3 == 1) {
            let k = format!("{i}").into_bytes();
            ensure_eq!(
                st.kv_get(s, &k).or_fail("kv_get")?,
                Some(k.clone()),
                "kv entry {i} of racing scope {} written within the ttl",
                crate::harness::show(s)
            );
        }
        let queue: Vec<Vec<u8>> = st.queue_drain(s).or_fail("queue_pop")?;
        let pushed: Vec<Vec<u8>> = (0..WRITES)
            .filter(|i| i % 3 == 2)
            .map(|i| format!("{i}").into_bytes())
            .collect();
        ensure_eq!(
            queue,
            pushed,
            "queue items of racing scope {} written within the ttl",
            crate::harness::show(s)
        );
    }
    let bystander_removed = reports.iter().flatten().any(|r| r == b"bystander");
    ensure!(
        bystander_removed,
        "gc never removed a scope that was stale for the whole race"
    );
    Ok(Outcome::Passed)
}
