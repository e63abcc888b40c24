//! Raw rusqlite in WAL mode with `synchronous=NORMAL`, the sqlite backend's
//! default: the ceiling of the sqlite backend.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use vgi_storage::{
    Capabilities, FunctionStorage, GcReport, LogEntry, Result, SharedClock, gc_cutoff_millis,
};

use super::engine_error;

const SCHEMA: &str = "
-- A rowid table with a unique index, not WITHOUT ROWID: rows of 1 KiB are far
-- above the 1/20 of a page where SQLite advises against WITHOUT ROWID.
CREATE TABLE IF NOT EXISTS kv(scope BLOB NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
    UNIQUE(scope, key));
CREATE TABLE IF NOT EXISTS log(id INTEGER PRIMARY KEY AUTOINCREMENT, scope BLOB NOT NULL,
    ns BLOB NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS log_by_key ON log(scope, ns, key, id);
CREATE TABLE IF NOT EXISTS queue(id INTEGER PRIMARY KEY AUTOINCREMENT, scope BLOB NOT NULL,
    item BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS queue_by_scope ON queue(scope, id);
CREATE TABLE IF NOT EXISTS touch(scope BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
";

// An upsert updates the row in place; INSERT OR REPLACE would delete and
// reinsert it, index entries included, on every overwrite.
const KV_PUT: &str = "INSERT INTO kv(scope, key, value) VALUES (?1, ?2, ?3)
    ON CONFLICT(scope, key) DO UPDATE SET value = excluded.value";

const TOUCH: &str = "INSERT INTO touch(scope, at) VALUES (?1, ?2)
    ON CONFLICT(scope) DO UPDATE SET at = excluded.at";

/// One SQLite file; a connection per concurrent caller, taken from a pool.
pub(crate) struct RawSqlite {
    name: String,
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    clock: SharedClock,
}

impl RawSqlite {
    pub(crate) fn open(path: &Path, clock: SharedClock) -> Result<Self> {
        let store = Self {
            name: format!("raw-sqlite:{}", path.display()),
            path: path.to_owned(),
            pool: Mutex::new(Vec::new()),
            clock,
        };
        store.with("open", |c| c.execute_batch(SCHEMA))?;
        Ok(store)
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let c = Connection::open(&self.path)?;
        c.busy_timeout(Duration::from_secs(10))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        // The sqlite backend's default page cache (8 MiB), so both read the same way.
        c.pragma_update(None, "cache_size", -8192)?;
        Ok(c)
    }

    fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let pooled = self.pool.lock().map_or(None, |mut p| p.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => self
                .connect()
                .map_err(|e| engine_error(&self.name, op, e))?,
        };
        let out = f(&mut conn).map_err(|e| engine_error(&self.name, op, e));
        if let Ok(mut p) = self.pool.lock() {
            p.push(conn);
        }
        out
    }

    fn now(&self) -> i64 {
        self.clock.now_millis()
    }
}

impl FunctionStorage for RawSqlite {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_durable(true)
            .with_shared_across_processes(true)
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with("kv_get", |c| {
            c.prepare_cached("SELECT value FROM kv WHERE scope = ?1 AND key = ?2")?
                .query_row(params![scope, key], |r| r.get(0))
                .optional()
        })
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        let now = self.now();
        self.with("kv_put", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(KV_PUT)?
                .execute(params![scope, key, value])?;
            tx.prepare_cached(TOUCH)?.execute(params![scope, now])?;
            tx.commit()
        })
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.with("kv_del", |c| {
            c.prepare_cached("DELETE FROM kv WHERE scope = ?1 AND key = ?2")?
                .execute(params![scope, key])?;
            Ok(())
        })
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let now = self.now();
        self.with("kv_compare_and_swap", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<Vec<u8>> = tx
                .prepare_cached("SELECT value FROM kv WHERE scope = ?1 AND key = ?2")?
                .query_row(params![scope, key], |r| r.get(0))
                .optional()?;
            if current.as_deref() != expected {
                return Ok(false);
            }
            match new {
                Some(v) => tx.prepare_cached(KV_PUT)?.execute(params![scope, key, v])?,
                None => tx
                    .prepare_cached("DELETE FROM kv WHERE scope = ?1 AND key = ?2")?
                    .execute(params![scope, key])?,
            };
            tx.prepare_cached(TOUCH)?.execute(params![scope, now])?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        let now = self.now();
        self.with("append", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("INSERT INTO log(scope, ns, key, value) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![scope, ns, key, value])?;
            let id = tx.last_insert_rowid();
            tx.prepare_cached(TOUCH)?.execute(params![scope, now])?;
            tx.commit()?;
            Ok(id)
        })
    }

    /// One transaction for the whole batch, as the backend does: `--scale`
    /// grows its stores with batches.
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
        let now = self.now();
        self.with("append_batch", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut ids = Vec::with_capacity(values.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO log(scope, ns, key, value) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for value in values {
                    insert.execute(params![scope, ns, key, value])?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            tx.prepare_cached(TOUCH)?.execute(params![scope, now])?;
            tx.commit()?;
            Ok(ids)
        })
    }

    /// One transaction for the whole batch, as the backend does.
    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = self.now();
        self.with("kv_put_batch", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut put = tx.prepare_cached(KV_PUT)?;
                for (key, value) in entries {
                    put.execute(params![scope, key, value])?;
                }
            }
            tx.prepare_cached(TOUCH)?.execute(params![scope, now])?;
            tx.commit()
        })
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with("scan", |c| {
            c.prepare_cached(
                "SELECT id, value FROM log WHERE scope = ?1 AND ns = ?2 AND key = ?3 AND id > ?4
                 ORDER BY id LIMIT ?5",
            )?
            .query_map(params![scope, ns, key, after_id, limit], |r| {
                Ok(LogEntry {
                    id: r.get(0)?,
                    value: r.get(1)?,
                })
            })?
            .collect()
        })
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let now = self.now();
        self.with("queue_push", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert =
                    tx.prepare_cached("INSERT INTO queue(scope, item) VALUES (?1, ?2)")?;
                for item in items {
                    insert.execute(params![scope, item])?;
                }
            }
            tx.prepare_cached(TOUCH)?.execute(params![scope, now])?;
            tx.commit()
        })
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        // One statement: SQLite runs it as its own write transaction.
        self.with("queue_pop", |c| {
            c.prepare_cached(
                "DELETE FROM queue WHERE id = (SELECT id FROM queue WHERE scope = ?1 ORDER BY id LIMIT 1)
                 RETURNING item",
            )?
            .query_row(params![scope], |r| r.get(0))
            .optional()
        })
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.with("clear", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            delete_scope(&tx, scope)?;
            tx.commit()
        })
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let Some(cutoff) = gc_cutoff_millis(self.now(), ttl) else {
            return Ok(GcReport::default());
        };
        self.with("gc", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let scopes: Vec<Vec<u8>> = tx
                .prepare_cached("SELECT scope FROM touch WHERE at < ?1")?
                .query_map(params![cutoff], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for scope in &scopes {
                delete_scope(&tx, scope)?;
            }
            tx.commit()?;
            Ok(GcReport { scopes })
        })
    }
}

fn delete_scope(tx: &rusqlite::Transaction<'_>, scope: &[u8]) -> rusqlite::Result<()> {
    for sql in [
        "DELETE FROM kv WHERE scope = ?1",
        "DELETE FROM log WHERE scope = ?1",
        "DELETE FROM queue WHERE scope = ?1",
        "DELETE FROM touch WHERE scope = ?1",
    ] {
        tx.prepare_cached(sql)?.execute(params![scope])?;
    }
    Ok(())
}
