//! A small blocking connection pool: a `Mutex<Vec<_>>` of idle connections and a
//! `Condvar` to wait on, with a checkout deadline.
//!
//! Written here rather than taken from r2d2 because the store needs only this
//! much, and it needs two things a generic pool hides: per-connection prepared
//! statements built against the store's schema, and dropping every idle
//! connection at once when one of them finds the server gone (after a server
//! restart all of them are dead, and handing each out to fail in turn would
//! turn one outage into a string of errors).

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vgi_storage_core::Result;

use crate::error::{self, PgError};

/// Opens one connection, ready to use (statements prepared).
pub(crate) type Connector<C> = Box<dyn Fn() -> Result<C, PgError> + Send + Sync>;

/// What the pool needs to know about a connection.
pub(crate) trait Connection {
    /// The server closed it or it broke; it must not be reused.
    fn is_broken(&self) -> bool;
}

struct State<C> {
    idle: Vec<C>,
    /// Connections that exist: idle ones plus checked out ones plus ones being opened.
    open: usize,
    /// Bumped when the idle list is flushed, so connections checked out before are dropped too.
    generation: u64,
    /// Callers blocked in `get` waiting for a connection. A connection handed
    /// back wakes one only when there is one: every call hands one back, and a
    /// condvar notification is a system call even when nobody waits.
    waiters: usize,
}

pub(crate) struct Pool<C: Connection> {
    state: Mutex<State<C>>,
    freed: Condvar,
    max: usize,
    timeout: Duration,
    connector: Connector<C>,
    store: String,
}

impl<C: Connection> Pool<C> {
    pub(crate) fn new(
        store: String,
        max: usize,
        timeout: Duration,
        connector: Connector<C>,
        first: Option<C>,
    ) -> Self {
        let open = usize::from(first.is_some());
        Self {
            state: Mutex::new(State {
                idle: first.into_iter().collect(),
                open,
                generation: 0,
                waiters: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
            timeout,
            connector,
            store,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // A panic while holding this lock cannot leave the counters half-updated
        // in a way that matters more than losing the pool; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection for `operation`: an idle one, a new one while under the
    /// limit, or the next one freed before the checkout timeout.
    pub(crate) fn get(&self, operation: &'static str) -> Result<Pooled<'_, C>> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut state = self.lock();
        loop {
            while let Some(conn) = state.idle.pop() {
                if conn.is_broken() {
                    state.open -= 1;
                    continue;
                }
                let generation = state.generation;
                return Ok(Pooled {
                    pool: self,
                    conn: Some(conn),
                    generation,
                });
            }
            if state.open < self.max {
                state.open += 1;
                let generation = state.generation;
                drop(state);
                return match (self.connector)() {
                    Ok(conn) => Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                        generation,
                    }),
                    Err(e) => {
                        self.release_slot();
                        Err(error::operation(&self.store, operation, e))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(error::pool_exhausted(
                    &self.store,
                    operation,
                    start.elapsed().as_millis(),
                ));
            }
            state.waiters += 1;
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            state.waiters -= 1;
        }
    }

    /// Release the lock and wake one waiter (or all, with `all`), only if a
    /// caller waits: every call hands a connection back, and a condvar
    /// notification is a system call even when nobody waits.
    fn wake(&self, state: MutexGuard<'_, State<C>>, all: bool) {
        let waiting = state.waiters > 0;
        drop(state);
        match (waiting, all) {
            (false, _) => {}
            (true, false) => self.freed.notify_one(),
            (true, true) => self.freed.notify_all(),
        }
    }

    fn release_slot(&self) {
        let mut state = self.lock();
        state.open -= 1;
        self.wake(state, false);
    }

    /// Drop every idle connection: the server went away, so they are dead too.
    pub(crate) fn flush(&self) {
        let mut state = self.lock();
        let dropped = state.idle.len();
        state.idle.clear();
        state.open -= dropped;
        state.generation += 1;
        self.wake(state, true);
    }

    fn put_back(&self, conn: C, generation: u64, broken: bool) {
        let mut state = self.lock();
        if broken || conn.is_broken() || generation != state.generation {
            state.open -= 1;
        } else {
            state.idle.push(conn);
        }
        self.wake(state, false);
    }
}

/// A checked-out connection; goes back to the pool on drop.
pub(crate) struct Pooled<'a, C: Connection> {
    pool: &'a Pool<C>,
    conn: Option<C>,
    generation: u64,
}

impl<C: Connection> Pooled<'_, C> {
    /// Mark the connection unusable after `err` if the error says so, and drop
    /// the pool's idle connections when the server itself went away.
    pub(crate) fn note_error(&mut self, err: &PgError) {
        if error::breaks_connection(err)
            && let Some(conn) = self.conn.take()
        {
            self.pool.put_back(conn, self.generation, true);
            self.pool.flush();
        }
    }
}

impl<C: Connection> Deref for Pooled<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        // `conn` is only taken by `note_error`, after which callers stop using it.
        match &self.conn {
            Some(c) => c,
            None => unreachable_conn(),
        }
    }
}

impl<C: Connection> DerefMut for Pooled<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable_conn(),
        }
    }
}

#[cold]
fn unreachable_conn() -> ! {
    unreachable!("pooled connection used after it was given up")
}

impl<C: Connection> Drop for Pooled<'_, C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn, self.generation, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Fake(Arc<AtomicBool>);
    impl Connection for Fake {
        fn is_broken(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn pool(max: usize, timeout: Duration, opened: Arc<AtomicUsize>) -> Pool<Fake> {
        Pool::new(
            "postgres://test".into(),
            max,
            timeout,
            Box::new(move || {
                opened.fetch_add(1, Ordering::SeqCst);
                Ok(Fake(Arc::new(AtomicBool::new(false))))
            }),
            None,
        )
    }

    #[test]
    fn exhausted_pool_fails_after_the_timeout_instead_of_hanging() -> Result<()> {
        let opened = Arc::new(AtomicUsize::new(0));
        let pool = pool(2, Duration::from_millis(50), opened.clone());
        let a = pool.get("kv_get")?;
        let _b = pool.get("kv_get")?;
        let start = Instant::now();
        let err = pool.get("kv_get").err();
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            err.map(|e| e.kind()),
            Some(vgi_storage_core::ErrorKind::Unavailable)
        );
        drop(a);
        let _c = pool.get("kv_get")?;
        assert_eq!(opened.load(Ordering::SeqCst), 2, "the freed one is reused");
        Ok(())
    }

    #[test]
    fn a_waiter_gets_the_connection_freed_by_another_thread() -> Result<()> {
        let opened = Arc::new(AtomicUsize::new(0));
        let pool = pool(1, Duration::from_secs(10), opened);
        let held = pool.get("queue_pop")?;
        std::thread::scope(|s| {
            let waiter = s.spawn(|| pool.get("queue_pop").map(|_| ()));
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
            waiter.join().map_err(|_| ()).ok()
        })
        .transpose()?;
        Ok(())
    }

    /// Hand-backs wake a waiter only when one is counted; a waiter must still
    /// be woken when the connection it waits for comes back broken (its slot
    /// is freed, and the waiter opens a fresh one) or the pool is flushed.
    #[test]
    fn a_waiter_wakes_when_a_broken_connection_is_handed_back_or_the_pool_flushed() -> Result<()> {
        let opened = Arc::new(AtomicUsize::new(0));
        let pool = pool(1, Duration::from_secs(10), opened.clone());
        for flush in [false, true] {
            let held = pool.get("kv_put")?;
            let start = Instant::now();
            std::thread::scope(|s| {
                let waiter = s.spawn(|| pool.get("kv_put").map(|_| ()));
                std::thread::sleep(Duration::from_millis(20));
                if flush {
                    pool.flush();
                }
                held.0.store(true, Ordering::SeqCst);
                drop(held);
                waiter.join().map_err(|_| ()).ok()
            })
            .transpose()?;
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the waiter slept until its timeout"
            );
        }
        assert_eq!(opened.load(Ordering::SeqCst), 3, "each broken one replaced");
        Ok(())
    }

    #[test]
    fn broken_connections_are_discarded() -> Result<()> {
        let opened = Arc::new(AtomicUsize::new(0));
        let pool = pool(1, Duration::from_secs(1), opened.clone());
        let conn = pool.get("kv_put")?;
        conn.0.store(true, Ordering::SeqCst);
        drop(conn);
        let _fresh = pool.get("kv_put")?;
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        Ok(())
    }
}
