//! Operations raced against each other, each judged by a checker that accepts
//! every interleaving the contract allows and nothing else.
//!
//! The checkers order events with [`Ticks`]: a tick taken before a call and one
//! taken after it bound the moment the call took effect, so "this call began
//! after that one returned" is a comparison of ticks, never of durations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use vgi_storage_core::{Clock, FunctionStorage, LogEntry, StorageError};

use crate::concurrency::join;
use crate::harness::{
    CheckResult, Failure, OrFail, Outcome, Run, Ticks, ensure, ensure_eq, retry, scaled, show,
};

/// How long a racing loop may run before the check calls it stuck: generous,
/// since a slow durable backend on a loaded machine can take minutes for a race.
const RACE_PATIENCE: Duration = Duration::from_secs(600);

/// Stop a racing loop that should have ended long ago (a safety stop, not a timing assertion).
fn overdue(start: Instant, what: &str) -> Result<(), Failure> {
    ensure!(
        start.elapsed() < RACE_PATIENCE,
        "{what} did not finish within {RACE_PATIENCE:?}"
    );
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `p-<i>` or `c-<i>`: which writer wrote the value, and its sequence number.
fn parse_written(v: &[u8]) -> Option<(u8, usize)> {
    let s = std::str::from_utf8(v).ok()?;
    let (who, n) = s.split_once('-')?;
    let who = match who {
        "p" => b'p',
        "c" => b'c',
        _ => return None,
    };
    Some((who, n.parse().ok()?))
}

#[allow(clippy::too_many_lines)]
pub(crate) fn kv_put_get_and_cas_on_one_key_see_only_written_values(run: &Run<'_>) -> CheckResult {
    const READERS: usize = 2;
    let puts = scaled(1000, 10_000);
    let cases = scaled(300, 3000);
    let env = run.env()?;
    let st = &*env.store;
    st.kv_put(b"s", b"k", b"p-0").or_fail("kv_put")?;
    let writing = AtomicUsize::new(2);
    // Readers judge every value they see: never absent (the key is never
    // deleted), only values some writer wrote, and never a value of a writer
    // older than one of the same writer already seen.
    let judge = |last: &mut [usize; 2], got: Option<Vec<u8>>, who: &str| -> Result<(), Failure> {
        let Some(v) = got else {
            return Err(Failure::new(format!(
                "{who} read the key as absent while puts and CAS raced on it (it was put before and never deleted)"
            )));
        };
        let Some((w, n)) = parse_written(&v).filter(|(w, n)| match w {
            b'p' => *n <= puts,
            _ => *n <= cases && *n > 0,
        }) else {
            return Err(Failure::new(format!(
                "{who} read a value no writer wrote: {}",
                show(&v)
            )));
        };
        let slot = usize::from(w == b'c');
        ensure!(
            n >= last[slot],
            "{who} read {} after {}-{}: a value older than one already read came back",
            show(&v),
            char::from(w),
            last[slot]
        );
        last[slot] = n;
        Ok(())
    };
    let judge = &judge;
    let (wins, last_put) = thread::scope(|scope| -> Result<(usize, usize), Failure> {
        let writing = &writing;
        let putter = scope.spawn(move || -> Result<usize, Failure> {
            let r = (1..=puts).try_for_each(|i| {
                retry(|| st.kv_put(b"s", b"k", format!("p-{i}").as_bytes())).or_fail("kv_put")
            });
            writing.fetch_sub(1, Ordering::SeqCst);
            r.map(|()| puts)
        });
        let casser = scope.spawn(move || -> Result<usize, Failure> {
            let mut last = [0usize; 2];
            let r = (|| {
                for j in 1..=cases {
                    let new = format!("c-{j}").into_bytes();
                    let mut attempts = 0;
                    loop {
                        let cur = retry(|| st.kv_get(b"s", b"k")).or_fail("kv_get")?;
                        judge(&mut last, cur.clone(), "the CAS writer")?;
                        if retry(|| st.kv_compare_and_swap(b"s", b"k", cur.as_deref(), Some(&new)))
                            .or_fail("kv_compare_and_swap")?
                        {
                            last[1] = j;
                            break;
                        }
                        attempts += 1;
                        ensure!(
                            attempts < 100_000,
                            "a CAS from the value just read never won in 100000 attempts"
                        );
                    }
                }
                Ok(cases)
            })();
            writing.fetch_sub(1, Ordering::SeqCst);
            r
        });
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                scope.spawn(move || -> Result<(), Failure> {
                    let start = Instant::now();
                    let mut last = [0usize; 2];
                    let who = format!("reader {r}");
                    while writing.load(Ordering::SeqCst) > 0 {
                        let got = retry(|| st.kv_get(b"s", b"k")).or_fail("kv_get")?;
                        judge(&mut last, got, &who)?;
                        overdue(start, "the put/CAS race")?;
                    }
                    Ok(())
                })
            })
            .collect();
        let last_put = join(putter)?;
        let wins = join(casser)?;
        for r in readers {
            join(r)?;
        }
        Ok((wins, last_put))
    })?;
    let last = st.kv_get(b"s", b"k").or_fail("kv_get")?;
    let ok = [format!("p-{last_put}"), format!("c-{wins}")];
    ensure!(
        last.as_deref()
            .is_some_and(|v| ok.iter().any(|o| o.as_bytes() == v)),
        "after the race the key holds {}, not the last put or the last winning CAS",
        last.as_deref().map_or_else(|| "nothing".to_owned(), show)
    );
    Ok(Outcome::Passed)
}

/// What one tailing reader has seen of a log: no scan may ever show an id at
/// or below the highest id seen that was not seen before.
#[derive(Default)]
struct TailSeen {
    ids: BTreeSet<i64>,
    max: i64,
}

impl TailSeen {
    fn judge(&mut self, after: i64, page: &[LogEntry], who: &str) -> Result<(), Failure> {
        let mut prev = after;
        for e in page {
            ensure!(
                e.id > prev,
                "{who}: scan(after_id {after}) returned id {} after {prev} (ids must be above after_id, ascending)",
                e.id
            );
            prev = e.id;
            if !self.ids.contains(&e.id) {
                ensure!(
                    self.ids.is_empty() || e.id > self.max,
                    "{who}: id {} appeared in the log after id {} had been read: an entry became visible below an id already seen",
                    e.id,
                    self.max
                );
                self.ids.insert(e.id);
                self.max = self.max.max(e.id);
            }
        }
        Ok(())
    }
}

#[allow(clippy::too_many_lines)]
pub(crate) fn log_tailed_while_appending_in_batches_never_goes_back(run: &Run<'_>) -> CheckResult {
    const WRITERS: usize = 3;
    const READERS: usize = 2;
    let rounds = scaled(120, 1200);
    let env = run.env()?;
    let st = &*env.store;
    let log: (&[u8], &[u8], &[u8]) = (b"s", b"n", b"k");
    let writing = AtomicUsize::new(WRITERS);
    let (appended, seen) = thread::scope(|scope| -> Result<_, Failure> {
        let writing = &writing;
        let writer_threads: Vec<_> = (0..WRITERS)
            .map(|w| {
                scope.spawn(move || -> Result<Vec<(i64, Vec<u8>)>, Failure> {
                    let mut mine = Vec::new();
                    let r = (|| {
                        for r in 0..rounds {
                            let size = if r % 2 == 0 { 1 } else { 1 + r % 7 };
                            let values: Vec<Vec<u8>> = (0..size)
                                .map(|j| format!("w{w}-{}", mine.len() + j).into_bytes())
                                .collect();
                            let ids = if size == 1 {
                                vec![
                                    retry(|| st.append(log.0, log.1, log.2, &values[0]))
                                        .or_fail("append")?,
                                ]
                            } else {
                                retry(|| st.append_batch(log.0, log.1, log.2, &values))
                                    .or_fail("append_batch")?
                            };
                            ensure_eq!(
                                ids.len(),
                                size,
                                "ids from an append_batch of {size} values"
                            );
                            mine.extend(ids.into_iter().zip(values));
                        }
                        Ok(())
                    })();
                    writing.fetch_sub(1, Ordering::SeqCst);
                    r.map(|()| mine)
                })
            })
            .collect();
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                scope.spawn(move || -> Result<BTreeSet<i64>, Failure> {
                    let who = format!("reader {r}");
                    let mut seen = TailSeen::default();
                    let start = Instant::now();
                    let mut round = 0u64;
                    loop {
                        let done = writing.load(Ordering::SeqCst) == 0;
                        // Mostly tail after the last id seen; now and then read
                        // the whole log again, and from an id seen earlier.
                        let after = match round % 8 {
                            0 => -1,
                            4 => seen
                                .ids
                                .iter()
                                .nth(seen.ids.len() / 2)
                                .copied()
                                .unwrap_or(-1),
                            _ => {
                                if seen.ids.is_empty() {
                                    -1
                                } else {
                                    seen.max
                                }
                            }
                        };
                        let limit = if round.is_multiple_of(8) {
                            usize::MAX
                        } else {
                            16
                        };
                        let page =
                            retry(|| st.scan(log.0, log.1, log.2, after, limit)).or_fail("scan")?;
                        seen.judge(after, &page, &who)?;
                        round += 1;
                        if done && round % 8 == 1 {
                            // A whole read after every writer finished: the last word.
                            return Ok(seen.ids);
                        }
                        overdue(start, "tailing the log")?;
                    }
                })
            })
            .collect();
        let mut appended = Vec::new();
        for w in writer_threads {
            appended.push(join(w)?);
        }
        let mut seen = Vec::new();
        for r in readers {
            seen.push(join(r)?);
        }
        Ok((appended, seen))
    })?;
    let full = st
        .scan(log.0, log.1, log.2, -1, usize::MAX)
        .or_fail("scan")?;
    let full_ids: BTreeSet<i64> = full.iter().map(|e| e.id).collect();
    let mut acked = BTreeMap::new();
    for (w, mine) in appended.iter().enumerate() {
        ensure!(
            mine.windows(2).all(|p| p[0].0 < p[1].0),
            "writer {w}'s appends returned ids that do not increase"
        );
        for (id, v) in mine {
            ensure!(
                acked.insert(*id, v.clone()).is_none(),
                "two appends returned id {id}"
            );
        }
    }
    ensure!(
        full.iter().all(|e| acked.get(&e.id) == Some(&e.value)) && full.len() == acked.len(),
        "the log after the race ({} entries) is not exactly the {} entries appends returned",
        full.len(),
        acked.len()
    );
    for (r, ids) in seen.iter().enumerate() {
        ensure!(
            *ids == full_ids,
            "reader {r} saw {} ids, the log holds {}",
            ids.len(),
            full_ids.len()
        );
    }
    Ok(Outcome::Passed)
}

/// One pop as a tailing checker sees it: when it began and returned, and what it got.
#[derive(Debug, Clone)]
pub(crate) struct PopEvent {
    pub(crate) began: u64,
    pub(crate) returned: u64,
    pub(crate) item: Option<Vec<u8>>,
}

/// Judge a history of pops against pushes that are atomic: once an item of a
/// push has been popped, a pop that begins after that answers "empty" only if
/// every item of the push was popped by a pop that began before it returned.
/// Also every item is popped at most once, and items of one push in order.
/// Returns how many items were popped.
pub(crate) fn judge_pops(pushes: &[Vec<Vec<u8>>], pops: &[PopEvent]) -> Result<usize, Failure> {
    let mut popped: HashMap<&[u8], &PopEvent> = HashMap::new();
    for p in pops {
        if let Some(item) = &p.item {
            ensure!(
                popped.insert(item, p).is_none(),
                "item {} was popped twice",
                show(item)
            );
        }
    }
    let nones: Vec<&PopEvent> = pops.iter().filter(|p| p.item.is_none()).collect();
    for (n, push) in pushes.iter().enumerate() {
        let got: Vec<Option<&&PopEvent>> = push.iter().map(|i| popped.get(&i[..])).collect();
        for (j, pair) in got.windows(2).enumerate() {
            if let [Some(a), Some(b)] = pair {
                ensure!(
                    b.returned > a.began,
                    "item {} of push {n} was popped before item {j} of the same push",
                    j + 1
                );
            }
        }
        let Some(first) = got.iter().flatten().map(|p| p.returned).min() else {
            continue;
        };
        for none in nones.iter().filter(|p| p.began > first) {
            let left = got
                .iter()
                .filter(|p| p.is_none_or(|p| p.began > none.returned))
                .count();
            ensure!(
                left == 0,
                "a pop answered empty after an item of push {n} had been popped, with {left} of its {} items still queued (a push is visible all at once, and a busy store must answer Err, not empty)",
                push.len()
            );
        }
    }
    Ok(popped.len())
}

/// Pop until the queue answers empty after `done` says the pushers finished;
/// each pop is recorded with its ticks.
pub(crate) fn pop_until_empty(
    st: &dyn FunctionStorage,
    scope: &[u8],
    ticks: &Ticks,
    done: &dyn Fn() -> bool,
    bound: usize,
) -> Result<Vec<PopEvent>, Failure> {
    let start = Instant::now();
    let mut events = Vec::new();
    let mut items = 0;
    loop {
        let finished = done();
        let began = ticks.now();
        let item = retry(|| st.queue_pop(scope)).or_fail("queue_pop")?;
        let returned = ticks.now();
        let empty = item.is_none();
        if !empty {
            items += 1;
            ensure!(
                items <= bound,
                "more items were popped than the {bound} pushed"
            );
        }
        events.push(PopEvent {
            began,
            returned,
            item,
        });
        if empty && finished {
            return Ok(events);
        }
        overdue(start, "popping the queue")?;
        if empty {
            thread::yield_now();
        }
    }
}

pub(crate) fn pushes_racing_pops_never_answer_empty_mid_push(run: &Run<'_>) -> CheckResult {
    const PUSHERS: usize = 2;
    const POPPERS: usize = 3;
    let per_pusher = scaled(150, 1500);
    let env = run.env()?;
    let st = &*env.store;
    let ticks = Ticks::default();
    let pushing = AtomicUsize::new(PUSHERS);
    let pushes: Vec<Vec<Vec<u8>>> = (0..PUSHERS * per_pusher)
        .map(|n| {
            (0..2 + n % 5)
                .map(|j| format!("push{n}-{j}").into_bytes())
                .collect()
        })
        .collect();
    let total: usize = pushes.iter().map(Vec::len).sum();
    let pops = thread::scope(|scope| -> Result<Vec<PopEvent>, Failure> {
        let (pushing, ticks, pushes) = (&pushing, &ticks, &pushes);
        let pushing_threads: Vec<_> = (0..PUSHERS)
            .map(|p| {
                scope.spawn(move || -> Result<(), Failure> {
                    let r = pushes
                        .iter()
                        .skip(p)
                        .step_by(PUSHERS)
                        .try_for_each(|items| {
                            retry(|| st.queue_push(b"q", items)).or_fail("queue_push")
                        });
                    pushing.fetch_sub(1, Ordering::SeqCst);
                    r
                })
            })
            .collect();
        let poppers: Vec<_> = (0..POPPERS)
            .map(|_| {
                scope.spawn(move || {
                    pop_until_empty(
                        st,
                        b"q",
                        ticks,
                        &|| pushing.load(Ordering::SeqCst) == 0,
                        total,
                    )
                })
            })
            .collect();
        for p in pushing_threads {
            join(p)?;
        }
        let mut all = Vec::new();
        for p in poppers {
            all.extend(join(p)?);
        }
        Ok(all)
    })?;
    let popped = judge_pops(&pushes, &pops)?;
    ensure_eq!(popped, total, "items popped of the {total} pushed");
    Ok(Outcome::Passed)
}

/// One acknowledged write of the gc race: where it went and the clock before it.
struct GcWrite {
    scope: Vec<u8>,
    kind: usize,
    tag: String,
    clock_before: i64,
    began: u64,
}

/// One gc pass of the race.
struct GcPass {
    returned: u64,
    clock_after: i64,
    removed: BTreeSet<Vec<u8>>,
}

const GC_KINDS: [&str; 6] = [
    "kv_put",
    "CAS",
    "append",
    "append_batch",
    "kv_put_batch",
    "queue_push",
];

/// Do a write of kind `kind` tagged `tag` to `scope`; `false` when a CAS lost.
fn gc_race_write(
    st: &dyn FunctionStorage,
    scope: &[u8],
    tag: &str,
    kind: usize,
) -> Result<bool, StorageError> {
    let v = tag.as_bytes();
    match kind {
        0 => st.kv_put(scope, v, v).map(|()| true),
        // A CAS from absent on a key never written before.
        1 => st.kv_compare_and_swap(scope, v, None, Some(v)),
        2 => st.append(scope, b"n", b"k", v).map(|_| true),
        3 => st
            .append_batch(scope, b"n", b"k", &[v.to_vec(), [v, b"+"].concat()])
            .map(|_| true),
        4 => st
            .kv_put_batch(scope, &[(v.to_vec(), v.to_vec())])
            .map(|()| true),
        _ => st.queue_push(scope, &[v.to_vec()]).map(|()| true),
    }
}

#[allow(clippy::too_many_lines)]
pub(crate) fn every_write_racing_gc_as_the_clock_moves_is_kept(run: &Run<'_>) -> CheckResult {
    const WRITERS: usize = 3;
    // The sweeper moves the clock one step before each pass, so it stands still
    // during a pass. A writer writes to the scope of the current ttl window, two
    // scopes in turn: each is written for one window, left for one, and is
    // written again in the very step it has gone stale, racing the pass that
    // may remove it.
    const SCOPES: usize = 2;
    // Writers do PER_STEP writes per clock step each, so the clock keeps
    // pace with them; their writes of a step race the gc pass of that step.
    const PER_STEP: usize = 4;
    const STEP: Duration = Duration::from_millis(500);
    let writes = scaled(240, 2400);
    let ttl = Duration::from_secs(2);
    let ttl_ms: i64 = 2000;
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    let ticks = Ticks::default();
    let writing = AtomicUsize::new(WRITERS);
    let step = AtomicUsize::new(0);
    let written = AtomicUsize::new(0);
    let (log, passes) = thread::scope(|scope| -> Result<_, Failure> {
        let (ticks, writing, step, written) = (&ticks, &writing, &step, &written);
        let writer_threads: Vec<_> = (0..WRITERS)
            .map(|w| {
                scope.spawn(move || -> Result<Vec<GcWrite>, Failure> {
                    let mut done = Vec::new();
                    let start = Instant::now();
                    let r = (|| {
                        for i in 0..writes {
                            while step.load(Ordering::SeqCst) <= i / PER_STEP {
                                overdue(start, "waiting for the clock to move")?;
                                thread::yield_now();
                            }
                            let tag = format!("w{w}-{i}");
                            let kind = i % GC_KINDS.len();
                            let clock_before = clock.now_millis();
                            let window =
                                usize::try_from(clock_before.div_euclid(ttl_ms)).unwrap_or(0);
                            let s = format!("w{w}-s{}", window % SCOPES).into_bytes();
                            let began = ticks.now();
                            let won = retry(|| gc_race_write(st, &s, &tag, kind))
                                .or_fail(GC_KINDS[kind])?;
                            ensure!(won, "a CAS from absent on a key never written ({tag}) lost");
                            done.push(GcWrite {
                                scope: s,
                                kind,
                                tag,
                                clock_before,
                                began,
                            });
                            written.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(())
                    })();
                    writing.fetch_sub(1, Ordering::SeqCst);
                    r.map(|()| done)
                })
            })
            .collect();
        let sweeper = scope.spawn(move || -> Result<Vec<GcPass>, Failure> {
            let mut passes = Vec::new();
            let start = Instant::now();
            loop {
                let last = writing.load(Ordering::SeqCst) == 0;
                clock.advance(STEP);
                let k = step.fetch_add(1, Ordering::SeqCst) + 1;
                let report = retry(|| st.gc(ttl)).or_fail("gc")?;
                passes.push(GcPass {
                    returned: ticks.now(),
                    clock_after: clock.now_millis(),
                    removed: report.scopes.into_iter().collect(),
                });
                if last {
                    return Ok(passes);
                }
                // Let the writers finish this step's writes before the clock moves again.
                let due = (k * PER_STEP * WRITERS).min(writes * WRITERS);
                while written.load(Ordering::SeqCst) < due && writing.load(Ordering::SeqCst) > 0 {
                    overdue(start, "the gc race")?;
                    thread::yield_now();
                }
            }
        });
        let mut log = Vec::new();
        for w in writer_threads {
            log.extend(join(w)?);
        }
        Ok((log, join(sweeper)?))
    })?;
    // What the store holds now, per scope.
    let mut logs: HashMap<Vec<u8>, BTreeSet<Vec<u8>>> = HashMap::new();
    let mut queues: HashMap<Vec<u8>, BTreeSet<Vec<u8>>> = HashMap::new();
    for w in 0..WRITERS {
        for s in 0..SCOPES {
            let scope = format!("w{w}-s{s}").into_bytes();
            let l = st
                .scan(&scope, b"n", b"k", -1, usize::MAX)
                .or_fail("scan")?;
            logs.insert(scope.clone(), l.into_iter().map(|e| e.value).collect());
            let mut q = BTreeSet::new();
            for _ in 0..=writes {
                match st.queue_pop(&scope).or_fail("queue_pop")? {
                    Some(item) => q.insert(item),
                    None => break,
                };
            }
            queues.insert(scope, q);
        }
    }
    for w in &log {
        let v = w.tag.as_bytes();
        let present = match w.kind {
            0 | 1 | 4 => st.kv_get(&w.scope, v).or_fail("kv_get")?.as_deref() == Some(v),
            2 => logs[&w.scope].contains(v),
            3 => {
                let (a, b) = (
                    logs[&w.scope].contains(v),
                    logs[&w.scope].contains(&[v, b"+"].concat()),
                );
                ensure!(
                    a == b,
                    "half of an append_batch ({}) survived the gc race",
                    w.tag
                );
                a
            }
            _ => queues[&w.scope].contains(v),
        };
        if present {
            continue;
        }
        // Gone: only a gc pass that returned after the write began, and whose
        // cutoff was above the clock before the write, may have removed it.
        let excuse = passes.iter().any(|p| {
            p.returned > w.began
                && p.removed.contains(&w.scope)
                && p.clock_after - ttl_ms > w.clock_before
        });
        ensure!(
            excuse,
            "{} {} to scope {} (acknowledged at clock {} or later) is gone, but no gc pass could have removed it: its scope was written within the ttl of every pass that reported it",
            GC_KINDS[w.kind],
            w.tag,
            show(&w.scope),
            w.clock_before
        );
    }
    // Whether a pass removed a scope during the race depends on the timing; a
    // pass once every scope has gone stale must remove each scope that holds data.
    let holding: BTreeSet<Vec<u8>> = log
        .iter()
        .filter(|w| {
            !logs[&w.scope].is_empty()
                || st
                    .kv_get(&w.scope, w.tag.as_bytes())
                    .ok()
                    .flatten()
                    .is_some()
        })
        .map(|w| w.scope.clone())
        .collect();
    clock.advance(ttl * 2);
    let removed: BTreeSet<Vec<u8>> = st.gc(ttl).or_fail("gc")?.scopes.into_iter().collect();
    ensure!(
        holding.is_subset(&removed),
        "gc after every scope went stale removed {} scopes, not all {} that held data",
        removed.len(),
        holding.len()
    );
    Ok(Outcome::Passed)
}

#[allow(clippy::too_many_lines)]
pub(crate) fn clear_racing_readers_and_writers_hides_what_was_written_before(
    run: &Run<'_>,
) -> CheckResult {
    const WRITERS: usize = 2;
    let writes = scaled(600, 6000);
    let clears = scaled(15, 150);
    let env = run.env()?;
    let st = &*env.store;
    let ticks = Ticks::default();
    let acked_count = AtomicUsize::new(0);
    let writing = AtomicBool::new(true);
    // value -> tick after its write returned
    let acks: Mutex<HashMap<Vec<u8>, u64>> = Mutex::new(HashMap::new());
    let keys: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    // (tick before the read began, value seen)
    let seen: Mutex<Vec<(u64, Vec<u8>)>> = Mutex::new(Vec::new());
    let observe = |began: u64, values: Vec<Vec<u8>>| {
        lock(&seen).extend(values.into_iter().map(|v| (began, v)));
    };
    let read_all = |keys_now: &[Vec<u8>]| -> Result<(), Failure> {
        let began = ticks.now();
        let log = retry(|| st.scan(b"s", b"n", b"k", -1, usize::MAX)).or_fail("scan")?;
        observe(began, log.into_iter().map(|e| e.value).collect());
        let began = ticks.now();
        if let Some(item) = retry(|| st.queue_pop(b"s")).or_fail("queue_pop")? {
            observe(began, vec![item]);
        }
        for k in keys_now {
            let began = ticks.now();
            if let Some(v) = retry(|| st.kv_get(b"s", k)).or_fail("kv_get")? {
                observe(began, vec![v]);
            }
        }
        Ok(())
    };
    let recent_keys = || {
        let keys = lock(&keys);
        keys.iter().rev().take(32).cloned().collect::<Vec<_>>()
    };
    let clear_spans = thread::scope(|scope| -> Result<Vec<(u64, u64)>, Failure> {
        let writer_threads: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (ticks, acks, keys, acked_count) = (&ticks, &acks, &keys, &acked_count);
                scope.spawn(move || -> Result<(), Failure> {
                    for i in 0..writes {
                        let v = format!("w{w}-{i}").into_bytes();
                        match i % 3 {
                            0 => {
                                retry(|| st.kv_put(b"s", &v, &v)).or_fail("kv_put")?;
                                lock(keys).push(v.clone());
                            }
                            1 => drop(retry(|| st.append(b"s", b"n", b"k", &v)).or_fail("append")?),
                            _ => retry(|| st.queue_push(b"s", std::slice::from_ref(&v)))
                                .or_fail("queue_push")?,
                        }
                        lock(acks).insert(v, ticks.now());
                        acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                })
            })
            .collect();
        let reader = scope.spawn(|| -> Result<(), Failure> {
            let start = Instant::now();
            while writing.load(Ordering::SeqCst) {
                read_all(&recent_keys())?;
                overdue(start, "reading while clear raced")?;
            }
            Ok(())
        });
        let clearer = scope.spawn(|| -> Result<Vec<(u64, u64)>, Failure> {
            let start = Instant::now();
            let mut spans = Vec::new();
            for c in 0..clears {
                // Let some writes land first, so each clear has something to remove.
                let want = (c + 1) * writes * WRITERS / (clears + 1);
                while acked_count.load(Ordering::SeqCst) < want {
                    overdue(start, "waiting for writes between clears")?;
                    thread::yield_now();
                }
                let keys_now = recent_keys();
                let began = ticks.now();
                retry(|| st.clear(b"s")).or_fail("clear")?;
                spans.push((began, ticks.now()));
                // Straight after clear returned: nothing written before it began.
                read_all(&keys_now)?;
            }
            Ok(spans)
        });
        let written: Result<(), Failure> = writer_threads.into_iter().try_for_each(join);
        let spans = join(clearer);
        writing.store(false, Ordering::SeqCst);
        join(reader)?;
        written?;
        spans
    })?;
    ensure_eq!(clear_spans.len(), clears, "clears done");
    let acks = lock(&acks);
    for (read_began, v) in lock(&seen).iter() {
        // The last clear that returned before this read began.
        let Some((clear_began, _)) = clear_spans.iter().rev().find(|(_, end)| end < read_began)
        else {
            continue;
        };
        let Some(acked) = acks.get(v) else {
            return Err(Failure::new(format!(
                "a reader saw a value no writer wrote: {}",
                show(v)
            )));
        };
        ensure!(
            acked > clear_began,
            "a read that began after clear returned saw {}, written (and acknowledged) before that clear began",
            show(v)
        );
    }
    Ok(Outcome::Passed)
}

pub(crate) fn a_busy_queue_never_answers_empty_across_threads(run: &Run<'_>) -> CheckResult {
    const POPPERS: usize = 4;
    let n = scaled(2000, 20_000);
    let scratch = run.scratch()?;
    let fx = scratch
        .fx
        .clone()
        .with_busy_timeout(crate::process::SHORT_BUSY);
    let store = run.open(&fx)?;
    let st = &*store;
    let pushes: Vec<Vec<Vec<u8>>> = (0..n / 100)
        .map(|p| {
            (0..100)
                .map(|j| crate::concurrency::item(p * 100 + j))
                .collect()
        })
        .collect();
    for p in &pushes {
        st.queue_push(b"q", p).or_fail("queue_push")?;
    }
    let ticks = Ticks::default();
    let pops = thread::scope(|scope| -> Result<Vec<PopEvent>, Failure> {
        let ticks = &ticks;
        let poppers: Vec<_> = (0..POPPERS)
            .map(|_| scope.spawn(move || pop_until_empty(st, b"q", ticks, &|| true, n)))
            .collect();
        let mut all = Vec::new();
        for p in poppers {
            all.extend(join(p)?);
        }
        Ok(all)
    })?;
    judge_busy_drain(n, &pops)?;
    let _ = judge_pops(&pushes, &pops)?;
    Ok(Outcome::Passed)
}

/// A queue known to hold `n` items: an "empty" answer is right only once all
/// `n` pops that took them out had begun.
pub(crate) fn judge_busy_drain(n: usize, pops: &[PopEvent]) -> Result<(), Failure> {
    let popped = pops.iter().filter(|p| p.item.is_some()).count();
    ensure_eq!(
        popped,
        n,
        "items popped from a queue of {n} drained by several poppers"
    );
    for none in pops.iter().filter(|p| p.item.is_none()) {
        let out = pops
            .iter()
            .filter(|p| p.item.is_some() && p.began < none.returned)
            .count();
        ensure!(
            out == n,
            "a pop answered empty while {} of the {n} items were still queued (a busy store must answer Err, never empty)",
            n - out
        );
    }
    Ok(())
}
