//! The write operations and how one write transaction applies them.
//!
//! Layout (every operation is a point lookup or one contiguous range):
//!
//! | table                 | key                          | value   |
//! |-----------------------|------------------------------|---------|
//! | `kv`                  | `(scope, key)`               | bytes   |
//! | `log`                 | `(scope, ns, key, id)`       | bytes   |
//! | `queue`               | `(scope, seq)`               | bytes   |
//! | `scope_touch`         | `scope`                      | millis  |
//! | `scope_touch_by_time` | `(millis, scope)`            | `()`    |
//! | `meta`                | name                         | `u64`   |
//!
//! redb compares tuple keys element by element, each byte string by plain byte order,
//! so "every row of scope `s`" is exactly the range `(s, ..) .. (s ++ [0], ..)`: the
//! byte string `s ++ [0]` is the immediate successor of `s`, so nothing of another
//! scope falls between them, whatever bytes (empty, NUL, 0xFF) the scopes hold.

use std::slice;
use std::time::Duration;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use vgi_storage_core::{GcReport, gc_cutoff_millis};

/// `(scope, key) -> value`.
pub(crate) const KV: TableDefinition<(&[u8], &[u8]), &[u8]> = TableDefinition::new("kv");
/// `(scope, ns, key, id) -> value`.
pub(crate) const LOG: TableDefinition<LogKey, &[u8]> = TableDefinition::new("log");

/// `(scope, ns, key, id)`.
pub(crate) type LogKey = (&'static [u8], &'static [u8], &'static [u8], u64);
/// `(scope, seq) -> item`.
pub(crate) const QUEUE: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("queue");
/// `scope -> last write (ms)`.
pub(crate) const TOUCH: TableDefinition<&[u8], i64> = TableDefinition::new("scope_touch");
/// `(last write (ms), scope) -> ()`: `gc` finds stale scopes by range.
pub(crate) const TOUCH_BY_TIME: TableDefinition<(i64, &[u8]), ()> =
    TableDefinition::new("scope_touch_by_time");
/// Counters and the schema version.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Meta key of the next log id to hand out.
pub(crate) const NEXT_ID: &str = "next_log_id";
/// Meta key of the next queue sequence number to hand out.
pub(crate) const NEXT_SEQ: &str = "next_queue_seq";
/// Meta key of the schema version.
pub(crate) const SCHEMA_VERSION: &str = "schema_version";
/// The schema this build writes and reads.
pub(crate) const SCHEMA: u64 = 1;

/// The largest id handed out; ids are returned as `i64`.
const MAX_ID: u64 = i64::MAX as u64;

/// The immediate successor of `scope` in byte order: the exclusive end of its range.
pub(crate) fn successor(scope: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(scope.len() + 1);
    next.extend_from_slice(scope);
    next.push(0);
    next
}

/// One write, borrowing the caller's arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    KvPut {
        scope: &'a [u8],
        key: &'a [u8],
        value: &'a [u8],
    },
    KvDel {
        scope: &'a [u8],
        key: &'a [u8],
    },
    Cas {
        scope: &'a [u8],
        key: &'a [u8],
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
    },
    Append {
        scope: &'a [u8],
        ns: &'a [u8],
        key: &'a [u8],
        value: &'a [u8],
    },
    AppendBatch {
        scope: &'a [u8],
        ns: &'a [u8],
        key: &'a [u8],
        values: &'a [Vec<u8>],
    },
    KvPutBatch {
        scope: &'a [u8],
        entries: &'a [(Vec<u8>, Vec<u8>)],
    },
    QueuePush {
        scope: &'a [u8],
        items: &'a [Vec<u8>],
    },
    QueuePop {
        scope: &'a [u8],
    },
    Clear {
        scope: &'a [u8],
    },
    /// Remove at most `limit` stale scopes.
    Gc {
        ttl: Duration,
        limit: usize,
    },
    /// An empty commit: makes earlier non-durable commits durable.
    Flush,
}

/// One write with its arguments copied, for a thread that hands it to the group leader.
#[derive(Debug)]
pub(crate) enum OwnedOp {
    KvPut(Vec<u8>, Vec<u8>, Vec<u8>),
    KvDel(Vec<u8>, Vec<u8>),
    Cas(Vec<u8>, Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>),
    Append(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>),
    AppendBatch(Vec<u8>, Vec<u8>, Vec<u8>, Vec<Vec<u8>>),
    KvPutBatch(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>),
    QueuePush(Vec<u8>, Vec<Vec<u8>>),
    QueuePop(Vec<u8>),
    Clear(Vec<u8>),
    Gc(Duration, usize),
    Flush,
}

impl Op<'_> {
    /// The trait method this write serves, for error messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::KvPut { .. } => "kv_put",
            Op::KvDel { .. } => "kv_del",
            Op::Cas { .. } => "kv_compare_and_swap",
            Op::Append { .. } => "append",
            Op::AppendBatch { .. } => "append_batch",
            Op::KvPutBatch { .. } => "kv_put_batch",
            Op::QueuePush { .. } => "queue_push",
            Op::QueuePop { .. } => "queue_pop",
            Op::Clear { .. } => "clear",
            Op::Gc { .. } => "gc",
            Op::Flush => "flush",
        }
    }

    /// Copy the arguments.
    pub(crate) fn to_owned_op(self) -> OwnedOp {
        match self {
            Op::KvPut { scope, key, value } => {
                OwnedOp::KvPut(scope.into(), key.into(), value.into())
            }
            Op::KvDel { scope, key } => OwnedOp::KvDel(scope.into(), key.into()),
            Op::Cas {
                scope,
                key,
                expected,
                new,
            } => OwnedOp::Cas(
                scope.into(),
                key.into(),
                expected.map(Into::into),
                new.map(Into::into),
            ),
            Op::Append {
                scope,
                ns,
                key,
                value,
            } => OwnedOp::Append(scope.into(), ns.into(), key.into(), value.into()),
            Op::AppendBatch {
                scope,
                ns,
                key,
                values,
            } => OwnedOp::AppendBatch(scope.into(), ns.into(), key.into(), values.to_vec()),
            Op::KvPutBatch { scope, entries } => {
                OwnedOp::KvPutBatch(scope.into(), entries.to_vec())
            }
            Op::QueuePush { scope, items } => OwnedOp::QueuePush(scope.into(), items.to_vec()),
            Op::QueuePop { scope } => OwnedOp::QueuePop(scope.into()),
            Op::Clear { scope } => OwnedOp::Clear(scope.into()),
            Op::Gc { ttl, limit } => OwnedOp::Gc(ttl, limit),
            Op::Flush => OwnedOp::Flush,
        }
    }
}

impl OwnedOp {
    /// Borrow the copied arguments.
    pub(crate) fn view(&self) -> Op<'_> {
        match self {
            OwnedOp::KvPut(scope, key, value) => Op::KvPut { scope, key, value },
            OwnedOp::KvDel(scope, key) => Op::KvDel { scope, key },
            OwnedOp::Cas(scope, key, expected, new) => Op::Cas {
                scope,
                key,
                expected: expected.as_deref(),
                new: new.as_deref(),
            },
            OwnedOp::Append(scope, ns, key, value) => Op::Append {
                scope,
                ns,
                key,
                value,
            },
            OwnedOp::AppendBatch(scope, ns, key, values) => Op::AppendBatch {
                scope,
                ns,
                key,
                values,
            },
            OwnedOp::KvPutBatch(scope, entries) => Op::KvPutBatch { scope, entries },
            OwnedOp::QueuePush(scope, items) => Op::QueuePush { scope, items },
            OwnedOp::QueuePop(scope) => Op::QueuePop { scope },
            OwnedOp::Clear(scope) => Op::Clear { scope },
            OwnedOp::Gc(ttl, limit) => Op::Gc {
                ttl: *ttl,
                limit: *limit,
            },
            OwnedOp::Flush => Op::Flush,
        }
    }
}

/// What a write returns.
#[derive(Debug)]
pub(crate) enum Reply {
    Unit,
    Bool(bool),
    Id(i64),
    Ids(Vec<i64>),
    Item(Option<Vec<u8>>),
    Gc(GcReport),
}

type KvTable<'t> = Table<'t, (&'static [u8], &'static [u8]), &'static [u8]>;
type LogTable<'t> = Table<'t, LogKey, &'static [u8]>;
type QueueTable<'t> = Table<'t, (&'static [u8], u64), &'static [u8]>;
type TouchTable<'t> = Table<'t, &'static [u8], i64>;
type TouchByTimeTable<'t> = Table<'t, (i64, &'static [u8]), ()>;
type MetaTable<'t> = Table<'t, &'static str, u64>;

/// A counter of the meta table, loaded on first use and written back once per transaction.
#[derive(Debug, Default)]
struct Counter {
    next: Option<u64>,
    dirty: bool,
}

/// The tables of one write transaction, opened on first use.
pub(crate) struct Tx<'t> {
    txn: &'t WriteTransaction,
    now: i64,
    kv: Option<KvTable<'t>>,
    log: Option<LogTable<'t>>,
    queue: Option<QueueTable<'t>>,
    touch: Option<TouchTable<'t>>,
    by_time: Option<TouchByTimeTable<'t>>,
    meta: Option<MetaTable<'t>>,
    ids: Counter,
    seqs: Counter,
}

/// Open `def` into `slot` unless it is open already.
macro_rules! table {
    ($self:ident . $field:ident, $def:expr) => {{
        let table = match $self.$field.take() {
            Some(table) => table,
            None => $self.txn.open_table($def)?,
        };
        $self.$field.insert(table)
    }};
}

impl<'t> Tx<'t> {
    /// Tables of `txn`; writes are stamped with `now` (ms).
    pub(crate) fn new(txn: &'t WriteTransaction, now: i64) -> Self {
        Self {
            txn,
            now,
            kv: None,
            log: None,
            queue: None,
            touch: None,
            by_time: None,
            meta: None,
            ids: Counter::default(),
            seqs: Counter::default(),
        }
    }

    /// Apply one write.
    pub(crate) fn apply(&mut self, op: Op<'_>) -> Result<Reply, redb::Error> {
        Ok(match op {
            Op::KvPut { scope, key, value } => {
                table!(self.kv, KV).insert((scope, key), value)?;
                self.touch(scope)?;
                Reply::Unit
            }
            Op::KvDel { scope, key } => {
                table!(self.kv, KV).remove((scope, key))?;
                Reply::Unit
            }
            Op::Cas {
                scope,
                key,
                expected,
                new,
            } => {
                let kv = table!(self.kv, KV);
                let matches = {
                    let current = kv.get((scope, key))?;
                    current.as_ref().map(redb::AccessGuard::value) == expected
                };
                if matches {
                    match new {
                        Some(value) => drop(kv.insert((scope, key), value)?),
                        None => drop(kv.remove((scope, key))?),
                    }
                    self.touch(scope)?;
                }
                Reply::Bool(matches)
            }
            Op::Append {
                scope,
                ns,
                key,
                value,
            } => {
                let ids = self.append(scope, ns, key, slice::from_ref(&value))?;
                Reply::Id(ids.first().copied().unwrap_or_default())
            }
            Op::AppendBatch {
                scope,
                ns,
                key,
                values,
            } => Reply::Ids(self.append(scope, ns, key, values)?),
            Op::KvPutBatch { scope, entries } => {
                if !entries.is_empty() {
                    let kv = table!(self.kv, KV);
                    for (key, value) in entries {
                        kv.insert((scope, key.as_slice()), value.as_slice())?;
                    }
                    self.touch(scope)?;
                }
                Reply::Unit
            }
            Op::QueuePush { scope, items } => {
                if !items.is_empty() {
                    let first = self.next(false, items.len() as u64)?;
                    let queue = table!(self.queue, QUEUE);
                    for (seq, item) in (first..).zip(items) {
                        queue.insert((scope, seq), item.as_slice())?;
                    }
                    self.touch(scope)?;
                }
                Reply::Unit
            }
            Op::QueuePop { scope } => Reply::Item(self.pop(scope)?),
            Op::Clear { scope } => {
                self.clear(scope)?;
                Reply::Unit
            }
            Op::Gc { ttl, limit } => Reply::Gc(self.gc(ttl, limit)?),
            Op::Flush => Reply::Unit,
        })
    }

    /// Append `values` to one log; ids in order.
    fn append<V: AsRef<[u8]>>(
        &mut self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[V],
    ) -> Result<Vec<i64>, redb::Error> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.next(true, values.len() as u64)?;
        let log = table!(self.log, LOG);
        let mut ids = Vec::with_capacity(values.len());
        for (id, value) in (first..).zip(values) {
            log.insert((scope, ns, key, id), value.as_ref())?;
            ids.push(id as i64);
        }
        self.touch(scope)?;
        Ok(ids)
    }

    /// Remove and return the first item of the queue of `scope`.
    fn pop(&mut self, scope: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        let end = successor(scope);
        let queue = table!(self.queue, QUEUE);
        let first = queue
            .range((scope, 0)..(end.as_slice(), 0))?
            .next()
            .transpose()?
            .map(|(k, v)| (k.value().1, v.value().to_vec()));
        if let Some((seq, _)) = &first {
            queue.remove((scope, *seq))?;
        }
        Ok(first.map(|(_, item)| item))
    }

    /// Write the counters back; call once, after the last `apply`.
    pub(crate) fn finish(mut self) -> Result<(), redb::Error> {
        let updates = [(NEXT_ID, &self.ids), (NEXT_SEQ, &self.seqs)]
            .map(|(name, c)| (name, if c.dirty { c.next } else { None }));
        for (name, next) in updates {
            if let Some(next) = next {
                table!(self.meta, META).insert(name, next)?;
            }
        }
        Ok(())
    }

    /// Hand out `n` consecutive numbers from the id (`ids`) or sequence counter.
    fn next(&mut self, ids: bool, n: u64) -> Result<u64, redb::Error> {
        let (name, loaded) = if ids {
            (NEXT_ID, self.ids.next)
        } else {
            (NEXT_SEQ, self.seqs.next)
        };
        let first = match loaded {
            Some(next) => next,
            None => table!(self.meta, META).get(name)?.map_or(1, |v| v.value()),
        };
        let after = first
            .checked_add(n)
            .filter(|after| *after - 1 <= MAX_ID)
            .ok_or_else(|| redb::Error::Corrupted(format!("{name} counter would pass {MAX_ID}")))?;
        let counter = if ids { &mut self.ids } else { &mut self.seqs };
        counter.next = Some(after);
        counter.dirty = true;
        Ok(first)
    }

    /// Stamp `scope` with this transaction's time, keeping the by-time index in step.
    fn touch(&mut self, scope: &[u8]) -> Result<(), redb::Error> {
        let now = self.now;
        let old = table!(self.touch, TOUCH)
            .insert(scope, now)?
            .map(|g| g.value());
        if old != Some(now) {
            let by_time = table!(self.by_time, TOUCH_BY_TIME);
            if let Some(old) = old {
                by_time.remove((old, scope))?;
            }
            by_time.insert((now, scope), ())?;
        }
        Ok(())
    }

    /// Remove every row of `scope`, by range, and its stamp.
    fn clear(&mut self, scope: &[u8]) -> Result<(), redb::Error> {
        let end = successor(scope);
        let end = end.as_slice();
        let none: &[u8] = &[];
        table!(self.kv, KV).retain_in((scope, none)..(end, none), |_, _| false)?;
        table!(self.log, LOG)
            .retain_in((scope, none, none, 0)..(end, none, none, 0), |_, _| false)?;
        table!(self.queue, QUEUE).retain_in((scope, 0)..(end, 0), |_, _| false)?;
        let old = table!(self.touch, TOUCH).remove(scope)?.map(|g| g.value());
        if let Some(old) = old {
            table!(self.by_time, TOUCH_BY_TIME).remove((old, scope))?;
        }
        Ok(())
    }

    /// Remove at most `limit` of the scopes stamped before `now - ttl`.
    fn gc(&mut self, ttl: Duration, limit: usize) -> Result<GcReport, redb::Error> {
        let Some(cutoff) = gc_cutoff_millis(self.now, ttl) else {
            return Ok(GcReport::default());
        };
        let none: &[u8] = &[];
        let stale = table!(self.by_time, TOUCH_BY_TIME)
            .range((i64::MIN, none)..(cutoff, none))?
            .take(limit)
            .map(|row| row.map(|(k, _)| k.value().1.to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        for scope in &stale {
            self.clear(scope)?;
        }
        Ok(GcReport { scopes: stale })
    }
}
