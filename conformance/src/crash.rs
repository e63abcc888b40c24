//! Crashes: child processes run random writes, report each acknowledged
//! result over a pipe, and are SIGKILLed at random moments, many times.
//!
//! After each kill the parent reopens the store and judges it: every
//! acknowledged write is there (with the id it was acknowledged with); the
//! call in flight when the child died took full effect or none; ids are never
//! reused; no queue item comes out twice. For stores shared across processes,
//! a second check in the style of Jepsen's total-queue checker kills popping
//! processes at random and counts duplicates and losses.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::thread;
use std::time::Duration;

use vgi_storage_core::{FunctionStorage, LogEntry, SharedStorage};

use crate::child::{self, Job, Line, Rng, arg, hex, report, unhex};
use crate::faults::{Res, res};
use crate::harness::{self, CheckResult, Failure, OrFail, Outcome, Run, ensure, retry, short};
use crate::{Factory, Fixture};

const KEYS: usize = 4;
const LOG: (&[u8], &[u8]) = (b"n", b"k");

/// One call of a writer, drawn in advance from the writer's seed.
#[derive(Debug, Clone)]
enum Op {
    Put(usize, Vec<u8>),
    Del(usize),
    Cas(usize, Option<Vec<u8>>, Option<Vec<u8>>),
    Append(Vec<u8>),
    AppendBatch(Vec<Vec<u8>>),
    PutBatch(Vec<(usize, Vec<u8>)>),
    Push(Vec<Vec<u8>>),
    Pop,
}

fn scope(w: usize) -> Vec<u8> {
    format!("writer-{w}").into_bytes()
}

fn key(k: usize) -> Vec<u8> {
    format!("k{k}").into_bytes()
}

/// Writer `w`'s first `n` calls; every value is unique to its call.
#[allow(clippy::many_single_char_names)] // s, k, v, e, n as in the trait
fn plan(seed: u64, w: usize, n: usize) -> Vec<Op> {
    let mut rng = Rng::new(seed ^ (w as u64).wrapping_mul(0x9E37_79B9));
    let mut last: Vec<Option<Vec<u8>>> = vec![None; KEYS];
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        let mut j = 0;
        let mut val = |rng: &mut Rng| {
            j += 1;
            let mut v = format!("w{w}-{i}-{j}-").into_bytes();
            let pad = rng.between(0, 300);
            v.extend(rng.bytes(pad));
            v
        };
        let k = rng.below(KEYS);
        let op = match rng.below(16) {
            0..=2 => {
                let v = val(&mut rng);
                last[k] = Some(v.clone());
                Op::Put(k, v)
            }
            3 => {
                last[k] = None;
                Op::Del(k)
            }
            4 | 5 => {
                let expected = if rng.below(4) == 0 {
                    None
                } else {
                    last[k].clone()
                };
                let new = (rng.below(6) != 0).then(|| val(&mut rng));
                last[k].clone_from(&new);
                Op::Cas(k, expected, new)
            }
            6..=8 => Op::Append(val(&mut rng)),
            9 => Op::AppendBatch((0..rng.between(2, 5)).map(|_| val(&mut rng)).collect()),
            10 => {
                let entries: Vec<(usize, Vec<u8>)> = (0..rng.between(2, 4))
                    .map(|_| (rng.below(KEYS), val(&mut rng)))
                    .collect();
                for (k, v) in &entries {
                    last[*k] = Some(v.clone());
                }
                Op::PutBatch(entries)
            }
            11..=13 => Op::Push((0..rng.between(1, 4)).map(|_| val(&mut rng)).collect()),
            _ => Op::Pop,
        };
        ops.push(op);
    }
    ops
}

#[allow(clippy::many_single_char_names)] // s, k, v, e, n as in the trait
fn execute(store: &dyn FunctionStorage, w: usize, op: &Op) -> Res {
    let s = scope(w);
    match op {
        Op::Put(k, v) => res(store.kv_put(&s, &key(*k), v), |()| Res::Unit),
        Op::Del(k) => res(store.kv_del(&s, &key(*k)), |()| Res::Unit),
        Op::Cas(k, e, n) => res(
            store.kv_compare_and_swap(&s, &key(*k), e.as_deref(), n.as_deref()),
            Res::Bool,
        ),
        Op::Append(v) => res(store.append(&s, LOG.0, LOG.1, v), Res::Id),
        Op::AppendBatch(vs) => res(store.append_batch(&s, LOG.0, LOG.1, vs), Res::Ids),
        Op::PutBatch(entries) => {
            let entries: Vec<(Vec<u8>, Vec<u8>)> =
                entries.iter().map(|(k, v)| (key(*k), v.clone())).collect();
            res(store.kv_put_batch(&s, &entries), |()| Res::Unit)
        }
        Op::Push(items) => res(store.queue_push(&s, items), |()| Res::Unit),
        Op::Pop => res(store.queue_pop(&s), Res::Bytes),
    }
}

/// What one writer's scope must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    kv: BTreeMap<usize, Vec<u8>>,
    log: Vec<LogEntry>,
    queue: VecDeque<Vec<u8>>,
}

impl State {
    /// The state after `op`, assuming it succeeded; new log entries get id -1
    /// (their ids are unknown until read back).
    #[allow(clippy::many_single_char_names)] // s, k, v, e, n as in the trait
    fn after(&self, op: &Op) -> Self {
        let mut s = self.clone();
        s.apply(op);
        s
    }

    /// Apply `op`, assuming it succeeded (new log entries get id -1).
    #[allow(clippy::many_single_char_names)] // s, k, v, e, n as in the trait
    fn apply(&mut self, op: &Op) {
        let s = self;
        match op {
            Op::Put(k, v) => drop(s.kv.insert(*k, v.clone())),
            Op::Del(k) => drop(s.kv.remove(k)),
            Op::Cas(k, e, n) => {
                if s.kv.get(k) == e.as_ref() {
                    match n {
                        Some(v) => drop(s.kv.insert(*k, v.clone())),
                        None => drop(s.kv.remove(k)),
                    }
                }
            }
            Op::Append(v) => s.log.push(LogEntry {
                id: -1,
                value: v.clone(),
            }),
            Op::AppendBatch(vs) => s.log.extend(vs.iter().map(|v| LogEntry {
                id: -1,
                value: v.clone(),
            })),
            Op::PutBatch(entries) => {
                for (k, v) in entries {
                    s.kv.insert(*k, v.clone());
                }
            }
            Op::Push(items) => s.queue.extend(items.iter().cloned()),
            Op::Pop => drop(s.queue.pop_front()),
        }
    }

    /// Whether `read` (ids known) is this state (ids -1 match any id).
    fn matches(&self, read: &Self) -> bool {
        self.kv == read.kv
            && self.queue == read.queue
            && self.log.len() == read.log.len()
            && self
                .log
                .iter()
                .zip(&read.log)
                .all(|(m, r)| m.value == r.value && (m.id == -1 || m.id == r.id))
    }
}

/// The parent's account of one writer.
#[derive(Debug, Default)]
struct Writer {
    state: State,
    /// The index of the writer's next call not yet accounted for.
    next: usize,
}

/// Everything the parent learned across rounds.
#[derive(Debug, Default)]
struct Account {
    writers: Vec<Writer>,
    ids: HashSet<i64>,
    acked: usize,
    in_flight_whole: usize,
    in_flight_absent: usize,
}

impl Account {
    fn record_ids(&mut self, log: &[LogEntry], from: usize) -> Result<(), String> {
        for (i, e) in log.iter().enumerate().skip(from) {
            if e.id < 0 || !self.ids.insert(e.id) {
                return Err(format!("id {} is negative or was handed out before", e.id));
            }
            if i > 0 && log[i - 1].id >= e.id {
                return Err(format!(
                    "id {} is not above the log's earlier id {}",
                    e.id,
                    log[i - 1].id
                ));
            }
        }
        Ok(())
    }

    /// Account for writer `w`'s acknowledged call `i`.
    fn ack(&mut self, w: usize, i: usize, op: &Op, got: &Res) -> Result<(), String> {
        let writer = &mut self.writers[w];
        if i != writer.next {
            return Err(format!(
                "writer {w} acknowledged call {i}, expected {}",
                writer.next
            ));
        }
        writer.next += 1;
        self.acked += 1;
        if let Res::Err(kind, _) = &got {
            // A transient error took no effect (another writer held the lock).
            if ["Busy", "Conflict", "Unavailable"].contains(&kind.as_str()) {
                return Ok(());
            }
            return Err(format!("call {op:?} failed with {kind}"));
        }
        // Judged against the state before the call, then applied in place
        // (the state grows with the run: no copy per call).
        let state = &writer.state;
        let want = match op {
            Op::Cas(k, e, _) => Res::Bool(state.kv.get(k) == e.as_ref()),
            Op::Append(_) | Op::AppendBatch(_) => got.clone(),
            Op::Pop => Res::Bytes(state.queue.front().cloned()),
            _ => Res::Unit,
        };
        if *got != want {
            return Err(format!(
                "writer {w} call {i} {}: returned {}, the model says {}",
                short(op),
                short(&got),
                short(&want)
            ));
        }
        let ids = match (op, got) {
            (Op::Append(_), Res::Id(id)) => vec![*id],
            (Op::AppendBatch(vs), Res::Ids(ids)) if ids.len() == vs.len() => ids.clone(),
            (Op::Append(_) | Op::AppendBatch(_), other) => {
                return Err(format!("{} returned {}", short(op), short(other)));
            }
            _ => Vec::new(),
        };
        let from = writer.state.log.len();
        writer.state.apply(op);
        for (e, id) in writer.state.log[from..].iter_mut().zip(ids) {
            e.id = id;
        }
        let log = std::mem::take(&mut self.writers[w].state.log);
        let checked = self.record_ids(&log, from);
        self.writers[w].state.log = log;
        checked
    }

    /// After a kill: read writer `w`'s scope back, judge it against the state
    /// before and after its call in flight, and adopt what was found. The queue
    /// is drained to be read and pushed back in one push.
    fn resolve(
        &mut self,
        store: &dyn FunctionStorage,
        w: usize,
        ops: &[Op],
    ) -> Result<(), Failure> {
        let s = scope(w);
        let mut read = State::default();
        for k in 0..KEYS {
            if let Some(v) = store.kv_get(&s, &key(k)).or_fail("kv_get after a kill")? {
                read.kv.insert(k, v);
            }
        }
        read.log = store
            .scan(&s, LOG.0, LOG.1, -1, usize::MAX)
            .or_fail("scan after a kill")?;
        let limit = self.writers[w].state.queue.len() + 64;
        while let Some(item) = retry(|| store.queue_pop(&s)).or_fail("queue_pop after a kill")? {
            read.queue.push_back(item);
            ensure!(
                read.queue.len() <= limit,
                "the queue of writer {w} holds items nobody pushed"
            );
        }
        if !read.queue.is_empty() {
            let items: Vec<Vec<u8>> = read.queue.iter().cloned().collect();
            retry(|| store.queue_push(&s, &items)).or_fail("queue_push after a kill")?;
        }
        let writer = &self.writers[w];
        // A writer that ran to the end of its plan had no call in flight.
        let in_flight = ops.get(writer.next);
        let before = &writer.state;
        let after = in_flight.map_or_else(|| before.clone(), |op| before.after(op));
        let took = if before.matches(&read) {
            false
        } else if after.matches(&read) {
            true
        } else {
            let ids = |st: &State| st.log.iter().map(|e| e.id).collect::<Vec<_>>();
            return Err(Failure::new(format!(
                "after a kill, writer {w}'s scope is neither the state of its acknowledged calls nor that plus its call in flight {}:\n  acknowledged: kv {:?}, log ids {:?}, {} queued\n  read back:    kv {:?}, log ids {:?}, {} queued",
                short(&in_flight),
                before.kv.keys().collect::<Vec<_>>(),
                ids(before),
                before.queue.len(),
                read.kv.keys().collect::<Vec<_>>(),
                ids(&read),
                read.queue.len(),
            )));
        };
        if took {
            let from = before.log.len();
            self.record_ids(&read.log, from).map_err(Failure::new)?;
            self.in_flight_whole += 1;
        } else {
            self.in_flight_absent += 1;
        }
        let writer = &mut self.writers[w];
        writer.state = read;
        writer.next += 1;
        Ok(())
    }
}

/// Rounds of kills and writer processes: deep runs kill at least 200 processes.
fn rounds_and_writers(shared: bool) -> (usize, usize) {
    let writers = if shared { 3 } else { 1 };
    let rounds = if harness::deep() {
        200usize.div_ceil(writers)
    } else {
        6
    };
    (rounds, writers)
}

/// The child of the writer check: run writer `w`'s calls from `start` on.
pub(crate) fn writer_child(
    factory: &dyn Factory,
    fx: &Fixture,
    args: &[&str],
) -> Result<(), Failure> {
    let w: usize = arg(args, 0)?;
    let seed: u64 = arg(args, 1)?;
    let start: usize = arg(args, 2)?;
    let n: usize = arg(args, 3)?;
    let store = factory(fx)
        .map_err(|e| Failure::storage("the factory opening the store in a writer", e))?;
    let ops = plan(seed, w, n);
    for (i, op) in ops.iter().enumerate().skip(start) {
        let got = execute(&*store, w, op);
        report(&format!("a {i} {}", got.encode()))?;
    }
    report("done")
}

fn open_store(run: &Run<'_>, fx: &Fixture) -> Result<SharedStorage, Failure> {
    run.open(fx)
}

/// Why the writer check does not apply to this store, if it does not.
fn writers_skip(fx: &Fixture, caps: vgi_storage_core::Capabilities) -> Option<Outcome> {
    if !caps.durable {
        return Some(Outcome::Skipped(
            "the backend is not durable (capabilities().durable is false)".into(),
        ));
    }
    // The writers are other processes: the store must live outside this one,
    // in files (declared) or behind a server shared across processes.
    if !fx.is_file_backed() && !caps.shared_across_processes {
        return Some(Outcome::Skipped(
            "another process cannot open the store: it is neither declared file-backed \
             (Fixture::declare_file_backed) nor shared across processes"
                .into(),
        ));
    }
    None
}

/// A writer's report line: `a <call> <result>`.
fn parse_ack(text: &str) -> Option<(usize, Res)> {
    let (i, r) = text.strip_prefix("a ")?.split_once(' ')?;
    Some((i.parse().ok()?, Res::decode(r)?))
}

pub(crate) fn acknowledged_writes_survive_sigkill(run: &Run<'_>) -> CheckResult {
    let scratch = run.scratch()?;
    let fx = &scratch.fx;
    let store = open_store(run, fx)?;
    let caps = store.capabilities();
    drop(store);
    if let Some(skip) = writers_skip(fx, caps) {
        return Ok(skip);
    }
    let test_name = match child::test_name(run) {
        Ok(name) => name,
        Err(skip) => return Ok(skip),
    };
    let (rounds, writers) = rounds_and_writers(caps.shared_across_processes);
    let seed = child::seed();
    let mut rng = Rng::new(seed ^ 0x00c0_ffee);
    let context = |e: String| {
        Failure::new(format!(
            "seed {seed} (VGI_CONFORMANCE_SEED replays it): {e}"
        ))
    };
    let mut account = Account {
        writers: (0..writers).map(|_| Writer::default()).collect(),
        ..Account::default()
    };
    let mut kills = 0;
    for round in 0..rounds {
        if harness::deep() && round % 20 == 0 {
            eprintln!("crash: round {round} of {rounds}");
        }
        // Each round's children run at most this many calls: plan that far.
        let n = account.writers.iter().map(|w| w.next).max().unwrap_or(0) + 1000;
        let plans: Vec<Vec<Op>> = (0..writers).map(|w| plan(seed, w, n)).collect();
        let (tx, rx) = child::channel();
        let mut jobs = Vec::new();
        for (w, writer) in account.writers.iter().enumerate() {
            let job = format!("crash {w} {seed} {} {n}", writer.next);
            jobs.push(Job::spawn(&test_name, fx, &job, w, None, &tx)?);
        }
        drop(tx);
        let kill_after = rng.between(0, 40);
        if kill_after == 0 {
            thread::sleep(Duration::from_millis(rng.between(0, 30) as u64));
        }
        let mut acks = 0;
        let mut eofs = 0;
        let mut killed = false;
        // Every line a writer wrote before it died is an acknowledgement: read
        // until each pipe is closed.
        while eofs < writers {
            if !killed && acks >= kill_after {
                for job in &mut jobs {
                    job.kill();
                }
                kills += jobs.len();
                killed = true;
            }
            let Line { from, text } = child::next_line(&rx)?;
            if text == "eof" {
                eofs += 1;
                if !killed {
                    return Err(jobs[from].failure("stopped before it was killed"));
                }
                continue;
            }
            if text == "done" {
                // It ran its whole plan while this thread was not looking.
                continue;
            }
            let Some((i, got)) = parse_ack(&text) else {
                return Err(context(format!(
                    "writer {from} reported a bad line {text:?}"
                )));
            };
            let op = plans[from]
                .get(i)
                .ok_or_else(|| context(format!("writer {from} reported call {i}")))?;
            account
                .ack(from, i, op, &got)
                .map_err(|e| context(format!("round {round}: {e}")))?;
            acks += 1;
        }
        drop(jobs);
        let store = open_store(run, &fx.reopened())?;
        for (w, plan) in plans.iter().enumerate() {
            account
                .resolve(&*store, w, plan)
                .map_err(|f| context(format!("round {round}: {}", f.report())))?;
        }
    }
    eprintln!(
        "crash: {writers} writer process(es) killed {kills} times over {rounds} rounds: {} acknowledged calls all present; calls in flight at a kill: {} whole, {} absent, none partial; {} distinct log ids, none reused",
        account.acked,
        account.in_flight_whole,
        account.in_flight_absent,
        account.ids.len()
    );
    Ok(Outcome::Passed)
}

/// The child of the queue check: pop until empty, reporting each item.
pub(crate) fn popper_child(factory: &dyn Factory, fx: &Fixture) -> Result<(), Failure> {
    let store = factory(fx)
        .map_err(|e| Failure::storage("the factory opening the store in a popper", e))?;
    while let Some(item) = retry(|| store.queue_pop(b"q")).or_fail("queue_pop")? {
        report(&format!("p {}", hex(&item)))?;
    }
    report("empty")
}

pub(crate) fn queue_pop_loses_at_most_the_item_in_flight_per_kill(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    if !env.store.capabilities().shared_across_processes {
        return Ok(Outcome::Skipped(
            "the backend is not shared across processes (capabilities().shared_across_processes is false)".into(),
        ));
    }
    let test_name = match child::test_name(run) {
        Ok(name) => name,
        Err(skip) => return Ok(skip),
    };
    let (items, poppers, kills_wanted) = if harness::deep() {
        (20_000, 4, 60)
    } else {
        (800, 4, 6)
    };
    let st = &*env.store;
    let all: Vec<Vec<u8>> = (0..items)
        .map(|i| format!("item-{i}").into_bytes())
        .collect();
    for chunk in all.chunks(200) {
        retry(|| st.queue_push(b"q", chunk)).or_fail("queue_push")?;
    }
    let seed = child::seed();
    let mut rng = Rng::new(seed ^ 0x0bad);
    let kill_points: BTreeSet<usize> = (0..kills_wanted)
        .map(|_| rng.between(1, items * 9 / 10))
        .collect();
    let fx = &env.scratch.fx;
    let (tx, rx) = child::channel();
    let mut jobs: Vec<Option<Job>> = Vec::new();
    for i in 0..poppers {
        jobs.push(Some(Job::spawn(&test_name, fx, "pop", i, None, &tx)?));
    }
    let mut eofs = 0;
    let mut reported: Vec<Vec<u8>> = Vec::new();
    let mut kills = 0;
    // Until every pipe, of the killed poppers too, is closed: a line a popper
    // wrote before it died is a pop it acknowledged.
    while eofs < jobs.len() {
        let Line { from, text } = child::next_line(&rx)?;
        if text == "eof" {
            eofs += 1;
            if let Some(mut job) = jobs[from].take() {
                job.wait()?;
            }
            continue;
        }
        if text == "empty" {
            continue;
        }
        let item = text
            .strip_prefix("p ")
            .and_then(unhex)
            .ok_or_else(|| Failure::new(format!("a popper reported a bad line {text:?}")))?;
        reported.push(item);
        if kill_points.contains(&reported.len()) {
            let alive: Vec<usize> = (0..jobs.len()).filter(|i| jobs[*i].is_some()).collect();
            if !alive.is_empty() {
                let victim = alive[rng.below(alive.len())];
                if let Some(mut job) = jobs[victim].take() {
                    job.kill();
                    kills += 1;
                }
                let index = jobs.len();
                jobs.push(Some(Job::spawn(&test_name, fx, "pop", index, None, &tx)?));
            }
        }
    }
    drop(tx);
    let left = retry(|| st.queue_pop(b"q")).or_fail("queue_pop after the poppers")?;
    let distinct: HashSet<&Vec<u8>> = reported.iter().collect();
    let pushed: HashSet<&Vec<u8>> = all.iter().collect();
    let duplicated = reported.len() - distinct.len();
    let lost = items - distinct.len();
    eprintln!(
        "total queue: {items} items, {poppers} popping processes, {kills} SIGKILLs: {duplicated} duplicated, {lost} lost in flight (at most {kills} allowed), {} left queued",
        usize::from(left.is_some())
    );
    ensure!(
        duplicated == 0,
        "{duplicated} items were popped twice (seed {seed})"
    );
    ensure!(
        distinct.iter().all(|i| pushed.contains(i)),
        "a popper reported an item never pushed"
    );
    ensure!(
        left.is_none(),
        "every popper saw an empty queue, but an item was still queued: {}",
        short(&left.map(|l| String::from_utf8_lossy(&l).into_owned()))
    );
    ensure!(
        lost <= kills,
        "{lost} items were lost with {kills} kills: at most one, popped but not yet reported, may be lost per kill (seed {seed})"
    );
    Ok(Outcome::Passed)
}
