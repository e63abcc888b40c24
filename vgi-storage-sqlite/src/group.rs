//! Group commit: concurrent writes of one process share one transaction.
//!
//! Every commit costs the same whatever it holds (the WAL frames of the pages
//! it dirtied, the lock handover, and with `synchronous = FULL` an fsync), so
//! writers of one process take turns as leader and follower:
//!
//! - A call that finds no leader becomes the leader: it takes the write
//!   connection, runs its own write (on its own borrowed bytes, no copy), then
//!   takes every write already queued by followers, up to [`MAX_OPS`] calls and
//!   [`MAX_BYTES`] of payload, runs them in the same `BEGIN IMMEDIATE`
//!   transaction and commits once. It never waits for followers to come: a
//!   thread alone pays a few locks of an uncontended mutex and nothing else.
//! - A call that finds a leader at work queues a copy of its write and sleeps
//!   until a leader has committed it (or failed it). When a leader is done and
//!   writes are still queued, it wakes the oldest queued caller to lead
//!   next, which takes the queue as its group. A thread already running (the
//!   last leader, back with its next write) may take the lead first, so the
//!   connection does not sit idle while the woken caller is scheduled; the
//!   woken caller then finds its call taken, or still queued and the lead
//!   taken, and sleeps again.
//!
//! What each caller sees is what it would alone:
//!
//! - It returns only after the commit holding its write succeeded. A failed
//!   COMMIT fails every call of the group, and nothing of any of them is
//!   written; the error says so. A COMMIT whose fsync failed may still be in
//!   the WAL (SQLite wrote the frames before syncing them, and a later
//!   recovery can find them), so those calls fail with
//!   [`ErrorKind::OutcomeUnknown`](vgi_storage_core::ErrorKind::OutcomeUnknown).
//! - Each call after the first runs inside a SAVEPOINT: a call that fails on
//!   its own (a statement error) is rolled back to it and fails alone. If
//!   SQLite rolls the whole transaction back for one call's error, that call
//!   fails and the others run again in a fresh transaction: nothing of theirs
//!   was acknowledged, so running them again is invisible to them.
//! - Calls run in the order they queued, on one connection, in one
//!   transaction: a compare-and-swap sees the writes queued before it, log ids
//!   grow in that order, and every id becomes visible at the commit, before any
//!   caller returns. A CAS that answered `false`, or a pop, waits for the
//!   commit like a write: its answer rests on writes of the group.
//! - Nothing is acknowledged before its commit returns, so a panic or a killed
//!   process in the middle of a group loses no acknowledged write; a panicking
//!   leader rolls back and fails the queued calls it had taken.
//!
//! A group's COMMIT runs the write connection's WAL hook like any other
//! commit (see [`crate::checkpoint`]): it wakes the checkpointer thread, and
//! the leader checkpoints inline only past the soft limit, on behalf of every
//! caller in its group, which all wait for the commit anyway.
//!
//! `queue_pop` and `kv_del` join groups too; alone (no other write queued)
//! they run as one autocommit statement as before, which saves BEGIN and
//! COMMIT. `clear`, `gc`, `import_log` and `raise_id_high_water` do not join:
//! they can delete or copy a great deal (a gc batch is 512 scopes), which
//! would make every small write of the group wait for them, and gc reports
//! per transaction what it removed. They take the write connection alone,
//! between groups.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, params};
use vgi_storage_core::{Result, SharedClock, StorageError};

use crate::error::{self, Failed};
use crate::read;
use crate::storage::{self as st, TurnSlot};

/// Calls one group holds at most.
pub(crate) const MAX_OPS: usize = 64;

/// Payload bytes one group holds at most (it may pass this by its last call).
pub(crate) const MAX_BYTES: usize = 16 << 20;

/// One write call, its bytes borrowed (the leader's own) or owned (queued).
#[derive(Debug, Clone)]
pub(crate) enum Op<'a> {
    KvPut {
        scope: Cow<'a, [u8]>,
        key: Cow<'a, [u8]>,
        value: Cow<'a, [u8]>,
    },
    KvPutBatch {
        scope: Cow<'a, [u8]>,
        entries: Cow<'a, [(Vec<u8>, Vec<u8>)]>,
    },
    KvDel {
        scope: Cow<'a, [u8]>,
        key: Cow<'a, [u8]>,
    },
    Cas {
        scope: Cow<'a, [u8]>,
        key: Cow<'a, [u8]>,
        expected: Option<Cow<'a, [u8]>>,
        new: Option<Cow<'a, [u8]>>,
    },
    Append {
        scope: Cow<'a, [u8]>,
        ns: Cow<'a, [u8]>,
        key: Cow<'a, [u8]>,
        value: Cow<'a, [u8]>,
    },
    AppendBatch {
        scope: Cow<'a, [u8]>,
        ns: Cow<'a, [u8]>,
        key: Cow<'a, [u8]>,
        values: Cow<'a, [Vec<u8>]>,
    },
    QueuePush {
        scope: Cow<'a, [u8]>,
        items: Cow<'a, [Vec<u8>]>,
    },
    QueuePop {
        scope: Cow<'a, [u8]>,
    },
}

/// What a write call returns.
#[derive(Debug)]
pub(crate) enum Out {
    Unit,
    Bool(bool),
    Id(i64),
    Ids(Vec<i64>),
    Item(Option<Vec<u8>>),
}

impl Out {
    /// The result of a call that returns nothing.
    pub(crate) fn unit(self) -> Option<()> {
        matches!(self, Out::Unit).then_some(())
    }

    /// A compare-and-swap's answer.
    pub(crate) fn bool(self) -> Option<bool> {
        match self {
            Out::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An append's id.
    pub(crate) fn id(self) -> Option<i64> {
        match self {
            Out::Id(id) => Some(id),
            _ => None,
        }
    }

    /// A batch append's ids.
    pub(crate) fn ids(self) -> Option<Vec<i64>> {
        match self {
            Out::Ids(ids) => Some(ids),
            _ => None,
        }
    }

    /// A pop's item (the outer `Option` says whether this was a pop's result).
    #[allow(
        clippy::option_option,
        reason = "outer: the shape matched; inner: the pop's answer"
    )]
    pub(crate) fn item(self) -> Option<Option<Vec<u8>>> {
        match self {
            Out::Item(item) => Some(item),
            _ => None,
        }
    }
}

fn owned(b: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
    Cow::Owned(b.into_owned())
}

fn owned_list<T: Clone>(b: Cow<'_, [T]>) -> Cow<'static, [T]> {
    Cow::Owned(b.into_owned())
}

impl Op<'_> {
    /// The trait method this call is, for errors.
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Op::KvPut { .. } => "kv_put",
            Op::KvPutBatch { .. } => "kv_put_batch",
            Op::KvDel { .. } => "kv_del",
            Op::Cas { .. } => "kv_compare_and_swap",
            Op::Append { .. } => "append",
            Op::AppendBatch { .. } => "append_batch",
            Op::QueuePush { .. } => "queue_push",
            Op::QueuePop { .. } => "queue_pop",
        }
    }

    /// Payload bytes, counted against [`MAX_BYTES`].
    fn bytes(&self) -> usize {
        match self {
            Op::KvPut { value, .. } | Op::Append { value, .. } => value.len(),
            Op::KvPutBatch { entries, .. } => entries.iter().map(|(k, v)| k.len() + v.len()).sum(),
            Op::Cas { new, .. } => new.as_ref().map_or(0, |v| v.len()),
            Op::AppendBatch { values, .. } | Op::QueuePush { items: values, .. } => {
                values.iter().map(Vec::len).sum()
            }
            Op::KvDel { .. } | Op::QueuePop { .. } => 0,
        }
    }

    /// One statement that needs no transaction when it runs alone.
    fn is_one_statement(&self) -> bool {
        matches!(self, Op::KvDel { .. } | Op::QueuePop { .. })
    }

    /// A copy that owns its bytes, to queue for another thread's transaction.
    fn into_owned(self) -> Op<'static> {
        match self {
            Op::KvPut { scope, key, value } => Op::KvPut {
                scope: owned(scope),
                key: owned(key),
                value: owned(value),
            },
            Op::KvPutBatch { scope, entries } => Op::KvPutBatch {
                scope: owned(scope),
                entries: owned_list(entries),
            },
            Op::KvDel { scope, key } => Op::KvDel {
                scope: owned(scope),
                key: owned(key),
            },
            Op::Cas {
                scope,
                key,
                expected,
                new,
            } => Op::Cas {
                scope: owned(scope),
                key: owned(key),
                expected: expected.map(owned),
                new: new.map(owned),
            },
            Op::Append {
                scope,
                ns,
                key,
                value,
            } => Op::Append {
                scope: owned(scope),
                ns: owned(ns),
                key: owned(key),
                value: owned(value),
            },
            Op::AppendBatch {
                scope,
                ns,
                key,
                values,
            } => Op::AppendBatch {
                scope: owned(scope),
                ns: owned(ns),
                key: owned(key),
                values: owned_list(values),
            },
            Op::QueuePush { scope, items } => Op::QueuePush {
                scope: owned(scope),
                items: owned_list(items),
            },
            Op::QueuePop { scope } => Op::QueuePop {
                scope: owned(scope),
            },
        }
    }

    /// Run the call's statements on `conn` (inside a transaction, or alone in
    /// autocommit mode for [`Op::is_one_statement`]), stamping its scope with `now`.
    fn run(&self, conn: &Connection, now: i64) -> rusqlite::Result<Out> {
        match self {
            Op::KvPut { scope, key, value } => {
                st::kv_put_on(conn, scope, key, value)?;
                st::touch(conn, scope, now)?;
                Ok(Out::Unit)
            }
            Op::KvPutBatch { scope, entries } => {
                for (k, v) in entries.iter() {
                    st::kv_put_on(conn, scope, k, v)?;
                }
                st::touch(conn, scope, now)?;
                Ok(Out::Unit)
            }
            Op::KvDel { scope, key } => {
                st::kv_del_on(conn, scope, key)?;
                Ok(Out::Unit)
            }
            Op::Cas {
                scope,
                key,
                expected,
                new,
            } => {
                let current = st::kv_get_on(conn, scope, key)?;
                if current.as_deref() != expected.as_deref() {
                    return Ok(Out::Bool(false));
                }
                match new {
                    Some(v) => st::kv_put_on(conn, scope, key, v)?,
                    None if current.is_some() => st::kv_del_on(conn, scope, key)?,
                    None => {}
                }
                st::touch(conn, scope, now)?;
                Ok(Out::Bool(true))
            }
            Op::Append {
                scope,
                ns,
                key,
                value,
            } => {
                let id = st::append_on(conn, scope, ns, key, value)?;
                st::touch(conn, scope, now)?;
                Ok(Out::Id(id))
            }
            Op::AppendBatch {
                scope,
                ns,
                key,
                values,
            } => {
                let ids = values
                    .iter()
                    .map(|v| st::append_on(conn, scope, ns, key, v))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                st::touch(conn, scope, now)?;
                Ok(Out::Ids(ids))
            }
            Op::QueuePush { scope, items } => {
                let mut stmt = conn.prepare_cached(st::QUEUE_PUSH)?;
                for item in items.iter() {
                    stmt.execute(params![scope, item])?;
                }
                st::touch(conn, scope, now)?;
                Ok(Out::Unit)
            }
            Op::QueuePop { scope } => {
                // In autocommit mode SQLite commits when the statement
                // finishes and reports a failed commit from the step that
                // finishes it: step to the end (see `queue_pop`).
                let mut stmt = conn.prepare_cached(st::QUEUE_POP)?;
                let mut rows = stmt.query([scope])?;
                let item = match rows.next()? {
                    Some(row) => Some(row.get::<_, Vec<u8>>(0)?),
                    None => None,
                };
                while rows.next()?.is_some() {}
                Ok(Out::Item(item))
            }
        }
    }
}

/// Why a call failed.
#[derive(Debug)]
enum Failure {
    /// Its own statement failed; nothing of it was written, the others went on.
    Own(Failed),
    /// The transaction it was part of could not start, or its COMMIT failed:
    /// `others` other calls failed with it.
    Group { failed: Failed, others: usize },
    /// The leader running it panicked; the transaction was rolled back.
    Panicked,
}

/// What a queued caller is told.
#[derive(Debug)]
enum Notice {
    /// Its call is done.
    Done(std::result::Result<Out, Failure>),
    /// The leader before it is done and it was the oldest queued: it leads
    /// now, unless another thread took the lead (or its call) first.
    Lead,
}

/// Where a queued caller sleeps until a leader tells it something.
#[derive(Debug, Default)]
struct Slot {
    notice: Mutex<Option<Notice>>,
    told: Condvar,
}

impl Slot {
    fn tell(&self, notice: Notice) {
        *lock(&self.notice) = Some(notice);
        self.told.notify_one();
    }

    fn wait(&self) -> Notice {
        let mut notice = lock(&self.notice);
        loop {
            if let Some(n) = notice.take() {
                return n;
            }
            notice = self
                .told
                .wait(notice)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[derive(Debug)]
struct Queued {
    op: Op<'static>,
    slot: Arc<Slot>,
}

#[derive(Debug, Default)]
struct State {
    /// A leader is at work (or has been named and is waking up).
    leading: bool,
    queue: VecDeque<Queued>,
}

/// The group-commit queue of one store's write connection.
#[derive(Debug, Default)]
pub(crate) struct Group {
    state: Mutex<State>,
}

/// What a leader needs of the store.
pub(crate) struct Ctx<'s> {
    pub(crate) name: &'s str,
    pub(crate) writer: &'s Mutex<Connection>,
    pub(crate) clock: &'s SharedClock,
    pub(crate) turn: &'s TurnSlot,
    /// Writers waiting for the write connection: reads borrow it only while
    /// this is zero (see [`crate::read::ReadPool::with`]).
    pub(crate) writers_waiting: &'s AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent before anything
    // that could panic, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One call in a leader's hands.
struct Entry<'a> {
    op: Op<'a>,
    /// `None` for the leader's own call.
    slot: Option<Arc<Slot>>,
    /// Its answer in the current transaction, awaiting COMMIT.
    out: Option<Out>,
    /// Its final result, once known.
    done: Option<std::result::Result<Out, Failure>>,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        // Only on a panic of the leader: a queued caller must not sleep forever.
        if let Some(slot) = self.slot.take() {
            slot.tell(Notice::Done(Err(Failure::Panicked)));
        }
    }
}

/// Clears `leading` when the current leader is done, also when it panics, and
/// wakes the oldest queued caller to lead next. A thread already running
/// (the leader's own, back with its next write) may take the lead first: the
/// connection does not sit idle while a sleeping follower wakes up.
struct Leading<'g>(&'g Group);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.leading = false;
        if let Some(next) = state.queue.front() {
            next.slot.tell(Notice::Lead);
        }
    }
}

impl Group {
    /// Run `op` in a group commit and return its result once its transaction
    /// has committed.
    pub(crate) fn submit(&self, ctx: &Ctx<'_>, op: Op<'_>) -> Result<Out> {
        let operation = op.operation();
        let mut state = lock(&self.state);
        if !state.leading {
            state.leading = true;
            drop(state);
            return self.lead(ctx, Some(op), None, operation);
        }
        // A leader is at work: queue a copy, made without holding the lock.
        drop(state);
        let op = op.into_owned();
        let slot = Arc::new(Slot::default());
        let mut state = lock(&self.state);
        if !state.leading {
            state.leading = true;
            drop(state);
            return self.lead(ctx, Some(op), None, operation);
        }
        state.queue.push_back(Queued {
            op,
            slot: Arc::clone(&slot),
        });
        drop(state);
        loop {
            match slot.wait() {
                Notice::Done(result) => {
                    return result.map_err(|f| failure(ctx.name, operation, f));
                }
                Notice::Lead => {
                    // Lead only if the call is still queued (a leader that
                    // came first takes it, and tells it `Done`) and nobody
                    // leads; else sleep again. Calls leave the queue only from
                    // its front, so a queued call told to lead is its oldest.
                    let mut state = lock(&self.state);
                    let queued = state.queue.iter().any(|q| Arc::ptr_eq(&q.slot, &slot));
                    if queued && !state.leading {
                        state.leading = true;
                        drop(state);
                        return self.lead(ctx, None, Some(&slot), operation);
                    }
                }
            }
        }
    }

    /// Take queued calls, oldest first, up to the group's limits.
    fn take(&self, entries: &mut Vec<Entry<'_>>, bytes: &mut usize) {
        let mut state = lock(&self.state);
        while entries.len() < MAX_OPS && *bytes < MAX_BYTES {
            let Some(q) = state.queue.pop_front() else {
                break;
            };
            *bytes += q.op.bytes();
            entries.push(Entry {
                op: q.op,
                slot: Some(q.slot),
                out: None,
                done: None,
            });
        }
    }

    /// Lead one group: `own` is the leader's own call, or, for a leader named
    /// from the queue, `me` is its slot (its call is the queue's oldest).
    fn lead(
        &self,
        ctx: &Ctx<'_>,
        own: Option<Op<'_>>,
        me: Option<&Arc<Slot>>,
        operation: &'static str,
    ) -> Result<Out> {
        let _leading = Leading(self);
        let mut entries = Vec::new();
        let mut bytes = 0;
        if let Some(op) = own {
            bytes += op.bytes();
            entries.push(Entry {
                op,
                slot: None,
                out: None,
                done: None,
            });
        }
        {
            let conn = read::lock_writer(ctx.writer, ctx.writers_waiting);
            self.take(&mut entries, &mut bytes);
            let committed = if entries.len() == 1 && entries[0].op.is_one_statement() {
                // Alone and one statement: autocommit, no BEGIN/COMMIT to pay.
                let e = &mut entries[0];
                let r = e.op.run(&conn, ctx.clock.now_millis());
                let ok = r.is_ok();
                e.done = Some(r.map_err(|e| Failure::Own(Failed::from(e))));
                ok
            } else {
                self.run_group(ctx, &conn, &mut entries, &mut bytes)
            };
            if let Some(turn) = ctx.turn.get() {
                let _stepped_aside = turn.finish(committed);
            }
        }
        // Tell every queued caller its result; keep our own.
        let mut mine = None;
        for mut e in entries {
            let done = e.done.take().unwrap_or(Err(Failure::Panicked));
            match e.slot.take() {
                Some(slot) if me.is_some_and(|m| Arc::ptr_eq(m, &slot)) => mine = Some(done),
                Some(slot) => slot.tell(Notice::Done(done)),
                None => mine = Some(done),
            }
        }
        mine.unwrap_or(Err(Failure::Panicked))
            .map_err(|f| failure(ctx.name, operation, f))
    }

    /// Run `entries` (and calls queued meanwhile, within the limits) in one
    /// transaction, again in a new one for those whose transaction SQLite
    /// rolled back under them, and set every entry's result. Returns whether
    /// a transaction committed.
    fn run_group(
        &self,
        ctx: &Ctx<'_>,
        conn: &Connection,
        entries: &mut Vec<Entry<'_>>,
        bytes: &mut usize,
    ) -> bool {
        let mut committed = false;
        // Each pass finishes at least one entry, so this ends.
        while entries.iter().any(|e| e.done.is_none()) {
            if let Err(e) = st::begin_immediate(conn) {
                let failed = Failed::from(e);
                let others = entries.iter().filter(|e| e.done.is_none()).count() - 1;
                for e in entries.iter_mut().filter(|e| e.done.is_none()) {
                    e.done = Some(Err(Failure::Group {
                        failed: failed.duplicate(),
                        others,
                    }));
                }
                return committed;
            }
            let guard = st::Rollback(conn);
            let now = ctx.clock.now_millis();
            let mut lost = false;
            let mut in_tx = 0;
            let mut i = 0;
            loop {
                if i == entries.len() {
                    // Take what queued meanwhile, never waiting for more.
                    self.take(entries, bytes);
                    if i == entries.len() {
                        break;
                    }
                }
                let e = &mut entries[i];
                i += 1;
                if e.done.is_some() {
                    continue;
                }
                match run_isolated(conn, &e.op, now, in_tx > 0) {
                    Ok(out) => {
                        e.out = Some(out);
                        in_tx += 1;
                    }
                    Err(failed) => {
                        e.done = Some(Err(Failure::Own(failed)));
                        if conn.is_autocommit() {
                            // SQLite rolled the whole transaction back: run
                            // the others again in a new one.
                            lost = true;
                            break;
                        }
                    }
                }
            }
            if lost {
                for e in entries.iter_mut() {
                    e.out = None;
                }
                drop(guard);
                continue;
            }
            if in_tx == 0 {
                // Every call failed on its own: nothing to commit.
                drop(guard);
                continue;
            }
            match st::commit(conn) {
                Ok(()) => {
                    std::mem::forget(guard);
                    committed = true;
                    for e in entries.iter_mut() {
                        if let Some(out) = e.out.take() {
                            e.done = Some(Ok(out));
                        }
                    }
                }
                Err(err) => {
                    drop(guard);
                    let failed = Failed::from(err);
                    for e in entries.iter_mut() {
                        if e.out.take().is_some() {
                            e.done = Some(Err(Failure::Group {
                                failed: failed.duplicate(),
                                others: in_tx - 1,
                            }));
                        }
                    }
                }
            }
        }
        committed
    }
}

/// Run `op` inside the open transaction; with `others` (calls already in it),
/// inside a savepoint, so its failure takes back only its own writes.
fn run_isolated(
    conn: &Connection,
    op: &Op<'_>,
    now: i64,
    others: bool,
) -> std::result::Result<Out, Failed> {
    // The error becomes a `Failed` before anything else runs: it reads errno.
    if !others {
        // Nothing else in the transaction: roll it back whole, and the
        // caller's loop, finding no transaction, starts a new one.
        return op.run(conn, now).map_err(|e| {
            let failed = Failed::from(e);
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            failed
        });
    }
    conn.prepare_cached("SAVEPOINT vgi_call")?.execute([])?;
    let ran = op.run(conn, now).and_then(|out| {
        conn.prepare_cached("RELEASE vgi_call")?.execute([])?;
        Ok(out)
    });
    match ran {
        Ok(out) => Ok(out),
        // Its writes are taken back, also when only the RELEASE failed.
        Err(e) => {
            let failed = Failed::from(e);
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK TO vgi_call; RELEASE vgi_call");
            }
            Err(failed)
        }
    }
}

fn failure(store: &str, operation: &'static str, f: Failure) -> StorageError {
    match f {
        Failure::Own(failed) => error::operation(store, operation, failed),
        Failure::Group { failed, others } => error::group(store, operation, failed, others),
        Failure::Panicked => error::group_panicked(store, operation),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use vgi_storage_core::FunctionStorage;

    use super::*;
    use crate::SqliteStorage;

    type Call<'s> = Box<dyn FnOnce() -> Result<String> + Send + 's>;

    /// Run `calls` as one group, in this order: while this test holds the
    /// leader's place, each call queues (the next one starts once the one
    /// before it is queued); then the oldest is named leader and takes them all.
    fn as_one_group(store: &SqliteStorage, calls: Vec<Call<'_>>) -> Vec<Result<String>> {
        let n = calls.len();
        assert!(n <= MAX_OPS);
        lock(&store.group.state).leading = true;
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (i, call) in calls.into_iter().enumerate() {
                handles.push(s.spawn(call));
                let deadline = Instant::now() + Duration::from_secs(10);
                while lock(&store.group.state).queue.len() < i + 1 {
                    assert!(Instant::now() < deadline, "call {i} did not queue");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            drop(Leading(&store.group));
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(error::internal("test", "call", "the call panicked"))
                    })
                })
                .collect()
        })
    }

    fn store() -> std::result::Result<(tempfile::TempDir, SqliteStorage), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let store = SqliteStorage::open(dir.path().join("state.db"))?;
        Ok((dir, store))
    }

    /// A group whose COMMIT fails: every call in it fails, says the group
    /// failed, and nothing of any of them is written. The failure is a
    /// deferred foreign key that a trigger violates when a put writes the key
    /// `doom`, which SQLite checks only at COMMIT.
    #[test]
    fn a_failed_commit_fails_every_call_of_the_group_and_writes_none()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let (_dir, store) = store()?;
        store.queue_push(b"other", &[b"item".to_vec()])?;
        lock(&store.writer).execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE doom_parent (id INTEGER PRIMARY KEY);
             CREATE TABLE doom (p INTEGER REFERENCES doom_parent (id) DEFERRABLE INITIALLY DEFERRED);
             CREATE TRIGGER doom AFTER INSERT ON vgi_kv WHEN NEW.key = x'646f6f6d'
             BEGIN INSERT INTO doom VALUES (1); END;",
        )?;
        let s = &store;
        let calls: Vec<Call<'_>> = vec![
            Box::new(|| s.kv_put(b"s", b"a", b"1").map(|()| "put".into())),
            Box::new(|| s.append(b"s", b"n", b"k", b"x").map(|id| id.to_string())),
            Box::new(|| s.queue_push(b"s", &[b"q".to_vec()]).map(|()| "push".into())),
            Box::new(|| s.kv_put(b"s", b"doom", b"1").map(|()| "doom".into())),
            Box::new(|| {
                s.kv_compare_and_swap(b"s", b"c", None, Some(b"1"))
                    .map(|b| b.to_string())
            }),
            Box::new(|| s.queue_pop(b"other").map(|i| format!("{i:?}"))),
            Box::new(|| s.kv_del(b"s", b"a").map(|()| "del".into())),
        ];
        let results = as_one_group(&store, calls);
        for (i, r) in results.iter().enumerate() {
            let Err(e) = r else {
                panic!("call {i} succeeded in a group whose commit failed: {r:?}");
            };
            let msg = e.to_string();
            assert!(
                msg.contains("6 other concurrent call(s)")
                    && msg.contains("none of them was written"),
                "call {i}: {msg}"
            );
        }
        assert_eq!(store.kv_get(b"s", b"a")?, None);
        assert_eq!(store.kv_get(b"s", b"doom")?, None);
        assert_eq!(store.kv_get(b"s", b"c")?, None);
        assert!(store.scan(b"s", b"n", b"k", -1, 10)?.is_empty());
        assert_eq!(store.queue_pop(b"s")?, None);
        assert_eq!(store.queue_pop(b"other")?, Some(b"item".to_vec()));
        // The store goes on working.
        store.kv_put(b"s", b"a", b"2")?;
        assert_eq!(store.kv_get(b"s", b"a")?, Some(b"2".to_vec()));
        Ok(())
    }

    /// A call that fails on its own must not fail the others of its group:
    /// one whose statement fails (a trigger's ABORT, first in the group, and
    /// again later), and one for whose error SQLite rolls the whole
    /// transaction back (a trigger's ROLLBACK), which takes back the other
    /// calls' writes: they must run again and succeed. A CAS sees the writes
    /// queued before it in the group.
    #[test]
    fn a_call_that_fails_alone_does_not_fail_the_others()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let (_dir, store) = store()?;
        lock(&store.writer).execute_batch(
            "CREATE TRIGGER bad BEFORE INSERT ON vgi_kv WHEN NEW.key = x'626164'
             BEGIN SELECT RAISE(ABORT, 'bad key'); END;
             CREATE TRIGGER worse BEFORE INSERT ON vgi_kv WHEN NEW.key = x'776f727365'
             BEGIN SELECT RAISE(ROLLBACK, 'worse key'); END;",
        )?;
        let s = &store;
        let calls: Vec<Call<'_>> = vec![
            Box::new(|| s.kv_put(b"s", b"bad", b"1").map(|()| "put".into())),
            Box::new(|| s.kv_put(b"s", b"a", b"1").map(|()| "put".into())),
            Box::new(|| s.append(b"s", b"n", b"k", b"x").map(|id| id.to_string())),
            Box::new(|| s.kv_put(b"s", b"bad", b"1").map(|()| "put".into())),
            Box::new(|| {
                s.kv_compare_and_swap(b"s", b"c", None, Some(b"1"))
                    .map(|b| b.to_string())
            }),
            Box::new(|| s.kv_put(b"s", b"worse", b"1").map(|()| "put".into())),
            Box::new(|| {
                s.kv_compare_and_swap(b"s", b"c", Some(b"1"), Some(b"2"))
                    .map(|b| b.to_string())
            }),
            Box::new(|| s.queue_push(b"s", &[b"q".to_vec()]).map(|()| "push".into())),
        ];
        let results = as_one_group(&store, calls);
        let failed =
            |i: usize, what: &str| matches!(&results[i], Err(e) if format!("{e:?}").contains(what));
        assert!(failed(0, "bad key"), "{:?}", results[0]);
        assert!(failed(3, "bad key"), "{:?}", results[3]);
        assert!(failed(5, "worse key"), "{:?}", results[5]);
        let ok: Vec<&str> = [1, 2, 4, 6, 7]
            .iter()
            .map(|&i| results[i].as_deref().unwrap_or("failed"))
            .collect();
        assert_eq!(ok[..1], ["put"]);
        assert_eq!(ok[2..], ["true", "true", "push"]);
        let id: i64 = ok[1].parse()?;
        assert_eq!(
            store
                .scan(b"s", b"n", b"k", -1, 10)?
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>(),
            [id]
        );
        assert_eq!(store.kv_get(b"s", b"a")?, Some(b"1".to_vec()));
        assert_eq!(store.kv_get(b"s", b"c")?, Some(b"2".to_vec()));
        assert_eq!(store.kv_get(b"s", b"bad")?, None);
        assert_eq!(store.kv_get(b"s", b"worse")?, None);
        assert_eq!(store.queue_pop(b"s")?, Some(b"q".to_vec()));
        Ok(())
    }

    /// A clock that panics once when armed: the leader reads it inside the
    /// group's transaction.
    #[derive(Debug, Default)]
    struct PanickingClock(std::sync::atomic::AtomicBool);

    impl vgi_storage_core::Clock for PanickingClock {
        fn now_millis(&self) -> i64 {
            assert!(
                !self.0.swap(false, std::sync::atomic::Ordering::SeqCst),
                "the clock panics, as armed"
            );
            1_000
        }
    }

    /// A leader that panics in the middle of its group (here: reading the
    /// clock inside the transaction) must not leave the callers it took
    /// asleep, nor write anything of theirs; the store goes on working.
    #[test]
    fn a_leader_that_panics_fails_its_group_and_writes_none()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let clock = Arc::new(PanickingClock::default());
        let store = SqliteStorage::builder(dir.path().join("state.db"))
            .clock(clock.clone())
            .open()?;
        clock.0.store(true, std::sync::atomic::Ordering::SeqCst);
        let s = &store;
        let calls: Vec<Call<'_>> = vec![
            Box::new(|| s.kv_put(b"s", b"a", b"1").map(|()| "put".into())),
            Box::new(|| s.append(b"s", b"n", b"k", b"x").map(|id| id.to_string())),
            Box::new(|| s.queue_push(b"s", &[b"q".to_vec()]).map(|()| "push".into())),
        ];
        let results = as_one_group(&store, calls);
        let message = |i: usize| match &results[i] {
            Ok(v) => format!("succeeded: {v}"),
            Err(e) => e.to_string(),
        };
        assert!(message(0).contains("the call panicked"), "{}", message(0));
        for i in 1..3 {
            assert!(
                message(i).contains("panicked; it was rolled back"),
                "{}",
                message(i)
            );
        }
        assert_eq!(store.kv_get(b"s", b"a")?, None);
        assert!(store.scan(b"s", b"n", b"k", -1, 10)?.is_empty());
        assert_eq!(store.queue_pop(b"s")?, None);
        store.kv_put(b"s", b"a", b"2")?;
        assert_eq!(store.kv_get(b"s", b"a")?, Some(b"2".to_vec()));
        Ok(())
    }

    /// A group stops at its limits; the calls left queued are led by the
    /// oldest of them, not stranded.
    #[test]
    fn a_group_holds_at_most_max_ops_and_the_rest_follow()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let (_dir, store) = store()?;
        let mut entries = Vec::new();
        let mut bytes = 0;
        {
            let mut state = lock(&store.group.state);
            for i in 0..MAX_OPS + 3 {
                state.queue.push_back(Queued {
                    op: Op::QueuePush {
                        scope: Cow::Borrowed(b"s"),
                        items: Cow::Owned(vec![vec![u8::try_from(i % 256)?]]),
                    },
                    slot: Arc::default(),
                });
            }
        }
        store.group.take(&mut entries, &mut bytes);
        assert_eq!(entries.len(), MAX_OPS);
        assert_eq!(lock(&store.group.state).queue.len(), 3);
        for e in &mut entries {
            e.slot = None;
        }
        let mut big = Vec::new();
        let mut bytes = MAX_BYTES;
        store.group.take(&mut big, &mut bytes);
        assert!(big.is_empty(), "took calls past the byte limit");
        lock(&store.group.state).queue.clear();
        Ok(())
    }
}
