//! Raw `postgres` crate on the same server and durability as the postgres
//! backend (`fsync=on`, `synchronous_commit=on`): the ceiling of the postgres
//! backend. One statement or one transaction per call, prepared once per
//! connection; names as plain primary keys (the bench's names are short),
//! stamps from the run's clock (as the backend's test clock).
//!
//! A pop is a transaction that commits with the claimed row in the client's
//! hands (BEGIN, the prepared claim, COMMIT), the guarantee the backend gives:
//! a connection lost before the commit leaves the item queued. One autocommit
//! `DELETE ... RETURNING` (the ceiling up to the second postgres pass) saves
//! two round trips but loses the item when the reply is lost after the
//! server's implicit commit: not the same durability, so not the ceiling (its
//! figures are kept in bench/README.md). [`AUTOCOMMIT_POP_VAR`]`=1` measures it.

use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls, Statement};
use vgi_storage::{
    Capabilities, FunctionStorage, GcReport, LogEntry, Result, SharedClock, gc_cutoff_millis,
};

use super::engine_error;

/// Set to `1`, the ceiling pops with one autocommit statement, as it did up to
/// the second postgres pass: faster, but not the backend's guarantee.
pub(crate) const AUTOCOMMIT_POP_VAR: &str = "VGI_BENCH_PG_AUTOCOMMIT_POP";

struct Prepared {
    kv_get: Statement,
    kv_put: Statement,
    kv_del: Statement,
    append: Statement,
    scan: Statement,
    push: Statement,
    pop: Statement,
    pop_wait: Statement,
}

struct Conn {
    client: Client,
    st: Prepared,
}

/// One schema on the bench's server; a connection per concurrent caller.
pub(crate) struct RawPostgres {
    name: String,
    config: postgres::Config,
    schema: String,
    pool: Mutex<Vec<Conn>>,
    clock: SharedClock,
    autocommit_pop: bool,
}

impl RawPostgres {
    pub(crate) fn open(url: &str, schema: &str, clock: SharedClock) -> Result<Self> {
        let name = format!("raw-postgres:{schema}");
        let config: postgres::Config = url.parse().map_err(|e| engine_error(&name, "open", e))?;
        let store = Self {
            name,
            config,
            schema: schema.to_owned(),
            pool: Mutex::new(Vec::new()),
            clock,
            autocommit_pop: std::env::var(AUTOCOMMIT_POP_VAR).is_ok_and(|v| v == "1"),
        };
        let s = &store.schema;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.kv (scope bytea, key bytea, value bytea NOT NULL,
                 PRIMARY KEY (scope, key));
             CREATE SEQUENCE IF NOT EXISTS {s}.log_id;
             CREATE TABLE IF NOT EXISTS {s}.log (scope bytea, ns bytea, key bytea, id bigint,
                 value bytea NOT NULL, PRIMARY KEY (scope, ns, key, id));
             CREATE TABLE IF NOT EXISTS {s}.queue (id bigserial PRIMARY KEY, scope bytea NOT NULL,
                 item bytea NOT NULL);
             CREATE INDEX IF NOT EXISTS queue_by_scope ON {s}.queue (scope, id);
             CREATE TABLE IF NOT EXISTS {s}.touch (scope bytea PRIMARY KEY, at bigint NOT NULL);"
        );
        let mut client = store
            .config
            .connect(NoTls)
            .map_err(|e| engine_error(&store.name, "open", e))?;
        client
            .batch_execute(&ddl)
            .map_err(|e| engine_error(&store.name, "open", e))?;
        Ok(store)
    }

    fn connect(&self) -> std::result::Result<Conn, postgres::Error> {
        let s = &self.schema;
        let mut client = self.config.connect(NoTls)?;
        // The stamp first, in the same statement: it orders appends to a log.
        let touch = format!(
            "WITH t AS (INSERT INTO {s}.touch (scope, at) VALUES ($1, $2) \
             ON CONFLICT (scope) DO UPDATE SET at = EXCLUDED.at RETURNING scope)"
        );
        let st = Prepared {
            kv_get: client.prepare(&format!(
                "SELECT value FROM {s}.kv WHERE scope = $1 AND key = $2"
            ))?,
            kv_put: client.prepare(&format!(
                "{touch} INSERT INTO {s}.kv SELECT t.scope, $3, $4 FROM t \
                 ON CONFLICT (scope, key) DO UPDATE SET value = EXCLUDED.value"
            ))?,
            kv_del: client.prepare(&format!("DELETE FROM {s}.kv WHERE scope = $1 AND key = $2"))?,
            append: client.prepare(&format!(
                "{touch} INSERT INTO {s}.log SELECT t.scope, $3, $4, nextval('{s}.log_id'), $5 \
                 FROM t RETURNING id"
            ))?,
            scan: client.prepare(&format!(
                "SELECT id, value FROM {s}.log WHERE scope = $1 AND ns = $2 AND key = $3 \
                 AND id > $4 ORDER BY id LIMIT $5"
            ))?,
            push: client.prepare(&format!(
                "{touch} INSERT INTO {s}.queue (scope, item) \
                 SELECT t.scope, u.v FROM t, unnest($3::bytea[]) WITH ORDINALITY AS u(v, n) \
                 ORDER BY u.n"
            ))?,
            pop: client.prepare(&format!(
                "DELETE FROM {s}.queue WHERE id = (SELECT id FROM {s}.queue WHERE scope = $1 \
                 ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING item"
            ))?,
            // On a miss: wait for the pops holding rows (they may roll back),
            // locking the oldest row left, if any.
            pop_wait: client.prepare(&format!(
                "SELECT id FROM {s}.queue WHERE scope = $1 ORDER BY id LIMIT 1 FOR UPDATE"
            ))?,
        };
        Ok(Conn { client, st })
    }

    fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Client, &Prepared) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let pooled = self.pool.lock().map_or(None, |mut p| p.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => self
                .connect()
                .map_err(|e| engine_error(&self.name, op, e))?,
        };
        let out = f(&mut conn.client, &conn.st).map_err(|e| engine_error(&self.name, op, e));
        if let Ok(mut p) = self.pool.lock() {
            p.push(conn);
        }
        out
    }
}

impl FunctionStorage for RawPostgres {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_durable(true)
            .with_shared_across_hosts(true)
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with("kv_get", |c, st| {
            Ok(c.query_opt(&st.kv_get, &[&scope, &key])?.map(|r| r.get(0)))
        })
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        let now = self.clock.now_millis();
        self.with("kv_put", |c, st| {
            c.execute(&st.kv_put, &[&scope, &now, &key, &value])
                .map(drop)
        })
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.with("kv_del", |c, st| {
            c.execute(&st.kv_del, &[&scope, &key]).map(drop)
        })
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let s = self.schema.clone();
        let now = self.clock.now_millis();
        self.with("kv_compare_and_swap", |c, _| {
            // One conditional statement decides, as in the backend: a read
            // followed by a write would race on an absent key.
            let mut tx = c.transaction()?;
            let swapped = match (expected, new) {
                (None, Some(v)) => {
                    tx.execute(
                        &format!("INSERT INTO {s}.kv VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"),
                        &[&scope, &key, &v],
                    )? == 1
                }
                (Some(e), Some(v)) => {
                    tx.execute(
                        &format!(
                            "UPDATE {s}.kv SET value = $3 \
                             WHERE scope = $1 AND key = $2 AND value = $4"
                        ),
                        &[&scope, &key, &v, &e],
                    )? == 1
                }
                (Some(e), None) => {
                    tx.execute(
                        &format!("DELETE FROM {s}.kv WHERE scope = $1 AND key = $2 AND value = $3"),
                        &[&scope, &key, &e],
                    )? == 1
                }
                (None, None) => tx
                    .query_opt(
                        &format!("SELECT 1 FROM {s}.kv WHERE scope = $1 AND key = $2"),
                        &[&scope, &key],
                    )?
                    .is_none(),
            };
            if !swapped {
                tx.rollback()?;
                return Ok(false);
            }
            tx.execute(
                &format!(
                    "INSERT INTO {s}.touch (scope, at) VALUES ($1, $2) \
                     ON CONFLICT (scope) DO UPDATE SET at = EXCLUDED.at"
                ),
                &[&scope, &now],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        let now = self.clock.now_millis();
        self.with("append", |c, st| {
            Ok(c.query_one(&st.append, &[&scope, &now, &ns, &key, &value])?
                .get(0))
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
        self.with("scan", |c, st| {
            Ok(c.query(&st.scan, &[&scope, &ns, &key, &after_id, &limit])?
                .iter()
                .map(|r| LogEntry {
                    id: r.get(0),
                    value: r.get(1),
                })
                .collect())
        })
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_millis();
        self.with("queue_push", |c, st| {
            c.execute(&st.push, &[&scope, &now, &items]).map(drop)
        })
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        if self.autocommit_pop {
            return self.with("queue_pop", |c, st| {
                Ok(c.query_opt(&st.pop, &[&scope])?.map(|r| r.get(0)))
            });
        }
        self.with("queue_pop", |c, st| {
            let mut tx = c.transaction()?;
            // Rows locked by other pops are skipped but not taken for an empty
            // queue: a miss waits for them and claims again.
            let item = loop {
                if let Some(row) = tx.query_opt(&st.pop, &[&scope])? {
                    break Some(row.get(0));
                }
                if tx.query_opt(&st.pop_wait, &[&scope])?.is_none() {
                    break None;
                }
            };
            tx.commit()?;
            Ok(item)
        })
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        let s = self.schema.clone();
        self.with("clear", |c, _| {
            let mut tx = c.transaction()?;
            for table in ["touch", "kv", "log", "queue"] {
                tx.execute(
                    &format!("DELETE FROM {s}.{table} WHERE scope = $1"),
                    &[&scope],
                )?;
            }
            tx.commit()
        })
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let s = self.schema.clone();
        let Some(cutoff) = gc_cutoff_millis(self.clock.now_millis(), ttl) else {
            return Ok(GcReport::default());
        };
        self.with("gc", |c, _| {
            let mut tx = c.transaction()?;
            let scopes: Vec<Vec<u8>> = tx
                .query(
                    &format!("DELETE FROM {s}.touch WHERE at < $1 RETURNING scope"),
                    &[&cutoff],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for table in ["kv", "log", "queue"] {
                tx.execute(
                    &format!("DELETE FROM {s}.{table} WHERE scope = ANY($1)"),
                    &[&scopes],
                )?;
            }
            tx.commit()?;
            Ok(GcReport { scopes })
        })
    }
}
