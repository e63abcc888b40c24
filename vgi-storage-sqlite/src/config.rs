//! Options and the builder of a [`SqliteStorage`](crate::SqliteStorage).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use vgi_storage_core::{Result, SharedClock, StorageError, system_clock};

use crate::error::BACKEND;

/// How hard SQLite works to make a commit survive a power loss (`PRAGMA synchronous`).
///
/// Parse it from text with [`str::parse`], case-insensitively:
///
/// ```
/// use vgi_storage_sqlite::Synchronous;
///
/// assert_eq!("FULL".parse::<Synchronous>()?, Synchronous::Full);
/// assert!("off".parse::<Synchronous>().is_err());
/// # Ok::<(), vgi_storage_core::StorageError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// The default. In WAL mode a commit survives a crash of the process; the
    /// last commits before a power loss or OS crash may roll back (never corrupt).
    #[default]
    Normal,
    /// Every commit is synced to disk before the call returns: it survives a
    /// power loss too, at the cost of one fsync per write.
    Full,
}

impl Synchronous {
    /// Every value, in the order they are documented.
    pub const ALL: [Self; 2] = [Self::Normal, Self::Full];

    /// The lowercase name, as [`FromStr`] accepts it and `PRAGMA synchronous` takes it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Full => "full",
        }
    }
}

impl fmt::Display for Synchronous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Synchronous {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| StorageError::Config {
                store: BACKEND.to_owned(),
                hint: format!("synchronous must be one of normal, full (got {s:?})"),
                source: None,
            })
    }
}

/// Default busy timeout: how long a call waits for another connection's lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Default number of read connections.
pub const DEFAULT_READ_CONNECTIONS: usize = 4;

/// Default size of SQLite's memory map of the database file, in bytes.
pub const DEFAULT_MMAP_SIZE: u64 = 0;

/// Default page cache of each connection, in KiB (an upper bound, grown as used).
pub const DEFAULT_CACHE_KIB: u32 = 64 * 1024;

/// Default WAL size, in pages, past which the store's background thread
/// checkpoints: the same as SQLite's autocheckpoint.
pub const DEFAULT_CHECKPOINT_PAGES: u32 = 1000;

/// Everything needed to open one connection, shared by the write connection and
/// the read pool.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) synchronous: Synchronous,
    pub(crate) busy_timeout: Duration,
    pub(crate) read_connections: usize,
    pub(crate) mmap_size: u64,
    pub(crate) cache_kib: u32,
    pub(crate) max_value_len: usize,
    pub(crate) checkpoint_pages: u32,
}

/// Builds a [`SqliteStorage`](crate::SqliteStorage) with options; start with
/// [`SqliteStorage::builder`](crate::SqliteStorage::builder).
///
/// ```
/// use std::time::Duration;
/// use vgi_storage_sqlite::{SqliteStorage, Synchronous};
///
/// let dir = tempfile::tempdir()?;
/// let store = SqliteStorage::builder(dir.path().join("state.db"))
///     .synchronous(Synchronous::Full)
///     .busy_timeout(Duration::from_millis(500))
///     .open()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SqliteBuilder {
    pub(crate) path: PathBuf,
    pub(crate) options: Options,
    pub(crate) clock: SharedClock,
}

impl SqliteBuilder {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            options: Options {
                synchronous: Synchronous::default(),
                busy_timeout: DEFAULT_BUSY_TIMEOUT,
                read_connections: DEFAULT_READ_CONNECTIONS,
                mmap_size: DEFAULT_MMAP_SIZE,
                cache_kib: DEFAULT_CACHE_KIB,
                max_value_len: crate::MAX_VALUE_LEN,
                checkpoint_pages: crate::DEFAULT_CHECKPOINT_PAGES,
            },
            clock: system_clock(),
        }
    }

    /// The largest value the store accepts, in bytes; [`crate::MAX_VALUE_LEN`] by
    /// default, and never more. A larger value is refused with
    /// [`ErrorKind::TooLarge`](vgi_storage_core::ErrorKind::TooLarge) and nothing is written.
    pub fn max_value_len(mut self, bytes: usize) -> Self {
        self.options.max_value_len = bytes.min(crate::MAX_VALUE_LEN);
        self
    }

    /// `PRAGMA synchronous` for every connection; [`Synchronous::Normal`] by default.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.options.synchronous = synchronous;
        self
    }

    /// How long a call waits for a lock another connection or process holds
    /// before it fails with a retryable [`ErrorKind::Busy`](vgi_storage_core::ErrorKind::Busy);
    /// 5 s by default. Zero fails at once.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.options.busy_timeout = timeout;
        self
    }

    /// The clock that stamps writes for `gc`; the system clock by default.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// How many connections serve reads (`kv_get`, `scan`) besides the one write
    /// connection; 4 by default, opened as needed. With 0, reads share the write
    /// connection and queue behind writes.
    pub fn read_connections(mut self, n: usize) -> Self {
        self.options.read_connections = n;
        self
    }

    /// `PRAGMA mmap_size` in bytes for every connection; 0 (no memory map) by default.
    ///
    /// A memory map makes reads cheaper, but an I/O error on a mapped page (a
    /// failing disk, a file truncated by another program) then kills the process
    /// with SIGBUS instead of returning an error.
    pub fn mmap_size(mut self, bytes: u64) -> Self {
        self.options.mmap_size = bytes;
        self
    }

    /// The page cache of each connection, in KiB; 64 MiB by default.
    ///
    /// It is an upper bound: a cache grows only as pages are read or written.
    /// Reads run on the write connection while it is idle, whose cache holds
    /// the pages this process wrote; 64 MiB keeps a 10k-entry log of 1 KiB
    /// values in memory (an 8 MiB cache read it back from the file). A read
    /// connection's cache is dropped whenever another connection commits, so
    /// those grow only while nothing is written.
    pub fn cache_size_kib(mut self, kib: u32) -> Self {
        self.options.cache_kib = kib;
        self
    }

    /// The WAL size, in pages, past which the store's background thread
    /// checkpoints the WAL into the database file;
    /// [`DEFAULT_CHECKPOINT_PAGES`](crate::DEFAULT_CHECKPOINT_PAGES) (1000, as
    /// SQLite's own autocheckpoint) by default, at least 1.
    ///
    /// Writers never wait for that checkpoint. Only a commit that leaves the
    /// WAL past four times this size (the thread fell behind, or could not
    /// start) checkpoints inline, as SQLite does by default, so the `-wal`
    /// file stays bounded. A larger value batches more pages per checkpoint
    /// and lets the WAL grow larger before it is reused.
    pub fn checkpoint_pages(mut self, pages: u32) -> Self {
        self.options.checkpoint_pages = pages.max(1);
        self
    }

    /// Open (or create) the store.
    pub fn open(self) -> Result<crate::SqliteStorage> {
        crate::storage::SqliteStorage::from_builder(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgi_storage_core::ErrorKind;

    #[test]
    fn synchronous_parses_case_insensitively_and_round_trips() -> Result<()> {
        for v in Synchronous::ALL {
            assert_eq!(v.to_string().to_uppercase().parse::<Synchronous>()?, v);
        }
        assert_eq!(" Normal ".parse::<Synchronous>()?, Synchronous::Normal);
        Ok(())
    }

    #[test]
    fn unknown_synchronous_lists_the_valid_values() {
        let err = "extra".parse::<Synchronous>().err();
        let err = err.map(|e| (e.kind(), e.to_string()));
        assert!(
            matches!(&err, Some((ErrorKind::InvalidInput, m)) if m.contains("normal, full") && m.contains("extra")),
            "{err:?}"
        );
    }
}
