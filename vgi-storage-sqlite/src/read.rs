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
//!
//! Large log values (an Arrow batch, 64 KiB to several MiB) are read with
//! incremental blob I/O straight into the `Vec` the caller gets: see
//! [`scan_on`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, TryLockError};

use rusqlite::blob::Blob;
use rusqlite::{Connection, MAIN_DB, params};
use vgi_storage_core::LogEntry;

use crate::config::Options;
use crate::storage::connect;

/// Log values longer than this many bytes are read by incremental blob I/O
/// ([`BlobReader`]) when the scan expects large values ([`LogShape`]).
///
/// Read as a column, a value is loaded by SQLite into a buffer of its own
/// (one allocated per row, past a page's worth) and copied from there into
/// the caller's `Vec`. A blob read fills the caller's `Vec` directly, SQLite
/// reading each overflow page straight into it. Measured interleaved in one
/// process (README, "Reads, third round"): 1.06x to 1.28x for values of
/// 1 to 3 MiB, within the noise from 16 KiB to 64 KiB (where the copy is
/// small beside the reads and the caller's page faults).
const BLOB_READ_MIN: i64 = 16 * 1024;

/// A page of a log, every value read as a column.
pub(crate) const LOG_SCAN: &str = "SELECT id, value FROM vgi_log
    WHERE scope = ?1 AND ns = ?2 AND key = ?3 AND id > ?4 ORDER BY id LIMIT ?5";

/// A page of a log, each value longer than `?6` bytes left out (NULL, which a
/// stored value never is) for [`BlobReader`] to read. `octet_length` reads
/// only the record header, never the value's overflow pages, but it is a
/// function call per row: about 3 % of a scan of 1 KiB values, which is why
/// [`LogShape`] picks between this and [`LOG_SCAN`].
pub(crate) const LOG_SCAN_LARGE: &str = "SELECT id, iif(octet_length(value) > ?6, NULL, value)
    FROM vgi_log WHERE scope = ?1 AND ns = ?2 AND key = ?3 AND id > ?4 ORDER BY id LIMIT ?5";

/// Whether the store's last scan met large values: the next scan uses the
/// statement that suits them ([`LOG_SCAN_LARGE`]), else the plain one. A new
/// store expects large values, as a worker's logs hold Arrow batches.
///
/// Only a guess about speed: both statements return the same entries, so a
/// wrong guess (logs of both kinds scanned in turn, or by racing threads)
/// costs one scan its speed-up or 3 %, never a wrong result.
#[derive(Debug)]
pub(crate) struct LogShape {
    large: AtomicBool,
}

impl Default for LogShape {
    fn default() -> Self {
        Self {
            large: AtomicBool::new(true),
        }
    }
}

/// Reads whole values of `vgi_log.value` by row id, with one blob handle
/// moved from row to row.
///
/// Consistency: a blob handle reads in its connection's read transaction.
/// [`scan_on`] reads with it only while the statement that listed the rows
/// is active (it has not returned its last row, nor been reset), so in
/// autocommit mode the transaction, and its snapshot, is the one the rows
/// came from: a `clear` or `gc` committed meanwhile by another connection
/// (this one is ours alone for the call) cannot make a value torn or missing.
struct BlobReader<'conn> {
    conn: &'conn Connection,
    blob: Option<Blob<'conn>>,
}

impl<'conn> BlobReader<'conn> {
    fn new(conn: &'conn Connection) -> Self {
        Self { conn, blob: None }
    }

    /// The whole value of row `id`, read into a `Vec` of its exact size.
    fn read(&mut self, id: i64) -> rusqlite::Result<Vec<u8>> {
        let blob = match &mut self.blob {
            Some(blob) => {
                blob.reopen(id)?;
                blob
            }
            // Read-only: the handle takes no write lock and cannot change the row.
            none => none.insert(
                self.conn
                    .blob_open(MAIN_DB, c"vgi_log", c"value", id, true)?,
            ),
        };
        // Zeroed, as safe code must hand SQLite initialised memory: for a
        // large value the allocator gives fresh pages, zero already (calloc).
        let mut value = vec![0; blob.len()];
        blob.read_at_exact(&mut value, 0)?;
        Ok(value)
    }
}

/// One page of a log: the entries of `(scope, ns, key)` with id > `after_id`,
/// ascending, at most `limit`, all from one snapshot.
///
/// When `shape` expects large values, values over [`BLOB_READ_MIN`] bytes
/// are read by a [`BlobReader`] while the listing statement is still active
/// (see there why that keeps the snapshot).
pub(crate) fn scan_on(
    conn: &Connection,
    shape: &LogShape,
    (scope, ns, key): (&[u8], &[u8], &[u8]),
    after_id: i64,
    limit: i64,
) -> rusqlite::Result<Vec<LogEntry>> {
    let mut out = Vec::new();
    if shape.large.load(Ordering::Relaxed) {
        let mut stmt = conn.prepare_cached(LOG_SCAN_LARGE)?;
        let mut rows = stmt.query(params![scope, ns, key, after_id, limit, BLOB_READ_MIN])?;
        let mut blobs = BlobReader::new(conn);
        let mut large = false;
        while let Some(row) = rows.next()? {
            let id = row.get(0)?;
            let value = if let Some(value) = row.get(1)? {
                value
            } else {
                large = true;
                blobs.read(id)?
            };
            out.push(LogEntry { id, value });
        }
        if !large && !out.is_empty() {
            shape.large.store(false, Ordering::Relaxed);
        }
    } else {
        let mut stmt = conn.prepare_cached(LOG_SCAN)?;
        let rows = stmt.query_map(params![scope, ns, key, after_id, limit], |r| {
            Ok(LogEntry {
                id: r.get(0)?,
                value: r.get(1)?,
            })
        })?;
        out = rows.collect::<rusqlite::Result<_>>()?;
        let min = usize::try_from(BLOB_READ_MIN).unwrap_or(usize::MAX);
        if out.iter().any(|e| e.value.len() > min) {
            shape.large.store(true, Ordering::Relaxed);
        }
    }
    Ok(out)
}

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
    /// What the store's scans have been meeting, shared by its connections.
    pub(crate) log_shape: LogShape,
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
            log_shape: LogShape::default(),
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
