//! The plain in-memory model every result is compared with, the operations the
//! property test generates, and the model-based checks.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use vgi_storage_core::{
    Capabilities, Clock, ErrorKind, FunctionStorage, LogEntry, ManualClock, SharedStorage,
    StorageError, gc_cutoff_millis,
};

use crate::harness::{CheckResult, Failure, Outcome, Run, chain, pattern, show};

/// The scope, namespace and key alphabets: small, so operations collide, and
/// holding the awkward bytes (empty, NUL, 0xFF) a backend might mishandle.
const SCOPES: &[&[u8]] = &[b"", b"\0", b"\xff", b"s"];
const NSS: &[&[u8]] = &[b"", b"\0", b"n"];
const KEYS: &[&[u8]] = &[b"", b"\0", b"\xff", b"k", b"k\0"];

/// The concentrating test's alphabets: two scopes, one namespace, two keys,
/// so nearly every operation lands on a cell an earlier one touched.
const FEW_SCOPES: &[&[u8]] = &[b"", b"s"];
const FEW_NSS: &[&[u8]] = &[b"n"];
const FEW_KEYS: &[&[u8]] = &[b"k", b"\0"];

/// Which alphabets and value sizes a generated sequence draws from.
#[derive(Clone, Copy)]
pub(crate) struct Alphabets {
    scopes: &'static [&'static [u8]],
    nss: &'static [&'static [u8]],
    keys: &'static [&'static [u8]],
    /// Concentrated sequences: small values, more scans after returned ids and more batches.
    concentrated: bool,
}

const WIDE: Alphabets = Alphabets {
    scopes: SCOPES,
    nss: NSS,
    keys: KEYS,
    concentrated: false,
};

const FEW: Alphabets = Alphabets {
    scopes: FEW_SCOPES,
    nss: FEW_NSS,
    keys: FEW_KEYS,
    concentrated: true,
};

/// One of the alphabet's byte strings, printed as a literal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Name(pub(crate) &'static [u8]);

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&show(self.0))
    }
}

/// A value: small bytes, or a large patterned one described by its length
/// (so a failing case prints, shrinks and persists cheaply).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Val {
    Bytes(Vec<u8>),
    Big { len: usize, seed: u8 },
}

impl Val {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Big { len, seed } => pattern(*len, *seed),
        }
    }
}

impl fmt::Debug for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(b) => f.write_str(&show(b)),
            Self::Big { len, seed } => write!(f, "<{len} patterned bytes, seed {seed}>"),
        }
    }
}

/// The `expected` argument of a CAS, resolved against the model when it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expected {
    Absent,
    /// The model's current value (absent if none): the swap should win.
    Current,
    /// A value put earlier in the case (the `n`-th, modulo how many).
    Previous(usize),
    Other(Val),
}

/// The `after_id` of a scan, resolved against the ids seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum After {
    Fixed(i64),
    /// An id the store returned earlier (the `n`-th, modulo how many) plus `delta`.
    Earlier(usize, i8),
    /// An id the store returned earlier for the scanned log (the `n`-th, modulo
    /// how many) plus `delta`.
    EarlierInLog(usize, i8),
}

/// One operation of a generated sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Get(Name, Name),
    Put(Name, Name, Val),
    Del(Name, Name),
    Cas(Name, Name, Expected, Option<Val>),
    Append(Name, Name, Name, Val),
    AppendBatch(Name, Name, Name, Vec<Val>),
    PutBatch(Name, Vec<(Name, Val)>),
    Scan(Name, Name, Name, After, usize),
    Push(Name, Vec<Val>),
    Pop(Name),
    Clear(Name),
    Advance(Duration),
    Gc(Duration),
    /// Drop the store and open it again from the fixture (durable backends only).
    Reopen,
}

fn name(alphabet: &'static [&'static [u8]]) -> BoxedStrategy<Name> {
    proptest::sample::select(alphabet).prop_map(Name).boxed()
}

fn val() -> BoxedStrategy<Val> {
    Union::new_weighted(vec![
        (50, vec(any::<u8>(), 0..8).prop_map(Val::Bytes).boxed()),
        (10, Just(Val::Bytes(Vec::new())).boxed()),
        (
            10,
            vec(prop::sample::select(&[0u8, 0xff, b'a'][..]), 1..6)
                .prop_map(Val::Bytes)
                .boxed(),
        ),
        (8, vec(any::<u8>(), 8..300).prop_map(Val::Bytes).boxed()),
        (
            4,
            (300usize..70_000, any::<u8>())
                .prop_map(|(len, seed)| Val::Big { len, seed })
                .boxed(),
        ),
        // Rare on purpose: at least a mebibyte, about one value in a hundred.
        (
            1,
            ((1usize << 20)..(1 << 20) + 17, any::<u8>())
                .prop_map(|(len, seed)| Val::Big { len, seed })
                .boxed(),
        ),
    ])
    .boxed()
}

fn expected() -> BoxedStrategy<Expected> {
    prop_oneof![
        2 => Just(Expected::Absent),
        4 => Just(Expected::Current),
        3 => any::<usize>().prop_map(Expected::Previous),
        1 => val().prop_map(Expected::Other),
    ]
    .boxed()
}

fn small_val() -> BoxedStrategy<Val> {
    prop_oneof![
        6 => vec(any::<u8>(), 0..4).prop_map(Val::Bytes),
        2 => Just(Val::Bytes(Vec::new())),
        2 => vec(prop::sample::select(&[0u8, b'a'][..]), 1..3).prop_map(Val::Bytes),
    ]
    .boxed()
}

/// `after_id` for the concentrating test: mostly exactly an id already returned.
fn returned_after() -> BoxedStrategy<After> {
    prop_oneof![
        2 => Just(After::Fixed(-1)),
        8 => any::<usize>().prop_map(|n| After::EarlierInLog(n, 0)),
        1 => any::<usize>().prop_map(|n| After::Earlier(n, 0)),
        2 => (any::<usize>(), prop::sample::select(&[-1i8, 1][..])).prop_map(|(n, d)| After::EarlierInLog(n, d)),
    ]
    .boxed()
}

fn after() -> BoxedStrategy<After> {
    prop_oneof![
        3 => Just(After::Fixed(-1)),
        1 => (i64::MIN..0).prop_map(After::Fixed),
        1 => Just(After::Fixed(i64::MIN)),
        1 => Just(After::Fixed(i64::MAX)),
        1 => Just(After::Fixed(0)),
        6 => (any::<usize>(), -1i8..=1).prop_map(|(n, d)| After::Earlier(n, d)),
    ]
    .boxed()
}

fn limit() -> BoxedStrategy<usize> {
    prop_oneof![
        1 => Just(0usize),
        3 => 1usize..4,
        1 => Just(7usize),
        4 => Just(usize::MAX),
    ]
    .boxed()
}

fn ttl() -> BoxedStrategy<Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_millis(1)),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(60)),
        Just(Duration::from_secs(3600)),
        Just(Duration::MAX),
    ]
    .boxed()
}

fn advance() -> BoxedStrategy<Duration> {
    // Steps that land just inside and just past the ttls above, so gc's cutoff is probed.
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_millis(1)),
        (2u64..5_000).prop_map(Duration::from_millis),
        Just(Duration::from_secs(30)),
        Just(Duration::from_millis(59_999)),
        Just(Duration::from_secs(60)),
        Just(Duration::from_secs(1800)),
        Just(Duration::from_secs(3601)),
    ]
    .boxed()
}

#[allow(clippy::too_many_lines)]
type ValsAndAfters = (
    fn() -> BoxedStrategy<Val>,
    fn() -> BoxedStrategy<After>,
    u32,
);

fn op(a: Alphabets, with_reopen: bool) -> BoxedStrategy<Op> {
    let (s, n, k) = (
        move || name(a.scopes),
        move || name(a.nss),
        move || name(a.keys),
    );
    let (val, after, batch): ValsAndAfters = if a.concentrated {
        (small_val, returned_after, 6)
    } else {
        (val, after, 2)
    };
    let mut arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (8, (s(), k()).prop_map(|(s, k)| Op::Get(s, k)).boxed()),
        (
            8,
            (s(), k(), val())
                .prop_map(|(s, k, v)| Op::Put(s, k, v))
                .boxed(),
        ),
        (3, (s(), k()).prop_map(|(s, k)| Op::Del(s, k)).boxed()),
        (
            7,
            (s(), k(), expected(), proptest::option::of(val()))
                .prop_map(|(s, k, e, v)| Op::Cas(s, k, e, v))
                .boxed(),
        ),
        (
            8,
            (s(), n(), k(), val())
                .prop_map(|(s, n, k, v)| Op::Append(s, n, k, v))
                .boxed(),
        ),
        (
            batch,
            (s(), n(), k(), vec(val(), 0..4))
                .prop_map(|(s, n, k, v)| Op::AppendBatch(s, n, k, v))
                .boxed(),
        ),
        (
            batch,
            (s(), vec((k(), val()), 0..4))
                .prop_map(|(s, e)| Op::PutBatch(s, e))
                .boxed(),
        ),
        (
            if a.concentrated { 12 } else { 8 },
            (s(), n(), k(), after(), limit())
                .prop_map(|(s, n, k, a, l)| Op::Scan(s, n, k, a, l))
                .boxed(),
        ),
        (
            4,
            (s(), vec(val(), 0..4))
                .prop_map(|(s, v)| Op::Push(s, v))
                .boxed(),
        ),
        (5, s().prop_map(Op::Pop).boxed()),
        (2, s().prop_map(Op::Clear).boxed()),
        (5, advance().prop_map(Op::Advance).boxed()),
        (5, ttl().prop_map(Op::Gc).boxed()),
    ];
    if with_reopen {
        arms.push((3, Just(Op::Reopen).boxed()));
    }
    Union::new_weighted(arms).boxed()
}

/// Operation sequences for the property test.
pub(crate) fn ops(with_reopen: bool) -> BoxedStrategy<Vec<Op>> {
    vec(op(WIDE, with_reopen), 1..=48).boxed()
}

/// Operation sequences for the concentrating property test: longer, on few cells.
pub(crate) fn concentrated_ops() -> BoxedStrategy<Vec<Op>> {
    vec(op(FEW, false), 8..=64).boxed()
}

type LogKey = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Every log id the store returned, checked as it arrives.
#[derive(Debug, Default)]
pub(crate) struct Ids {
    seen: HashSet<i64>,
    all: Vec<i64>,
    last_per_log: BTreeMap<LogKey, i64>,
    per_log: BTreeMap<LogKey, Vec<i64>>,
}

impl Ids {
    /// Check a new id for `log` against the contract, then remember it.
    pub(crate) fn record(&mut self, log: &LogKey, id: i64) -> Result<(), String> {
        if id < 0 {
            return Err(format!("append returned a negative id {id}"));
        }
        if !self.seen.insert(id) {
            return Err(format!(
                "append returned id {id}, which the store returned before"
            ));
        }
        if let Some(last) = self.last_per_log.get(log).filter(|last| id <= **last) {
            return Err(format!(
                "append returned id {id} for a log that already had id {last}: ids of one log must increase"
            ));
        }
        self.last_per_log.insert(log.clone(), id);
        self.per_log.entry(log.clone()).or_default().push(id);
        self.all.push(id);
        Ok(())
    }

    fn resolve(&self, after: &After, log: &LogKey) -> i64 {
        match after {
            After::Fixed(id) => *id,
            After::EarlierInLog(n, delta) => self
                .per_log
                .get(log)
                .and_then(|ids| ids.get(n % ids.len().max(1)))
                .map_or(-1, |id| id.saturating_add(i64::from(*delta))),
            After::Earlier(n, delta) => self
                .all
                .get(n % self.all.len().max(1))
                .map_or(-1, |id| id.saturating_add(i64::from(*delta))),
        }
    }
}

/// The plain model: what the store must hold after each operation.
#[derive(Debug, Default)]
pub(crate) struct Model {
    kv: BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>,
    logs: BTreeMap<LogKey, Vec<LogEntry>>,
    queues: BTreeMap<Vec<u8>, VecDeque<Vec<u8>>>,
    stamps: BTreeMap<Vec<u8>, i64>,
    pub(crate) ids: Ids,
    /// Every kv value ever put, for CAS with a stale `expected`.
    history: Vec<Vec<u8>>,
    known_kv: BTreeSet<(Vec<u8>, Vec<u8>)>,
    known_logs: BTreeSet<LogKey>,
    known_queues: BTreeSet<Vec<u8>>,
}

/// Where a step runs: the store, its clock and capabilities, and how to reopen it.
pub(crate) struct Target<'a> {
    /// `None` only while the store is being reopened.
    pub(crate) store: Option<SharedStorage>,
    pub(crate) clock: &'a ManualClock,
    pub(crate) caps: Capabilities,
    pub(crate) reopen: &'a dyn Fn() -> Result<SharedStorage, String>,
}

fn unexpected(what: &str, err: &StorageError) -> String {
    format!("{what} returned an error: {}", chain(err))
}

/// The call must have been refused as too large.
fn refused<T: fmt::Debug>(what: &str, res: Result<T, StorageError>) -> Result<(), String> {
    match res {
        Err(e) if e.kind() == ErrorKind::TooLarge => Ok(()),
        Err(e) => Err(format!(
            "{what} with a value over max_value_len should fail with TooLarge, got {:?}: {}",
            e.kind(),
            chain(&e)
        )),
        Ok(v) => Err(format!(
            "{what} with a value over max_value_len should fail with TooLarge, got Ok({})",
            crate::harness::short(&v)
        )),
    }
}

fn ok<T>(what: &str, res: Result<T, StorageError>) -> Result<T, String> {
    res.map_err(|e| unexpected(what, &e))
}

fn same<T: PartialEq + fmt::Debug>(what: &str, got: &T, want: &T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: the model says {}, the store gave {}",
            crate::harness::short(want),
            crate::harness::short(got)
        ))
    }
}

impl Model {
    fn stamp(&mut self, scope: &[u8], now: i64) {
        self.stamps.insert(scope.to_vec(), now);
    }

    fn clear_scope(&mut self, scope: &[u8]) {
        self.kv.retain(|(s, _), _| s != scope);
        self.logs.retain(|(s, _, _), _| s != scope);
        self.queues.remove(scope);
        self.stamps.remove(scope);
    }

    fn log_key(s: Name, n: Name, k: Name) -> LogKey {
        (s.0.to_vec(), n.0.to_vec(), k.0.to_vec())
    }

    /// Run `op` on the store and on the model, and compare.
    #[allow(clippy::too_many_lines, clippy::many_single_char_names)]
    pub(crate) fn step(&mut self, t: &mut Target<'_>, op: &Op) -> Result<(), String> {
        if *op == Op::Reopen {
            // Drop our handle first: a backend may hold its files exclusively.
            t.store = None;
            let store = (t.reopen)()?;
            self.compare_all(&*store, false)?;
            t.store = Some(store);
            return Ok(());
        }
        let store: &dyn FunctionStorage = t.store.as_deref().ok_or("the store was not reopened")?;
        let max = t.caps.max_value_len;
        let now = t.clock.now_millis();
        match op {
            Op::Get(s, k) => {
                let got = ok("kv_get", store.kv_get(s.0, k.0))?;
                let want = self.kv.get(&(s.0.to_vec(), k.0.to_vec())).cloned();
                self.known_kv.insert((s.0.to_vec(), k.0.to_vec()));
                same("kv_get", &got, &want)?;
            }
            Op::Put(s, k, v) => {
                self.known_kv.insert((s.0.to_vec(), k.0.to_vec()));
                let bytes = v.bytes();
                if bytes.len() > max {
                    refused("kv_put", store.kv_put(s.0, k.0, &bytes))?;
                    let got = ok("kv_get", store.kv_get(s.0, k.0))?;
                    let want = self.kv.get(&(s.0.to_vec(), k.0.to_vec())).cloned();
                    same("kv_get after a refused kv_put", &got, &want)?;
                } else {
                    ok("kv_put", store.kv_put(s.0, k.0, &bytes))?;
                    self.history.push(bytes.clone());
                    self.kv.insert((s.0.to_vec(), k.0.to_vec()), bytes);
                    self.stamp(s.0, now);
                }
            }
            Op::Del(s, k) => {
                ok("kv_del", store.kv_del(s.0, k.0))?;
                self.kv.remove(&(s.0.to_vec(), k.0.to_vec()));
            }
            Op::Cas(s, k, e, new) => {
                self.known_kv.insert((s.0.to_vec(), k.0.to_vec()));
                let entry = (s.0.to_vec(), k.0.to_vec());
                let current = self.kv.get(&entry).cloned();
                let expected = match e {
                    Expected::Absent => None,
                    Expected::Current => current.clone(),
                    Expected::Previous(n) => {
                        if self.history.is_empty() {
                            None
                        } else {
                            Some(self.history[n % self.history.len()].clone())
                        }
                    }
                    Expected::Other(v) => Some(v.bytes()),
                };
                let new = new.as_ref().map(Val::bytes);
                let wins = current == expected;
                let res = store.kv_compare_and_swap(s.0, k.0, expected.as_deref(), new.as_deref());
                if new.as_ref().is_some_and(|n| n.len() > max) {
                    // Refused, or (when it would not have won anyway) simply lost.
                    match res {
                        Ok(false) if !wins => {}
                        other => refused("kv_compare_and_swap", other)?,
                    }
                } else {
                    let got = ok("kv_compare_and_swap", res)?;
                    same("kv_compare_and_swap result", &got, &wins)?;
                    if wins {
                        match &new {
                            Some(v) => {
                                self.history.push(v.clone());
                                self.kv.insert(entry, v.clone());
                            }
                            None => {
                                self.kv.remove(&entry);
                            }
                        }
                        self.stamp(s.0, now);
                    }
                }
            }
            Op::Append(s, n, k, v) => {
                let log = Self::log_key(*s, *n, *k);
                self.known_logs.insert(log.clone());
                let bytes = v.bytes();
                if bytes.len() > max {
                    refused("append", store.append(s.0, n.0, k.0, &bytes))?;
                } else {
                    let id = ok("append", store.append(s.0, n.0, k.0, &bytes))?;
                    self.ids.record(&log, id)?;
                    self.logs
                        .entry(log)
                        .or_default()
                        .push(LogEntry { id, value: bytes });
                    self.stamp(s.0, now);
                }
            }
            Op::AppendBatch(s, n, k, vals) => {
                let log = Self::log_key(*s, *n, *k);
                self.known_logs.insert(log.clone());
                let values: Vec<Vec<u8>> = vals.iter().map(Val::bytes).collect();
                if values.iter().any(|v| v.len() > max) {
                    refused("append_batch", store.append_batch(s.0, n.0, k.0, &values))?;
                } else {
                    let ids = ok("append_batch", store.append_batch(s.0, n.0, k.0, &values))?;
                    if ids.len() != values.len() {
                        return Err(format!(
                            "append_batch of {} values returned {} ids",
                            values.len(),
                            ids.len()
                        ));
                    }
                    for (id, value) in ids.into_iter().zip(values) {
                        self.ids.record(&log, id)?;
                        self.logs
                            .entry(log.clone())
                            .or_default()
                            .push(LogEntry { id, value });
                    }
                    if !vals.is_empty() {
                        self.stamp(s.0, now);
                    }
                }
            }
            Op::PutBatch(s, entries) => {
                let entries: Vec<(Vec<u8>, Vec<u8>)> = entries
                    .iter()
                    .map(|(k, v)| (k.0.to_vec(), v.bytes()))
                    .collect();
                for (k, _) in &entries {
                    self.known_kv.insert((s.0.to_vec(), k.clone()));
                }
                if entries.iter().any(|(_, v)| v.len() > max) {
                    refused("kv_put_batch", store.kv_put_batch(s.0, &entries))?;
                } else {
                    ok("kv_put_batch", store.kv_put_batch(s.0, &entries))?;
                    if !entries.is_empty() {
                        self.stamp(s.0, now);
                    }
                    for (k, v) in entries {
                        self.history.push(v.clone());
                        self.kv.insert((s.0.to_vec(), k), v);
                    }
                }
            }
            Op::Scan(s, n, k, after, limit) => {
                let log = Self::log_key(*s, *n, *k);
                self.known_logs.insert(log.clone());
                let after_id = self.ids.resolve(after, &log);
                let got = ok(
                    &format!("scan(after_id {after_id}, limit {limit})"),
                    store.scan(s.0, n.0, k.0, after_id, *limit),
                )?;
                let want: Vec<LogEntry> = self
                    .logs
                    .get(&log)
                    .map(|l| {
                        l.iter()
                            .filter(|e| e.id > after_id)
                            .take(*limit)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                same(
                    &format!("scan(after_id {after_id}, limit {limit})"),
                    &got,
                    &want,
                )?;
            }
            Op::Push(s, items) => {
                self.known_queues.insert(s.0.to_vec());
                let items: Vec<Vec<u8>> = items.iter().map(Val::bytes).collect();
                if items.iter().any(|v| v.len() > max) {
                    refused("queue_push", store.queue_push(s.0, &items))?;
                } else {
                    ok("queue_push", store.queue_push(s.0, &items))?;
                    if !items.is_empty() {
                        self.stamp(s.0, now);
                    }
                    self.queues.entry(s.0.to_vec()).or_default().extend(items);
                }
            }
            Op::Pop(s) => {
                self.known_queues.insert(s.0.to_vec());
                let got = ok("queue_pop", store.queue_pop(s.0))?;
                let want = self.queues.get_mut(s.0).and_then(VecDeque::pop_front);
                same("queue_pop", &got, &want)?;
            }
            Op::Clear(s) => {
                ok("clear", store.clear(s.0))?;
                self.clear_scope(s.0);
            }
            Op::Advance(by) => t.clock.advance(*by),
            Op::Gc(ttl) => {
                let report = ok(&format!("gc({ttl:?})"), store.gc(*ttl))?;
                let removed: BTreeSet<Vec<u8>> = report.scopes.iter().cloned().collect();
                if removed.len() != report.scopes.len() {
                    return Err(format!(
                        "gc({ttl:?}) reported a scope more than once: {:?}",
                        report.scopes.iter().map(|s| show(s)).collect::<Vec<_>>()
                    ));
                }
                let cutoff = gc_cutoff_millis(now, *ttl);
                let stale: BTreeSet<Vec<u8>> = self
                    .stamps
                    .iter()
                    .filter(|(_, stamp)| cutoff.is_some_and(|c| **stamp < c))
                    .map(|(s, _)| s.clone())
                    .collect();
                if removed != stale {
                    return Err(format!(
                        "gc({ttl:?}) at clock {now}: the model removes scopes {:?} (last writes {:?}), the store reported {:?}",
                        stale.iter().map(|s| show(s)).collect::<Vec<_>>(),
                        self.stamps
                            .iter()
                            .map(|(s, t)| (show(s), *t))
                            .collect::<Vec<_>>(),
                        removed.iter().map(|s| show(s)).collect::<Vec<_>>()
                    ));
                }
                for s in &stale {
                    self.clear_scope(s);
                }
            }
            Op::Reopen => {}
        }
        Ok(())
    }

    /// Compare every kv entry and log the model has seen with the store; with
    /// `drain`, pop every queue to the end and compare it too.
    pub(crate) fn compare_all(
        &mut self,
        store: &dyn FunctionStorage,
        drain: bool,
    ) -> Result<(), String> {
        for (s, k) in &self.known_kv {
            let got = ok("kv_get", store.kv_get(s, k))?;
            same(
                &format!("kv_get({}, {}) in the final state", show(s), show(k)),
                &got,
                &self.kv.get(&(s.clone(), k.clone())).cloned(),
            )?;
        }
        for log in &self.known_logs {
            let got = ok("scan", store.scan(&log.0, &log.1, &log.2, -1, usize::MAX))?;
            same(
                &format!(
                    "full scan of log ({}, {}, {}) in the final state",
                    show(&log.0),
                    show(&log.1),
                    show(&log.2)
                ),
                &got,
                &self.logs.get(log).cloned().unwrap_or_default(),
            )?;
        }
        if drain {
            for s in &self.known_queues {
                let mut got = Vec::new();
                while let Some(item) = ok("queue_pop", store.queue_pop(s))? {
                    got.push(item);
                    if got.len() > 100_000 {
                        return Err(format!("queue of scope {} never drains", show(s)));
                    }
                }
                let want: Vec<Vec<u8>> = self.queues.remove(s).map(Vec::from).unwrap_or_default();
                same(
                    &format!("items left in the queue of scope {}", show(s)),
                    &got,
                    &want,
                )?;
            }
        }
        Ok(())
    }
}

/// Run one generated case on a fresh fixture.
fn run_case(run: &Run<'_>, ops: &[Op]) -> Result<(), String> {
    let scratch = run.scratch().map_err(|f| f.report())?;
    let fx = &scratch.fx;
    let store = run.open(fx).map_err(|f| f.report())?;
    let caps = store.capabilities();
    let reopened = fx.reopened();
    let reopen = || run.open(&reopened).map_err(|f| f.report());
    let mut target = Target {
        store: Some(store),
        clock: fx.manual_clock(),
        caps,
        reopen: &reopen,
    };
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        model
            .step(&mut target, op)
            .map_err(|e| format!("operation #{i} {op:?}: {e}"))?;
    }
    let store = target
        .store
        .as_deref()
        .ok_or("the store was not reopened")?;
    model
        .compare_all(store, true)
        .map_err(|e| format!("after all {} operations: {e}", ops.len()))
}

fn run_model(run: &Run<'_>, with_reopen: bool, cases: u32) -> CheckResult {
    run_model_on(run, &ops(with_reopen), cases)
}

fn run_model_on(run: &Run<'_>, strategy: &BoxedStrategy<Vec<Op>>, cases: u32) -> CheckResult {
    let persistence = run
        .settings
        .regressions
        .map(|p| Box::new(FileFailurePersistence::Direct(p)) as Box<_>);
    let config = Config {
        cases,
        failure_persistence: persistence,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    match runner.run(strategy, |ops| {
        run_case(run, &ops).map_err(TestCaseError::fail)
    }) {
        Ok(()) => Ok(Outcome::Passed),
        Err(TestError::Abort(reason)) => Err(Failure::new(format!(
            "the property test was aborted: {reason}"
        ))),
        Err(TestError::Fail(reason, ops)) => Err(Failure::new(format!(
            "{reason}\nminimal failing sequence ({} operations):\n{ops:#?}",
            ops.len()
        ))),
    }
}

/// Random operation sequences give the same results as the model.
pub(crate) fn model_matches_random_operations(run: &Run<'_>) -> CheckResult {
    run_model(run, false, run.settings.model_cases())
}

/// The same, with the store dropped and reopened at random points.
pub(crate) fn model_matches_random_operations_across_reopens(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    if !env.store.capabilities().durable {
        return Ok(Outcome::Skipped(
            "the backend is not durable (capabilities().durable is false)".into(),
        ));
    }
    drop(env);
    run_model(run, true, run.settings.model_cases().div_ceil(2))
}

/// Random sequences on one or two scopes and few keys and logs, so operations
/// hit the same cells: scans after ids already returned, batch and single forms
/// mixed on one log or key.
pub(crate) fn model_matches_concentrated_operations(run: &Run<'_>) -> CheckResult {
    run_model_on(run, &concentrated_ops(), run.settings.concentrated_cases())
}
