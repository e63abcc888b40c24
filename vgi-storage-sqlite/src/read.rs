//! The read path: which connection serves `kv_get`, `scan` and the inspection
//! calls.
//!
//! In WAL mode a connection's page cache is dropped whole whenever another
//! connection has committed since its last read. The write connection is the
//! one connection whose cache survives this process's own writes: it made
//! them. So a read runs on the write connection while it is idle and no
//! writer waits for it (a buffering function's source reading back what its
//! sink just appended finds the pages in memory, as the reference does on its
//! single connection), and on a pooled read connection otherwise, so reads
//! never queue behind writes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, TryLockError};

use rusqlite::Connection;

use crate::config::Options;
use crate::storage::connect;

/// Take the write connection for a write, counted in `waiting` while it waits,
/// so reads leave the connection to it (see [`ReadPool::with`]).
///
/// A panic inside a call leaves no transaction open (the callers' guards roll
/// it back while unwinding), so a poisoned connection is still usable.
pub(crate) fn lock_writer<'a>(
    writer: &'a Mutex<Connection>,
    waiting: &AtomicUsize,
) -> MutexGuard<'a, Connection> {
    let _waiting = WaitingWriter::new(waiting);
    writer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a thread waiting for the write connection while it lives.
struct WaitingWriter<'a>(&'a AtomicUsize);

impl<'a> WaitingWriter<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for WaitingWriter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Read connections, opened as needed up to `max`, each used by one call at a time.
pub(crate) struct ReadPool {
    path: PathBuf,
    options: Options,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Connection>,
    open: usize,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf, options: Options) -> Self {
        Self {
            max: options.read_connections,
            path,
            options,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f`, which only reads, on a read connection (or, without a pool, on
    /// `writer` once it is free). With `borrow_writer`, first try `writer`
    /// itself: taken when it is free and no writer is waiting for it
    /// (`writers_waiting`).
    ///
    /// A writer that comes while `f` runs on `writer` waits for `f` to end,
    /// as it would for another writer: a read holds the write connection for
    /// one statement, never across calls. So only the calls whose statement is
    /// short and bounded by what the caller asked for (`kv_get`, `scan`)
    /// borrow it, never a whole-file check.
    pub(crate) fn with<T>(
        &self,
        writer: &Mutex<Connection>,
        writers_waiting: &AtomicUsize,
        borrow_writer: bool,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        if borrow_writer && writers_waiting.load(Ordering::SeqCst) == 0 {
            match writer.try_lock() {
                Ok(conn) => return f(&conn),
                // A panic inside a call leaves no transaction open.
                Err(TryLockError::Poisoned(conn)) => return f(&conn.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        if self.max == 0 {
            return f(&writer.lock().unwrap_or_else(PoisonError::into_inner));
        }
        self.pooled(f)
    }

    fn pooled<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let conn = {
            let mut state = self.lock();
            loop {
                if let Some(conn) = state.idle.pop() {
                    break conn;
                }
                if state.open < self.max {
                    state.open += 1;
                    drop(state);
                    match connect(&self.path, &self.options, true, None) {
                        Ok(conn) => break conn,
                        Err(e) => {
                            self.lock().open -= 1;
                            self.freed.notify_one();
                            return Err(e);
                        }
                    }
                }
                state = self
                    .freed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let out = f(&conn);
        self.lock().idle.push(conn);
        self.freed.notify_one();
        out
    }
}
