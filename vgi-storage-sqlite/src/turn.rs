//! Fair turns at the write lock between processes.
//!
//! SQLite's WAL write lock has no queue. A process that commits small
//! transactions back to back holds it all but a microsecond between them, and
//! a waiting process must take a read snapshot and then the lock inside that
//! gap (if a commit lands in between, it gets SQLITE_BUSY_SNAPSHOT and waits
//! again). Measured: one of two processes draining a queue often got no item
//! at all. So a waiting writer says so, with a shared `flock` on a side file
//! (`<database>-turn`) held while it waits, and a writer whose turn has lasted
//! [`TURN`] checks for one after its commit (a non-blocking exclusive `flock`
//! fails) and, if one waits, steps aside for a moment. A turn begins when a
//! writer got the lock after waiting for it, or when it last checked.
//!
//! Turns, rather than stepping aside after every commit a waiter sees: a
//! handover costs a step aside (about 0.1 ms here) while a small commit costs
//! about 0.02 ms, so handing over after each commit ran two processes' pops at
//! half the rate of one process, four at under 0.4x. With turns of 1 ms the
//! cost is about a tenth of a turn, and a waiting writer still gets the lock
//! within about a turn per writer ahead of it.
//!
//! The side file, not the database: closing any descriptor of a file drops
//! every POSIX lock the process holds on it, SQLite's included, so this module
//! must never open the database, its `-wal` or its `-shm`.

use std::ffi::OsString;
use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vgi_storage_core::dirs;

/// How long a writer that is waited for steps aside after its commit: longer
/// than a waiting writer's poll interval (see the busy handler).
const STEP_ASIDE: Duration = Duration::from_micros(100);

/// How long a writer may commit back to back before it looks for a waiter.
const TURN: Duration = Duration::from_millis(1);

/// `<database>-turn`, beside the database.
pub(crate) fn side_file(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push("-turn");
    PathBuf::from(name)
}

/// One store's side of the turnstile.
///
/// Used by one call at a time (the store's write connection is behind a
/// mutex); the fields are atomics only so the busy handler can share it.
#[derive(Debug)]
pub(crate) struct Turn {
    file: File,
    /// The current call waited for the write lock.
    waited: AtomicBool,
    /// ... and holds the shared lock that says so.
    announced: AtomicBool,
    epoch: Instant,
    /// When this store's current turn began, in nanoseconds since `epoch`.
    began: AtomicU64,
}

impl Turn {
    /// Open (or create, mode 0600) the side file of the database at `db`,
    /// never through a symbolic link, and only if it is this user's alone
    /// ([`dirs::open_private_file`]).
    pub(crate) fn open(db: &Path) -> io::Result<Self> {
        let file = dirs::open_private_file(&side_file(db))?;
        Ok(Self {
            file,
            waited: AtomicBool::new(false),
            announced: AtomicBool::new(false),
            epoch: Instant::now(),
            began: AtomicU64::new(0),
        })
    }

    /// Called from the busy handler while this store waits for the write lock.
    pub(crate) fn announce(&self) {
        self.waited.store(true, Ordering::Relaxed);
        if !self.announced.load(Ordering::Relaxed) && self.file.try_lock_shared().is_ok() {
            self.announced.store(true, Ordering::Relaxed);
        }
    }

    /// Called when a call that may write is over; `committed`: it wrote.
    /// Returns whether it stepped aside for a waiting writer.
    pub(crate) fn finish(&self, committed: bool) -> bool {
        if self.announced.swap(false, Ordering::Relaxed) {
            let _ = self.file.unlock();
        }
        let now = self.now();
        if self.waited.swap(false, Ordering::Relaxed) {
            // It had the lock only after waiting: its turn begins.
            self.began.store(now, Ordering::Relaxed);
            return false;
        }
        if !committed || now.saturating_sub(self.began.load(Ordering::Relaxed)) < nanos(TURN) {
            return false;
        }
        let stepped = match self.file.try_lock() {
            Ok(()) => {
                let _ = self.file.unlock();
                false
            }
            Err(TryLockError::WouldBlock) => {
                std::thread::sleep(STEP_ASIDE);
                true
            }
            // Locking unsupported here: no fairness, but no failure either.
            Err(TryLockError::Error(_)) => false,
        };
        self.began.store(self.now(), Ordering::Relaxed);
        stepped
    }

    fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_steps_aside_only_after_its_turn_and_only_for_a_waiter() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("state.db");
        let (a, b) = (Turn::open(&db)?, Turn::open(&db)?);
        std::thread::sleep(2 * TURN);
        assert!(!a.finish(true), "stepped aside with nobody waiting");
        std::thread::sleep(2 * TURN);
        b.announce();
        assert!(!a.finish(false), "stepped aside after a failed call");
        assert!(
            a.finish(true),
            "did not step aside for a waiter after its turn"
        );
        // The waiter got the lock: its turn begins, however long it waited.
        std::thread::sleep(2 * TURN);
        assert!(!b.finish(true), "the waiter stepped aside at once");
        // It no longer waits, so the other has nobody to step aside for.
        std::thread::sleep(2 * TURN);
        assert!(
            !a.finish(true),
            "stepped aside for a writer that got its turn"
        );
        Ok(())
    }
}
