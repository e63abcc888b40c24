//! Fair turns at the write lock between processes.
//!
//! SQLite's WAL write lock has no queue. A process that commits small
//! transactions back to back holds it all but a microsecond between them, and
//! a waiting process must take a read snapshot and then the lock inside that
//! gap (if a commit lands in between, it gets SQLITE_BUSY_SNAPSHOT and waits
//! again). Measured: one of two processes draining a queue often got no item
//! at all. So a waiting writer says so, with a shared `flock` on a side file
//! (`<database>-turn`) held while it waits, and a writer that has just
//! committed checks for one (a non-blocking exclusive `flock` fails) and steps
//! aside for a moment.
//!
//! The side file, not the database: closing any descriptor of a file drops
//! every POSIX lock the process holds on it, SQLite's included, so this module
//! must never open the database, its `-wal` or its `-shm`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a writer that is waited for steps aside after its commit: longer
/// than a waiting writer's poll interval (see the busy handler).
const STEP_ASIDE: Duration = Duration::from_micros(100);

/// `<database>-turn`, beside the database.
pub(crate) fn side_file(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push("-turn");
    PathBuf::from(name)
}

/// One store's side of the turnstile.
#[derive(Debug)]
pub(crate) struct Turn {
    file: File,
    waiting: AtomicBool,
}

impl Turn {
    /// Open (or create, mode 0600) the side file of the database at `db`.
    pub(crate) fn open(db: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(side_file(db))?;
        Ok(Self {
            file,
            waiting: AtomicBool::new(false),
        })
    }

    /// Called from the busy handler while this store waits for the write lock.
    pub(crate) fn announce(&self) {
        if !self.waiting.load(Ordering::Relaxed) && self.file.try_lock_shared().is_ok() {
            self.waiting.store(true, Ordering::Relaxed);
        }
    }

    /// Called when the call that may have waited is over.
    pub(crate) fn withdraw(&self) {
        if self.waiting.swap(false, Ordering::Relaxed) {
            let _ = self.file.unlock();
        }
    }

    /// Called after a commit: if another writer waits, let it take a turn.
    pub(crate) fn step_aside_if_waited_for(&self) {
        match self.file.try_lock() {
            Ok(()) => {
                let _ = self.file.unlock();
            }
            Err(TryLockError::WouldBlock) => std::thread::sleep(STEP_ASIDE),
            // Locking unsupported here: no fairness, but no failure either.
            Err(TryLockError::Error(_)) => {}
        }
    }
}
