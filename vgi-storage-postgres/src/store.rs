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
//! see 11, and only then A commit 10 behind it. What orders them here is the
//! touch row lock above: an append upserts its scope's touch row BEFORE it draws
//! its id, and holds that row lock until its commit. Appends to one log (indeed
//! to one scope) thus draw ids and commit one at a time; PostgreSQL makes a
//! commit visible before it releases the transaction's locks, so by the time the
//! next appender draws a (larger) id, every smaller id of that log is already
//! visible. (A per-log lock — a counter row or `pg_advisory_xact_lock` on a hash
//! of the log — would do the same with finer grain, at the price of one more
//! lock per append; the touch lock is taken anyway. Whoever changes the touch
//! scheme must keep this in mind.)
//!
//! # Round trips
//!
//! The hot writes (`kv_put`, `append`, `queue_push`, `kv_put_batch`) are one
//! autocommit statement each: a data-modifying CTE upserts the touch row and the
//! main statement reads from it, so the touch runs (and locks) first. CAS,
//! `append_batch`, `clear`, `gc` and `queue_pop` are explicit transactions;
//! pop pays two more round trips (BEGIN, COMMIT) than a bare `DELETE ...
//! RETURNING` so that it commits only with the row in hand (a reply lost
//! before the commit leaves the item queued).
//!
//! # Lost connections
//!
//! A call that never reached the server is `Unavailable`. Once a request was
//! sent, a lost connection means: nothing, for reads; `OutcomeUnknown`, for
//! an autocommit write; for a transaction, nothing if the loss came before the
//! commit was sent (the server rolls back), else `OutcomeUnknown`.

use std::fmt;
use std::time::Duration;

use postgres::{Client, Statement, Transaction};
use sha2::{Digest, Sha256};
use vgi_storage_core::{
    Capabilities, FunctionStorage, GcReport, LogEntry, LogRecord, Result, ScopeInfo, ScopeStats,
    SharedClock, check_import_order, check_value_len, gc_cutoff_millis,
};

use crate::blocking::{self, DropOffRuntime};
use crate::config::{PostgresBuilder, PostgresSource, describe};
use crate::error::{self, PgError};
use crate::inspect;
use crate::pool::{Connection, Pool};
use crate::schema::{self, lock_key, quoted};
use crate::tls;

/// Largest value accepted: a bytea holds up to 1 GiB, and one protocol message
/// carries the value plus the other parameters, so leave a margin.
pub const MAX_VALUE_LEN: usize = (1 << 30) - (1 << 20);

/// The largest request sent in one message by default (and at most): the
/// server refuses protocol messages of 1 GiB and more; leave room for the
/// message's own framing.
pub const MAX_REQUEST_LEN: usize = (1 << 30) - (1 << 20);

/// What one byte string costs in a request beyond its bytes (its length word,
/// and an array element's header).
const PARAM_OVERHEAD: usize = 8;

/// How long a pop waits for other pops' locked rows before it is `Busy`.
const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// How often a call whose transaction hit a deadlock or serialization failure
/// is retried before the error is returned (the transaction was rolled back
/// whole, so retrying is safe).
const CONFLICT_RETRIES: usize = 3;

const CAPABILITIES: Capabilities = Capabilities::new()
    .with_durable(true)
    .with_shared_across_hosts(true)
    .with_max_value_len(MAX_VALUE_LEN)
    .with_inspect(true);

/// The server's clock in milliseconds since the Unix epoch: the one clock every
/// host of a fleet agrees on. `clock_timestamp()`, not `now()`, so a stamp is
/// taken when the write runs, not when its transaction began.
pub(crate) const SERVER_NOW_MS: &str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::int8";

/// The statements one connection prepared against the store's schema.
struct Statements {
    touch: Statement,
    kv_get: Statement,
    kv_put: Statement,
    kv_put_many: Statement,
    kv_del: Statement,
    kv_exists: Statement,
    cas_insert: Statement,
    cas_update: Statement,
    cas_delete: Statement,
    advisory_lock: Statement,
    server_now: Statement,
    log_append: Statement,
    log_ids: Statement,
    log_insert_many: Statement,
    scan: Statement,
    queue_push: Statement,
    queue_pop: Statement,
    queue_wait: Statement,
    queue_lock_timeout: Statement,
    clear_touch: Statement,
    clear_kv: Statement,
    clear_log: Statement,
    clear_queue: Statement,
    gc_touch: Statement,
    gc_data: Statement,
}

impl Statements {
    fn prepare(client: &mut Client, schema: &str) -> Result<Self, PgError> {
        // Plans that hold without statistics. A table filled since its last
        // ANALYZE (a fresh queue, a fresh log) has none, and the planner then
        // takes a scope's rows for a handful: it picks a bitmap scan of ALL of
        // them and a sort to find the oldest, for every pop (0.7 ms per pop at
        // 1000 items, growing with the queue) where the digest index hands the
        // oldest row over in order (0.04 ms). Every lookup here is served by a
        // plain index scan. A statement, once per connection, rather than a
        // startup `options` value: PgBouncer refuses unknown settings there.
        client.batch_execute("SET enable_bitmapscan = off")?;
        let s = quoted(schema);
        // Names are indexed by digest (see `schema::VERSION`): each lookup
        // matches the digests, which the indexes serve, and then the full bytes.
        // The client sends the digests of the names it looks up (see
        // `digest`), placed after the statement's other parameters: the
        // server's `sha256()` costs more per call than a round trip's share of
        // a read. Writes that insert still have the server digest the new row,
        // as its index must.
        let scope1 = "sha256(scope) = $2 AND scope = $1";
        let kv_match = |scope_digest: u8, key_digest: u8| {
            format!(
                "sha256(scope) = ${scope_digest} AND scope = $1 \
                 AND sha256(key) = ${key_digest} AND key = $2"
            )
        };
        // The touch upsert as a data-modifying CTE: the main statement reads its
        // row, so the touch runs (and takes its row lock) before the data write.
        // $1 is the scope, $2 the test clock's stamp or NULL for the server's clock.
        let touch_upsert = format!(
            "INSERT INTO {s}.touch (scope, touched_at) \
             VALUES ($1, COALESCE($2::int8, {SERVER_NOW_MS})) \
             ON CONFLICT ((sha256(scope))) DO UPDATE SET touched_at = EXCLUDED.touched_at"
        );
        let touch_cte = format!("WITH t AS ({touch_upsert} RETURNING scope)");
        let kv_upsert = "ON CONFLICT ((sha256(scope)), (sha256(key))) \
                         DO UPDATE SET value = EXCLUDED.value";
        let mut p = |sql: String| client.prepare(&sql);
        Ok(Self {
            touch: p(touch_upsert.clone())?,
            kv_get: p(format!("SELECT value FROM {s}.kv WHERE {}", kv_match(3, 4)))?,
            kv_put: p(format!(
                "{touch_cte} INSERT INTO {s}.kv (scope, key, value) SELECT t.scope, $3, $4 FROM t \
                 {kv_upsert}"
            ))?,
            kv_put_many: p(format!(
                "{touch_cte} INSERT INTO {s}.kv (scope, key, value) \
                 SELECT t.scope, u.k, u.v FROM t, unnest($3::bytea[], $4::bytea[]) AS u(k, v) \
                 {kv_upsert}"
            ))?,
            kv_del: p(format!("DELETE FROM {s}.kv WHERE {}", kv_match(3, 4)))?,
            kv_exists: p(format!("SELECT 1 FROM {s}.kv WHERE {}", kv_match(3, 4)))?,
            cas_insert: p(format!(
                "INSERT INTO {s}.kv (scope, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT ((sha256(scope)), (sha256(key))) DO NOTHING"
            ))?,
            cas_update: p(format!(
                "UPDATE {s}.kv SET value = $4 WHERE {} AND value = $3",
                kv_match(5, 6)
            ))?,
            cas_delete: p(format!(
                "DELETE FROM {s}.kv WHERE {} AND value = $3",
                kv_match(4, 5)
            ))?,
            advisory_lock: p("SELECT pg_advisory_xact_lock($1)".to_owned())?,
            server_now: p(format!("SELECT {SERVER_NOW_MS}"))?,
            // The id is drawn after the touch row is locked (see the module docs).
            log_append: p(format!(
                "{touch_cte} INSERT INTO {s}.log (scope, ns, key, id, value) \
                 SELECT t.scope, $3, $4, nextval('{s}.log_id'), $5 FROM t RETURNING id"
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
                 WHERE sha256(scope) = $6 AND scope = $1 AND sha256(ns) = $7 AND ns = $2 \
                 AND sha256(key) = $8 AND key = $3 AND id > $4 ORDER BY id LIMIT $5"
            ))?,
            // One sequence value per push, items ordered by their position in it.
            queue_push: p(format!(
                "{touch_cte}, p AS MATERIALIZED (SELECT nextval('{s}.queue_seq') AS seq) \
                 INSERT INTO {s}.queue (scope, seq, n, value) \
                 SELECT t.scope, p.seq, u.n, u.v \
                 FROM t, p, unnest($3::bytea[]) WITH ORDINALITY AS u(v, n)"
            ))?,
            // A scalar `=` subquery claims exactly one row: `IN (... LIMIT 1)` may
            // be planned as a join that re-runs the subquery and deletes more.
            // Rows locked by other pops are skipped; on a miss, the second
            // column says whether the scope had any row at all (the CTE's
            // delete is not yet visible to it), so a miss on locked rows is not
            // taken for empty. A claimed row needs no second look: `CASE`
            // evaluates the `EXISTS` (another index scan over the rows popped
            // before, dead until vacuumed) only on a miss.
            queue_pop: p(format!(
                "WITH c AS (DELETE FROM {s}.queue WHERE id = (\
                     SELECT id FROM {s}.queue WHERE {scope1} \
                     ORDER BY seq, n FOR UPDATE SKIP LOCKED LIMIT 1) \
                 RETURNING value) \
                 SELECT got.value, CASE WHEN got.value IS NULL \
                     THEN EXISTS (SELECT 1 FROM {s}.queue WHERE {scope1}) ELSE true END \
                 FROM (SELECT (SELECT value FROM c) AS value) AS got"
            ))?,
            // Wait for the pops holding the oldest rows to commit or roll back,
            // and lock the oldest row left, if any.
            queue_wait: p(format!(
                "SELECT id FROM {s}.queue WHERE {scope1} ORDER BY seq, n LIMIT 1 FOR UPDATE"
            ))?,
            queue_lock_timeout: p(format!(
                "SELECT set_config('lock_timeout', '{}ms', true)",
                QUEUE_WAIT.as_millis()
            ))?,
            clear_touch: p(format!("DELETE FROM {s}.touch WHERE {scope1}"))?,
            clear_kv: p(format!("DELETE FROM {s}.kv WHERE {scope1}"))?,
            clear_log: p(format!("DELETE FROM {s}.log WHERE {scope1}"))?,
            clear_queue: p(format!("DELETE FROM {s}.queue WHERE {scope1}"))?,
            gc_touch: p(format!(
                "DELETE FROM {s}.touch WHERE touched_at < $1 RETURNING scope"
            ))?,
            gc_data: p(gc_data_sql(&s))?,
        })
    }
}

/// gc's data deletes: the removed scopes' data, all three tables in one
/// statement (one round trip instead of three), each matched by the scopes'
/// digests ($2, which the digest indexes serve) and names ($1).
///
/// All three deletes see one snapshot, taken after the touch rows were deleted
/// (and locked): a writer to one of these scopes waits for gc's commit, so
/// none can slip in between. Each table keeps the plan it had as a statement of
/// its own: a join to the scopes as rows (`unnest($1, $2)`) plans once instead
/// of weighing every element of both arrays per table, and was three times
/// faster on small tables, but on a large table without statistics the planner
/// hash-joins over a sequential scan that digests every row (100k log rows:
/// 160 ms where `= ANY` took 10 ms).
fn gc_data_sql(s: &str) -> String {
    let delete = |table: &str| {
        format!(
            "DELETE FROM {s}.{table} \
             WHERE sha256(scope) = ANY($2::bytea[]) AND scope = ANY($1::bytea[])"
        )
    };
    format!(
        "WITH k AS ({}), l AS ({}) {}",
        delete("kv"),
        delete("log"),
        delete("queue")
    )
}

/// One pooled connection with its prepared statements.
pub(crate) struct Conn {
    /// Dropped off any tokio runtime: its own runtime cannot shut down inside one.
    client: DropOffRuntime<Client>,
    st: Statements,
}

impl Connection for Conn {
    fn is_broken(&self) -> bool {
        self.client.is_closed()
    }
}

/// Open one connection and prepare the store's statements on it.
fn connect_one(
    config: &postgres::Config,
    connector: &tls::Connector,
    schema: &str,
) -> Result<Conn, PgError> {
    let mut client = connector.connect(config)?;
    let st = Statements::prepare(&mut client, schema)?;
    Ok(Conn {
        client: DropOffRuntime::new(client),
        st,
    })
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
    /// A test clock replacing the server's (`PostgresBuilder::test_clock`); `None`
    /// in production, where the server's clock stamps writes and dates gc.
    clock: Option<SharedClock>,
    gc_lock: i64,
    max_value_len: usize,
    max_request_len: usize,
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
    /// libpq variables, as with libpq. TLS follows libpq's `sslmode`
    /// (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) with
    /// `sslrootcert`, `sslcert` and `sslkey`; it never falls back to a clear
    /// connection when `require` or stricter was asked for.
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
        // Connecting blocks on the client's runtime too (see `blocking`).
        blocking::off_runtime("postgres", "connect", || Self::open_here(builder))
    }

    fn open_here(builder: PostgresBuilder) -> Result<Self> {
        let (mut config, schema, tls_settings) = builder.resolve()?;
        let name = describe(&config, &schema);
        let (connector, client_mode) = tls::connector(&tls_settings)?;
        config.ssl_mode(client_mode);
        let mut client = connector
            .connect(&config)
            .map_err(|e| error::open("postgres", &name, e))?;
        schema::ensure(&mut client, &schema, &name)?;
        let st = Statements::prepare(&mut client, &schema)
            .map_err(|e| error::open("postgres", &name, e))?;
        let first = Conn {
            client: DropOffRuntime::new(client),
            st,
        };
        let connector_schema = schema.clone();
        let connector = Box::new(move || connect_one(&config, &connector, &connector_schema));
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
            gc_lock,
            max_value_len: builder.max_value_len,
            max_request_len: builder.max_request_len,
        })
    }

    /// Run `f` on a pooled connection, mapping its error; retry a transaction
    /// the server rolled back for a deadlock or serialization failure.
    ///
    /// Inside a tokio runtime the whole call runs on a helper thread (see `blocking`).
    fn run<T: Send>(
        &self,
        operation: &'static str,
        effect: Effect,
        f: impl FnMut(&mut Client, &Statements) -> Result<T, Fail> + Send,
    ) -> Result<T> {
        blocking::off_runtime(&self.name, operation, || {
            self.run_here(operation, effect, f)
        })
    }

    fn run_here<T>(
        &self,
        operation: &'static str,
        effect: Effect,
        mut f: impl FnMut(&mut Client, &Statements) -> Result<T, Fail>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            // A failure to check out or open a connection never reached the
            // server: it stays `Unavailable` (retryable).
            let mut conn = self.pool.get(operation)?;
            let Conn { client, st } = &mut *conn;
            match f(client, st) {
                Ok(v) => return Ok(v),
                Err(Fail { err: e, at_commit }) => {
                    conn.note_error(&e);
                    let unknown = error::is_connection_loss(&e)
                        && match effect {
                            Effect::Read => false,
                            Effect::Write => true,
                            Effect::Transaction => at_commit,
                        };
                    let err = if unknown {
                        error::outcome_unknown(&self.name, operation, e)
                    } else {
                        error::operation(&self.name, operation, e)
                    };
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
        check_value_len(&self.name, self.max_value_len, len)
    }

    /// Refuse, before anything is sent, a request whose byte strings (`parts`:
    /// names and values) would not fit in one protocol message: the server
    /// would drop the session, and the call would look like a lost connection.
    fn check_request<'a>(
        &self,
        operation: &'static str,
        parts: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        let len = parts.into_iter().fold(0usize, |sum, p| {
            sum.saturating_add(p.len() + PARAM_OVERHEAD)
        });
        if len > self.max_request_len {
            return Err(error::request_too_large(
                &self.name,
                operation,
                len,
                self.max_request_len,
            ));
        }
        Ok(())
    }

    /// The stamp a write sends: the test clock's time, or `None` for the
    /// server to stamp with its own clock.
    fn stamp(&self) -> Option<i64> {
        self.clock.as_ref().map(|c| c.now_millis())
    }

    fn touch(&self, tx: &mut Transaction<'_>, st: &Statements, scope: &[u8]) -> Result<(), Fail> {
        tx.execute(&st.touch, &[&scope, &self.stamp()])?;
        Ok(())
    }
}

/// What a lost connection means for a call, by how the call writes.
#[derive(Clone, Copy)]
enum Effect {
    /// Reads only: whatever was lost, nothing changed, so repeating is safe.
    Read,
    /// One autocommit statement: once sent, it may have committed before the
    /// connection was lost.
    Write,
    /// An explicit transaction: lost before its commit was sent, the server
    /// rolls it back (nothing changed); lost during the commit, it may have
    /// committed.
    Transaction,
}

/// A failed attempt: the client's error, and whether it came from the commit.
pub(crate) struct Fail {
    err: PgError,
    at_commit: bool,
}

impl From<PgError> for Fail {
    fn from(err: PgError) -> Self {
        Self {
            err,
            at_commit: false,
        }
    }
}

/// Commit `tx`, marking a failure as one whose outcome the server decided.
pub(crate) fn commit(tx: Transaction<'_>) -> Result<(), Fail> {
    tx.commit().map_err(|err| Fail {
        err,
        at_commit: true,
    })
}

/// The SHA-256 digest of a name: what the digest indexes hold (the server's
/// `sha256()` of it), sent with a lookup so the server need not compute it.
fn digest(name: &[u8]) -> [u8; 32] {
    Sha256::digest(name).into()
}

fn to_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl FunctionStorage for PostgresStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES.with_max_value_len(self.max_value_len)
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_request("kv_get", [scope, key])?;
        let (ds, dk) = (digest(scope), digest(key));
        let (ds, dk) = (&ds[..], &dk[..]);
        self.run("kv_get", Effect::Read, |client, st| {
            let row = client.query_opt(&st.kv_get, &[&scope, &key, &ds, &dk])?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.check_len(value.len())?;
        self.check_request("kv_put", [scope, key, value])?;
        let now = self.stamp();
        self.run("kv_put", Effect::Write, |client, st| {
            client.execute(&st.kv_put, &[&scope, &now, &key, &value])?;
            Ok(())
        })
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.check_request("kv_del", [scope, key])?;
        let (ds, dk) = (digest(scope), digest(key));
        let (ds, dk) = (&ds[..], &dk[..]);
        self.run("kv_del", Effect::Write, |client, st| {
            client.execute(&st.kv_del, &[&scope, &key, &ds, &dk])?;
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
        if let Some(v) = new {
            self.check_len(v.len())?;
        }
        // CAS sends the expected and the new value in one statement (an update).
        self.check_request(
            "kv_compare_and_swap",
            [
                scope,
                key,
                expected.unwrap_or_default(),
                new.unwrap_or_default(),
            ],
        )?;
        let (ds, dk) = (digest(scope), digest(key));
        let (ds, dk) = (&ds[..], &dk[..]);
        self.run("kv_compare_and_swap", Effect::Transaction, |client, st| {
            let mut tx = client.transaction()?;
            // Touch first (see the module docs); rolled back if the swap fails.
            self.touch(&mut tx, st, scope)?;
            let swapped = match (expected, new) {
                (None, Some(v)) => tx.execute(&st.cas_insert, &[&scope, &key, &v])? == 1,
                (Some(e), Some(v)) => {
                    tx.execute(&st.cas_update, &[&scope, &key, &e, &v, &ds, &dk])? == 1
                }
                (Some(e), None) => tx.execute(&st.cas_delete, &[&scope, &key, &e, &ds, &dk])? == 1,
                (None, None) => tx
                    .query_opt(&st.kv_exists, &[&scope, &key, &ds, &dk])?
                    .is_none(),
            };
            if swapped {
                commit(tx)?;
            } else {
                tx.rollback()?;
            }
            Ok(swapped)
        })
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.check_len(value.len())?;
        self.check_request("append", [scope, ns, key, value])?;
        let now = self.stamp();
        self.run("append", Effect::Write, |client, st| {
            let row = client.query_one(&st.log_append, &[&scope, &now, &ns, &key, &value])?;
            Ok(row.get(0))
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
        self.check_request(
            "append_batch",
            [scope, ns, key]
                .into_iter()
                .chain(values.iter().map(Vec::as_slice)),
        )?;
        let count = to_limit(values.len());
        self.run("append_batch", Effect::Transaction, |client, st| {
            let mut tx = client.transaction()?;
            // The touch row lock, held to commit, orders ids (see the module docs).
            self.touch(&mut tx, st, scope)?;
            let mut ids: Vec<i64> = tx
                .query(&st.log_ids, &[&count])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // One sequence hands out increasing values; sort in case rows came back unordered.
            ids.sort_unstable();
            tx.execute(&st.log_insert_many, &[&scope, &ns, &key, &ids, &values])?;
            commit(tx)?;
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
        // One statement cannot update a row twice: keep the last value of each key.
        let mut last: std::collections::HashMap<&[u8], &[u8]> = std::collections::HashMap::new();
        for (k, v) in entries {
            last.insert(k, v);
        }
        let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = last.into_iter().unzip();
        self.check_request(
            "kv_put_batch",
            std::iter::once(scope).chain(keys.iter().chain(&values).copied()),
        )?;
        let now = self.stamp();
        self.run("kv_put_batch", Effect::Write, |client, st| {
            client.execute(&st.kv_put_many, &[&scope, &now, &keys, &values])?;
            Ok(())
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
        self.check_request("scan", [scope, ns, key])?;
        let limit = to_limit(limit);
        let (ds, dn, dk) = (digest(scope), digest(ns), digest(key));
        let (ds, dn, dk) = (&ds[..], &dn[..], &dk[..]);
        self.run("scan", Effect::Read, |client, st| {
            let rows = client.query(
                &st.scan,
                &[&scope, &ns, &key, &after_id, &limit, &ds, &dn, &dk],
            )?;
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
        self.check_request(
            "queue_push",
            std::iter::once(scope).chain(items.iter().map(Vec::as_slice)),
        )?;
        let now = self.stamp();
        self.run("queue_push", Effect::Write, |client, st| {
            client.execute(&st.queue_push, &[&scope, &now, &items])?;
            Ok(())
        })
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        // Claim the row and commit only with it in hand: a connection lost before
        // the commit rolls the claim back and leaves the item queued.
        //
        // Rows locked by other pops in flight are skipped, but never taken for
        // an empty queue: those pops may roll back. Then the pop waits for them
        // (bounded by a lock timeout, after which it is `Busy`) and claims again.
        self.check_request("queue_pop", [scope])?;
        let ds = digest(scope);
        let ds = &ds[..];
        self.run("queue_pop", Effect::Transaction, |client, st| {
            let mut tx = client.transaction()?;
            let mut waited = false;
            loop {
                let row = tx.query_one(&st.queue_pop, &[&scope, &ds])?;
                let item: Option<Vec<u8>> = row.get(0);
                let any: bool = row.get(1);
                if item.is_some() || !any {
                    commit(tx)?;
                    return Ok(item);
                }
                if !waited {
                    tx.query_one(&st.queue_lock_timeout, &[])?;
                    waited = true;
                }
                tx.query_opt(&st.queue_wait, &[&scope, &ds])?;
            }
        })
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.check_request("clear", [scope])?;
        let ds = digest(scope);
        let ds = &ds[..];
        self.run("clear", Effect::Transaction, |client, st| {
            let mut tx = client.transaction()?;
            // The touch row first, as gc does: a racing writer waits for us.
            tx.execute(&st.clear_touch, &[&scope, &ds])?;
            tx.execute(&st.clear_kv, &[&scope, &ds])?;
            tx.execute(&st.clear_log, &[&scope, &ds])?;
            tx.execute(&st.clear_queue, &[&scope, &ds])?;
            commit(tx)
        })
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let test_now = self.stamp();
        if test_now.is_some_and(|now| gc_cutoff_millis(now, ttl).is_none()) {
            return Ok(GcReport::default());
        }
        self.run("gc", Effect::Transaction, |client, st| {
            let mut tx = client.transaction()?;
            tx.execute(&st.advisory_lock, &[&self.gc_lock])?;
            // The server's clock, read once the lock is held (another pass may
            // have held it a while), unless a test clock stands in for it.
            let now = match test_now {
                Some(now) => now,
                None => tx.query_one(&st.server_now, &[])?.get(0),
            };
            let Some(cutoff) = gc_cutoff_millis(now, ttl) else {
                commit(tx)?;
                return Ok(GcReport::default());
            };
            // Only scopes still stale when their touch row is deleted (and locked):
            // a writer that stamped meanwhile makes the recheck skip its scope.
            let scopes: Vec<Vec<u8>> = tx
                .query(&st.gc_touch, &[&cutoff])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Digested here, as lookups are (see `digest`), not by the server.
            let digests: Vec<[u8; 32]> = scopes.iter().map(|s| digest(s)).collect();
            let digests: Vec<&[u8]> = digests.iter().map(|d| &d[..]).collect();
            if !scopes.is_empty() {
                tx.execute(&st.gc_data, &[&scopes, &digests])?;
            }
            commit(tx)?;
            Ok(GcReport { scopes })
        })
    }

    fn list_scopes(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<ScopeInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let s = quoted(&self.schema);
        self.run("list_scopes", Effect::Read, |client, _| {
            Ok(inspect::list_scopes(client, &s, after, limit)?)
        })
    }

    fn scope_stats(&self, scope: &[u8]) -> Result<ScopeStats> {
        let s = quoted(&self.schema);
        self.run("scope_stats", Effect::Read, |client, _| {
            Ok(inspect::scope_stats(client, &s, scope)?)
        })
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
        let s = quoted(&self.schema);
        self.run("export_kv", Effect::Read, |client, _| {
            Ok(inspect::export_kv(client, &s, scope, after, limit)?)
        })
    }

    fn export_queue(&self, scope: &[u8], skip: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let s = quoted(&self.schema);
        self.run("export_queue", Effect::Read, |client, _| {
            Ok(inspect::export_queue(client, &s, scope, skip, limit)?)
        })
    }

    fn id_high_water(&self) -> Result<i64> {
        let s = quoted(&self.schema);
        self.run("id_high_water", Effect::Read, |client, _| {
            Ok(inspect::high_water(client, &s)?)
        })
    }

    fn raise_id_high_water(&self, id: i64) -> Result<()> {
        let s = quoted(&self.schema);
        self.run("raise_id_high_water", Effect::Transaction, |client, _| {
            inspect::raise_high_water(client, &s, id)
        })
    }

    fn import_log(&self, records: &[LogRecord]) -> Result<Vec<i64>> {
        check_import_order(&self.name, self.max_value_len, records)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let s = quoted(&self.schema);
        let stamp = self.stamp();
        self.run("import_log", Effect::Transaction, |client, _| {
            inspect::import_log(client, &s, records, stamp)
        })
    }

    fn check(&self) -> Result<Vec<String>> {
        let s = quoted(&self.schema);
        self.run("check", Effect::Read, |client, _| {
            Ok(inspect::check(client, &s)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_digests_are_the_servers_sha256() {
        // SELECT sha256('abc'::bytea) on PostgreSQL (and FIPS 180-2's test vector).
        let want: [u8; 32] = [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
            0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
            0xf2, 0x00, 0x15, 0xad,
        ];
        assert_eq!(digest(b"abc"), want);
    }
}
