//! The inspection surface (`FunctionStorage::list_scopes` and the methods
//! after it), kept apart from the hot paths in `store.rs`.
//!
//! Every query is built here from the table and sequence names of schema
//! layout 2 (`kv`, `log`, `queue`, `touch`, sequence `log_id`; names indexed
//! by their SHA-256 digests, so every lookup by name matches the digest first
//! and then the bytes), unprepared:
//! inspection is rare, and keeping it out of the prepared statements keeps
//! this file self-contained. Reads that take several queries run in one
//! `REPEATABLE READ READ ONLY` transaction, so each call sees one snapshot.
//!
//! Imports keep ids safely: the transaction first stamps (and so row-locks)
//! the touch row of every scope it writes, in byte order, as `append` does,
//! then locks the `log_id` sequence with a no-op `ALTER SEQUENCE` (which
//! takes a lock that makes concurrent `nextval` wait until commit), reads the
//! high-water mark, and sets the sequence past the ids it keeps.

use postgres::{Client, IsolationLevel, Transaction};
use vgi_storage_core::{LogRecord, LogStats, ScopeInfo, ScopeStats};

use crate::error::PgError;
use crate::store::{Fail, SERVER_NOW_MS, commit};

/// One kv entry: key and value.
type KvEntry = (Vec<u8>, Vec<u8>);

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The highest id the sequence has handed out (`-1` before the first; ids start at 0).
fn high_water_in(tx: &mut Transaction<'_>, s: &str) -> Result<i64, PgError> {
    let row = tx.query_one(
        &format!(
            "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {s}.log_id"
        ),
        &[],
    )?;
    Ok(row.get(0))
}

fn snapshot(client: &mut Client) -> Result<Transaction<'_>, PgError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
}

pub(crate) fn list_scopes(
    client: &mut Client,
    s: &str,
    after: Option<&[u8]>,
    n: usize,
) -> Result<Vec<ScopeInfo>, PgError> {
    let rows = match after {
        None => client.query(
            &format!("SELECT scope, touched_at FROM {s}.touch ORDER BY scope LIMIT $1"),
            &[&limit(n)],
        )?,
        Some(after) => client.query(
            &format!(
                "SELECT scope, touched_at FROM {s}.touch WHERE scope > $1 ORDER BY scope LIMIT $2"
            ),
            &[&after, &limit(n)],
        )?,
    };
    Ok(rows
        .iter()
        .map(|r| ScopeInfo {
            scope: r.get(0),
            last_write_millis: Some(r.get(1)),
        })
        .collect())
}

pub(crate) fn scope_stats(
    client: &mut Client,
    s: &str,
    scope: &[u8],
) -> Result<ScopeStats, PgError> {
    let mut tx = snapshot(client)?;
    let last_write_millis = tx
        .query_opt(
            &format!(
                "SELECT touched_at FROM {s}.touch WHERE sha256(scope) = sha256($1) AND scope = $1"
            ),
            &[&scope],
        )?
        .map(|r| r.get(0));
    let kv = tx.query_one(
        &format!(
            "SELECT count(*), coalesce(sum(length(key) + length(value)), 0)::int8 \
             FROM {s}.kv WHERE sha256(scope) = sha256($1) AND scope = $1"
        ),
        &[&scope],
    )?;
    let logs = tx
        .query(
            &format!(
                "SELECT ns, key, count(*), coalesce(sum(length(value)), 0)::int8, min(id), max(id) \
                 FROM {s}.log WHERE sha256(scope) = sha256($1) AND scope = $1 GROUP BY ns, key ORDER BY ns, key"
            ),
            &[&scope],
        )?
        .iter()
        .map(|r| LogStats {
            ns: r.get(0),
            key: r.get(1),
            entries: r.get::<_, i64>(2) as u64,
            bytes: r.get::<_, i64>(3) as u64,
            first_id: r.get(4),
            last_id: r.get(5),
        })
        .collect();
    let queue = tx.query_one(
        &format!(
            "SELECT count(*), coalesce(sum(length(value)), 0)::int8 FROM {s}.queue WHERE sha256(scope) = sha256($1) AND scope = $1"
        ),
        &[&scope],
    )?;
    tx.commit()?;
    Ok(ScopeStats {
        scope: scope.to_vec(),
        last_write_millis,
        kv_entries: kv.get::<_, i64>(0) as u64,
        kv_bytes: kv.get::<_, i64>(1) as u64,
        logs,
        queue_depth: queue.get::<_, i64>(0) as u64,
        queue_bytes: queue.get::<_, i64>(1) as u64,
    })
}

pub(crate) fn export_kv(
    client: &mut Client,
    s: &str,
    scope: &[u8],
    after: Option<&[u8]>,
    n: usize,
) -> Result<Vec<KvEntry>, PgError> {
    let rows = match after {
        None => client.query(
            &format!(
                "SELECT key, value FROM {s}.kv WHERE sha256(scope) = sha256($1) AND scope = $1 \
                 ORDER BY key LIMIT $2"
            ),
            &[&scope, &limit(n)],
        )?,
        Some(after) => client.query(
            &format!(
                "SELECT key, value FROM {s}.kv WHERE sha256(scope) = sha256($1) AND scope = $1 \
                 AND key > $2 ORDER BY key LIMIT $3"
            ),
            &[&scope, &after, &limit(n)],
        )?,
    };
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(crate) fn export_queue(
    client: &mut Client,
    s: &str,
    scope: &[u8],
    skip: u64,
    n: usize,
) -> Result<Vec<Vec<u8>>, PgError> {
    let skip = i64::try_from(skip).unwrap_or(i64::MAX);
    Ok(client
        .query(
            &format!(
                "SELECT value FROM {s}.queue WHERE sha256(scope) = sha256($1) AND scope = $1 \
                 ORDER BY seq, n LIMIT $2 OFFSET $3"
            ),
            &[&scope, &limit(n), &skip],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

pub(crate) fn high_water(client: &mut Client, s: &str) -> Result<i64, PgError> {
    let mut tx = client.transaction()?;
    let high = high_water_in(&mut tx, s)?;
    tx.commit()?;
    Ok(high)
}

/// Make concurrent `nextval` on the id sequence wait until this transaction ends.
fn lock_ids(tx: &mut Transaction<'_>, s: &str) -> Result<(), PgError> {
    tx.batch_execute(&format!("ALTER SEQUENCE {s}.log_id MINVALUE 0"))
}

pub(crate) fn raise_high_water(client: &mut Client, s: &str, id: i64) -> Result<(), Fail> {
    let mut tx = client.transaction()?;
    lock_ids(&mut tx, s)?;
    if id > high_water_in(&mut tx, s)? {
        tx.execute(&format!("SELECT setval('{s}.log_id', $1, true)"), &[&id])?;
    }
    commit(tx)
}

/// Write `records` (ascending ids, checked by the caller): ids kept while
/// above the mark, fresh ones from the first that is not.
pub(crate) fn import_log(
    client: &mut Client,
    s: &str,
    records: &[LogRecord],
    stamp: Option<i64>,
) -> Result<Vec<i64>, Fail> {
    let mut tx = client.transaction()?;
    let mut scopes: Vec<&[u8]> = records.iter().map(|r| r.scope.as_slice()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let touch = format!(
        "INSERT INTO {s}.touch (scope, touched_at) \
         VALUES ($1, COALESCE($2::int8, {SERVER_NOW_MS})) \
         ON CONFLICT ((sha256(scope))) DO UPDATE SET touched_at = EXCLUDED.touched_at"
    );
    for scope in scopes {
        tx.execute(&touch, &[&scope, &stamp])?;
    }
    lock_ids(&mut tx, s)?;
    let mut high = high_water_in(&mut tx, s)?;
    let insert =
        format!("INSERT INTO {s}.log (scope, ns, key, id, value) VALUES ($1, $2, $3, $4, $5)");
    let fresh = format!("SELECT nextval('{s}.log_id')");
    let mut ids = Vec::with_capacity(records.len());
    let mut remapping = false;
    for r in records {
        let id = if !remapping && r.id > high {
            r.id
        } else {
            if !remapping {
                remapping = true;
                // Kept ids so far are not yet in the sequence: move it past them.
                if !ids.is_empty() {
                    tx.execute(&format!("SELECT setval('{s}.log_id', $1, true)"), &[&high])?;
                }
            }
            tx.query_one(&fresh, &[])?.get(0)
        };
        tx.execute(&insert, &[&r.scope, &r.ns, &r.key, &id, &r.value])?;
        high = high.max(id);
        ids.push(id);
    }
    if !remapping && let Some(last) = ids.last() {
        tx.execute(&format!("SELECT setval('{s}.log_id', $1, true)"), &[last])?;
    }
    commit(tx)?;
    Ok(ids)
}

/// The store's invariants (PostgreSQL has no cheap engine-wide integrity
/// check without the `amcheck` extension, so none is run): every log id at or
/// below the mark, every scope with data stamped.
pub(crate) fn check(client: &mut Client, s: &str) -> Result<Vec<String>, PgError> {
    let mut tx = snapshot(client)?;
    let high = high_water_in(&mut tx, s)?;
    let mut problems = Vec::new();
    let top: Option<i64> = tx
        .query_one(&format!("SELECT max(id) FROM {s}.log"), &[])?
        .get(0);
    if let Some(top) = top.filter(|top| *top > high) {
        problems.push(format!(
            "log id {top} is above the id high-water mark {high}"
        ));
    }
    let unstamped = tx.query(
        &format!(
            "SELECT scope FROM (SELECT scope FROM {s}.kv UNION SELECT scope FROM {s}.log \
             UNION SELECT scope FROM {s}.queue) d \
             WHERE NOT EXISTS (SELECT 1 FROM {s}.touch t \
             WHERE sha256(t.scope) = sha256(d.scope) AND t.scope = d.scope) LIMIT 20"
        ),
        &[],
    )?;
    problems.extend(unstamped.iter().map(|r| {
        let scope: Vec<u8> = r.get(0);
        format!(
            "scope {} holds data but has no last-write stamp, so gc can never remove it",
            String::from_utf8_lossy(&scope)
        )
    }));
    tx.commit()?;
    Ok(problems)
}
