//! The workloads: each a function over `&dyn FunctionStorage`, so every target
//! (our backends and the raw-engine ceilings) runs the same calls with the same bytes.
//!
//! Every workload checks what it reads back and returns an error on any
//! mismatch: a number from a broken run is worse than no number.

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use vgi_storage::{FunctionStorage, ManualClock};

use crate::stats::{Recorder, Sample};
use crate::{BenchResult, bail, child};

/// How big each workload is. `full()` is the default run, `quick()` the smoke run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Sizes {
    /// Keys put then read back, 1 KiB each.
    pub(crate) kv_keys: usize,
    /// Keys of the hot-key overwrite.
    pub(crate) hot_keys: usize,
    /// Rounds of the hot-key overwrite (each overwrites every hot key once).
    pub(crate) hot_rounds: usize,
    /// Increments of the CAS counter, per variant (single thread, contended).
    pub(crate) cas_increments: usize,
    /// 64 KiB entries appended to one log.
    pub(crate) log_entries: usize,
    /// Entries per page of the paged scan.
    pub(crate) log_page: usize,
    /// Work items pushed, then drained, per drain variant.
    pub(crate) queue_items: usize,
    /// Items per `queue_push` call.
    pub(crate) queue_batch: usize,
    /// Scopes created for the lifecycle workload.
    pub(crate) scopes: usize,
    /// Runs of every workload per target; the table shows medians.
    pub(crate) runs: usize,
    /// Threads of the multi-threaded variants.
    pub(crate) threads: usize,
}

impl Sizes {
    pub(crate) fn full() -> Self {
        Self {
            kv_keys: 10_000,
            hot_keys: 100,
            hot_rounds: 50,
            cas_increments: 2_000,
            log_entries: 1_000,
            log_page: 16,
            queue_items: 100_000,
            queue_batch: 1_000,
            scopes: 10_000,
            runs: 3,
            threads: 4,
        }
    }

    /// The sizes for `target`: stores that fsync on every commit (about a
    /// thousand commits a second on an SSD) get fewer single-op writes and pops,
    /// so the full run fits in ten minutes; rates stay comparable.
    pub(crate) fn for_target(quick: bool, fsync_per_commit: bool) -> Self {
        match (quick, fsync_per_commit) {
            (false, false) => Self::full(),
            (false, true) => Self {
                kv_keys: 1_000,
                hot_rounds: 5,
                cas_increments: 400,
                log_entries: 200,
                queue_items: 1_000,
                queue_batch: 100,
                scopes: 1_000,
                ..Self::full()
            },
            (true, false) => Self::quick(),
            (true, true) => Self {
                cas_increments: 20,
                log_entries: 8,
                queue_items: 100,
                queue_batch: 10,
                scopes: 40,
                runs: 1,
                ..Self::quick()
            },
        }
    }

    /// About 1/100 of the full sizes: every code path, in seconds even in a debug build.
    pub(crate) fn quick() -> Self {
        Self {
            kv_keys: 100,
            hot_keys: 100,
            hot_rounds: 1,
            cas_increments: 40,
            log_entries: 16,
            log_page: 4,
            queue_items: 1_000,
            queue_batch: 100,
            scopes: 100,
            runs: 2,
            threads: 4,
        }
    }
}

/// One workload step: a row of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    /// What one "op" of the step is, for the table's unit.
    pub(crate) unit: &'static str,
}

/// Every step, in table order.
pub(crate) const STEPS: &[Step] = &[
    Step {
        id: "kv.put",
        label: "kv put 1 KiB",
        unit: "puts",
    },
    Step {
        id: "kv.get",
        label: "kv get 1 KiB",
        unit: "gets",
    },
    Step {
        id: "kv.put.mt",
        label: "kv put 1 KiB, N threads",
        unit: "puts",
    },
    Step {
        id: "kv.get.mt",
        label: "kv get 1 KiB, N threads",
        unit: "gets",
    },
    Step {
        id: "kv.hot",
        label: "hot-key overwrite (100 keys)",
        unit: "puts",
    },
    Step {
        id: "cas.incr",
        label: "CAS increment",
        unit: "incr",
    },
    Step {
        id: "cas.incr.mt",
        label: "CAS increment, N threads contending",
        unit: "incr",
    },
    Step {
        id: "log.append",
        label: "append 64 KiB",
        unit: "appends",
    },
    Step {
        id: "log.append.mt",
        label: "append 64 KiB, N threads, one log",
        unit: "appends",
    },
    Step {
        id: "log.scan",
        label: "scan whole log",
        unit: "entries",
    },
    Step {
        id: "log.scan.paged",
        label: "scan in pages (after_id)",
        unit: "entries",
    },
    Step {
        id: "queue.push",
        label: "queue push (batches)",
        unit: "items",
    },
    Step {
        id: "queue.pop.1t",
        label: "queue drain, 1 thread",
        unit: "items",
    },
    Step {
        id: "queue.pop.2t",
        label: "queue drain, 2 threads",
        unit: "items",
    },
    Step {
        id: "queue.pop.4t",
        label: "queue drain, 4 threads",
        unit: "items",
    },
    Step {
        id: "queue.pop.2p",
        label: "queue drain, 2 processes",
        unit: "items",
    },
    Step {
        id: "queue.pop.4p",
        label: "queue drain, 4 processes",
        unit: "items",
    },
    Step {
        id: "scope.create",
        label: "create scopes",
        unit: "scopes",
    },
    Step {
        id: "scope.clear",
        label: "clear half the scopes",
        unit: "scopes",
    },
    Step {
        id: "scope.gc",
        label: "gc the stale half",
        unit: "scopes",
    },
    Step {
        id: "worker.bind.put",
        label: "worker: bind kv_put ~100 B",
        unit: "puts",
    },
    Step {
        id: "worker.bind.get",
        label: "worker: bind kv_get ~100 B",
        unit: "gets",
    },
    Step {
        id: "worker.flush",
        label: "worker: flush, one append_batch 64K-3M",
        unit: "batches",
    },
    Step {
        id: "worker.scan1",
        label: "worker: scan(after=cursor, limit=1)",
        unit: "calls",
    },
    Step {
        id: "worker.clear",
        label: "worker: clear each execution",
        unit: "scopes",
    },
];

/// The four workloads, each run once per run per target on a fresh store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    AggregateState,
    Buffering,
    ParallelScan,
    Lifecycle,
    /// The `vgi` worker's own pattern: see `crate::worker`.
    Worker,
}

impl Workload {
    pub(crate) const ALL: [Workload; 5] = [
        Self::AggregateState,
        Self::Buffering,
        Self::ParallelScan,
        Self::Lifecycle,
        Self::Worker,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::AggregateState => "aggregate state",
            Self::Buffering => "buffering",
            Self::ParallelScan => "parallel scan",
            Self::Lifecycle => "lifecycle",
            Self::Worker => "worker pattern",
        }
    }
}

/// How a child process opens the same store, for the process drain variants.
#[derive(Debug, Clone)]
pub(crate) struct ChildSpec {
    pub(crate) target: String,
    pub(crate) dir: std::path::PathBuf,
}

/// 1 KiB value number `i`: its number, then a byte pattern that depends on it.
pub(crate) fn kv_value(i: usize) -> Vec<u8> {
    patterned(i, 1024)
}

/// 64 KiB log entry number `i` (the size of an Arrow record batch in IPC).
fn log_value(i: usize) -> Vec<u8> {
    patterned(i, 64 * 1024)
}

/// A small work item: its number and the row range it stands for.
pub(crate) fn work_item(i: usize) -> Vec<u8> {
    patterned(i, 32)
}

/// The number a patterned value starts with.
pub(crate) fn item_number(bytes: &[u8]) -> Option<usize> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    usize::try_from(u64::from_le_bytes(head)).ok()
}

fn patterned(i: usize, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|j| (j.wrapping_mul(31) ^ i) as u8).collect();
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

fn key(prefix: &str, i: usize) -> Vec<u8> {
    format!("{prefix}-{i:08}").into_bytes()
}

/// Time one call, pushing its latency.
pub(crate) fn timed<T>(lat: &mut Vec<u64>, f: impl FnOnce() -> BenchResult<T>) -> BenchResult<T> {
    let t = Instant::now();
    let r = f();
    lat.push(nanos(t.elapsed()));
    r
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One thread's start, end, latencies and result.
type Outcome<R> = BenchResult<(Instant, Instant, Vec<u64>, R)>;

/// Run `work(thread)` on `threads` threads started together; return the wall
/// time (first start to last finish, as each thread saw it), every latency, and
/// each thread's result.
pub(crate) fn parallel<R: Send>(
    threads: usize,
    work: impl Fn(usize, &mut Vec<u64>) -> BenchResult<R> + Sync,
) -> BenchResult<(f64, Vec<u64>, Vec<R>)> {
    let barrier = Barrier::new(threads);
    let outcomes: Vec<Outcome<R>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    let mut lat = Vec::new();
                    barrier.wait();
                    let start = Instant::now();
                    let r = work(t, &mut lat)?;
                    Ok((start, Instant::now(), lat, r))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a worker thread panicked".into()))
            })
            .collect()
    });
    let mut first_start: Option<Instant> = None;
    let mut last_end: Option<Instant> = None;
    let mut all_lat = Vec::new();
    let mut results = Vec::with_capacity(threads);
    for outcome in outcomes {
        let (start, end, lat, r) = outcome?;
        first_start = Some(first_start.map_or(start, |f| f.min(start)));
        last_end = Some(last_end.map_or(end, |l| l.max(end)));
        all_lat.extend(lat);
        results.push(r);
    }
    let secs = match (first_start, last_end) {
        (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
        _ => 0.0,
    };
    Ok((secs, all_lat, results))
}

fn sample(ops: usize, bytes: usize, secs: f64, lat_ns: Vec<u64>) -> Sample {
    Sample {
        ops: ops as u64,
        bytes: bytes as u64,
        secs,
        lat_ns,
        extra: std::collections::BTreeMap::new(),
    }
}

/// Aggregate state: per-group 1 KiB states put and read back, a few hot keys
/// overwritten again and again, and a counter several threads bump with CAS.
pub(crate) fn aggregate_state(
    store: &dyn FunctionStorage,
    sizes: &Sizes,
    rec: &mut Recorder,
) -> BenchResult<()> {
    let n = sizes.kv_keys;
    let values: Vec<Vec<u8>> = (0..n).map(kv_value).collect();
    let keys: Vec<Vec<u8>> = (0..n).map(|i| key("group", i)).collect();

    let scope = b"agg-1";
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for (k, v) in keys.iter().zip(&values) {
        timed(&mut lat, || Ok(store.kv_put(scope, k, v)?))?;
    }
    rec.record(
        "kv.put",
        sample(n, n * 1024, start.elapsed().as_secs_f64(), lat),
    );

    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for (i, k) in keys.iter().enumerate() {
        let got = timed(&mut lat, || Ok(store.kv_get(scope, k)?))?;
        if got.as_deref() != Some(values[i].as_slice()) {
            bail!("kv.get: key {i} read back {}", describe(got.as_deref()));
        }
    }
    rec.record(
        "kv.get",
        sample(n, n * 1024, start.elapsed().as_secs_f64(), lat),
    );

    // The same, spread over threads (each its own stripe of keys).
    let th = sizes.threads;
    let scope = b"agg-2";
    let (secs, lat, _) = parallel(th, |t, lat| {
        for i in (t..n).step_by(th) {
            timed(lat, || Ok(store.kv_put(scope, &keys[i], &values[i])?))?;
        }
        Ok(())
    })?;
    rec.record("kv.put.mt", sample(n, n * 1024, secs, lat));
    let (secs, lat, _) = parallel(th, |t, lat| {
        for i in (t..n).step_by(th) {
            let got = timed(lat, || Ok(store.kv_get(scope, &keys[i])?))?;
            if got.as_deref() != Some(values[i].as_slice()) {
                bail!("kv.get.mt: key {i} read back {}", describe(got.as_deref()));
            }
        }
        Ok(())
    })?;
    rec.record("kv.get.mt", sample(n, n * 1024, secs, lat));

    // Hot keys: the same few group states overwritten round after round.
    let scope = b"agg-hot";
    let hot = sizes.hot_keys;
    let writes = hot * sizes.hot_rounds;
    let mut lat = Vec::with_capacity(writes);
    let start = Instant::now();
    for w in 0..writes {
        let v = &values[w % values.len()];
        timed(&mut lat, || Ok(store.kv_put(scope, &keys[w % hot], v)?))?;
    }
    rec.record(
        "kv.hot",
        sample(writes, writes * 1024, start.elapsed().as_secs_f64(), lat),
    );
    for (h, hot_key) in keys.iter().enumerate().take(hot.min(writes)) {
        let last_write = (writes - 1) - ((writes - 1 - h) % hot);
        let got = store.kv_get(scope, hot_key)?;
        if got.as_deref() != Some(values[last_write % values.len()].as_slice()) {
            bail!(
                "kv.hot: hot key {h} does not hold its last write: {}",
                describe(got.as_deref())
            );
        }
    }

    // A counter bumped by compare-and-swap: alone, then with threads contending.
    let incs = sizes.cas_increments;
    let scope = b"agg-cas-1";
    let mut lat = Vec::with_capacity(incs);
    let start = Instant::now();
    let mut retries = 0;
    for _ in 0..incs {
        retries += timed(&mut lat, || cas_increment(store, scope))?;
    }
    let mut s = sample(incs, 0, start.elapsed().as_secs_f64(), lat);
    s.extra.insert("cas_retries", retries);
    rec.record("cas.incr", s);
    check_counter(store, scope, incs, "cas.incr")?;

    let scope = b"agg-cas-2";
    let per_thread = incs / th;
    let (secs, lat, retries) = parallel(th, |_, lat| {
        let mut retries = 0;
        for _ in 0..per_thread {
            retries += timed(lat, || cas_increment(store, scope))?;
        }
        Ok(retries)
    })?;
    let mut s = sample(per_thread * th, 0, secs, lat);
    s.extra.insert("cas_retries", retries.iter().sum());
    rec.record("cas.incr.mt", s);
    check_counter(store, scope, per_thread * th, "cas.incr.mt")?;
    Ok(())
}

/// Add one to the little-endian counter at `(scope, "count")`; returns the
/// number of lost races.
fn cas_increment(store: &dyn FunctionStorage, scope: &[u8]) -> BenchResult<u64> {
    let mut retries = 0;
    let mut current = store.kv_get(scope, b"count")?;
    loop {
        let n = counter_value(current.as_deref())?;
        let next = (n + 1).to_le_bytes();
        if store.kv_compare_and_swap(scope, b"count", current.as_deref(), Some(&next))? {
            return Ok(retries);
        }
        retries += 1;
        current = store.kv_get(scope, b"count")?;
    }
}

fn counter_value(bytes: Option<&[u8]>) -> BenchResult<u64> {
    match bytes {
        None => Ok(0),
        Some(b) => match <[u8; 8]>::try_from(b) {
            Ok(a) => Ok(u64::from_le_bytes(a)),
            Err(_) => bail!("CAS counter holds {} bytes, not 8", b.len()),
        },
    }
}

fn check_counter(
    store: &dyn FunctionStorage,
    scope: &[u8],
    want: usize,
    step: &str,
) -> BenchResult<()> {
    let got = counter_value(store.kv_get(scope, b"count")?.as_deref())?;
    if got != want as u64 {
        bail!("{step}: counter is {got} after {want} successful increments (lost updates)");
    }
    Ok(())
}

fn describe(v: Option<&[u8]>) -> String {
    match v {
        None => "nothing (missing)".to_owned(),
        Some(b) => format!(
            "a wrong value ({} bytes, number {:?})",
            b.len(),
            item_number(b)
        ),
    }
}

/// Buffering: a sink appends Arrow-batch-sized entries to one log, a source
/// scans them back, whole and in pages.
pub(crate) fn buffering(
    store: &dyn FunctionStorage,
    sizes: &Sizes,
    rec: &mut Recorder,
) -> BenchResult<()> {
    let n = sizes.log_entries;
    let values: Vec<Vec<u8>> = (0..n).map(log_value).collect();
    let bytes = n * 64 * 1024;
    let (scope, ns, lkey) = (b"buf-1", b"buffer", b"batches");

    let mut lat = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let start = Instant::now();
    for v in &values {
        ids.push(timed(&mut lat, || Ok(store.append(scope, ns, lkey, v)?))?);
    }
    rec.record(
        "log.append",
        sample(n, bytes, start.elapsed().as_secs_f64(), lat),
    );
    if ids.windows(2).any(|w| w[0] >= w[1]) || ids.first().is_some_and(|id| *id < 0) {
        bail!("log.append: ids of one thread's appends are not increasing: {ids:?}");
    }

    let mut lat = Vec::new();
    let start = Instant::now();
    let whole = timed(&mut lat, || {
        Ok(store.scan(scope, ns, lkey, -1, usize::MAX)?)
    })?;
    rec.record(
        "log.scan",
        sample(n, bytes, start.elapsed().as_secs_f64(), lat),
    );
    check_scan("log.scan", &whole, &ids, &values)?;
    drop(whole);

    let page = sizes.log_page;
    let mut lat = Vec::new();
    let mut paged = Vec::with_capacity(n);
    let mut after = -1;
    let start = Instant::now();
    loop {
        let batch = timed(&mut lat, || Ok(store.scan(scope, ns, lkey, after, page)?))?;
        let done = batch.len() < page;
        if let Some(last) = batch.last() {
            after = last.id;
        }
        paged.extend(batch);
        if done {
            break;
        }
    }
    rec.record(
        "log.scan.paged",
        sample(n, bytes, start.elapsed().as_secs_f64(), lat),
    );
    check_scan("log.scan.paged", &paged, &ids, &values)?;
    drop(paged);

    // Several sink threads appending to the same log.
    let th = sizes.threads;
    let scope = b"buf-2";
    let (secs, lat, _) = parallel(th, |t, lat| {
        for v in values.iter().skip(t).step_by(th) {
            timed(lat, || Ok(store.append(scope, ns, lkey, v)?))?;
        }
        Ok(())
    })?;
    rec.record("log.append.mt", sample(n, bytes, secs, lat));
    let all = store.scan(scope, ns, lkey, -1, usize::MAX)?;
    if all.len() != n || all.windows(2).any(|w| w[0].id >= w[1].id) {
        bail!(
            "log.append.mt: scan after {n} appends gave {} entries or ids out of order",
            all.len()
        );
    }
    let mut seen = vec![false; n];
    for e in &all {
        match item_number(&e.value) {
            Some(i) if i < n && !seen[i] && e.value == values[i] => seen[i] = true,
            _ => bail!(
                "log.append.mt: entry {} is not one of the appended values, or repeats one",
                e.id
            ),
        }
    }
    Ok(())
}

fn check_scan(
    step: &str,
    got: &[vgi_storage::LogEntry],
    ids: &[i64],
    values: &[Vec<u8>],
) -> BenchResult<()> {
    if got.len() != ids.len() {
        bail!(
            "{step}: read {} entries back, appended {}",
            got.len(),
            ids.len()
        );
    }
    for (i, e) in got.iter().enumerate() {
        if e.id != ids[i] || e.value != values[i] {
            bail!(
                "{step}: entry {i} differs from the append (id {} vs {})",
                e.id,
                ids[i]
            );
        }
    }
    Ok(())
}

/// Parallel scan: the planner pushes small work items, then poppers (threads,
/// and processes where the store is shared across them) drain the queue; every
/// item must be claimed exactly once.
pub(crate) fn parallel_scan(
    store: &dyn FunctionStorage,
    sizes: &Sizes,
    child: Option<&ChildSpec>,
    rec: &mut Recorder,
) -> BenchResult<()> {
    let n = sizes.queue_items;
    let items: Vec<Vec<u8>> = (0..n).map(work_item).collect();

    let scope = b"scan-1";
    let mut lat = Vec::new();
    let start = Instant::now();
    for chunk in items.chunks(sizes.queue_batch.max(1)) {
        timed(&mut lat, || Ok(store.queue_push(scope, chunk)?))?;
    }
    rec.record(
        "queue.push",
        sample(n, n * 32, start.elapsed().as_secs_f64(), lat),
    );

    for (step, poppers) in [
        ("queue.pop.1t", 1),
        ("queue.pop.2t", 2),
        ("queue.pop.4t", 4),
    ] {
        // The single popper drains the queue pushed above; the others get fresh ones.
        let scope: &[u8] = if poppers == 1 {
            scope
        } else {
            push_all(store, step.as_bytes(), &items, sizes.queue_batch)?;
            step.as_bytes()
        };
        let (secs, lat, popped) = parallel(poppers, |_, lat| {
            let mut mine = Vec::new();
            while let Some(item) = timed(lat, || Ok(store.queue_pop(scope)?))? {
                mine.push(item_number(&item).filter(|i| items.get(*i) == Some(&item)));
            }
            Ok(mine)
        })?;
        check_exactly_once(step, n, popped.into_iter().flatten())?;
        rec.record(step, sample(n, n * 32, secs, lat));
    }

    if let Some(spec) = child.filter(|_| store.capabilities().shared_across_processes) {
        for (step, procs) in [("queue.pop.2p", 2), ("queue.pop.4p", 4)] {
            let scope = step.as_bytes();
            push_all(store, scope, &items, sizes.queue_batch)?;
            let out = child::drain_in_processes(spec, scope, procs)?;
            check_exactly_once(step, n, out.items.into_iter())?;
            rec.record(step, sample(n, n * 32, out.secs, out.lat_ns));
        }
    }
    Ok(())
}

fn push_all(
    store: &dyn FunctionStorage,
    scope: &[u8],
    items: &[Vec<u8>],
    batch: usize,
) -> BenchResult<()> {
    for chunk in items.chunks(batch.max(1)) {
        store.queue_push(scope, chunk)?;
    }
    Ok(())
}

/// Every item `0..n` popped exactly once; `None` is an item that was not one pushed.
fn check_exactly_once(
    step: &str,
    n: usize,
    popped: impl Iterator<Item = Option<usize>>,
) -> BenchResult<()> {
    let mut seen = vec![false; n];
    let mut count = 0;
    for item in popped {
        count += 1;
        match item {
            Some(i) if i < n => {
                if std::mem::replace(&mut seen[i], true) {
                    bail!("{step}: item {i} was claimed twice");
                }
            }
            _ => bail!("{step}: popped an item that was never pushed"),
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        bail!(
            "{step}: {} items popped of {n}; item {missing} was never claimed",
            count
        );
    }
    Ok(())
}

/// Lifecycle: many short-lived scopes (one per query); half are cleared by
/// their query, the other half are orphans that `gc` collects once stale.
pub(crate) fn lifecycle(
    store: &dyn FunctionStorage,
    clock: &ManualClock,
    sizes: &Sizes,
    rec: &mut Recorder,
) -> BenchResult<()> {
    let n = sizes.scopes;
    let scopes: Vec<Vec<u8>> = (0..n).map(|i| key("query", i)).collect();
    let state = kv_value(0);
    let state = &state[..64];

    let th = sizes.threads;
    let (secs, lat, _) = parallel(th, |t, lat| {
        for s in scopes.iter().skip(t).step_by(th) {
            timed(lat, || Ok(store.kv_put(s, b"state", state)?))?;
        }
        Ok(())
    })?;
    rec.record("scope.create", sample(n, n * 64, secs, lat));

    // Two hours pass: every scope is now older than a one-hour TTL.
    clock.advance(Duration::from_secs(2 * 3600));
    let half = n / 2;
    let mut lat = Vec::with_capacity(half);
    let start = Instant::now();
    for s in &scopes[..half] {
        timed(&mut lat, || Ok(store.clear(s)?))?;
    }
    rec.record(
        "scope.clear",
        sample(half, 0, start.elapsed().as_secs_f64(), lat),
    );

    let mut lat = Vec::new();
    let start = Instant::now();
    let report = timed(&mut lat, || Ok(store.gc(Duration::from_secs(3600))?))?;
    rec.record(
        "scope.gc",
        sample(n - half, 0, start.elapsed().as_secs_f64(), lat),
    );

    let removed: BTreeSet<&[u8]> = report.scopes.iter().map(Vec::as_slice).collect();
    let want: BTreeSet<&[u8]> = scopes[half..].iter().map(Vec::as_slice).collect();
    if removed != want || report.scopes.len() != want.len() {
        bail!(
            "scope.gc: removed {} scopes ({} distinct), expected exactly the {} uncleared ones",
            report.scopes.len(),
            removed.len(),
            want.len()
        );
    }
    for (i, s) in scopes.iter().enumerate() {
        if store.kv_get(s, b"state")?.is_some() {
            bail!("lifecycle: scope {i} still holds state after clear/gc");
        }
    }
    Ok(())
}
