//! Group commit: concurrent writers share one write transaction and one fsync.
//!
//! redb runs one write transaction at a time, and a durable commit costs an fsync.
//! A writer that finds no commit in progress becomes the leader: it applies its own
//! write (borrowed, not copied) and every write queued so far in one transaction,
//! commits, and hands each queued writer its result. A writer that finds a commit in
//! progress queues a copy of its write and waits; when the leader is done, one of the
//! waiting writers leads the next group. Every caller returns only after the commit
//! that holds its write, so durability per call is unchanged. A single thread always
//! leads and pays one uncontended mutex per write, nothing more.

use std::collections::HashMap;
use std::mem;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use vgi_storage_core::{ErrorKind, Result, StorageError};

use crate::ops::{Op, OwnedOp, Reply};

/// The queue of writes waiting for the next group.
#[derive(Debug, Default)]
pub(crate) struct Group {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    leading: bool,
    next_ticket: u64,
    pending: Vec<(u64, OwnedOp)>,
    done: HashMap<u64, Result<Reply>>,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements, so a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `op` in a group transaction; `run` commits a list of writes and returns one
    /// result per write.
    pub(crate) fn write(
        &self,
        store: &str,
        op: Op<'_>,
        run: &dyn Fn(&[Op<'_>]) -> Vec<Result<Reply>>,
    ) -> Result<Reply> {
        let mut state = self.lock();
        if !state.leading {
            state.leading = true;
            let queued = mem::take(&mut state.pending);
            drop(state);
            return self.lead(store, Some(op), &queued, None, run);
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.pending.push((ticket, op.to_owned_op()));
        loop {
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(result) = state.done.remove(&ticket) {
                return result;
            }
            if !state.leading {
                state.leading = true;
                let queued = mem::take(&mut state.pending);
                drop(state);
                return self.lead(store, None, &queued, Some(ticket), run);
            }
        }
    }

    /// Commit `own` (the leader's borrowed write, if it was not queued) and `queued`,
    /// deliver the queued results, and return the leader's.
    fn lead(
        &self,
        store: &str,
        own: Option<Op<'_>>,
        queued: &[(u64, OwnedOp)],
        own_ticket: Option<u64>,
        run: &dyn Fn(&[Op<'_>]) -> Vec<Result<Reply>>,
    ) -> Result<Reply> {
        let mut guard = LeaderGuard {
            group: self,
            store,
            undelivered: queued.iter().map(|(t, _)| *t).collect(),
            armed: true,
        };
        let ops: Vec<Op<'_>> = own
            .into_iter()
            .chain(queued.iter().map(|(_, op)| op.view()))
            .collect();
        let mut results = run(&ops).into_iter();
        let mine = if own.is_some() { results.next() } else { None };
        let mut state = self.lock();
        let mut mine = mine;
        for ((ticket, _), result) in queued.iter().zip(results) {
            if Some(*ticket) == own_ticket {
                mine = Some(result);
            } else {
                state.done.insert(*ticket, result);
            }
        }
        guard.armed = false;
        state.leading = false;
        drop(state);
        self.wake.notify_all();
        mine.unwrap_or_else(|| Err(lost(store)))
    }
}

/// The error a writer gets when its group's leader failed without an answer for it.
fn lost(store: &str) -> StorageError {
    StorageError::operation(
        store,
        "write",
        ErrorKind::Other,
        "the write's group commit was abandoned; it may not have been written, retry it",
        std::io::Error::other("group commit leader stopped"),
    )
}

/// Hands leadership on, and answers the queued writers, even if the leader unwinds.
struct LeaderGuard<'g> {
    group: &'g Group,
    store: &'g str,
    undelivered: Vec<u64>,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.group.lock();
        for ticket in self.undelivered.drain(..) {
            state.done.insert(ticket, Err(lost(self.store)));
        }
        state.leading = false;
        drop(state);
        self.group.wake.notify_all();
    }
}
