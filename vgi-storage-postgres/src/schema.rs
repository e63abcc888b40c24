//! The store's tables, created and versioned on first use.

use postgres::{Client, GenericClient};
use vgi_storage_core::{ErrorKind, Result};

use crate::error;

/// The schema layout this build writes and reads.
///
/// - 1: tables keyed by the raw names (`PRIMARY KEY (scope, key)`); a btree
///   index row holds at most about 2.7 KB, so longer names failed.
/// - 2: names are stored whole but indexed by their SHA-256 digests
///   (`sha256(scope)`, ...), so names of any length fit; every lookup compares
///   the digests (for the index) and then the full bytes. A version 1 schema
///   is migrated on open.
pub(crate) const VERSION: i32 = 2;

/// A stable 64-bit FNV-1a hash, the same on every host and every build, for
/// advisory lock keys. (std's hasher may change between Rust releases, and two
/// hosts built with different compilers must agree on which lock a log takes.)
pub(crate) fn lock_key(parts: &[&[u8]]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        // Length-prefix each part so ("ab", "c") and ("a", "bc") differ.
        for byte in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash as i64
}

/// `"schema"`: safe because the name was validated as a plain identifier.
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// The layout of [`VERSION`], created from nothing.
///
/// Names are indexed by digest, never by value (see [`VERSION`]). `sha256` is
/// built into PostgreSQL 11 and later and immutable, so it may index.
fn ddl(s: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.meta (
             key text PRIMARY KEY,
             value text NOT NULL);
         CREATE TABLE IF NOT EXISTS {s}.kv (
             scope bytea NOT NULL,
             key bytea NOT NULL,
             value bytea NOT NULL);
         CREATE SEQUENCE IF NOT EXISTS {s}.log_id AS bigint MINVALUE 0 START 0;
         CREATE TABLE IF NOT EXISTS {s}.log (
             scope bytea NOT NULL,
             ns bytea NOT NULL,
             key bytea NOT NULL,
             id bigint NOT NULL,
             value bytea NOT NULL);
         CREATE SEQUENCE IF NOT EXISTS {s}.queue_seq AS bigint;
         CREATE TABLE IF NOT EXISTS {s}.queue (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             scope bytea NOT NULL,
             seq bigint NOT NULL,
             n bigint NOT NULL,
             value bytea NOT NULL);
         CREATE TABLE IF NOT EXISTS {s}.touch (
             scope bytea NOT NULL,
             touched_at bigint NOT NULL);
         CREATE INDEX IF NOT EXISTS touch_touched_at ON {s}.touch (touched_at);
         {}",
        digest_indexes(s)
    )
}

/// The indexes of layout 2 on the names' digests.
fn digest_indexes(s: &str) -> String {
    format!(
        "CREATE UNIQUE INDEX kv_digest ON {s}.kv ((sha256(scope)), (sha256(key)));
         CREATE UNIQUE INDEX log_digest ON {s}.log ((sha256(scope)), (sha256(ns)), (sha256(key)), id);
         CREATE INDEX queue_digest ON {s}.queue ((sha256(scope)), seq, n);
         CREATE UNIQUE INDEX touch_digest ON {s}.touch ((sha256(scope)));"
    )
}

/// From layout 1 to 2: the raw-name keys give way to digest indexes. Existing
/// rows are indexed as they are; nothing is rewritten but the indexes.
fn migrate_from_1(s: &str) -> String {
    format!(
        "ALTER TABLE {s}.kv DROP CONSTRAINT kv_pkey;
         ALTER TABLE {s}.log DROP CONSTRAINT log_pkey;
         DROP INDEX {s}.queue_order;
         ALTER TABLE {s}.touch DROP CONSTRAINT touch_pkey;
         {}
         UPDATE {s}.meta SET value = '2' WHERE key = 'version';",
        digest_indexes(s)
    )
}

/// Create the schema if it is missing and check its version.
///
/// Several processes (on several hosts) may do this at once. `CREATE ... IF NOT
/// EXISTS` alone is not safe under concurrency (two sessions can both decide the
/// object is missing and one fails on a catalog unique index), so creation runs
/// in one transaction under a transaction-scoped advisory lock keyed by the
/// schema name: the second process waits, then finds everything there. An
/// existing, current schema is recognised first without taking the lock or
/// needing the CREATE privilege. A schema of an older layout is migrated under
/// the same lock (which needs the tables' owner).
pub(crate) fn ensure(client: &mut Client, schema: &str, store: &str) -> Result<()> {
    let s = quoted(schema);
    let existing =
        read_version(client, schema, &s).map_err(|e| error::open("postgres", store, e))?;
    let version = match existing {
        Some(v) if v >= VERSION => v,
        _ => create(client, schema, &s).map_err(|e| error::open("postgres", store, e))?,
    };
    if version > VERSION {
        return Err(error::open_with(
            "postgres",
            store,
            ErrorKind::IncompatibleVersion,
            format!(
                "schema {schema} has layout version {version}, this build reads {VERSION}; \
                 upgrade vgi-storage-postgres or use another schema"
            ),
            None,
        ));
    }
    Ok(())
}

/// The schema's layout version, `None` when it has no meta table yet.
///
/// Whether the meta table exists is read from `pg_class` itself, with the
/// statement's own snapshot, never with `to_regclass`: that looks the name up
/// in the session's catalog cache without taking a lock, and inside a
/// transaction the cache only catches up with other sessions' commits when a
/// relation lock is taken. Taking the advisory lock in [`create`] takes none,
/// so a session whose transaction began before the creator committed would go
/// on seeing the schema missing under the lock, run the DDL again and deadlock
/// (see [`create`]). Meta is created in the same transaction as every other
/// object, so once it is visible the whole schema is. Reading the version row
/// names the table with a lock, which brings the cache up to date.
fn read_version(
    client: &mut impl GenericClient,
    schema: &str,
    s: &str,
) -> Result<Option<i32>, error::PgError> {
    let row = client.query_one(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = 'meta')",
        &[&schema],
    )?;
    if !row.get::<_, bool>(0) {
        return Ok(None);
    }
    let row = client.query_opt(
        &format!("SELECT value::int FROM {s}.meta WHERE key = 'version'"),
        &[],
    )?;
    Ok(row.map(|r| r.get(0)))
}

fn create(client: &mut Client, schema: &str, s: &str) -> Result<i32, error::PgError> {
    let mut tx = client.transaction()?;
    let key = lock_key(&[b"vgi-storage-postgres:schema", schema.as_bytes()]);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])?;
    // Look again under the lock: another process may have created the schema
    // while this one waited. Running the DDL anyway would be wrong, not just
    // slow: `CREATE INDEX IF NOT EXISTS` takes its table's SHARE lock before
    // it checks for the index, so it deadlocks with a store that already
    // prepares statements on the tables (queue_push locks touch, then queue;
    // the DDL locks queue, then touch). This look must see commits made while
    // we waited, which is why `read_version` does not use `to_regclass`.
    match read_version(&mut tx, schema, s)? {
        Some(1) => {
            // Every object exists; the lock above keeps a second migrator out, and
            // the DDL's table locks wait for (and then block) running statements.
            tx.batch_execute(&migrate_from_1(s))?;
            tx.commit()?;
            return Ok(VERSION);
        }
        Some(version) => {
            tx.commit()?;
            return Ok(version);
        }
        None => {}
    }
    tx.batch_execute(&ddl(s))?;
    tx.execute(
        &format!(
            "INSERT INTO {s}.meta (key, value) VALUES ('version', $1) ON CONFLICT (key) DO NOTHING"
        ),
        &[&VERSION.to_string()],
    )?;
    let row = tx.query_one(
        &format!("SELECT value::int FROM {s}.meta WHERE key = 'version'"),
        &[],
    )?;
    tx.commit()?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_length_prefixed() {
        assert_eq!(lock_key(&[b"a"]), lock_key(&[b"a"]));
        assert_ne!(lock_key(&[b"ab", b"c"]), lock_key(&[b"a", b"bc"]));
        // Pinned: every host must compute the same key for the same log.
        assert_eq!(lock_key(&[]), 0xcbf2_9ce4_8422_2325_u64 as i64);
    }
}
