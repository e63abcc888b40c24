//! The inspection surface's queries (see [`FunctionStorage::list_scopes`]
//! and the methods after it), kept apart from the hot paths in `storage.rs`.
//!
//! Reads run in one deferred transaction on a read connection, so each call
//! sees one WAL snapshot. Imports and the id mark run in the store's usual
//! `BEGIN IMMEDIATE` write transaction.
//!
//! [`FunctionStorage::list_scopes`]: vgi_storage_core::FunctionStorage::list_scopes

use rusqlite::{Connection, OptionalExtension, params};
use vgi_storage_core::{LogRecord, LogStats, ScopeInfo, ScopeStats};

const SCOPES_FIRST: &str = "SELECT scope, touched_at FROM vgi_scope ORDER BY scope LIMIT ?1";
const SCOPES_AFTER: &str =
    "SELECT scope, touched_at FROM vgi_scope WHERE scope > ?1 ORDER BY scope LIMIT ?2";
const SCOPE_STAMP: &str = "SELECT touched_at FROM vgi_scope WHERE scope = ?1";
const KV_STATS: &str = "SELECT count(*), coalesce(sum(length(key) + length(value)), 0)
    FROM vgi_kv WHERE scope = ?1";
const LOG_STATS: &str =
    "SELECT ns, key, count(*), coalesce(sum(length(value)), 0), min(id), max(id)
    FROM vgi_log WHERE scope = ?1 GROUP BY ns, key ORDER BY ns, key";
const QUEUE_STATS: &str = "SELECT count(*), coalesce(sum(length(value)), 0)
    FROM vgi_queue WHERE scope = ?1";
const KV_FIRST: &str = "SELECT key, value FROM vgi_kv WHERE scope = ?1 ORDER BY key LIMIT ?2";
const KV_AFTER: &str =
    "SELECT key, value FROM vgi_kv WHERE scope = ?1 AND key > ?2 ORDER BY key LIMIT ?3";
const QUEUE_PAGE: &str =
    "SELECT value FROM vgi_queue WHERE scope = ?1 ORDER BY id LIMIT ?3 OFFSET ?2";
/// The id high-water mark: the largest id in the log table, the kept top
/// (a row with a NULL scope, see the schema docs) included. Rowids start at 1.
pub(crate) const HIGH_WATER: &str = "SELECT coalesce(max(id), 0) FROM vgi_log";
const IMPORT_KEEP: &str =
    "INSERT INTO vgi_log (id, scope, ns, key, value) VALUES (?1, ?2, ?3, ?4, ?5)";
const IMPORT_FRESH: &str = "INSERT INTO vgi_log (scope, ns, key, value) VALUES (?1, ?2, ?3, ?4)";
const KEEP_TOP: &str = "INSERT INTO vgi_log (id, scope, ns, key, value)
    SELECT ?1, NULL, x'', x'', x'' WHERE NOT EXISTS (SELECT 1 FROM vgi_log WHERE id >= ?1)";
const DROP_OLD_TOPS: &str =
    "DELETE FROM vgi_log WHERE scope IS NULL AND id < (SELECT max(id) FROM vgi_log)";
const TOUCH: &str = "INSERT INTO vgi_scope (scope, touched_at) VALUES (?1, ?2)
    ON CONFLICT (scope) DO UPDATE SET touched_at = excluded.touched_at";
/// Scopes holding data without a stamp: `gc` could never remove them.
const UNSTAMPED: &str = "SELECT scope FROM (
        SELECT scope FROM vgi_kv UNION SELECT scope FROM vgi_log WHERE scope IS NOT NULL
        UNION SELECT scope FROM vgi_queue)
    WHERE scope NOT IN (SELECT scope FROM vgi_scope) LIMIT 20";

fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn list_scopes(
    conn: &Connection,
    after: Option<&[u8]>,
    limit: usize,
) -> rusqlite::Result<Vec<ScopeInfo>> {
    let row = |r: &rusqlite::Row<'_>| {
        Ok(ScopeInfo {
            scope: r.get(0)?,
            last_write_millis: r.get(1)?,
        })
    };
    match after {
        None => conn
            .prepare_cached(SCOPES_FIRST)?
            .query_map(params![clamp(limit)], row)?
            .collect(),
        Some(after) => conn
            .prepare_cached(SCOPES_AFTER)?
            .query_map(params![after, clamp(limit)], row)?
            .collect(),
    }
}

pub(crate) fn scope_stats(conn: &Connection, scope: &[u8]) -> rusqlite::Result<ScopeStats> {
    let tx = conn.unchecked_transaction()?;
    let last_write_millis = tx
        .prepare_cached(SCOPE_STAMP)?
        .query_row([scope], |r| r.get(0))
        .optional()?;
    let (kv_entries, kv_bytes): (i64, i64) = tx
        .prepare_cached(KV_STATS)?
        .query_row([scope], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let logs = tx
        .prepare_cached(LOG_STATS)?
        .query_map([scope], |r| {
            Ok(LogStats {
                ns: r.get(0)?,
                key: r.get(1)?,
                entries: r.get::<_, i64>(2)? as u64,
                bytes: r.get::<_, i64>(3)? as u64,
                first_id: r.get(4)?,
                last_id: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (queue_depth, queue_bytes): (i64, i64) = tx
        .prepare_cached(QUEUE_STATS)?
        .query_row([scope], |r| Ok((r.get(0)?, r.get(1)?)))?;
    tx.finish()?;
    Ok(ScopeStats {
        scope: scope.to_vec(),
        last_write_millis,
        kv_entries: kv_entries as u64,
        kv_bytes: kv_bytes as u64,
        logs,
        queue_depth: queue_depth as u64,
        queue_bytes: queue_bytes as u64,
    })
}

pub(crate) fn export_kv(
    conn: &Connection,
    scope: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> rusqlite::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
    match after {
        None => conn
            .prepare_cached(KV_FIRST)?
            .query_map(params![scope, clamp(limit)], row)?
            .collect(),
        Some(after) => conn
            .prepare_cached(KV_AFTER)?
            .query_map(params![scope, after, clamp(limit)], row)?
            .collect(),
    }
}

pub(crate) fn export_queue(
    conn: &Connection,
    scope: &[u8],
    skip: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Vec<u8>>> {
    let skip = i64::try_from(skip).unwrap_or(i64::MAX);
    conn.prepare_cached(QUEUE_PAGE)?
        .query_map(params![scope, skip, clamp(limit)], |r| r.get(0))?
        .collect()
}

pub(crate) fn high_water(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(HIGH_WATER)?.query_row([], |r| r.get(0))
}

pub(crate) fn raise_high_water(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    // Lowering is a no-op, and a mark at or below 0 (an empty source) must not
    // leave a marker row with a negative id behind.
    if id <= high_water(conn)? {
        return Ok(());
    }
    conn.prepare_cached(KEEP_TOP)?.execute([id])?;
    conn.prepare_cached(DROP_OLD_TOPS)?.execute([])?;
    Ok(())
}

/// Write `records` (ascending ids, checked by the caller) in the caller's
/// transaction: ids kept while above the mark, fresh ones from the first that
/// is not.
pub(crate) fn import_log(
    conn: &Connection,
    records: &[LogRecord],
    now: i64,
) -> rusqlite::Result<Vec<i64>> {
    let mut high = high_water(conn)?;
    let mut ids = Vec::with_capacity(records.len());
    let mut remapping = false;
    for r in records {
        if !remapping && r.id > high {
            conn.prepare_cached(IMPORT_KEEP)?
                .execute(params![r.id, r.scope, r.ns, r.key, r.value])?;
            high = r.id;
            ids.push(r.id);
        } else {
            remapping = true;
            conn.prepare_cached(IMPORT_FRESH)?
                .execute(params![r.scope, r.ns, r.key, r.value])?;
            ids.push(conn.last_insert_rowid());
        }
    }
    let mut last_scope: Option<&[u8]> = None;
    for r in records {
        if last_scope != Some(r.scope.as_slice()) {
            conn.prepare_cached(TOUCH)?.execute(params![r.scope, now])?;
            last_scope = Some(&r.scope);
        }
    }
    conn.prepare_cached(DROP_OLD_TOPS)?.execute([])?;
    Ok(ids)
}

/// SQLite's own `integrity_check`, then the store's invariants.
pub(crate) fn check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter(|line| line != "ok")
        .map(|line| format!("sqlite integrity_check: {line}"))
        .collect();
    let unstamped = conn
        .prepare(UNSTAMPED)?
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    problems.extend(unstamped.into_iter().map(|scope| {
        format!(
            "scope {} holds data but has no last-write stamp, so gc can never remove it",
            String::from_utf8_lossy(&scope)
        )
    }));
    Ok(problems)
}
