//! `--scale`: what one call costs as the store grows and as threads grow.
//!
//! Each target gets two stores, grown in steps to each size of the plan: a
//! data store (one scope holding N kv entries, one log of N entries and a queue
//! of N items) and a scopes store (N scopes of one kv entry each). At each size
//! the run times a fixed sample of single calls; the growing itself is not
//! timed, and uses batches (`kv_put_batch`, `append_batch`, `queue_push` of
//! [`Plan::batch`] values) so the columns that fsync every commit can reach a
//! million entries. The threads phase runs the same samples with 1 to 8
//! threads on the stores at their largest size.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tempfile::TempDir;
use vgi_storage::{ManualClock, SharedStorage, system_clock};

use crate::machine::Machine;
use crate::report::{TargetInfo, latency};
use crate::stats::{median, percentile};
use crate::targets::Target;
use crate::workloads;
use crate::{BenchResult, bail};

/// The targets `--scale` runs without `--only`: every backend and the
/// ceilings that can grow a store with batches.
pub(crate) const DEFAULT_TARGETS: &[&str] = &[
    "memory",
    "sqlite",
    "redb",
    "postgres",
    "raw-map",
    "raw-sqlite",
    "raw-redb",
];

/// Narrow `targets` for `--scale`: without `--only` to [`DEFAULT_TARGETS`];
/// refuse a target it cannot grow. Does nothing without `--scale`.
pub(crate) fn select(targets: &mut Vec<Target>, scale: bool, only: bool) -> BenchResult<()> {
    if !scale {
        return Ok(());
    }
    if !only {
        targets.retain(|t| DEFAULT_TARGETS.contains(&t.name));
    }
    if let Some(bad) = targets.iter().find(|t| REFUSED.contains(&t.name)) {
        bail!(
            "--scale: `{}` cannot run there: it has no batched write to grow a store with",
            bad.name
        );
    }
    Ok(())
}

/// Targets `--scale` refuses: no batched write to grow a store to a million
/// entries with, or not a store worth a curve.
pub(crate) const REFUSED: &[&str] = &["raw-postgres", "broken-queue"];

/// The scope of the data store's kv entries, log and queue.
const DATA: &[u8] = b"scale";
const NS: &[u8] = b"ns";
const LOG: &[u8] = b"log";
/// Bytes of a kv value and a log entry.
const VALUE_LEN: usize = 100;
/// Bytes of a queue item.
const ITEM_LEN: usize = 32;
/// Entries per scan call.
const PAGE: usize = 100;
/// Threads that create the scopes while growing (writes of different scopes).
const GROW_THREADS: usize = 8;
/// Stale scopes are stamped this long before the live ones; gc runs with a
/// TTL of half of it.
const AGE: Duration = Duration::from_secs(2 * 3600);

/// How far the stores grow and how much each sample does.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    /// Sizes of the kv, log and queue of the data store.
    pub(crate) entries: Vec<usize>,
    /// Sizes of the scopes store.
    pub(crate) scopes: Vec<usize>,
    /// Thread counts of the threads phase.
    pub(crate) threads: Vec<usize>,
    /// Runs of every sample; the table shows the median of their ns/op.
    pub(crate) runs: usize,
    /// Single calls per run of `kv get` (every target) and of the writes and
    /// pops of the targets that do not fsync every commit.
    pub(crate) sample: usize,
    /// Single writes and pops per run on the targets that fsync every commit.
    pub(crate) fsync_sample: usize,
    /// Scan calls (of [`PAGE`] entries after a random cursor) per run.
    pub(crate) scans: usize,
    /// Stale scopes created (timed, one call each) then removed by one `gc`, per run.
    pub(crate) stale: usize,
    /// The same for the targets that fsync every commit.
    pub(crate) fsync_stale: usize,
    /// Values per batched write while growing.
    pub(crate) batch: usize,
    /// The most scopes the targets that fsync every commit grow to: scopes
    /// are created one `kv_put` each (there is no write across scopes), and
    /// 100k fsyncs take minutes on a shared virtual disk.
    pub(crate) fsync_max_scopes: Option<usize>,
}

impl Plan {
    /// The default plan, or the `--quick` one; `max` drops every larger size.
    pub(crate) fn new(quick: bool, runs: Option<u32>, max: Option<usize>) -> BenchResult<Self> {
        let mut plan = if quick {
            Self {
                entries: vec![1_000, 10_000, 100_000],
                scopes: vec![100, 1_000, 10_000],
                threads: vec![1, 2, 4, 8],
                runs: 3,
                sample: 400,
                fsync_sample: 16,
                scans: 40,
                stale: 100,
                fsync_stale: 10,
                batch: 1_000,
                fsync_max_scopes: Some(1_000),
            }
        } else {
            Self {
                entries: vec![10_000, 100_000, 1_000_000],
                scopes: vec![1_000, 10_000, 100_000],
                threads: vec![1, 2, 4, 8],
                runs: 5,
                sample: 4_000,
                fsync_sample: 200,
                scans: 400,
                stale: 1_000,
                fsync_stale: 100,
                batch: 5_000,
                fsync_max_scopes: Some(10_000),
            }
        };
        if let Some(runs) = runs {
            plan.runs = runs as usize;
        }
        if let Some(max) = max {
            plan.entries.retain(|&n| n <= max);
            plan.scopes.retain(|&n| n <= max);
            if plan.entries.is_empty() || plan.scopes.is_empty() {
                bail!(
                    "--max-size {max} is below the smallest size of the plan ({} entries, {} scopes)",
                    if quick { 1_000 } else { 10_000 },
                    if quick { 100 } else { 1_000 }
                );
            }
        }
        Ok(plan)
    }

    fn writes(&self, target: &Target) -> usize {
        if target.fsync_per_commit {
            self.fsync_sample
        } else {
            self.sample
        }
    }

    fn stale_for(&self, target: &Target) -> usize {
        if target.fsync_per_commit {
            self.fsync_stale
        } else {
            self.stale
        }
    }
}

/// What a curve's x axis counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Axis {
    /// Entries of the kv, the log or the queue.
    Entries,
    /// Scopes in the store.
    Scopes,
    /// Threads calling at once.
    Threads,
}

/// One timed operation: a panel of the chart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    /// The size axis it is measured on.
    pub(crate) axis: Axis,
    /// Whether the threads phase runs it too.
    pub(crate) threaded: bool,
}

/// Every operation, in table order.
pub(crate) const OPS: &[Op] = &[
    Op {
        id: "kv.get",
        label: "kv get 100 B (random key)",
        axis: Axis::Entries,
        threaded: true,
    },
    Op {
        id: "kv.put",
        label: "kv put 100 B (overwrite a random key)",
        axis: Axis::Entries,
        threaded: true,
    },
    Op {
        id: "log.append",
        label: "append 100 B to one log",
        axis: Axis::Entries,
        threaded: true,
    },
    Op {
        id: "log.scan",
        label: "scan a page of 100 after a random cursor",
        axis: Axis::Entries,
        threaded: true,
    },
    Op {
        id: "queue.pop",
        label: "queue pop (32 B items)",
        axis: Axis::Entries,
        threaded: true,
    },
    Op {
        id: "scope.create",
        label: "create a scope (one kv put)",
        axis: Axis::Scopes,
        threaded: false,
    },
    Op {
        id: "scope.gc",
        label: "gc, per stale scope removed",
        axis: Axis::Scopes,
        threaded: false,
    },
];

/// One run of one sample: its wall cost per op and each call's latency.
#[derive(Debug, Default)]
struct RunSample {
    ns_per_op: f64,
    lat_ns: Vec<u64>,
}

/// One point of a curve.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) target: String,
    pub(crate) op: &'static str,
    pub(crate) axis: Axis,
    /// The size (entries or scopes) or the thread count.
    pub(crate) x: usize,
    /// Operations timed per run.
    pub(crate) ops: usize,
    /// Median over runs of wall nanoseconds per operation (for threads:
    /// wall time of all threads over all their operations).
    pub(crate) ns_per_op: f64,
    /// Wall nanoseconds per operation of each run.
    pub(crate) runs_ns_per_op: Vec<f64>,
    /// Latency percentiles of every call of every run (a `gc` row: per gc call).
    pub(crate) p50_ns: u64,
    pub(crate) p99_ns: u64,
    /// The figure the verdict and the chart use: on the size axes the p50 per
    /// call (per scope removed for gc), which a loaded machine's preemptions
    /// barely move; on the threads axis the wall ns/op, since there the
    /// question is throughput.
    pub(crate) cost_ns: f64,
}

impl Row {
    fn with_cost(mut self) -> Self {
        self.cost_ns = match (self.axis, self.op) {
            (Axis::Threads, _) => self.ns_per_op,
            (_, "scope.gc") => self.p50_ns as f64 / self.ops.max(1) as f64,
            _ => self.p50_ns as f64,
        };
        self
    }
}

/// The slope of log(cost) against log(x) between two neighbouring points.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SlopeStep {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) slope: f64,
    /// cost at `to` / cost at `from`.
    pub(crate) ratio: f64,
}

/// Whether a curve stays flat (or grows no faster than log n).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Verdict {
    pub(crate) target: String,
    pub(crate) op: &'static str,
    pub(crate) axis: Axis,
    /// Least-squares slope of log(ns/op) against log(x) over every point.
    pub(crate) fit_slope: f64,
    pub(crate) slopes: Vec<SlopeStep>,
    /// `flat` (flat or at most log n) or `bends`.
    #[serde(rename = "verdict")]
    pub(crate) outcome: &'static str,
    /// The first step that bends: `[from, to]`.
    pub(crate) bend: Option<[usize; 2]>,
    pub(crate) text: String,
}

/// A step bends when its log-log slope is above this...
pub(crate) const SLOPE_LIMIT: f64 = 0.15;
/// ...and the cost rises by more than this factor (below it is noise on a
/// loaded machine; log n itself rises 1.25x from 10k to 100k and 1.2x from 100k to 1M).
pub(crate) const NOISE_RATIO: f64 = 1.25;

/// The same for the threads axis, where the figure is wall time per op and
/// swings more from run to run on a shared machine.
pub(crate) const THREADS_NOISE_RATIO: f64 = 1.5;

/// Everything `--scale` produced; serialised as `scale.json`.
#[derive(Debug, Serialize)]
pub(crate) struct ScaleResults {
    pub(crate) tool: &'static str,
    pub(crate) version: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) quick: bool,
    pub(crate) machine: Machine,
    pub(crate) dir: String,
    pub(crate) dir_mount: String,
    pub(crate) dir_fs: String,
    pub(crate) plan: Plan,
    /// How the stores were grown and what was timed, in words.
    pub(crate) method: Vec<String>,
    pub(crate) targets: Vec<TargetInfo>,
    pub(crate) skipped: Vec<String>,
    pub(crate) rows: Vec<Row>,
    pub(crate) verdict_rule: String,
    pub(crate) verdicts: Vec<Verdict>,
    pub(crate) total_secs: f64,
}

impl ScaleResults {
    /// The rows of one curve, in x order.
    pub(crate) fn curve(&self, target: &str, op: &str, axis: Axis) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.target == target && r.op == op && r.axis == axis)
            .collect();
        rows.sort_by_key(|r| r.x);
        rows
    }
}

/// The method lines: the JSON's `method` and the header of the printout.
pub(crate) fn method(plan: &Plan) -> Vec<String> {
    vec![
        format!(
            "grown, untimed, with batches of {}: kv_put_batch (100 B values, keys in order), \
             append_batch (100 B), queue_push (32 B); scopes one kv_put each from {GROW_THREADS} \
             threads. The columns that fsync every commit (redb, raw-redb, postgres) could not \
             make a million single-op writes in reasonable time; batches give them one commit per \
             {} values",
            plan.batch, plan.batch
        ),
        format!(
            "timed at each size: single calls only, {} runs each; kv get {} random keys; kv put, \
             append and pop {} calls ({} on the fsync columns); {} scans of {PAGE} after a random \
             cursor; {} scopes created one kv_put each ({} on the fsync columns), stamped {} h \
             before the live ones, then one gc (TTL {} h) that must remove exactly them: its cost \
             is per scope removed",
            plan.runs,
            plan.sample,
            plan.sample,
            plan.fsync_sample,
            plan.scans,
            plan.stale,
            plan.fsync_stale,
            AGE.as_secs() / 3600,
            AGE.as_secs() / 7200,
        ),
        format!(
            "threads: the same samples split over {:?} threads, on the stores at their largest \
             size; ns/op is wall time over all calls (falls when threads add throughput)",
            plan.threads
        ),
        "the data store runs on the wall clock; the scopes store on a manual clock".to_owned(),
        match plan.fsync_max_scopes {
            Some(max) => format!(
                "the fsync columns grow to at most {} scopes: a scope is created by one kv_put \
                 (no write spans scopes), and 100k single fsynced commits take minutes",
                short(max)
            ),
            None => "every column grows to every size".to_owned(),
        },
    ]
}

/// A target's two stores and what they hold.
struct Live {
    target: Target,
    dirs: [TempDir; 2],
    data: SharedStorage,
    scopes: SharedStorage,
    clock: ManualClock,
    /// The live scopes' stamp.
    stamp: i64,
    kv: usize,
    ids: Vec<i64>,
    /// Items in the queue, and the next item's number.
    queued: usize,
    next_item: u64,
    scope_count: usize,
    stale_made: usize,
    rng: Rng,
    runs: BTreeMap<(&'static str, Axis, usize), Vec<RunSample>>,
    ops_per_run: BTreeMap<(&'static str, Axis, usize), usize>,
}

impl Drop for Live {
    fn drop(&mut self) {
        for dir in &self.dirs {
            crate::pg::drop_store(dir.path());
        }
    }
}

/// xorshift64*: the same keys on every target, no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:09}").into_bytes()
}

/// A value that names its key: the first 8 bytes are `i`, then `gen`, then filler.
fn value(i: usize, generation: u8) -> Vec<u8> {
    let mut v = vec![b'v'; VALUE_LEN];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v[8] = generation;
    v
}

fn item(n: u64) -> Vec<u8> {
    let mut v = vec![b'q'; ITEM_LEN];
    v[..8].copy_from_slice(&n.to_le_bytes());
    v
}

fn item_number(item: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(item.get(..8)?.try_into().ok()?))
}

fn scope_name(i: usize) -> Vec<u8> {
    format!("s{i:08}").into_bytes()
}

/// Run `total` calls of `call(thread, index)` split over `threads` threads
/// started together ([`workloads::parallel`]), each call timed; returns the
/// sample and each call's token (in no order).
fn timed<F>(threads: usize, total: usize, call: F) -> BenchResult<(RunSample, Vec<u64>)>
where
    F: Fn(usize, usize) -> BenchResult<u64> + Sync,
{
    let threads = threads.max(1);
    let (secs, lat_ns, parts) = workloads::parallel(threads, |t, lat| {
        let mine = (t..total).step_by(threads);
        lat.reserve(mine.len());
        mine.map(|i| workloads::timed(lat, || call(t, i)))
            .collect::<BenchResult<Vec<u64>>>()
    })?;
    let sample = RunSample {
        ns_per_op: secs * 1e9 / total.max(1) as f64,
        lat_ns,
    };
    Ok((sample, parts.into_iter().flatten().collect()))
}

impl Live {
    fn open(target: &Target, base: &Path) -> BenchResult<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix(&format!("{}-data", target.name))
            .tempdir_in(base)?;
        let scopes_dir = tempfile::Builder::new()
            .prefix(&format!("{}-scopes", target.name))
            .tempdir_in(base)?;
        let clock = ManualClock::starting_now();
        let stamp = vgi_storage::Clock::now_millis(&clock);
        let data = target.open(data_dir.path(), system_clock())?;
        let scopes = target.open(scopes_dir.path(), Arc::new(clock.clone()))?;
        Ok(Self {
            target: target.clone(),
            dirs: [data_dir, scopes_dir],
            data,
            scopes,
            clock,
            stamp,
            kv: 0,
            ids: Vec::new(),
            queued: 0,
            next_item: 0,
            scope_count: 0,
            stale_made: 0,
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            runs: BTreeMap::new(),
            ops_per_run: BTreeMap::new(),
        })
    }

    fn record(&mut self, op: &'static str, axis: Axis, x: usize, ops: usize, s: RunSample) {
        self.ops_per_run.insert((op, axis, x), ops);
        self.runs.entry((op, axis, x)).or_default().push(s);
    }

    /// Grow the kv, the log and the queue to `n` entries each, with batches.
    fn grow_entries(&mut self, n: usize, batch: usize) -> BenchResult<()> {
        while self.kv < n {
            let end = (self.kv + batch).min(n);
            let entries: Vec<(Vec<u8>, Vec<u8>)> =
                (self.kv..end).map(|i| (key(i), value(i, 0))).collect();
            self.data.kv_put_batch(DATA, &entries)?;
            self.kv = end;
        }
        while self.ids.len() < n {
            let count = batch.min(n - self.ids.len());
            let values: Vec<Vec<u8>> = (0..count).map(|j| value(self.ids.len() + j, 0)).collect();
            let ids = self.data.append_batch(DATA, NS, LOG, &values)?;
            if ids.len() != count || ids.first() <= self.ids.last() {
                bail!(
                    "append_batch of {count} values returned {} ids, not all above the last ({:?})",
                    ids.len(),
                    self.ids.last()
                );
            }
            self.ids.extend(ids);
        }
        self.refill(n, batch)
    }

    /// Push items until the queue holds `n`.
    fn refill(&mut self, n: usize, batch: usize) -> BenchResult<()> {
        while self.queued < n {
            let count = batch.min(n - self.queued);
            let items: Vec<Vec<u8>> = (0..count as u64)
                .map(|j| item(self.next_item + j))
                .collect();
            self.data.queue_push(DATA, &items)?;
            self.next_item += count as u64;
            self.queued += count;
        }
        Ok(())
    }

    /// Grow the scopes store to `n` live scopes, from several threads.
    fn grow_scopes(&mut self, n: usize) -> BenchResult<()> {
        self.clock.set(self.stamp);
        let from = self.scope_count;
        let store = &self.scopes;
        timed(GROW_THREADS, n.saturating_sub(from), |_, i| {
            store.kv_put(&scope_name(from + i), b"k", b"live")?;
            Ok(0)
        })?;
        self.scope_count = self.scope_count.max(n);
        Ok(())
    }

    /// Time every entries op at the current size with `threads` threads.
    fn measure_entries(
        &mut self,
        plan: &Plan,
        axis: Axis,
        x: usize,
        threads: usize,
    ) -> BenchResult<()> {
        let writes = plan.writes(&self.target);
        let n = self.kv;

        // kv get: random existing keys, each value checked.
        let picks: Vec<usize> = (0..plan.sample).map(|_| self.rng.below(n)).collect();
        let data = Arc::clone(&self.data);
        let (s, _) = timed(threads, picks.len(), |_, i| {
            let k = picks[i];
            match data.kv_get(DATA, &key(k))? {
                Some(v) if v.len() == VALUE_LEN && v[..8] == (k as u64).to_le_bytes() => Ok(0),
                other => bail!(
                    "kv_get of key {k} returned {:?} bytes, not its value",
                    other.map(|v| v.len())
                ),
            }
        })?;
        self.record("kv.get", axis, x, picks.len(), s);

        // kv put: overwrite random existing keys, so the size stays n.
        let picks: Vec<usize> = (0..writes).map(|_| self.rng.below(n)).collect();
        let generation = (self.rng.next() % 250) as u8 + 1;
        let (s, _) = timed(threads, picks.len(), |_, i| {
            data.kv_put(DATA, &key(picks[i]), &value(picks[i], generation))?;
            Ok(0)
        })?;
        self.record("kv.put", axis, x, picks.len(), s);

        // append to the one log of n entries.
        let base = self.ids.len();
        let (s, new_ids) = timed(threads, writes, |_, i| {
            let id = data.append(DATA, NS, LOG, &value(base + i, 0))?;
            u64::try_from(id).map_err(|_| format!("append returned a negative id {id}").into())
        })?;
        let mut new_ids: Vec<i64> = new_ids.into_iter().map(|id| id as i64).collect();
        new_ids.sort_unstable();
        if new_ids.first().is_some_and(|f| Some(f) <= self.ids.last()) {
            bail!("append returned an id at or below an earlier one");
        }
        self.ids.extend(new_ids);
        self.record("log.append", axis, x, writes, s);

        // scan a page after a random cursor that has at least a page after it.
        let ids = &self.ids;
        let cursors: Vec<usize> = (0..plan.scans)
            .map(|_| self.rng.below(ids.len().saturating_sub(PAGE).max(1)))
            .collect();
        let (s, _) = timed(threads, cursors.len(), |_, i| {
            let at = cursors[i];
            let page = data.scan(DATA, NS, LOG, ids[at], PAGE)?;
            let want = (ids.len() - at - 1).min(PAGE);
            if page.len() != want
                || page.first().map(|e| e.id) != ids.get(at + 1).copied()
                || page.windows(2).any(|w| w[0].id >= w[1].id)
            {
                bail!(
                    "scan after id {} returned {} entries, want {want} in id order from the next id",
                    ids[at],
                    page.len()
                );
            }
            Ok(0)
        })?;
        self.record("log.scan", axis, x, cursors.len(), s);

        // pop from a queue of n items; every item once.
        let (s, popped) = timed(threads, writes, |_, _| match data.queue_pop(DATA)? {
            Some(it) => item_number(&it).ok_or_else(|| "a popped item is too short".into()),
            None => bail!("the queue of {n} items ran empty"),
        })?;
        let unique: HashSet<u64> = popped.iter().copied().collect();
        if unique.len() != popped.len() {
            bail!(
                "{} of {} popped items were claimed twice",
                popped.len() - unique.len(),
                popped.len()
            );
        }
        self.record("queue.pop", axis, x, writes, s);
        self.queued -= writes;
        self.refill(n, plan.batch)
    }

    /// Create the stale sample of scopes (timed), then gc them (timed).
    fn measure_scopes(&mut self, plan: &Plan, x: usize) -> BenchResult<()> {
        let k = plan.stale_for(&self.target);
        let age = i64::try_from(AGE.as_millis()).unwrap_or(i64::MAX);
        self.clock.set(self.stamp - age);
        let first = self.stale_made;
        let store = Arc::clone(&self.scopes);
        let made = timed(1, k, |_, i| {
            store.kv_put(format!("stale-{:08}", first + i).as_bytes(), b"k", b"stale")?;
            Ok(0)
        });
        self.clock.set(self.stamp);
        let (s, _) = made?;
        self.stale_made += k;
        self.record("scope.create", Axis::Scopes, x, k, s);

        let start = Instant::now();
        let report = store.gc(AGE / 2)?;
        let ns = workloads::nanos(start.elapsed());
        if report.scopes.len() != k || report.scopes.iter().any(|s| !s.starts_with(b"stale-")) {
            bail!(
                "gc removed {} scopes, want exactly the {k} stale ones (live ones must stay)",
                report.scopes.len()
            );
        }
        self.record(
            "scope.gc",
            Axis::Scopes,
            x,
            k,
            RunSample {
                ns_per_op: ns as f64 / k as f64,
                lat_ns: vec![ns],
            },
        );
        Ok(())
    }

    fn rows(&self) -> Vec<Row> {
        self.runs
            .iter()
            .map(|(&(op, axis, x), runs)| {
                let per_run: Vec<f64> = runs.iter().map(|r| r.ns_per_op).collect();
                let mut lat: Vec<u64> =
                    runs.iter().flat_map(|r| r.lat_ns.iter().copied()).collect();
                lat.sort_unstable();
                Row {
                    target: self.target.name.to_owned(),
                    op,
                    axis,
                    x,
                    ops: self.ops_per_run.get(&(op, axis, x)).copied().unwrap_or(0),
                    ns_per_op: median(&per_run),
                    runs_ns_per_op: per_run,
                    p50_ns: percentile(&lat, 50.0),
                    p99_ns: percentile(&lat, 99.0),
                    cost_ns: 0.0,
                }
                .with_cost()
            })
            .collect()
    }
}

/// Fit and judge one curve.
pub(crate) fn judge(target: &str, op: &'static str, axis: Axis, rows: &[&Row]) -> Verdict {
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.cost_ns > 0.0)
        .map(|r| ((r.x as f64).log10(), r.cost_ns.log10()))
        .collect();
    let fit_slope = if pts.len() < 2 {
        0.0
    } else {
        let n = pts.len() as f64;
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx > 0.0 { sxy / sxx } else { 0.0 }
    };
    let slopes: Vec<SlopeStep> = rows
        .windows(2)
        .filter(|w| w[0].cost_ns > 0.0 && w[1].x > w[0].x)
        .map(|w| {
            let ratio = w[1].cost_ns / w[0].cost_ns;
            SlopeStep {
                from: w[0].x,
                to: w[1].x,
                slope: ratio.log10() / (w[1].x as f64 / w[0].x as f64).log10(),
                ratio,
            }
        })
        .collect();
    let noise = if axis == Axis::Threads {
        THREADS_NOISE_RATIO
    } else {
        NOISE_RATIO
    };
    let bend = slopes
        .iter()
        .find(|s| s.slope > SLOPE_LIMIT && s.ratio > noise);
    let steps = slopes
        .iter()
        .map(|s| format!("{:.2}", s.slope))
        .collect::<Vec<_>>()
        .join(", ");
    let what = if axis == Axis::Threads {
        "wall ns/op"
    } else if op == "scope.gc" {
        "p50 per scope"
    } else {
        "p50"
    };
    let (outcome, text) = match bend {
        None => (
            "flat",
            format!("flat or at most log n ({what}: fit slope {fit_slope:.2}; steps {steps})"),
        ),
        Some(s) => (
            "bends",
            format!(
                "bends from {} to {} {}: {what} x{:.1} (slope {:.2}; fit {fit_slope:.2})",
                short(s.from),
                short(s.to),
                match axis {
                    Axis::Threads => "threads",
                    Axis::Scopes => "scopes",
                    Axis::Entries => "entries",
                },
                s.ratio,
                s.slope
            ),
        ),
    };
    Verdict {
        target: target.to_owned(),
        op,
        axis,
        fit_slope,
        slopes: slopes.clone(),
        outcome,
        bend: bend.map(|s| [s.from, s.to]),
        text,
    }
}

/// A size, short: 100, 10k, 1M.
pub(crate) fn short(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// Grow every target through the plan, then the threads phase; the rows and
/// verdicts of every curve.
pub(crate) fn measure(
    targets: &[Target],
    plan: &Plan,
    base: &Path,
) -> BenchResult<(Vec<Row>, Vec<Verdict>, Vec<TargetInfo>)> {
    let mut live = Vec::with_capacity(targets.len());
    let mut infos = Vec::new();
    for t in targets {
        let l =
            Live::open(t, base).map_err(|e| format!("{}: cannot open its stores: {e}", t.name))?;
        infos.push(TargetInfo {
            name: t.name.to_owned(),
            ceiling_of: t.ceiling_of.map(str::to_owned),
            durability: t.durability.to_owned(),
            store: l.data.name().to_owned(),
        });
        live.push(l);
    }
    let steps = plan.entries.len().max(plan.scopes.len());
    for step in 0..steps {
        // Targets take turns in a rotated order from step to step, so drift on
        // the machine does not land on one column.
        for i in 0..live.len() {
            let at = (i + step) % live.len();
            let l = &mut live[at];
            let name = l.target.name;
            let fail = |what: &str, n: usize, e: Box<dyn std::error::Error + Send + Sync>| {
                format!("{name}, {what} at {}: {e}", short(n))
            };
            if let Some(&n) = plan.entries.get(step) {
                progress(name, &format!("growing to {} entries", short(n)));
                let t0 = Instant::now();
                l.grow_entries(n, plan.batch)
                    .map_err(|e| fail("growing", n, e))?;
                let grew = t0.elapsed().as_secs_f64();
                progress(
                    name,
                    &format!("{} entries (grown in {grew:.1} s): timing", short(n)),
                );
                for _ in 0..plan.runs {
                    l.measure_entries(plan, Axis::Entries, n, 1)
                        .map_err(|e| fail("timing", n, e))?;
                }
            }
            if let Some(&n) = plan.scopes.get(step) {
                if l.target.fsync_per_commit && plan.fsync_max_scopes.is_some_and(|max| n > max) {
                    progress(
                        name,
                        &format!("{} scopes: skipped (fsync column, see method)", short(n)),
                    );
                    continue;
                }
                progress(name, &format!("growing to {} scopes", short(n)));
                l.grow_scopes(n).map_err(|e| fail("growing scopes", n, e))?;
                for _ in 0..plan.runs {
                    l.measure_scopes(plan, n)
                        .map_err(|e| fail("timing scopes", n, e))?;
                }
            }
        }
    }
    for l in &mut live {
        let name = l.target.name;
        for &t in &plan.threads {
            progress(name, &format!("{t} threads at {} entries", short(l.kv)));
            for _ in 0..plan.runs {
                l.measure_entries(plan, Axis::Threads, t, t)
                    .map_err(|e| format!("{name}, {t} threads: {e}"))?;
            }
        }
    }
    let rows: Vec<Row> = live.iter().flat_map(Live::rows).collect();
    drop(live);
    let mut verdicts = Vec::new();
    for t in targets {
        for op in OPS {
            let axes: &[Axis] = if op.threaded {
                &[op.axis, Axis::Threads]
            } else {
                &[op.axis]
            };
            for &axis in axes {
                let mut curve: Vec<&Row> = rows
                    .iter()
                    .filter(|r| r.target == t.name && r.op == op.id && r.axis == axis)
                    .collect();
                curve.sort_by_key(|r| r.x);
                verdicts.push(judge(t.name, op.id, axis, &curve));
            }
        }
    }
    Ok((rows, verdicts, infos))
}

fn progress(target: &str, what: &str) {
    eprintln!("[scale] {target:<11} {what}");
}

const OP_W: usize = 42;
const TARGET_W: usize = 12;
const CELL_W: usize = 24;

/// The table: per op and target, ns/op (p50/p99 per call) at each x, then the verdict.
pub(crate) fn table(r: &ScaleResults, axis_group: &[Axis]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for &axis in axis_group {
        let xs: Vec<usize> = match axis {
            Axis::Entries => r.plan.entries.clone(),
            Axis::Scopes => r.plan.scopes.clone(),
            Axis::Threads => r.plan.threads.clone(),
        };
        let heading = match axis {
            Axis::Entries => "entries in the kv / log / queue",
            Axis::Scopes => "scopes in the store",
            Axis::Threads => "threads (stores at their largest size)",
        };
        let _ = write!(
            out,
            "{:<OP_W$}{:<TARGET_W$}",
            format!("ns/op by {heading}"),
            "target"
        );
        for x in &xs {
            let _ = write!(
                out,
                "{:>CELL_W$}",
                if axis == Axis::Threads {
                    format!("{x} thr")
                } else {
                    short(*x)
                }
            );
        }
        out.push_str("   verdict\n");
        out.push_str(&"-".repeat(OP_W + TARGET_W + CELL_W * xs.len() + 40));
        out.push('\n');
        for op in OPS
            .iter()
            .filter(|o| o.axis == axis || (axis == Axis::Threads && o.threaded))
        {
            for (i, t) in r.targets.iter().enumerate() {
                let label = if i == 0 { op.label } else { "" };
                let _ = write!(out, "{label:<OP_W$}{:<TARGET_W$}", t.name);
                let curve = r.curve(&t.name, op.id, axis);
                for x in &xs {
                    let cell = curve
                        .iter()
                        .find(|row| row.x == *x)
                        .map_or("-".to_owned(), |row| {
                            format!(
                                "{} ({}/{})",
                                latency(row.ns_per_op.round() as u64),
                                latency(row.p50_ns),
                                latency(row.p99_ns)
                            )
                        });
                    let _ = write!(out, "{cell:>CELL_W$}");
                }
                let verdict = r
                    .verdicts
                    .iter()
                    .find(|v| v.target == t.name && v.op == op.id && v.axis == axis)
                    .map_or("", |v| v.text.as_str());
                let _ = writeln!(out, "   {verdict}");
            }
        }
        out.push('\n');
    }
    out
}

/// The verdict rule, in words.
pub(crate) fn verdict_rule() -> String {
    format!(
        "a curve is flat (flat or growing no faster than log n) unless a step between \
         neighbouring sizes has a log-log slope above {SLOPE_LIMIT} and raises the cost by more \
         than {NOISE_RATIO}x ({THREADS_NOISE_RATIO}x on the threads axis); the first such step \
         is named as the bend. The cost judged: on the size axes the p50 per call (per scope \
         removed for gc), because on a loaded machine a preemption of milliseconds lands in \
         the wall time of a run of sub-microsecond calls and moves its mean several times \
         over; on the threads axis the wall time per op (the median of the runs), since \
         there the question is throughput. ns/op (median of the runs' wall time per call) \
         and p99 are in the table beside it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(usize, f64)]) -> Vec<Row> {
        points
            .iter()
            .map(|&(x, ns)| Row {
                target: "t".to_owned(),
                op: "kv.get",
                axis: Axis::Entries,
                x,
                ops: 1,
                ns_per_op: ns,
                runs_ns_per_op: vec![ns],
                p50_ns: 0,
                p99_ns: 0,
                cost_ns: ns,
            })
            .collect()
    }

    fn verdict(points: &[(usize, f64)]) -> Verdict {
        let rows = curve(points);
        let refs: Vec<&Row> = rows.iter().collect();
        judge("t", "kv.get", Axis::Entries, &refs)
    }

    #[test]
    fn a_log_n_curve_is_flat() {
        // cost proportional to log10(n): 4, 5, 6.
        let v = verdict(&[(10_000, 400.0), (100_000, 500.0), (1_000_000, 600.0)]);
        assert_eq!(v.outcome, "flat", "{}", v.text);
        assert!(v.bend.is_none());
        assert!(
            v.fit_slope > 0.0 && v.fit_slope < SLOPE_LIMIT,
            "{}",
            v.fit_slope
        );
    }

    #[test]
    fn a_linear_step_is_named_as_the_bend() {
        let v = verdict(&[(10_000, 400.0), (100_000, 420.0), (1_000_000, 4_200.0)]);
        assert_eq!(v.outcome, "bends");
        assert_eq!(v.bend, Some([100_000, 1_000_000]));
        assert!((v.slopes[1].slope - 1.0).abs() < 1e-9);
        assert!(v.text.contains("100k to 1M"), "{}", v.text);
    }

    #[test]
    fn a_small_rise_over_a_short_step_is_noise_not_a_bend() {
        // 1 -> 2 threads: slope 0.26 but only 1.2x, under the noise ratio.
        let v = verdict(&[(1, 1_000.0), (2, 1_200.0), (4, 1_100.0)]);
        assert_eq!(v.outcome, "flat", "{}", v.text);
    }

    #[test]
    fn sizes_print_short() {
        assert_eq!(short(1_000_000), "1M");
        assert_eq!(short(10_000), "10k");
        assert_eq!(short(1_500), "1500");
        assert_eq!(short(8), "8");
    }

    #[test]
    fn max_size_drops_the_larger_sizes() -> BenchResult<()> {
        let plan = Plan::new(false, None, Some(100_000))?;
        assert_eq!(plan.entries, [10_000, 100_000]);
        assert_eq!(plan.scopes, [1_000, 10_000, 100_000]);
        assert!(Plan::new(false, None, Some(999)).is_err());
        Ok(())
    }
}
