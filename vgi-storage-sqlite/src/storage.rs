//! [`SqliteStorage`]: the backend itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use vgi_storage_core::{
    Capabilities, ErrorKind, FunctionStorage, GcReport, LogEntry, LogRecord, Result, ScopeInfo,
    ScopeStats, SharedClock, StorageError, check_import_order, check_value_len, dirs,
    gc_cutoff_millis,
};

use crate::checkpoint::Checkpointer;
use crate::config::{Options, SqliteBuilder};
use crate::error::{self, BACKEND, Failed};
use crate::group::{self, Group, Op, Out};
use crate::inspect;
use crate::read::{self, ReadPool};
use crate::schema;
use crate::turn::Turn;

/// The largest value accepted: a little under SQLite's default row limit
/// (`SQLITE_MAX_LENGTH`, 1e9 bytes), leaving room for the scope and key in the row.
pub const MAX_VALUE_LEN: usize = 1_000_000_000 - (16 << 20);

/// The store's [`Turn`], shared with the write connection's busy handler; set
/// once the file has been opened as a store.
pub(crate) type TurnSlot = Arc<OnceLock<Turn>>;

const CAPABILITIES: Capabilities = Capabilities::new()
    .with_durable(true)
    .with_shared_across_processes(true)
    .with_max_value_len(MAX_VALUE_LEN)
    .with_inspect(true);

/// Scopes one `gc` transaction removes at most, so a large sweep does not
/// hold the write lock for long.
const GC_BATCH: i64 = 512;

const TOUCH: &str = "INSERT INTO vgi_scope (scope, touched_at) VALUES (?1, ?2)
    ON CONFLICT (scope) DO UPDATE SET touched_at = excluded.touched_at
    WHERE touched_at <> excluded.touched_at";
const KV_GET: &str = "SELECT value FROM vgi_kv WHERE scope = ?1 AND key = ?2";
const KV_PUT: &str = "INSERT INTO vgi_kv (scope, key, value) VALUES (?1, ?2, ?3)
    ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value";
const KV_DEL: &str = "DELETE FROM vgi_kv WHERE scope = ?1 AND key = ?2";
const LOG_APPEND: &str = "INSERT INTO vgi_log (scope, ns, key, value) VALUES (?1, ?2, ?3, ?4)";
pub(crate) const QUEUE_PUSH: &str = "INSERT INTO vgi_queue (scope, value) VALUES (?1, ?2)";
pub(crate) const QUEUE_POP: &str = "DELETE FROM vgi_queue WHERE id =
    (SELECT id FROM vgi_queue WHERE scope = ?1 ORDER BY id LIMIT 1) RETURNING value";
const CLEAR: [&str; 4] = [
    "DELETE FROM vgi_kv WHERE scope = ?1",
    "DELETE FROM vgi_log WHERE scope = ?1",
    "DELETE FROM vgi_queue WHERE scope = ?1",
    "DELETE FROM vgi_scope WHERE scope = ?1",
];
const LOG_TOP: &str = "SELECT max(id) FROM vgi_log";
/// The log's largest id, and whether its row is of scope `?1`: only then can
/// deleting the scope take that id out of use.
const CLEAR_TOP: &str = "SELECT id, scope IS ?1 FROM vgi_log ORDER BY id DESC LIMIT 1";
const LOG_KEEP_TOP: &str = "INSERT INTO vgi_log (id, scope, ns, key, value)
    SELECT ?1, NULL, x'', x'', x'' WHERE NOT EXISTS (SELECT 1 FROM vgi_log WHERE id >= ?1)";
const LOG_DROP_OLD_TOPS: &str = "DELETE FROM vgi_log WHERE scope IS NULL AND id < ?1";
/// One gc batch: the first stale scopes in scope order. Within the batch's
/// transaction nothing else writes, so "stale and not above the batch's last
/// scope" names exactly these scopes, and [`GC_DELETE`] removes them set-wise.
const GC_STALE: &str = "SELECT scope FROM vgi_scope WHERE touched_at < ?1 ORDER BY scope LIMIT ?2";
/// Remove every row of the batch [`GC_STALE`] chose (`?1` its cutoff, `?2` its
/// last scope): one statement per table instead of four per scope.
const GC_DELETE: [&str; 4] = [
    "DELETE FROM vgi_kv WHERE scope IN
        (SELECT scope FROM vgi_scope WHERE touched_at < ?1 AND scope <= ?2)",
    "DELETE FROM vgi_log WHERE scope IN
        (SELECT scope FROM vgi_scope WHERE touched_at < ?1 AND scope <= ?2)",
    "DELETE FROM vgi_queue WHERE scope IN
        (SELECT scope FROM vgi_scope WHERE touched_at < ?1 AND scope <= ?2)",
    "DELETE FROM vgi_scope WHERE touched_at < ?1 AND scope <= ?2",
];

/// A durable store in one SQLite file (WAL mode), shared by every process that
/// opens the same path.
///
/// One write connection serves every call that may write, in `BEGIN
/// IMMEDIATE` transactions that concurrent writes of the process share (group
/// commit); a small pool of read connections serves `kv_get` and `scan`
/// without queueing behind writes. See the crate docs.
pub struct SqliteStorage {
    name: String,
    path: PathBuf,
    clock: SharedClock,
    /// Held for its `Drop`, which stops and joins the thread; before `writer`,
    /// so that happens before the write connection closes.
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "only the tests look inside; the store holds it to drop it"
        )
    )]
    pub(crate) checkpointer: Checkpointer,
    pub(crate) writer: Mutex<Connection>,
    pub(crate) group: Group,
    turn: TurnSlot,
    readers: ReadPool,
    writers_waiting: AtomicUsize,
    max_value_len: usize,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStorage {
    /// Open (or create) the store at `path` with the default options.
    ///
    /// The file's directory must exist; a new file is created with mode 0600.
    /// An existing file (or `-wal`, `-shm`, `-turn` beside it) must be owned by
    /// this user and not readable or writable by group or others, else the open
    /// fails with [`ErrorKind::PermissionDenied`]. A file of the reference
    /// implementation is migrated only while no other connection has it open,
    /// else the open fails with [`ErrorKind::AlreadyOpen`]: see the crate docs,
    /// "Upgrading from the reference implementation".
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(path.as_ref()).open()
    }

    /// Start building a store at `path`, to set options before opening.
    pub fn builder(path: impl Into<PathBuf>) -> SqliteBuilder {
        SqliteBuilder::new(path.into())
    }

    /// The default path, `state.db` in the per-user owner-only directory
    /// ([`dirs::default_dir`]), which this creates (mode 0700) or checks.
    pub fn default_path() -> Result<PathBuf> {
        dirs::default_dir()
            .map(|dir| dir.join("state.db"))
            .map_err(|e| error::open_io(BACKEND, &std::env::temp_dir(), e))
    }

    /// Open (or create) the store at [`SqliteStorage::default_path`] with the default options.
    pub fn open_default() -> Result<Self> {
        Self::open(Self::default_path()?)
    }

    /// The database file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn from_builder(b: SqliteBuilder) -> Result<Self> {
        let SqliteBuilder {
            path,
            options,
            clock,
        } = b;
        let name = format!("{BACKEND}:{}", path.display());
        prepare_file(&name, &path)?;
        let turn = TurnSlot::default();
        let mut writer = open_writer(&name, &path, &options, &turn)?;
        let checkpointer = Checkpointer::new(&name, path.clone(), options.clone());
        checkpointer
            .install(&mut writer)
            .map_err(|e| error::open(&name, &path, e))?;
        // Made only once the file proved to be a store, so a refused file
        // gets no companion. Without it (an odd file system) writes are merely
        // not fair between processes: no reason to refuse the store. But one
        // that another user made or points elsewhere is refused.
        match Turn::open(&path) {
            Ok(t) => {
                let _ = turn.set(t);
            }
            Err(e) => {
                if let Some(refused) = dirs::NotPrivate::find(&e) {
                    return Err(refused.to_storage_error(&name));
                }
            }
        }
        Ok(Self {
            turn,
            max_value_len: options.max_value_len,
            readers: ReadPool::new(path.clone(), options),
            writers_waiting: AtomicUsize::new(0),
            name,
            path,
            clock,
            checkpointer,
            writer: Mutex::new(writer),
            group: Group::default(),
        })
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        read::lock_writer(&self.writer, &self.writers_waiting)
    }

    /// Run `f` in one `BEGIN IMMEDIATE` transaction on the write connection,
    /// with the clock read once the write lock is held.
    fn write<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Connection, i64) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let conn = self.writer();
        let result = in_write_tx(&conn, || f(&conn, self.clock.now_millis()));
        self.after_write(result.is_ok());
        result.map_err(|e| error::operation(&self.name, operation, e))
    }

    /// Run `op` in a group commit shared with concurrent writes of this
    /// process (see [`crate::group`]), and take its result out with `pick`
    /// (one of `Out`'s accessors).
    fn grouped<T>(&self, op: Op<'_>, pick: impl FnOnce(Out) -> Option<T>) -> Result<T> {
        let operation = op.operation();
        let ctx = group::Ctx {
            name: &self.name,
            writer: &self.writer,
            clock: &self.clock,
            turn: &self.turn,
            writers_waiting: &self.writers_waiting,
        };
        let out = self.group.submit(&ctx, op)?;
        pick(out).ok_or_else(|| {
            error::internal(
                &self.name,
                operation,
                "the group returned another call's result",
            )
        })
    }

    fn after_write(&self, committed: bool) {
        if let Some(turn) = self.turn.get() {
            let _stepped_aside = turn.finish(committed);
        }
    }

    /// Run `f` on a read connection (or the write connection when there is no pool).
    fn read<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.read_on(operation, false, f)
    }

    /// Run `f`, one short read, on the write connection when it is idle (its
    /// page cache holds what this process wrote), else as [`Self::read`]: see
    /// [`ReadPool::with`].
    fn read_warm<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.read_on(operation, true, f)
    }

    fn read_on<T>(
        &self,
        operation: &'static str,
        borrow_writer: bool,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let result = self
            .readers
            .with(&self.writer, &self.writers_waiting, borrow_writer, f)
            .map_err(Failed::from);
        result.map_err(|e| error::operation(&self.name, operation, e))
    }

    fn check_len(&self, len: usize) -> Result<()> {
        check_value_len(&self.name, self.max_value_len, len)
    }
}

/// Check the directory and create the file owner-only before SQLite sees it.
fn prepare_file(name: &str, path: &Path) -> Result<()> {
    let text = path.as_os_str();
    if text.is_empty() || text == ":memory:" || path.to_string_lossy().starts_with("file:") {
        return Err(StorageError::Config {
            store: name.to_owned(),
            hint: "give the path of a database file; in-memory and URI databases are not \
                   shared across processes (use the memory backend instead)"
                .to_owned(),
            source: None,
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(error::open_check(
                name,
                dir,
                ErrorKind::NotFound,
                "the parent of the database path is not a directory; pick another path",
            ));
        }
        Err(e) => return Err(error::open_io(name, dir, e)),
    }
    dirs::ensure_private_file(path).map_err(|e| error::open_create(name, path, e))?;
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(error::open_check(
                name,
                path,
                ErrorKind::InvalidInput,
                "the path is not a regular file; give the path of a database file",
            ));
        }
        Err(e) => return Err(error::open_io(name, path, e)),
    }
    // An existing file, or companions SQLite would reuse, must be this user's
    // alone: in a shared directory another user could have made them.
    check_private(name, path)?;
    // SQLite puts them beside the file a link leads to.
    let real = fs::canonicalize(path).map_err(|e| error::open_io(name, path, e))?;
    for companion in ["-wal", "-shm"] {
        let mut file = real.as_os_str().to_owned();
        file.push(companion);
        let file = PathBuf::from(file);
        if fs::symlink_metadata(&file).is_ok() {
            check_private(name, &file)?;
        }
    }
    Ok(())
}

/// [`dirs::check_private_file`], its refusal as a `PermissionDenied` open error.
fn check_private(name: &str, path: &Path) -> Result<()> {
    dirs::check_private_file(path).map_err(|e| match dirs::NotPrivate::find(&e) {
        Some(refused) => refused.to_storage_error(name),
        None => error::open_io(name, path, e),
    })
}

/// Open one connection and apply the per-connection settings.
///
/// `turn` is given for the write connection only: its busy handler announces
/// the wait to other processes' writers.
pub(crate) fn connect(
    path: &Path,
    options: &Options,
    query_only: bool,
    turn: Option<TurnSlot>,
) -> rusqlite::Result<Connection> {
    // No CREATE flag: `prepare_file` made the file with the right mode, and a
    // file deleted since then should fail rather than be recreated 0644.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    install_busy_handler(&mut conn, options.busy_timeout, turn)?;
    // The bundled SQLite has STAT4, under which a statement whose plan could
    // depend on a bound value (`scope = ?1 ... ORDER BY id`) is re-prepared
    // every time it is bound: the statement cache would save nothing. Our
    // queries have one right plan whatever the values, so pin it.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(32);
    let cache = -i64::from(options.cache_kib);
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA cache_size = {cache}; PRAGMA mmap_size = {};
         PRAGMA query_only = {};",
        options.synchronous.as_str(),
        options.mmap_size,
        i32::from(query_only),
    ))?;
    Ok(conn)
}

/// Wait for locks with short sleeps, up to `timeout`.
///
/// SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between attempts,
/// so a process waiting for the write lock almost never sees it free while
/// another process commits small transactions back to back: one process takes
/// every queue item while the other sleeps. Polling every 20 µs (1 ms after
/// 2048 attempts), with the [`Turn`] announcing the wait, lets both make
/// progress.
fn install_busy_handler(
    conn: &mut Connection,
    timeout: Duration,
    turn: Option<TurnSlot>,
) -> rusqlite::Result<()> {
    let mut started = Instant::now();
    conn.busy_handler(Some(move |attempt: i32| {
        if attempt == 0 {
            started = Instant::now();
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return false;
        }
        if let Some(turn) = turn.as_ref().and_then(|t| t.get()) {
            turn.announce();
        }
        let pause = match attempt {
            0..=2047 => Duration::from_micros(20),
            _ => Duration::from_millis(1),
        };
        std::thread::sleep(pause.min(timeout.saturating_sub(waited)));
        true
    }))
}

/// Open the write connection: WAL mode (checked), sanity checks, schema.
///
/// A file holding tables of the reference implementation is migrated on a
/// connection of its own that holds the file exclusively (see
/// [`schema::migrate_alone`]), then opened again.
fn open_writer(name: &str, path: &Path, options: &Options, turn: &TurnSlot) -> Result<Connection> {
    // Twice is enough unless something keeps re-creating the reference tables.
    for _ in 0..3 {
        match open_writer_once(name, path, options, turn)? {
            Some(conn) => return Ok(conn),
            None => schema::migrate_alone(name, path, options.busy_timeout)?,
        }
    }
    Err(error::open_check(
        name,
        path,
        ErrorKind::AlreadyOpen,
        format!(
            "tables of the reference implementation came back each time they were migrated: \
             a worker of the older version keeps starting on this file; {}",
            schema::STOP_OLDER_WORKERS
        ),
    ))
}

/// Open the write connection once; `None` when the file needs [`schema::migrate_alone`].
fn open_writer_once(
    name: &str,
    path: &Path,
    options: &Options,
    turn: &TurnSlot,
) -> Result<Option<Connection>> {
    let fail = |e| error::open_in_dir(name, path, e);
    let conn = connect(path, options, false, Some(Arc::clone(turn))).map_err(fail)?;
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(fail)? {
        return Err(error::open_check(
            name,
            path,
            ErrorKind::ReadOnly,
            "the database file is read-only for this user; make it writable (chmod u+w) or \
             pick another path",
        ));
    }
    // Reading the schema makes SQLite look at the file: a foreign or damaged
    // file fails here with NOTADB/CORRUPT before anything is written to it.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(fail)?;
    check_whole_pages(name, path, &conn)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(error::open_check(
            name,
            path,
            ErrorKind::Other,
            format!(
                "the database cannot be put in WAL mode (it stays in {mode} mode), so \
                 processes could not share it safely; put the file on a local file system \
                 and make sure no other program holds it in exclusive locking mode"
            ),
        ));
    }
    conn.execute_batch("PRAGMA journal_size_limit = 67108864")
        .map_err(fail)?;
    let mut plan = schema::plan(&conn).map_err(fail)?;
    if plan == schema::Plan::Create {
        plan = in_write_tx(&conn, || schema::apply(&conn, false)).map_err(|f| fail(f.err))?;
        if plan == schema::Plan::Create {
            plan = schema::Plan::Current;
        }
    }
    match plan {
        schema::Plan::Current => Ok(Some(conn)),
        schema::Plan::Create | schema::Plan::Migrate { .. } => Ok(None),
        schema::Plan::Newer(found) => Err(newer_version(name, path, found)),
        schema::Plan::Partial(present) => Err(schema::partial_reference(name, path, &present)),
    }
}

fn newer_version(name: &str, path: &Path, found: i64) -> StorageError {
    error::open_check(
        name,
        path,
        ErrorKind::IncompatibleVersion,
        format!(
            "the file has schema version {found}, written by a newer vgi-storage-sqlite than \
             this one (which knows up to {}); upgrade this program or use another path",
            schema::VERSION
        ),
    )
}

/// A database file is a whole number of pages; one cut mid-page was truncated.
fn check_whole_pages(name: &str, path: &Path, conn: &Connection) -> Result<()> {
    let page: u64 = conn
        .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
        .map_err(|e| error::open(name, path, e))?
        .max(512) as u64;
    let len = fs::metadata(path)
        .map_err(|e| error::open_io(name, path, e))?
        .len();
    if len % page != 0 {
        return Err(error::open_check(
            name,
            path,
            ErrorKind::Corrupt,
            format!(
                "the file is {len} bytes, not a whole number of {page}-byte pages: it was \
                 truncated; restore it from a backup or move it aside to start empty"
            ),
        ));
    }
    Ok(())
}

/// Run `f` between `BEGIN IMMEDIATE` and `COMMIT`, rolling back on any error.
///
/// IMMEDIATE takes the write lock up front (waiting in the busy handler), so a
/// transaction that reads before it writes can never fail half-way with an
/// unrecoverable SQLITE_BUSY.
///
/// A failure is converted to [`Failed`] before the rollback runs, so the
/// errno it keeps is the failing call's.
fn in_write_tx<T>(
    conn: &Connection,
    f: impl FnOnce() -> rusqlite::Result<T>,
) -> std::result::Result<T, Failed> {
    begin_immediate(conn)?;
    let guard = Rollback(conn);
    let out = f()?;
    commit(conn)?;
    std::mem::forget(guard);
    Ok(out)
}

/// Start a write transaction, taking the write lock up front.
pub(crate) fn begin_immediate(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    Ok(())
}

/// Commit the open transaction.
pub(crate) fn commit(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(())
}

/// Rolls the open transaction back when dropped (on error or unwind).
pub(crate) struct Rollback<'a>(pub(crate) &'a Connection);

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        // SQLite may already have rolled back (e.g. after SQLITE_FULL); then
        // ROLLBACK fails harmlessly with "no transaction is active".
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

pub(crate) fn touch(conn: &Connection, scope: &[u8], now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(TOUCH)?.execute(params![scope, now])?;
    Ok(())
}

pub(crate) fn kv_get_on(
    conn: &Connection,
    scope: &[u8],
    key: &[u8],
) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(KV_GET)?
        .query_row(params![scope, key], |r| r.get(0))
        .optional()
}

pub(crate) fn kv_put_on(
    conn: &Connection,
    scope: &[u8],
    key: &[u8],
    value: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached(KV_PUT)?
        .execute(params![scope, key, value])?;
    Ok(())
}

pub(crate) fn kv_del_on(conn: &Connection, scope: &[u8], key: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(KV_DEL)?.execute(params![scope, key])?;
    Ok(())
}

pub(crate) fn append_on(
    conn: &Connection,
    scope: &[u8],
    ns: &[u8],
    key: &[u8],
    value: &[u8],
) -> rusqlite::Result<i64> {
    conn.prepare_cached(LOG_APPEND)?
        .execute(params![scope, ns, key, value])?;
    Ok(conn.last_insert_rowid())
}

/// Delete everything of `scope`, keeping the log's largest id in use (see
/// the schema docs) so it is never handed out again.
///
/// The largest id is at stake only when its row is of this scope: otherwise
/// that row stays, and the placeholder statement (about 4 % of a clear) is
/// not run.
fn clear_on(conn: &Connection, scope: &[u8]) -> rusqlite::Result<()> {
    let top = conn
        .prepare_cached(CLEAR_TOP)?
        .query_row([scope], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?)))
        .optional()?;
    for sql in CLEAR {
        conn.prepare_cached(sql)?.execute([scope])?;
    }
    match top {
        Some((top, true)) => keep_top(conn, Some(top)),
        _ => Ok(()),
    }
}

/// The highest log id handed out so far, if any row holds one.
fn log_top(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(LOG_TOP)?.query_row([], |r| r.get(0))
}

/// After deleting log rows: keep a placeholder at `top` (the highest id before
/// the delete) so ids are never handed out twice.
fn keep_top(conn: &Connection, top: Option<i64>) -> rusqlite::Result<()> {
    if let Some(top) = top
        && conn.prepare_cached(LOG_KEEP_TOP)?.execute([top])? > 0
    {
        conn.prepare_cached(LOG_DROP_OLD_TOPS)?.execute([top])?;
    }
    Ok(())
}

/// One gc batch, inside its transaction: choose up to [`GC_BATCH`] scopes
/// stale at `cutoff`, remove them whole, and return them.
fn gc_batch_on(conn: &Connection, cutoff: i64) -> rusqlite::Result<Vec<Vec<u8>>> {
    let stale = conn
        .prepare_cached(GC_STALE)?
        .query_map(params![cutoff, GC_BATCH], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let Some(last) = stale.last() else {
        return Ok(stale);
    };
    let top = log_top(conn)?;
    for sql in GC_DELETE {
        conn.prepare_cached(sql)?.execute(params![cutoff, last])?;
    }
    keep_top(conn, top)?;
    Ok(stale)
}

impl FunctionStorage for SqliteStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES.with_max_value_len(self.max_value_len)
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_warm("kv_get", |conn| kv_get_on(conn, scope, key))
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.check_len(value.len())?;
        self.grouped(
            Op::KvPut {
                scope: scope.into(),
                key: key.into(),
                value: value.into(),
            },
            Out::unit,
        )
    }

    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for (_, v) in entries {
            self.check_len(v.len())?;
        }
        self.grouped(
            Op::KvPutBatch {
                scope: scope.into(),
                entries: entries.into(),
            },
            Out::unit,
        )
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.grouped(
            Op::KvDel {
                scope: scope.into(),
                key: key.into(),
            },
            Out::unit,
        )
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        if let Some(v) = new {
            self.check_len(v.len())?;
        }
        self.grouped(
            Op::Cas {
                scope: scope.into(),
                key: key.into(),
                expected: expected.map(Into::into),
                new: new.map(Into::into),
            },
            Out::bool,
        )
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.check_len(value.len())?;
        self.grouped(
            Op::Append {
                scope: scope.into(),
                ns: ns.into(),
                key: key.into(),
                value: value.into(),
            },
            Out::id,
        )
    }

    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        for v in values {
            self.check_len(v.len())?;
        }
        self.grouped(
            Op::AppendBatch {
                scope: scope.into(),
                ns: ns.into(),
                key: key.into(),
                values: values.into(),
            },
            Out::ids,
        )
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read_warm("scan", |conn| {
            let log = (scope, ns, key);
            read::scan_on(conn, &self.readers.log_shape, log, after_id, limit)
        })
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        for item in items {
            self.check_len(item.len())?;
        }
        self.grouped(
            Op::QueuePush {
                scope: scope.into(),
                items: items.into(),
            },
            Out::unit,
        )
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        // One statement claims the oldest item; alone it runs in autocommit
        // mode, where SQLite reports a failed commit from the step that
        // finishes it, not the one that returned the row: the group steps it
        // to the end, so an item is handed out only once the commit that
        // removed it succeeded (see `group::Op::run`).
        self.grouped(
            Op::QueuePop {
                scope: scope.into(),
            },
            Out::item,
        )
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.write("clear", |conn, _| clear_on(conn, scope))
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let mut report = GcReport::default();
        loop {
            // Each batch selects and deletes under one write lock, with the
            // cutoff taken once the lock is held: a scope written before the
            // lock was taken is seen with its new stamp, one written after is
            // not deleted by this transaction.
            let removed = self.write("gc", |conn, now| {
                let Some(cutoff) = gc_cutoff_millis(now, ttl) else {
                    return Ok(Vec::new());
                };
                gc_batch_on(conn, cutoff)
            });
            // The batches before this one committed: their scopes are gone,
            // and the error must say so (see `FunctionStorage::gc`).
            let removed = match removed {
                Ok(removed) => removed,
                Err(source) => {
                    return Err(StorageError::GcInterrupted {
                        store: self.name.clone(),
                        removed: report.scopes,
                        source: Box::new(source),
                    });
                }
            };
            let done = (removed.len() as i64) < GC_BATCH;
            report.scopes.extend(removed);
            if done {
                return Ok(report);
            }
        }
    }

    fn list_scopes(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<ScopeInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read("list_scopes", |conn| {
            inspect::list_scopes(conn, after, limit)
        })
    }

    fn scope_stats(&self, scope: &[u8]) -> Result<ScopeStats> {
        self.read("scope_stats", |conn| inspect::scope_stats(conn, scope))
    }

    fn export_kv(
        &self,
        scope: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read("export_kv", |conn| {
            inspect::export_kv(conn, scope, after, limit)
        })
    }

    fn export_queue(&self, scope: &[u8], skip: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read("export_queue", |conn| {
            inspect::export_queue(conn, scope, skip, limit)
        })
    }

    fn id_high_water(&self) -> Result<i64> {
        self.read("id_high_water", inspect::high_water)
    }

    fn raise_id_high_water(&self, id: i64) -> Result<()> {
        self.write("raise_id_high_water", |conn, _| {
            inspect::raise_high_water(conn, id)
        })
    }

    fn import_log(&self, records: &[LogRecord]) -> Result<Vec<i64>> {
        check_import_order(&self.name, self.max_value_len, records)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.write("import_log", |conn, now| {
            inspect::import_log(conn, records, now)
        })
    }

    fn check(&self) -> Result<Vec<String>> {
        self.read("check", inspect::check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under the bundled SQLite's STAT4, `scope = ?1 ... ORDER BY id`
    /// statements (scan, pop) were re-prepared on every call, so the cached
    /// pop parsed its SQL each time and was slower than the uncached
    /// reference. Every statement a call runs must stay prepared across calls.
    #[test]
    fn cached_statements_are_not_reprepared() -> std::result::Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let store = SqliteStorage::builder(dir.path().join("state.db"))
            .read_connections(0)
            .open()?;
        for i in 0..3u8 {
            store.kv_put(b"s", &[i], b"v")?;
            store.kv_compare_and_swap(b"s", &[i], Some(b"v"), Some(b"w"))?;
            store.kv_get(b"s", &[i])?;
            store.kv_del(b"s", &[i])?;
            store.append(b"s", b"n", b"k", b"v")?;
            store.scan(b"s", b"n", b"k", -1, 10)?;
            // A log of large values: the scans that follow it read with
            // LOG_SCAN_LARGE, until one meets small values only.
            store.append(b"s", b"n", b"big", &vec![i; 20_000])?;
            store.scan(b"s", b"n", b"big", -1, 10)?;
            store.scan(b"s", b"n", b"big", -1, 10)?;
            store.queue_push(b"s", &[vec![i]])?;
            store.queue_pop(b"s")?;
            store.clear(b"t")?;
        }
        let conn = store.writer();
        for sql in [
            TOUCH,
            KV_GET,
            KV_PUT,
            KV_DEL,
            LOG_APPEND,
            read::LOG_SCAN,
            read::LOG_SCAN_LARGE,
            QUEUE_PUSH,
            QUEUE_POP,
            CLEAR_TOP,
            CLEAR[0],
            CLEAR[1],
            CLEAR[2],
            CLEAR[3],
        ] {
            let stmt = conn.prepare_cached(sql)?;
            let runs = stmt.get_status(rusqlite::StatementStatus::Run);
            let reprepared = stmt.get_status(rusqlite::StatementStatus::RePrepare);
            assert!(runs >= 3, "{sql}: ran {runs} times");
            assert_eq!(reprepared, 0, "{sql}");
        }
        Ok(())
    }

    /// `clear` ran the high-water placeholder statement on every call; it
    /// now runs it only when the log's largest id is of the cleared scope.
    /// Both ways, no id may be handed out twice, and a placeholder is
    /// written only when the top row went away.
    #[test]
    fn clear_keeps_the_top_id_only_when_it_deletes_it()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStorage::open(dir.path().join("state.db"))?;
        let placeholders = |store: &SqliteStorage| -> rusqlite::Result<i64> {
            store.writer().query_row(
                "SELECT count(*) FROM vgi_log WHERE scope IS NULL",
                [],
                |r| r.get(0),
            )
        };
        store.append(b"a", b"n", b"k", b"v")?;
        let top = store.append(b"b", b"n", b"k", b"v")?;
        // The top row is b's: clearing a leaves it, and needs no placeholder.
        store.clear(b"a")?;
        assert_eq!(placeholders(&store)?, 0);
        assert!(store.append(b"c", b"n", b"k", b"v")? > top);
        // Now the top row is c's: clearing c keeps its id with a placeholder.
        let top = store.scan(b"c", b"n", b"k", -1, 1)?[0].id;
        store.clear(b"c")?;
        assert_eq!(placeholders(&store)?, 1);
        assert!(store.append(b"d", b"n", b"k", b"v")? > top);
        assert_eq!(store.scan(b"b", b"n", b"k", -1, 10)?.len(), 1);
        Ok(())
    }

    /// gc deleted four statements' worth per scope; it now deletes each batch
    /// set-wise. Over several batches, with fresh scopes between stale ones,
    /// it must remove exactly the stale scopes, whole, and never reuse a log id.
    #[test]
    fn set_wise_gc_removes_exactly_the_stale_scopes()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let clock = vgi_storage_core::ManualClock::new(1_000_000);
        let store = SqliteStorage::builder(dir.path().join("state.db"))
            .clock(Arc::new(clock.clone()))
            .open()?;
        let n = usize::try_from(GC_BATCH)? * 2 + 7;
        let scope = |i: usize| format!("s{i:05}").into_bytes();
        let fill = |i: usize| -> Result<i64> {
            let s = scope(i);
            store.kv_put(&s, b"k", b"v")?;
            store.queue_push(&s, &[b"q".to_vec()])?;
            store.append(&s, b"n", b"k", b"v")
        };
        // Fresh scopes are written at a later time but first, so the highest
        // log id belongs to a stale scope: gc must not let it be handed out again.
        clock.set(1_010_000);
        for i in (0..n).filter(|i| i % 3 == 0) {
            fill(i)?;
        }
        clock.set(1_000_000);
        let mut top = 0;
        for i in (0..n).filter(|i| i % 3 != 0) {
            top = fill(i)?;
        }
        clock.set(1_010_000);
        let report = store.gc(Duration::from_secs(5))?;
        let mut removed = report.scopes;
        removed.sort();
        let stale: Vec<Vec<u8>> = (0..n).filter(|i| i % 3 != 0).map(scope).collect();
        assert_eq!(removed, stale);
        for i in 0..n {
            let s = scope(i);
            let fresh = i % 3 == 0;
            assert_eq!(store.kv_get(&s, b"k")?.is_some(), fresh, "kv of scope {i}");
            assert_eq!(
                store.scan(&s, b"n", b"k", -1, 10)?.len(),
                usize::from(fresh)
            );
            assert_eq!(store.queue_pop(&s)?.is_some(), fresh, "queue of scope {i}");
        }
        assert!(
            store.append(b"new", b"n", b"k", b"v")? > top,
            "a log id was reused"
        );
        Ok(())
    }
}
