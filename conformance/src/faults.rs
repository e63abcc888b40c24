//! Faults: a full disk (the file size capped with `RLIMIT_FSIZE`) or a store
//! made read-only, partway through a random run of every write operation.
//!
//! Every call must take full effect and return `Ok`, or return `Err` of the
//! fault's kind and take none. The run is a plan drawn from a seed (parent and
//! child draw the same one); the child, or this process, runs it and reports
//! each call's result; a plain model replays the `Ok` ones, and once the fault
//! is lifted and the store reopened, the store must hold exactly the model's
//! state. A pop whose commit failed must not have handed its item out: the
//! model still has it queued, so the final drain finds it there exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vgi_storage_core::{
    ErrorKind, FunctionStorage, LogEntry, ManualClock, StorageError, dirs, gc_cutoff_millis,
};

use crate::child::{self, Job, Rng, arg, hex, report, unhex};
use crate::harness::{self, CheckResult, Failure, OrFail, Outcome, Run};
use crate::{Factory, Fixture};

const SCOPES: [&[u8]; 3] = [b"a", b"", b"\xff\0"];
const KEYS: [&[u8]; 3] = [b"k", b"", b"\0"];
/// `(ns, key)` of the logs each scope may hold.
const LOGS: [(&[u8], &[u8]); 2] = [(b"n", b"k"), (b"", b"")];

/// One call of a run, with its arguments drawn in advance.
#[derive(Debug, Clone)]
enum Op {
    Put(usize, usize, Vec<u8>),
    Del(usize, usize),
    Cas(usize, usize, Option<Vec<u8>>, Option<Vec<u8>>),
    Append(usize, usize, Vec<u8>),
    AppendBatch(usize, usize, Vec<Vec<u8>>),
    PutBatch(usize, Vec<(usize, Vec<u8>)>),
    Push(usize, Vec<Vec<u8>>),
    Pop(usize),
    Clear(usize),
    /// Move the clock by `advance` ms, then `gc` with a ttl of `ttl` ms.
    Gc(u64, u64),
    Get(usize, usize),
    Scan(usize, usize),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Put(..) => "kv_put",
            Op::Del(..) => "kv_del",
            Op::Cas(..) => "kv_compare_and_swap",
            Op::Append(..) => "append",
            Op::AppendBatch(..) => "append_batch",
            Op::PutBatch(..) => "kv_put_batch",
            Op::Push(..) => "queue_push",
            Op::Pop(..) => "queue_pop",
            Op::Clear(..) => "clear",
            Op::Gc(..) => "gc",
            Op::Get(..) => "kv_get",
            Op::Scan(..) => "scan",
        }
    }
}

/// A value of a random size, most small, some of many pages.
fn value(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0..=4 => rng.between(0, 200),
        5..=8 => rng.between(1024, 16 * 1024),
        _ => rng.between(32 * 1024, 96 * 1024),
    };
    rng.bytes(len)
}

/// The calls of one run, drawn from `seed`.
#[allow(clippy::many_single_char_names)] // s, k, l, v, n as in the trait
fn plan(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    // What the plan last wrote to each key, so a CAS often expects it.
    let mut last: HashMap<(usize, usize), Option<Vec<u8>>> = HashMap::new();
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, k, l) = (
            rng.below(SCOPES.len()),
            rng.below(KEYS.len()),
            rng.below(LOGS.len()),
        );
        let op = match rng.below(24) {
            0..=3 => {
                let v = value(&mut rng);
                last.insert((s, k), Some(v.clone()));
                Op::Put(s, k, v)
            }
            4 => {
                last.insert((s, k), None);
                Op::Del(s, k)
            }
            5..=7 => {
                let expected = match rng.below(4) {
                    0 => None,
                    1 => Some(value(&mut rng)),
                    _ => last.get(&(s, k)).cloned().flatten(),
                };
                let new = (rng.below(5) != 0).then(|| value(&mut rng));
                last.insert((s, k), new.clone());
                Op::Cas(s, k, expected, new)
            }
            8..=10 => Op::Append(s, l, value(&mut rng)),
            11 => {
                let n = rng.between(1, 4);
                Op::AppendBatch(s, l, (0..n).map(|_| value(&mut rng)).collect())
            }
            12 => {
                let n = rng.between(1, 4);
                let entries: Vec<(usize, Vec<u8>)> = (0..n)
                    .map(|_| (rng.below(KEYS.len()), value(&mut rng)))
                    .collect();
                for (k, v) in &entries {
                    last.insert((s, *k), Some(v.clone()));
                }
                Op::PutBatch(s, entries)
            }
            13..=15 => {
                let n = rng.between(1, 4);
                Op::Push(s, (0..n).map(|_| value(&mut rng)).collect())
            }
            16..=18 => Op::Pop(s),
            19 => Op::Clear(s),
            20 => {
                let advance = [0, 1, 500, 2000][rng.below(4)];
                let ttl = [0, 1000, 60_000][rng.below(3)];
                Op::Gc(advance, ttl)
            }
            21 | 22 => Op::Get(s, k),
            _ => Op::Scan(s, l),
        };
        ops.push(op);
    }
    ops
}

/// What one call returned, as the child reports it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Res {
    Unit,
    Bool(bool),
    Id(i64),
    Ids(Vec<i64>),
    Bytes(Option<Vec<u8>>),
    Scopes(Vec<Vec<u8>>),
    Entries(Vec<LogEntry>),
    /// An error of `kind`; `removed` lists the scopes a `GcInterrupted` removed.
    Err(String, Vec<Vec<u8>>),
}

impl std::fmt::Debug for Res {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::harness::show;
        match self {
            Res::Unit => f.write_str("Ok(())"),
            Res::Bool(b) => write!(f, "Ok({b})"),
            Res::Id(id) => write!(f, "Ok(id {id})"),
            Res::Ids(ids) => write!(f, "Ok(ids {ids:?})"),
            Res::Bytes(None) => f.write_str("Ok(None)"),
            Res::Bytes(Some(b)) => write!(f, "Ok(Some({}))", show(b)),
            Res::Scopes(s) => write!(f, "Ok(scopes {:?})", shown(s)),
            Res::Entries(e) => write!(
                f,
                "Ok(entries {:?})",
                e.iter().map(|e| (e.id, show(&e.value))).collect::<Vec<_>>()
            ),
            Res::Err(kind, removed) => write!(f, "Err({kind}, removed {:?})", shown(removed)),
        }
    }
}

fn x(bytes: &[u8]) -> String {
    format!("x{}", hex(bytes))
}

fn unx(text: &str) -> Option<Vec<u8>> {
    unhex(text.strip_prefix('x')?)
}

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(",")
}

fn unlist<T>(text: Option<&str>, f: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    match text {
        None | Some("") => Some(Vec::new()),
        Some(t) => t.split(',').map(f).collect(),
    }
}

impl Res {
    pub(crate) fn encode(&self) -> String {
        match self {
            Res::Unit => "unit".into(),
            Res::Bool(b) => format!("bool {}", u8::from(*b)),
            Res::Id(id) => format!("id {id}"),
            Res::Ids(ids) => format!("ids {}", list(ids, ToString::to_string)),
            Res::Bytes(None) => "bytes -".into(),
            Res::Bytes(Some(b)) => format!("bytes {}", x(b)),
            Res::Scopes(s) => format!("scopes {}", list(s, |s| x(s))),
            Res::Entries(e) => format!(
                "entries {}",
                list(e, |e| format!("{}:{}", e.id, x(&e.value)))
            ),
            Res::Err(kind, removed) => format!("err {kind} {}", list(removed, |s| x(s))),
        }
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut words = text.split(' ');
        let tag = words.next()?;
        let rest = words.next();
        Some(match tag {
            "unit" => Res::Unit,
            "bool" => Res::Bool(rest? == "1"),
            "id" => Res::Id(rest?.parse().ok()?),
            "ids" => Res::Ids(unlist(rest, |i| i.parse().ok())?),
            "bytes" if rest? == "-" => Res::Bytes(None),
            "bytes" => Res::Bytes(Some(unx(rest?)?)),
            "scopes" => Res::Scopes(unlist(rest, unx)?),
            "entries" => Res::Entries(unlist(rest, |e| {
                let (id, v) = e.split_once(':')?;
                Some(LogEntry {
                    id: id.parse().ok()?,
                    value: unx(v)?,
                })
            })?),
            "err" => Res::Err(rest?.to_owned(), unlist(words.next(), unx)?),
            _ => return None,
        })
    }

    fn from_err(err: &StorageError) -> Self {
        let removed = match err {
            StorageError::GcInterrupted { removed, .. } => removed.clone(),
            _ => Vec::new(),
        };
        Res::Err(format!("{:?}", err.kind()), removed)
    }
}

pub(crate) fn res<T>(r: Result<T, StorageError>, ok: impl FnOnce(T) -> Res) -> Res {
    match r {
        Ok(v) => ok(v),
        Err(e) => Res::from_err(&e),
    }
}

/// Run one call on the store.
fn execute(store: &dyn FunctionStorage, clock: &ManualClock, op: &Op) -> Res {
    let log = |l: usize| LOGS[l];
    match op {
        Op::Put(s, k, v) => res(store.kv_put(SCOPES[*s], KEYS[*k], v), |()| Res::Unit),
        Op::Del(s, k) => res(store.kv_del(SCOPES[*s], KEYS[*k]), |()| Res::Unit),
        Op::Cas(s, k, e, n) => res(
            store.kv_compare_and_swap(SCOPES[*s], KEYS[*k], e.as_deref(), n.as_deref()),
            Res::Bool,
        ),
        Op::Append(s, l, v) => res(store.append(SCOPES[*s], log(*l).0, log(*l).1, v), Res::Id),
        Op::AppendBatch(s, l, vs) => res(
            store.append_batch(SCOPES[*s], log(*l).0, log(*l).1, vs),
            Res::Ids,
        ),
        Op::PutBatch(s, entries) => {
            let entries: Vec<(Vec<u8>, Vec<u8>)> = entries
                .iter()
                .map(|(k, v)| (KEYS[*k].to_vec(), v.clone()))
                .collect();
            res(store.kv_put_batch(SCOPES[*s], &entries), |()| Res::Unit)
        }
        Op::Push(s, items) => res(store.queue_push(SCOPES[*s], items), |()| Res::Unit),
        Op::Pop(s) => res(store.queue_pop(SCOPES[*s]), Res::Bytes),
        Op::Clear(s) => res(store.clear(SCOPES[*s]), |()| Res::Unit),
        Op::Gc(advance, ttl) => {
            clock.advance(Duration::from_millis(*advance));
            res(store.gc(Duration::from_millis(*ttl)), |r| {
                Res::Scopes(r.scopes)
            })
        }
        Op::Get(s, k) => res(store.kv_get(SCOPES[*s], KEYS[*k]), Res::Bytes),
        Op::Scan(s, l) => res(
            store.scan(SCOPES[*s], log(*l).0, log(*l).1, -1, usize::MAX),
            Res::Entries,
        ),
    }
}

/// The plain model of the calls that returned `Ok`.
#[derive(Debug, Default)]
struct Model {
    kv: BTreeMap<(usize, usize), Vec<u8>>,
    logs: BTreeMap<(usize, usize), Vec<LogEntry>>,
    queues: BTreeMap<usize, VecDeque<Vec<u8>>>,
    /// Last write per scope, in ms since the run began.
    stamps: BTreeMap<usize, i64>,
    now: i64,
    ids: HashSet<i64>,
    /// Calls that failed with the fault's kind.
    faulted: usize,
    /// Calls that returned `Ok` after the first fault.
    ok_after_fault: usize,
}

fn scope_index(bytes: &[u8]) -> Option<usize> {
    SCOPES.iter().position(|s| *s == bytes)
}

fn shown(bytes: &[Vec<u8>]) -> Vec<String> {
    bytes.iter().map(|b| crate::harness::show(b)).collect()
}

impl Model {
    fn clear(&mut self, s: usize) {
        self.kv.retain(|(sc, _), _| *sc != s);
        self.logs.retain(|(sc, _), _| *sc != s);
        self.queues.remove(&s);
        self.stamps.remove(&s);
    }

    fn record_ids(
        &mut self,
        log: (usize, usize),
        ids: &[i64],
        values: &[Vec<u8>],
    ) -> Result<(), String> {
        if ids.len() != values.len() {
            return Err(format!(
                "{} values appended, {} ids returned",
                values.len(),
                ids.len()
            ));
        }
        let entries = self.logs.entry(log).or_default();
        for (id, v) in ids.iter().zip(values) {
            if *id < 0 || !self.ids.insert(*id) {
                return Err(format!("id {id} is negative or was returned before"));
            }
            if entries.last().is_some_and(|e| e.id >= *id) {
                return Err(format!("id {id} is not above the log's earlier ids"));
            }
            entries.push(LogEntry {
                id: *id,
                value: v.clone(),
            });
        }
        Ok(())
    }

    /// Replay one call's result; `fault` is the kind the fault may cause.
    #[allow(clippy::too_many_lines)]
    #[allow(clippy::many_single_char_names)] // s, k, l, v, e, n as in the trait
    fn apply(&mut self, op: &Op, got: &Res, fault: Option<ErrorKind>) -> Result<(), String> {
        if let Op::Gc(advance, _) = op {
            self.now += *advance as i64;
        }
        if let Res::Err(kind, removed) = got {
            let allowed = fault.map(|k| format!("{k:?}"));
            if allowed.as_deref() != Some(kind.as_str()) {
                return Err(format!(
                    "{} failed with {kind}, but the only error this fault allows is {}",
                    op.name(),
                    allowed.as_deref().unwrap_or("none")
                ));
            }
            self.faulted += 1;
            if let Op::Gc(_, ttl) = op {
                // A gc that stopped partway removed the listed scopes, each whole.
                for s in removed {
                    let i = scope_index(s).ok_or("gc reported a scope never written")?;
                    let cutoff = gc_cutoff_millis(self.now, Duration::from_millis(*ttl));
                    let stale = matches!(
                        (self.stamps.get(&i), cutoff),
                        (Some(t), Some(c)) if *t < c
                    );
                    if !stale {
                        return Err(format!(
                            "an interrupted gc removed the fresh scope {}",
                            crate::harness::show(s)
                        ));
                    }
                    self.clear(i);
                }
            }
            return Ok(());
        }
        if self.faulted > 0 {
            self.ok_after_fault += 1;
        }
        let now = self.now;
        let want = |w: Res| -> Result<(), String> {
            if *got == w {
                Ok(())
            } else {
                Err(format!(
                    "{} returned {}, the model says {}",
                    op.name(),
                    crate::harness::short(&got),
                    crate::harness::short(&w)
                ))
            }
        };
        match op {
            Op::Put(s, k, v) => {
                want(Res::Unit)?;
                self.kv.insert((*s, *k), v.clone());
                self.stamps.insert(*s, now);
            }
            Op::Del(s, k) => {
                want(Res::Unit)?;
                self.kv.remove(&(*s, *k));
            }
            Op::Cas(s, k, e, n) => {
                let wins = self.kv.get(&(*s, *k)) == e.as_ref();
                want(Res::Bool(wins))?;
                if wins {
                    match n {
                        Some(v) => self.kv.insert((*s, *k), v.clone()),
                        None => self.kv.remove(&(*s, *k)),
                    };
                    self.stamps.insert(*s, now);
                }
            }
            Op::Append(s, l, v) => {
                let &Res::Id(id) = got else {
                    return want(Res::Id(0));
                };
                self.record_ids((*s, *l), &[id], std::slice::from_ref(v))?;
                self.stamps.insert(*s, now);
            }
            Op::AppendBatch(s, l, vs) => {
                let Res::Ids(ids) = got else {
                    return want(Res::Ids(Vec::new()));
                };
                self.record_ids((*s, *l), ids, vs)?;
                self.stamps.insert(*s, now);
            }
            Op::PutBatch(s, entries) => {
                want(Res::Unit)?;
                for (k, v) in entries {
                    self.kv.insert((*s, *k), v.clone());
                }
                self.stamps.insert(*s, now);
            }
            Op::Push(s, items) => {
                want(Res::Unit)?;
                self.queues
                    .entry(*s)
                    .or_default()
                    .extend(items.iter().cloned());
                self.stamps.insert(*s, now);
            }
            Op::Pop(s) => {
                let head = self.queues.get_mut(s).and_then(VecDeque::pop_front);
                want(Res::Bytes(head))?;
            }
            Op::Clear(s) => {
                want(Res::Unit)?;
                self.clear(*s);
            }
            Op::Gc(_, ttl) => {
                let cutoff = gc_cutoff_millis(now, Duration::from_millis(*ttl));
                let stale: BTreeSet<usize> = self
                    .stamps
                    .iter()
                    .filter(|(_, t)| cutoff.is_some_and(|c| **t < c))
                    .map(|(s, _)| *s)
                    .collect();
                let Res::Scopes(removed) = got else {
                    return want(Res::Scopes(Vec::new()));
                };
                let removed_ix: BTreeSet<usize> =
                    removed.iter().filter_map(|s| scope_index(s)).collect();
                if removed_ix != stale || removed_ix.len() != removed.len() {
                    return Err(format!(
                        "gc removed {:?}, the model removes {:?}",
                        shown(removed),
                        stale
                            .iter()
                            .map(|s| crate::harness::show(SCOPES[*s]))
                            .collect::<Vec<_>>()
                    ));
                }
                for s in stale {
                    self.clear(s);
                }
            }
            Op::Get(s, k) => want(Res::Bytes(self.kv.get(&(*s, *k)).cloned()))?,
            Op::Scan(s, l) => want(Res::Entries(
                self.logs.get(&(*s, *l)).cloned().unwrap_or_default(),
            ))?,
        }
        Ok(())
    }

    /// The store must hold exactly the model's state; drains every queue.
    #[allow(clippy::needless_range_loop)] // the indices are the model's keys
    fn compare(&self, store: &dyn FunctionStorage) -> Result<(), Failure> {
        for s in 0..SCOPES.len() {
            for k in 0..KEYS.len() {
                let got = store
                    .kv_get(SCOPES[s], KEYS[k])
                    .or_fail("kv_get after the fault")?;
                let want = self.kv.get(&(s, k)).cloned();
                crate::harness::ensure!(
                    got == want,
                    "after the fault, kv ({}, {}) holds {}, the model of the Ok calls says {}: a call that failed took effect, or one that succeeded did not",
                    crate::harness::show(SCOPES[s]),
                    crate::harness::show(KEYS[k]),
                    crate::harness::short(&got.map(|v| crate::harness::show(&v))),
                    crate::harness::short(&want.map(|v| crate::harness::show(&v)))
                );
            }
            for l in 0..LOGS.len() {
                let got = store
                    .scan(SCOPES[s], LOGS[l].0, LOGS[l].1, -1, usize::MAX)
                    .or_fail("scan after the fault")?;
                let want = self.logs.get(&(s, l)).cloned().unwrap_or_default();
                let ids = |e: &[LogEntry]| e.iter().map(|e| e.id).collect::<Vec<_>>();
                crate::harness::ensure!(
                    got == want,
                    "after the fault, log {l} of scope {} holds ids {:?}, the model of the Ok calls says {:?}",
                    crate::harness::show(SCOPES[s]),
                    ids(&got),
                    ids(&want)
                );
            }
            let want: Vec<Vec<u8>> = self
                .queues
                .get(&s)
                .map(|q| q.iter().cloned().collect())
                .unwrap_or_default();
            let mut got = Vec::new();
            while let Some(item) = store
                .queue_pop(SCOPES[s])
                .or_fail("queue_pop after the fault")?
            {
                got.push(item);
                crate::harness::ensure!(got.len() <= want.len() + 1000, "the queue never drains");
            }
            crate::harness::ensure!(
                got == want,
                "after the fault, the queue of scope {} holds {} items, the model of the Ok calls {}; a pop whose commit failed handed its item out, or a failed push left items",
                crate::harness::show(SCOPES[s]),
                got.len(),
                want.len()
            );
        }
        Ok(())
    }
}

/// Skip unless the factory declared the store file-backed.
fn file_backed(fx: &Fixture) -> Option<Outcome> {
    (!fx.is_file_backed()).then(|| {
        Outcome::Skipped(
            "the factory did not declare the store file-backed (Fixture::declare_file_backed), \
             so the check cannot put its files under a fault"
                .into(),
        )
    })
}

fn runs() -> (usize, usize) {
    // (rounds, calls per round)
    if harness::deep() { (6, 600) } else { (1, 120) }
}

/// The child of the full-disk check: run the plan and report each result.
pub(crate) fn child(factory: &dyn Factory, fx: &Fixture, args: &[&str]) -> Result<(), Failure> {
    let seed: u64 = arg(args, 0)?;
    let n: usize = arg(args, 1)?;
    let store = factory(fx)
        .map_err(|e| Failure::storage("the factory opening the store under a file-size cap", e))?;
    for (i, op) in plan(seed, n).iter().enumerate() {
        let got = execute(&*store, fx.manual_clock(), op);
        report(&format!("r {i} {}", got.encode()))?;
    }
    report("done")
}

pub(crate) fn writes_on_a_full_disk_take_full_effect_or_none(run: &Run<'_>) -> CheckResult {
    let (rounds, n) = runs();
    for round in 0..rounds {
        let scratch = run.scratch()?;
        let fx = &scratch.fx;
        drop(run.open(fx)?);
        if let Some(skip) = file_backed(fx) {
            return Ok(skip);
        }
        let test_name = match child::test_name(run) {
            Ok(name) => name,
            Err(skip) => return Ok(skip),
        };
        let seed = child::seed();
        let mut rng = Rng::new(seed ^ 0x5eed);
        let largest = child::files_in(fx.dir())?
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        let cap = largest + rng.between(64 << 10, 512 << 10) as u64;
        let (tx, rx) = child::channel();
        let mut job = Job::spawn(
            &test_name,
            fx,
            &format!("faults {seed} {n}"),
            0,
            Some(cap),
            &tx,
        )?;
        drop(tx);
        let ops = plan(seed, n);
        let mut model = Model::default();
        let context = |e: String| {
            Failure::new(format!(
                "round {round}, seed {seed} (VGI_CONFORMANCE_SEED replays it), file size capped at {cap} bytes: {e}"
            ))
        };
        let mut done = false;
        while let Ok(line) = child::next_line(&rx) {
            let text = line.text;
            if text == "done" {
                done = true;
                continue;
            }
            if text == "eof" {
                break;
            }
            let parsed = text
                .strip_prefix("r ")
                .and_then(|t| t.split_once(' '))
                .and_then(|(i, r)| Some((i.parse::<usize>().ok()?, Res::decode(r)?)));
            let Some((i, got)) = parsed else {
                return Err(context(format!("the child reported a bad line {text:?}")));
            };
            let op = ops
                .get(i)
                .ok_or_else(|| context(format!("the child reported call {i} of {n}")))?;
            model
                .apply(op, &got, Some(ErrorKind::StorageFull))
                .map_err(|e| context(format!("call #{i}: {e}")))?;
        }
        job.wait()?;
        if !done {
            return Err(job.failure("stopped before the end of its run"));
        }
        if model.faulted == 0 {
            return Err(context("no call met the full disk; the run wrote too little, or the store ignored the file-size cap".into()));
        }
        let store = run.open(&fx.reopened())?;
        model.compare(&*store).map_err(|f| context(f.report()))?;
        eprintln!(
            "full disk, round {round}: {n} calls, {} failed with StorageFull, {} succeeded after the first failure",
            model.faulted, model.ok_after_fault
        );
    }
    Ok(Outcome::Passed)
}

/// Makes every file of a directory, and the directory, immutable (`chattr +i`,
/// which also stops writes through files already open); undone on drop.
struct Frozen(Vec<PathBuf>);

impl Frozen {
    fn freeze(dir: &Path) -> Result<Result<Self, String>, Failure> {
        // A file this process maps shared and writable (SQLite's -shm) is
        // memory, not storage: a write to such a mapping of an immutable file
        // is a SIGBUS, which no store can turn into an error. It stays writable.
        let mapped = shared_writable_mappings();
        let mut paths: Vec<PathBuf> = child::files_in(dir)?
            .into_iter()
            .filter(|p| !mapped.iter().any(|m| m == p))
            .collect();
        paths.push(dir.to_path_buf());
        let ok = Command::new("chattr")
            .arg("+i")
            .args(&paths)
            .status()
            .is_ok_and(|s| s.success());
        let frozen = Self(paths);
        if ok {
            Ok(Ok(frozen))
        } else {
            Ok(Err("chattr +i failed (is chattr installed, and does the file system support the immutable attribute?)".into()))
        }
    }
}

/// The files this process maps shared and writable, from `/proc/self/maps`
/// (none where it cannot be read).
fn shared_writable_mappings() -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let perms = fields.nth(1)?;
            let path = fields.nth(3)?;
            (perms.contains('w') && perms.contains('s') && path.starts_with('/'))
                .then(|| PathBuf::from(path))
        })
        .collect()
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

pub(crate) fn writes_on_a_read_only_store_take_full_effect_or_none(run: &Run<'_>) -> CheckResult {
    let (rounds, n) = runs();
    for round in 0..rounds {
        let scratch = run.scratch()?;
        let fx = &scratch.fx;
        let mut store = Some(run.open(fx)?);
        if let Some(skip) = file_backed(fx) {
            return Ok(skip);
        }
        if dirs::current_uid().ok() != Some(0) {
            return Ok(Outcome::Skipped(
                "making the files of an open store read-only needs root (chattr +i); file modes \
                 do not stop writes through files already open"
                    .into(),
            ));
        }
        let seed = child::seed();
        let ops = plan(seed, n);
        let freeze_at = Rng::new(seed ^ 0xf1e2).between(n / 4, n / 2);
        let context = |e: String| {
            Failure::new(format!(
                "round {round}, seed {seed} (VGI_CONFORMANCE_SEED replays it), read-only from call #{freeze_at}: {e}"
            ))
        };
        let mut model = Model::default();
        let mut frozen = None;
        for (i, op) in ops.iter().enumerate() {
            if i == freeze_at {
                match Frozen::freeze(fx.dir())? {
                    Ok(f) => frozen = Some(f),
                    Err(why) => return Ok(Outcome::Skipped(why)),
                }
            }
            let st = store.as_deref().ok_or_else(|| Failure::new("no store"))?;
            let got = execute(st, fx.manual_clock(), op);
            let fault = frozen.is_some().then_some(ErrorKind::ReadOnly);
            model
                .apply(op, &got, fault)
                .map_err(|e| context(format!("call #{i}: {e}")))?;
        }
        drop(frozen);
        drop(store.take());
        if model.faulted == 0 {
            return Err(context("no call failed once the store was read-only: writes went somewhere other than its files".into()));
        }
        let reopened = run.open(&fx.reopened())?;
        model.compare(&*reopened).map_err(|f| context(f.report()))?;
        eprintln!(
            "read-only store, round {round}: {n} calls, {} failed with ReadOnly",
            model.faulted
        );
    }
    Ok(Outcome::Passed)
}
