//! [`PostgresStorage`]: the contract on a PostgreSQL server.
//!
//! # How writes and `gc` stay out of each other's way
//!
//! Every write (`kv_put`, a successful CAS, `append`, a non-empty `queue_push`)
//! is one transaction that FIRST upserts the scope's row in `touch` (taking its
//! row lock until commit) and only then writes data. `clear` and `gc` are one
//! transaction that FIRST deletes `touch` rows (locking them) and then deletes
//! the data of exactly the scopes whose rows it deleted. The server runs at
//! READ COMMITTED; the interleavings of a writer W and a sweep G on scope S:
//!
//! - W upserts S's touch row first: G's `DELETE FROM touch WHERE touched_at <
//!   cutoff` finds the row locked and waits. When W commits, G re-checks the
//!   row's new version (PostgreSQL's EvalPlanQual recheck), sees a fresh stamp,
//!   and skips S: neither S's old data nor W's write is removed.
//! - G deletes S's touch row first: W's upsert finds the conflicting row locked
//!   and waits. G deletes S's data and commits; W's `INSERT ... ON CONFLICT`
//!   then finds no row, inserts a fresh stamp and writes its data: the scope
//!   reappears holding only W's write, stamped now.
//! - W cannot write S's data before its touch upsert, so G never deletes data
//!   that W wrote without also having blocked W (no lost acknowledged write),
//!   and no lock cycle arises between them: W locks touch-then-data, G locks
//!   touch-then-data, and W locks one touch row only.
//!
//! A failed CAS is rolled back whole, its touch upsert included, so it does not
//! stamp. Calls that do not stamp (`kv_del`, `queue_pop`, reads) take no touch
//! lock; at worst they wait for a row G is deleting and then find it gone.
//! Concurrent `gc` passes serialise on an advisory lock so they cannot deadlock
//! on each other's touch rows. The price of the scheme is that writes to one
//! scope serialise on its touch row (writes to different scopes do not).
//!
//! # Why log ids become visible in id order
//!
//! Ids come from one sequence per store, so they are never reused. A sequence
//! alone does not order visibility: A may draw 10, B draw 11, B commit, a reader
//! see 11, and only then A commit 10 behind it. So an append takes a
//! transaction-scoped advisory lock on a hash of `(schema, scope, ns, key)`
//! BEFORE drawing its id, and holds it until its commit. Appends to one log thus
//! draw ids and commit one at a time; PostgreSQL makes a commit visible before
//! it releases the transaction's locks, so by the time the next appender draws a
//! (larger) id, every smaller id of that log is already visible. Appends to
//! different logs do not wait for each other (a hash collision only adds a wait).

use std::fmt;
use std::time::Duration;

use postgres::{Client, NoTls, Statement, Transaction};
use vgi_storage_core::{
    Capabilities, FunctionStorage, GcReport, LogEntry, Result, SharedClock, check_value_len,
    gc_cutoff_millis,
};

use crate::config::{PostgresBuilder, PostgresSource, describe};
use crate::error::{self, PgError};
use crate::pool::{Connection, Pool};
use crate::schema::{self, lock_key, quoted};

/// Largest value accepted: a bytea holds up to 1 GiB, and one protocol message
/// carries the value plus the other parameters, so leave a margin.
pub const MAX_VALUE_LEN: usize = (1 << 30) - (1 << 20);

/// How often a call whose transaction hit a deadlock or serialization failure
/// is retried before the error is returned (the transaction was rolled back
/// whole, so retrying is safe).
const CONFLICT_RETRIES: usize = 3;

const CAPABILITIES: Capabilities = Capabilities::new()
    .with_durable(true)
    .with_shared_across_hosts(true)
    .with_max_value_len(MAX_VALUE_LEN);

/// The statements one connection prepared against the store's schema.
struct Statements {
    touch: Statement,
    kv_get: Statement,
    kv_put: Statement,
    kv_del: Statement,
    kv_exists: Statement,
    cas_insert: Statement,
    cas_update: Statement,
    cas_delete: Statement,
    advisory_lock: Statement,
    log_append: Statement,
    log_ids: Statement,
    log_insert_many: Statement,
    scan: Statement,
    queue_ids: Statement,
    queue_insert_many: Statement,
    queue_pop: Statement,
    clear_touch: Statement,
    clear_kv: Statement,
    clear_log: Statement,
    clear_queue: Statement,
    gc_touch: Statement,
    gc_kv: Statement,
    gc_log: Statement,
    gc_queue: Statement,
}

impl Statements {
    fn prepare(client: &mut Client, schema: &str) -> Result<Self, PgError> {
        let s = quoted(schema);
        let mut p = |sql: String| client.prepare(&sql);
        Ok(Self {
            touch: p(format!(
                "INSERT INTO {s}.touch (scope, touched_at) VALUES ($1, $2) \
                 ON CONFLICT (scope) DO UPDATE SET touched_at = EXCLUDED.touched_at"
            ))?,
            kv_get: p(format!(
                "SELECT value FROM {s}.kv WHERE scope = $1 AND key = $2"
            ))?,
            kv_put: p(format!(
                "INSERT INTO {s}.kv (scope, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope, key) DO UPDATE SET value = EXCLUDED.value"
            ))?,
            kv_del: p(format!("DELETE FROM {s}.kv WHERE scope = $1 AND key = $2"))?,
            kv_exists: p(format!(
                "SELECT 1 FROM {s}.kv WHERE scope = $1 AND key = $2"
            ))?,
            cas_insert: p(format!(
                "INSERT INTO {s}.kv (scope, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope, key) DO NOTHING"
            ))?,
            cas_update: p(format!(
                "UPDATE {s}.kv SET value = $4 WHERE scope = $1 AND key = $2 AND value = $3"
            ))?,
            cas_delete: p(format!(
                "DELETE FROM {s}.kv WHERE scope = $1 AND key = $2 AND value = $3"
            ))?,
            advisory_lock: p("SELECT pg_advisory_xact_lock($1)".to_owned())?,
            log_append: p(format!(
                "INSERT INTO {s}.log (scope, ns, key, id, value) \
                 VALUES ($1, $2, $3, nextval('{s}.log_id'), $4) RETURNING id"
            ))?,
            log_ids: p(format!(
                "SELECT nextval('{s}.log_id') FROM generate_series(1, $1::int8)"
            ))?,
            log_insert_many: p(format!(
                "INSERT INTO {s}.log (scope, ns, key, id, value) \
                 SELECT $1, $2, $3, i, v FROM unnest($4::int8[], $5::bytea[]) AS t(i, v)"
            ))?,
            scan: p(format!(
                "SELECT id, value FROM {s}.log \
                 WHERE scope = $1 AND ns = $2 AND key = $3 AND id > $4 ORDER BY id LIMIT $5"
            ))?,
            queue_ids: p(format!(
                "SELECT nextval('{s}.queue_id') FROM generate_series(1, $1::int8)"
            ))?,
            queue_insert_many: p(format!(
                "INSERT INTO {s}.queue (id, scope, value) \
                 SELECT i, $1, v FROM unnest($2::int8[], $3::bytea[]) AS t(i, v)"
            ))?,
            // A scalar `=` subquery claims exactly one row: `IN (... LIMIT 1)` may
            // be planned as a join that re-runs the subquery and deletes more.
            queue_pop: p(format!(
                "DELETE FROM {s}.queue WHERE id = (\
                     SELECT id FROM {s}.queue WHERE scope = $1 \
                     ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) \
                 RETURNING value"
            ))?,
            clear_touch: p(format!("DELETE FROM {s}.touch WHERE scope = $1"))?,
            clear_kv: p(format!("DELETE FROM {s}.kv WHERE scope = $1"))?,
            clear_log: p(format!("DELETE FROM {s}.log WHERE scope = $1"))?,
            clear_queue: p(format!("DELETE FROM {s}.queue WHERE scope = $1"))?,
            gc_touch: p(format!(
                "DELETE FROM {s}.touch WHERE touched_at < $1 RETURNING scope"
            ))?,
            gc_kv: p(format!("DELETE FROM {s}.kv WHERE scope = ANY($1::bytea[])"))?,
            gc_log: p(format!(
                "DELETE FROM {s}.log WHERE scope = ANY($1::bytea[])"
            ))?,
            gc_queue: p(format!(
                "DELETE FROM {s}.queue WHERE scope = ANY($1::bytea[])"
            ))?,
        })
    }
}

/// One pooled connection with its prepared statements.
pub(crate) struct Conn {
    client: Client,
    st: Statements,
}

impl Connection for Conn {
    fn is_broken(&self) -> bool {
        self.client.is_closed()
    }
}

/// A store on a PostgreSQL server, shared by processes on any number of hosts.
///
/// Build it with [`PostgresStorage::connect`], [`PostgresStorage::from_env`] or
/// [`PostgresStorage::builder`]. Its tables live in one schema (default
/// `vgi_storage`), created on first use. Calls are blocking and draw a
/// connection from an internal pool. `Debug` never shows the password.
pub struct PostgresStorage {
    name: String,
    schema: String,
    pool: Pool<Conn>,
    clock: SharedClock,
    log_lock_prefix: Vec<u8>,
    gc_lock: i64,
}

impl fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("name", &self.name)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStorage {
    /// Settings for a store, from a connection string (`postgres://user@host:port/db?...`
    /// or libpq `key=value` pairs), a [`postgres::Config`], or [`PostgresSource::Env`].
    ///
    /// In a URL, the parameter `schema=NAME` picks the schema; settings the
    /// string leaves out (host, port, user, password, database) come from the
    /// libpq variables, as with libpq. `sslmode=require` (or `verify-*`) is
    /// refused with a clear error: this build has no TLS and never falls back
    /// to a clear connection when TLS was asked for.
    pub fn builder(source: impl Into<PostgresSource>) -> PostgresBuilder {
        PostgresBuilder::new(source.into())
    }

    /// Connect with a connection string and default settings.
    pub fn connect(url: &str) -> Result<Self> {
        Self::builder(url).connect()
    }

    /// Connect with the libpq environment variables (`PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, ...) and default settings.
    pub fn from_env() -> Result<Self> {
        Self::builder(PostgresSource::Env).connect()
    }

    /// The schema the store's tables live in.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub(crate) fn open(builder: PostgresBuilder) -> Result<Self> {
        let (config, schema) = builder.resolve()?;
        let name = describe(&config, &schema);
        let mut client = config
            .connect(NoTls)
            .map_err(|e| error::open("postgres", &name, e))?;
        schema::ensure(&mut client, &schema, &name)?;
        let st = Statements::prepare(&mut client, &schema)
            .map_err(|e| error::open("postgres", &name, e))?;
        let first = Conn { client, st };
        let connector_schema = schema.clone();
        let connector = Box::new(move || {
            let mut client = config.connect(NoTls)?;
            let st = Statements::prepare(&mut client, &connector_schema)?;
            Ok(Conn { client, st })
        });
        let mut log_lock_prefix = b"vgi-storage-postgres:log:".to_vec();
        log_lock_prefix.extend_from_slice(schema.as_bytes());
        let gc_lock = lock_key(&[b"vgi-storage-postgres:gc", schema.as_bytes()]);
        Ok(Self {
            pool: Pool::new(
                name.clone(),
                builder.pool_size,
                builder.checkout_timeout,
                connector,
                Some(first),
            ),
            name,
            schema,
            clock: builder.clock,
            log_lock_prefix,
            gc_lock,
        })
    }

    /// Run `f` on a pooled connection, mapping its error; retry a transaction
    /// the server rolled back for a deadlock or serialization failure.
    fn run<T>(
        &self,
        operation: &'static str,
        mut f: impl FnMut(&mut Client, &Statements) -> Result<T, PgError>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            let mut conn = self.pool.get(operation)?;
            let Conn { client, st } = &mut *conn;
            match f(client, st) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    conn.note_error(&e);
                    let err = error::operation(&self.name, operation, e);
                    if attempt < CONFLICT_RETRIES
                        && err.kind() == vgi_storage_core::ErrorKind::Conflict
                    {
                        attempt += 1;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    fn check_len(&self, len: usize) -> Result<()> {
        check_value_len(&self.name, MAX_VALUE_LEN, len)
    }

    fn touch(
        &self,
        tx: &mut Transaction<'_>,
        st: &Statements,
        scope: &[u8],
    ) -> Result<(), PgError> {
        let now = self.clock.now_millis();
        tx.execute(&st.touch, &[&scope, &now])?;
        Ok(())
    }

    fn log_lock(&self, scope: &[u8], ns: &[u8], key: &[u8]) -> i64 {
        lock_key(&[&self.log_lock_prefix, scope, ns, key])
    }
}

fn to_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl FunctionStorage for PostgresStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.run("kv_get", |client, st| {
            let row = client.query_opt(&st.kv_get, &[&scope, &key])?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.check_len(value.len())?;
        self.run("kv_put", |client, st| {
            let mut tx = client.transaction()?;
            self.touch(&mut tx, st, scope)?;
            tx.execute(&st.kv_put, &[&scope, &key, &value])?;
            tx.commit()
        })
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.run("kv_del", |client, st| {
            client.execute(&st.kv_del, &[&scope, &key]).map(|_| ())
        })
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
        self.run("kv_compare_and_swap", |client, st| {
            let mut tx = client.transaction()?;
            // Touch first (see the module docs); rolled back if the swap fails.
            self.touch(&mut tx, st, scope)?;
            let swapped = match (expected, new) {
                (None, Some(v)) => tx.execute(&st.cas_insert, &[&scope, &key, &v])? == 1,
                (Some(e), Some(v)) => tx.execute(&st.cas_update, &[&scope, &key, &e, &v])? == 1,
                (Some(e), None) => tx.execute(&st.cas_delete, &[&scope, &key, &e])? == 1,
                (None, None) => tx.query_opt(&st.kv_exists, &[&scope, &key])?.is_none(),
            };
            if swapped {
                tx.commit()?;
            } else {
                tx.rollback()?;
            }
            Ok(swapped)
        })
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.check_len(value.len())?;
        let lock = self.log_lock(scope, ns, key);
        self.run("append", |client, st| {
            let mut tx = client.transaction()?;
            self.touch(&mut tx, st, scope)?;
            // Held to commit: appends to this log draw ids and commit in turn.
            tx.execute(&st.advisory_lock, &[&lock])?;
            let id: i64 = tx
                .query_one(&st.log_append, &[&scope, &ns, &key, &value])?
                .get(0);
            tx.commit()?;
            Ok(id)
        })
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
        let lock = self.log_lock(scope, ns, key);
        let count = to_limit(values.len());
        self.run("append_batch", |client, st| {
            let mut tx = client.transaction()?;
            self.touch(&mut tx, st, scope)?;
            tx.execute(&st.advisory_lock, &[&lock])?;
            let mut ids: Vec<i64> = tx
                .query(&st.log_ids, &[&count])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // One sequence hands out increasing values; sort in case rows came back unordered.
            ids.sort_unstable();
            tx.execute(&st.log_insert_many, &[&scope, &ns, &key, &ids, &values])?;
            tx.commit()?;
            Ok(ids)
        })
    }

    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for (_, v) in entries {
            self.check_len(v.len())?;
        }
        self.run("kv_put_batch", |client, st| {
            let mut tx = client.transaction()?;
            self.touch(&mut tx, st, scope)?;
            for (k, v) in entries {
                tx.execute(&st.kv_put, &[&scope, k, v])?;
            }
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
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = to_limit(limit);
        self.run("scan", |client, st| {
            let rows = client.query(&st.scan, &[&scope, &ns, &key, &after_id, &limit])?;
            Ok(rows
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
        for item in items {
            self.check_len(item.len())?;
        }
        let count = to_limit(items.len());
        self.run("queue_push", |client, st| {
            let mut tx = client.transaction()?;
            self.touch(&mut tx, st, scope)?;
            let mut ids: Vec<i64> = tx
                .query(&st.queue_ids, &[&count])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            ids.sort_unstable();
            tx.execute(&st.queue_insert_many, &[&scope, &ids, &items])?;
            tx.commit()
        })
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        self.run("queue_pop", |client, st| {
            let row = client.query_opt(&st.queue_pop, &[&scope])?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.run("clear", |client, st| {
            let mut tx = client.transaction()?;
            // The touch row first, as gc does: a racing writer waits for us.
            tx.execute(&st.clear_touch, &[&scope])?;
            tx.execute(&st.clear_kv, &[&scope])?;
            tx.execute(&st.clear_log, &[&scope])?;
            tx.execute(&st.clear_queue, &[&scope])?;
            tx.commit()
        })
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let Some(cutoff) = gc_cutoff_millis(self.clock.now_millis(), ttl) else {
            return Ok(GcReport::default());
        };
        self.run("gc", |client, st| {
            let mut tx = client.transaction()?;
            tx.execute(&st.advisory_lock, &[&self.gc_lock])?;
            // Only scopes still stale when their touch row is deleted (and locked):
            // a writer that stamped meanwhile makes the recheck skip its scope.
            let scopes: Vec<Vec<u8>> = tx
                .query(&st.gc_touch, &[&cutoff])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !scopes.is_empty() {
                tx.execute(&st.gc_kv, &[&scopes])?;
                tx.execute(&st.gc_log, &[&scopes])?;
                tx.execute(&st.gc_queue, &[&scopes])?;
            }
            tx.commit()?;
            Ok(GcReport { scopes })
        })
    }
}
