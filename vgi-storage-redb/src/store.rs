//! [`RedbStorage`]: the backend itself, and its builder.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::slice;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redb::{ConcurrencyMode, Database, ReadTransaction, ReadableDatabase, ReadableTable};
use vgi_storage_core::{
    Capabilities, ErrorKind, FunctionStorage, GcReport, LogEntry, LogRecord, Result, ScopeInfo,
    ScopeStats, SharedClock, StorageError, check_import_order, check_value_len, dirs, system_clock,
};

use crate::error::{op_error, open_error, open_io_error, previous_io_error, schema_error};
use crate::group::Group;
use crate::inspect;
use crate::ops::{
    KV, LOG, META, NEXT_ID, NEXT_SEQ, Op, QUEUE, Reply, SCHEMA, SCHEMA_VERSION, TOUCH,
    TOUCH_BY_TIME, Tx,
};

/// The largest value this backend accepts: 2 GiB.
///
/// redb stores values up to 3 GiB and a key and value together up to 3.75 GiB; 2 GiB
/// leaves room for long keys.
pub const MAX_VALUE_LEN: usize = 1 << 31;

/// How long a writer waits for another process's write lock by default, as
/// SQLite's backend does: 5 s.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Stale scopes one `gc` transaction removes at most, so a large sweep takes
/// turns with other writers instead of holding the write lock throughout.
const GC_BATCH: usize = 512;

/// When a write becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every write commits with an fsync before its call returns, so it survives a
    /// crash of the process or the machine once the call has returned. The default.
    ///
    /// Writes from several threads that arrive while a commit is in progress share
    /// the next commit (group commit); each caller still returns only after the commit
    /// that holds its write.
    #[default]
    Immediate,
    /// Writes commit without an fsync (redb's `Durability::None`): other threads of
    /// this process see them at once, but they become durable only at the next
    /// [`RedbStorage::flush`], or when the store is dropped.
    ///
    /// A crash of the process (a kill, a panic that aborts) or of the machine loses
    /// every write since the last flush, or since the open if there was none. The file
    /// itself stays consistent. Not available with
    /// [`RedbBuilder::multi_process`], where redb refuses non-durable commits.
    Deferred,
}

/// Options for opening a [`RedbStorage`]; start with [`RedbStorage::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedbBuilder {
    path: PathBuf,
    durability: Durability,
    clock: SharedClock,
    multi_process: bool,
    cache_size: Option<usize>,
    max_value_len: usize,
    busy_timeout: Duration,
}

impl RedbBuilder {
    /// How long a write waits for the write lock held by another process (in
    /// [`multi_process`](Self::multi_process) mode) before it fails with
    /// [`ErrorKind::Busy`], having written nothing; [`DEFAULT_BUSY_TIMEOUT`] by default.
    ///
    /// Without it, a hung peer holding the lock would stall every writer and
    /// every pop of this process forever. Writers of one process take turns
    /// through group commit and do not wait on each other's lock.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// When writes become durable; [`Durability::Immediate`] by default.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The clock that stamps writes for `gc`; the system clock by default.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Let several processes open the file at once (redb's `ConcurrencyMode::MultiWriter`).
    ///
    /// Off by default: redb then locks the file for this one handle, and a second open,
    /// from another process or this one, fails with
    /// [`ErrorKind::AlreadyOpen`]. On, every process that shares the file must open it
    /// with this option on; writes from all of them take turns on one write lock, each
    /// commit costs two fsyncs, and [`Durability::Deferred`] is refused.
    pub fn multi_process(mut self, multi_process: bool) -> Self {
        self.multi_process = multi_process;
        self
    }

    /// The largest value the store accepts, in bytes; [`MAX_VALUE_LEN`] by default,
    /// and never more. A larger value is refused with
    /// [`ErrorKind::TooLarge`] and nothing is written.
    pub fn max_value_len(mut self, bytes: usize) -> Self {
        self.max_value_len = bytes.min(MAX_VALUE_LEN);
        self
    }

    /// Bytes of memory redb may use to cache pages (redb's default is 1 GiB, allocated
    /// as pages are read).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = Some(bytes);
        self
    }

    /// Open the store, creating the file (mode 0600) if needed.
    ///
    /// - a missing parent directory gives [`ErrorKind::NotFound`]; it is not created
    /// - another handle holding the file gives [`ErrorKind::AlreadyOpen`]
    /// - a file that is not a redb database, or is truncated, gives [`ErrorKind::Corrupt`]
    /// - a file of a newer schema gives [`ErrorKind::IncompatibleVersion`]
    /// - an existing file owned by another user, or readable or writable by group
    ///   or others, gives [`ErrorKind::PermissionDenied`], naming its owner, its
    ///   mode and the fix, and is left alone
    /// - a path that cannot be created gives the I/O error's kind (`NotFound`,
    ///   `PermissionDenied`, `ReadOnly`, `InvalidInput` ...)
    pub fn open(self) -> Result<RedbStorage> {
        let path = std::path::absolute(&self.path).map_err(|e| {
            open_io_error("redb", &self.path, "the path cannot be made absolute", e)
        })?;
        let name = format!("redb:{}", path.display());
        if self.multi_process && self.durability == Durability::Deferred {
            return Err(StorageError::Config {
                store: name,
                hint: "Durability::Deferred cannot be combined with multi_process(true): \
                       redb refuses non-durable commits that other processes could not see"
                    .into(),
                source: None,
            });
        }
        // The directory is the caller's to create, as for the SQLite backend: a
        // typo in a path should fail here, not grow a new directory tree.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::metadata(parent).map_err(|e| {
                open_io_error(
                    &name,
                    &path,
                    "the store's directory does not exist or cannot be read; create it \
                     (owner-only, mode 0700) or pick another path",
                    e,
                )
            })?;
        }
        dirs::ensure_private_file(&path)
            .map_err(|e| open_io_error(&name, &path, "cannot create the store's file", e))?;
        // An existing file must be this user's alone: in a shared directory
        // another user could have made it, to read what we write.
        if let Err(e) = dirs::check_private_file(&path) {
            match dirs::NotPrivate::find(&e) {
                // Not a regular file (a directory ...): redb says what it is.
                Some(refused) if refused.not_regular => {}
                Some(refused) => return Err(refused.to_storage_error(&name)),
                None => {
                    return Err(open_io_error(
                        &name,
                        &path,
                        "cannot check the owner and mode of the store's file",
                        e,
                    ));
                }
            }
        }

        let mut builder = redb::Builder::new();
        builder.set_concurrency_mode(if self.multi_process {
            ConcurrencyMode::MultiWriter
        } else {
            ConcurrencyMode::ExclusiveWriter
        });
        if let Some(bytes) = self.cache_size {
            builder.set_cache_size(bytes);
        }
        // redb may panic on a file that merely looks like a database; that is a
        // damaged file to the caller, not a reason to unwind through them.
        let db = match catch_unwind(AssertUnwindSafe(|| builder.create(&path))) {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(open_error(&name, &path, e)),
            Err(_) => {
                return Err(StorageError::open(
                    &name,
                    &path,
                    ErrorKind::Corrupt,
                    "redb could not read the file; it is damaged or not a redb database",
                    None,
                ));
            }
        };
        init_schema(&db).map_err(|e| match e {
            InitError::Redb(e) => open_error(&name, &path, e),
            InitError::Schema(found) => schema_error(&name, &path, found, SCHEMA),
        })?;
        Ok(RedbStorage {
            db,
            name,
            path,
            clock: self.clock,
            durability: self.durability,
            multi_process: self.multi_process,
            max_value_len: self.max_value_len,
            busy_timeout: self.busy_timeout,
            group: Group::default(),
            io_fault: OnceLock::new(),
        })
    }
}

enum InitError {
    Redb(redb::Error),
    Schema(u64),
}

impl<E: Into<redb::Error>> From<E> for InitError {
    fn from(e: E) -> Self {
        Self::Redb(e.into())
    }
}

/// Create the tables and record the schema version, or check the recorded one.
fn init_schema(db: &Database) -> Result<(), InitError> {
    // A store opened read-mostly should not pay a commit: look first.
    {
        let txn = db.begin_read()?;
        let version = match txn.open_table(META) {
            Ok(meta) => meta.get(SCHEMA_VERSION)?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        match version {
            Some(SCHEMA) => return Ok(()),
            Some(found) => return Err(InitError::Schema(found)),
            None => {}
        }
    }
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get(SCHEMA_VERSION)?.map(|v| v.value());
        match version {
            Some(SCHEMA) => {}
            Some(found) => return Err(InitError::Schema(found)),
            None => {
                meta.insert(SCHEMA_VERSION, SCHEMA)?;
                for counter in [NEXT_ID, NEXT_SEQ] {
                    if meta.get(counter)?.is_none() {
                        meta.insert(counter, 1)?;
                    }
                }
            }
        }
        txn.open_table(KV)?;
        txn.open_table(LOG)?;
        txn.open_table(QUEUE)?;
        txn.open_table(TOUCH)?;
        txn.open_table(TOUCH_BY_TIME)?;
    }
    txn.commit()?;
    Ok(())
}

/// A [`FunctionStorage`] in one redb file.
///
/// See the crate docs for the layout, the durability and the locking.
pub struct RedbStorage {
    db: Database,
    name: String,
    path: PathBuf,
    clock: SharedClock,
    durability: Durability,
    multi_process: bool,
    max_value_len: usize,
    busy_timeout: Duration,
    group: Group,
    /// The kind of the first failed write: redb refuses every later call with
    /// `PreviousIo` until reopened, and those calls fail for that same cause.
    io_fault: OnceLock<ErrorKind>,
}

impl fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStorage")
            .field("name", &self.name)
            .field("durability", &self.durability)
            .field("multi_process", &self.multi_process)
            .finish_non_exhaustive()
    }
}

impl RedbStorage {
    /// Open (or create) the store at `path` with the defaults: durable writes, the
    /// system clock, one process.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(path).open()
    }

    /// Options for opening the store at `path`.
    pub fn builder(path: impl AsRef<Path>) -> RedbBuilder {
        RedbBuilder {
            path: path.as_ref().to_path_buf(),
            durability: Durability::default(),
            clock: system_clock(),
            multi_process: false,
            cache_size: None,
            max_value_len: MAX_VALUE_LEN,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability the store was opened with.
    #[must_use]
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Make every write so far durable (one fsync).
    ///
    /// Only needed with [`Durability::Deferred`]; with `Immediate` every write already is.
    pub fn flush(&self) -> Result<()> {
        self.write(Op::Flush).map(drop)
    }

    /// Run redb's integrity check: verify the checksum of every page and repair the
    /// allocator state. `Ok(true)` when the file was intact.
    pub fn check_integrity(&mut self) -> Result<bool> {
        self.db
            .check_integrity()
            .map_err(|e| self.error("check_integrity", e))
    }

    fn write(&self, op: Op<'_>) -> Result<Reply> {
        self.group.write(&self.name, op, &|ops| self.run(ops))
    }

    /// Commit `ops` in one transaction; if that fails, commit each alone so every
    /// write gets its own result.
    fn run(&self, ops: &[Op<'_>]) -> Vec<Result<Reply>> {
        match self.commit(ops) {
            Ok(replies) => replies.into_iter().map(Ok).collect(),
            Err(e) if ops.len() == 1 => vec![Err(self.error(ops[0].name(), e))],
            // The lock stayed taken past the timeout: committing each write alone
            // would only wait the timeout again, once per write.
            Err(redb::Error::WouldBlock) => ops
                .iter()
                .map(|op| Err(self.error(op.name(), redb::Error::WouldBlock)))
                .collect(),
            Err(_) => ops
                .iter()
                .map(|op| {
                    self.commit(slice::from_ref(op))
                        .map_err(|e| self.error(op.name(), e))
                        .and_then(|mut replies| {
                            replies.pop().ok_or_else(|| {
                                self.error(
                                    op.name(),
                                    redb::Error::Corrupted("no reply from a commit".into()),
                                )
                            })
                        })
                })
                .collect(),
        }
    }

    /// Begin a write transaction, waiting at most the busy timeout for another
    /// process's write lock (`WouldBlock` after that).
    ///
    /// In one process group commit already serialises writers, so only the
    /// multi-process mode can meet a held lock; redb's `begin_write` would wait
    /// for it with no deadline.
    fn begin_write(&self) -> Result<redb::WriteTransaction, redb::Error> {
        if !self.multi_process {
            return Ok(self.db.begin_write()?);
        }
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            match self.db.try_begin_write() {
                Err(redb::TransactionError::WouldBlock) => {}
                other => return Ok(other?),
            }
            let waited = started.elapsed();
            if waited >= self.busy_timeout {
                return Err(redb::Error::WouldBlock);
            }
            // Short pauses first, so a lock freed between two commits of a
            // busy peer is seen; then 1 ms, not to burn a core.
            let pause = if attempt < 2048 {
                Duration::from_micros(20)
            } else {
                Duration::from_millis(1)
            };
            attempt = attempt.saturating_add(1);
            std::thread::sleep(pause.min(self.busy_timeout.saturating_sub(waited)));
        }
    }

    fn commit(&self, ops: &[Op<'_>]) -> Result<Vec<Reply>, redb::Error> {
        let mut txn = self.begin_write()?;
        let durable = self.durability == Durability::Immediate
            || ops.iter().any(|op| matches!(op, Op::Flush));
        if !durable {
            txn.set_durability(redb::Durability::None)?;
        }
        // Read the clock inside the write lock, so stamps follow commit order and a
        // write that commits after a gc pass is stamped no earlier than its cutoff.
        let now = self.clock.now_millis();
        let replies = {
            let mut tx = Tx::new(&txn, now);
            let replies = ops
                .iter()
                .map(|op| tx.apply(*op))
                .collect::<Result<Vec<_>, _>>()?;
            tx.finish()?;
            replies
        };
        txn.commit()?;
        Ok(replies)
    }

    fn read<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let txn = self.db.begin_read().map_err(|e| self.error(operation, e))?;
        f(&txn).map_err(|e| self.error(operation, e))
    }

    fn check_len(&self, len: usize) -> Result<()> {
        check_value_len(&self.name, self.max_value_len, len)
    }

    /// Map an error of `operation`; a `PreviousIo` gets the kind of the write
    /// failure that caused it (a full disk stays `StorageFull`, not `Io`).
    fn error(&self, operation: &'static str, err: impl Into<redb::Error>) -> StorageError {
        let err: redb::Error = err.into();
        if matches!(err, redb::Error::PreviousIo)
            && let Some(kind) = self.io_fault.get()
        {
            return previous_io_error(&self.name, operation, *kind, err);
        }
        let is_io = matches!(err, redb::Error::Io(_));
        let mapped = op_error(&self.name, operation, err);
        if is_io {
            let _ = self.io_fault.set(mapped.kind());
        }
        mapped
    }
}

/// The reply a write of this kind must give; anything else is a bug, reported not panicked.
fn unexpected(store: &str, operation: &'static str) -> StorageError {
    op_error(
        store,
        operation,
        redb::Error::Corrupted("unexpected reply".into()),
    )
}

impl FunctionStorage for RedbStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_durable(self.durability == Durability::Immediate)
            .with_shared_across_processes(self.multi_process)
            .with_max_value_len(self.max_value_len)
            .with_inspect(true)
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read("kv_get", |txn| {
            let kv = txn.open_table(KV)?;
            Ok(kv.get((scope, key))?.map(|v| v.value().to_vec()))
        })
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.check_len(value.len())?;
        self.write(Op::KvPut { scope, key, value }).map(drop)
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.write(Op::KvDel { scope, key }).map(drop)
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.check_len(new.map_or(0, <[u8]>::len))?;
        match self.write(Op::Cas {
            scope,
            key,
            expected,
            new,
        })? {
            Reply::Bool(swapped) => Ok(swapped),
            _ => Err(unexpected(&self.name, "kv_compare_and_swap")),
        }
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.check_len(value.len())?;
        match self.write(Op::Append {
            scope,
            ns,
            key,
            value,
        })? {
            Reply::Id(id) => Ok(id),
            _ => Err(unexpected(&self.name, "append")),
        }
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
        values.iter().try_for_each(|v| self.check_len(v.len()))?;
        match self.write(Op::AppendBatch {
            scope,
            ns,
            key,
            values,
        })? {
            Reply::Ids(ids) => Ok(ids),
            _ => Err(unexpected(&self.name, "append_batch")),
        }
    }

    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        entries
            .iter()
            .try_for_each(|(_, v)| self.check_len(v.len()))?;
        self.write(Op::KvPutBatch { scope, entries }).map(drop)
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
        // Ids are >= 0; after_id + 1 cannot overflow u64 for any i64.
        let start = if after_id < 0 { 0 } else { after_id as u64 + 1 };
        self.read("scan", |txn| {
            let log = txn.open_table(LOG)?;
            let mut out = Vec::with_capacity(limit.min(1024));
            for row in log
                .range((scope, ns, key, start)..=(scope, ns, key, u64::MAX))?
                .take(limit)
            {
                let (k, v) = row?;
                out.push(LogEntry {
                    id: k.value().3 as i64,
                    value: v.value().to_vec(),
                });
            }
            Ok(out)
        })
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        items.iter().try_for_each(|v| self.check_len(v.len()))?;
        self.write(Op::QueuePush { scope, items }).map(drop)
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.write(Op::QueuePop { scope })? {
            Reply::Item(item) => Ok(item),
            _ => Err(unexpected(&self.name, "queue_pop")),
        }
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.write(Op::Clear { scope }).map(drop)
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        // In steps of at most GC_BATCH scopes, each its own transaction, so
        // other writers (and other processes) get the lock between them.
        let mut report = GcReport::default();
        loop {
            let step = match self.write(Op::Gc {
                ttl,
                limit: GC_BATCH,
            }) {
                Ok(Reply::Gc(step)) => Ok(step),
                Ok(_) => Err(unexpected(&self.name, "gc")),
                Err(e) => Err(e),
            };
            let step = match step {
                Ok(step) => step,
                Err(source) => {
                    return Err(StorageError::GcInterrupted {
                        store: self.name.clone(),
                        removed: report.scopes,
                        source: Box::new(source),
                    });
                }
            };
            let done = step.scopes.len() < GC_BATCH;
            report.scopes.extend(step.scopes);
            if done {
                return Ok(report);
            }
        }
    }

    fn list_scopes(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<ScopeInfo>> {
        self.read("list_scopes", |txn| inspect::list_scopes(txn, after, limit))
    }

    fn scope_stats(&self, scope: &[u8]) -> Result<ScopeStats> {
        self.read("scope_stats", |txn| inspect::scope_stats(txn, scope))
    }

    fn export_kv(
        &self,
        scope: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.read("export_kv", |txn| {
            inspect::export_kv(txn, scope, after, limit)
        })
    }

    fn export_queue(&self, scope: &[u8], skip: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        self.read("export_queue", |txn| {
            inspect::export_queue(txn, scope, skip, limit)
        })
    }

    fn id_high_water(&self) -> Result<i64> {
        self.read("id_high_water", inspect::high_water)
    }

    fn raise_id_high_water(&self, id: i64) -> Result<()> {
        self.write_direct("raise_id_high_water", |txn, _| {
            inspect::raise_high_water(txn, id)
        })
    }

    fn import_log(&self, records: &[LogRecord]) -> Result<Vec<i64>> {
        check_import_order(&self.name, self.max_value_len, records)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.write_direct("import_log", |txn, now| {
            inspect::import_log(txn, records, now)
        })
    }

    fn check(&self) -> Result<Vec<String>> {
        self.read("check", inspect::check)
    }
}

impl RedbStorage {
    /// Run `f` in a write transaction of its own, outside the group commit
    /// (for the rare inspection writes), begun as every write is (waiting at
    /// most the busy timeout for another process), with the clock read inside
    /// the lock.
    fn write_direct<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&redb::WriteTransaction, i64) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let run = || -> Result<T, redb::Error> {
            let mut txn = self.begin_write()?;
            if self.durability != Durability::Immediate {
                txn.set_durability(redb::Durability::None)?;
            }
            let out = f(&txn, self.clock.now_millis())?;
            txn.commit()?;
            Ok(out)
        };
        run().map_err(|e| op_error(&self.name, operation, e))
    }
}
