//! The versioned schema (`PRAGMA user_version`) and its migrations.
//!
//! Version 0 is an empty file or one written by the reference implementation
//! (tables `function_state`, `function_log`, `work_queue`, `scope_touch`, with
//! `touched_at` in seconds). Version 1 is ours:
//!
//! - every table is a rowid table: a 1 KiB value fits in a 4 KiB leaf page,
//!   where a `WITHOUT ROWID` table (an index b-tree, whose rows spill to
//!   overflow pages past about 1000 bytes) would need an overflow page per row;
//! - log ids are rowids, allocated inside the write transaction (largest id
//!   plus one), so they commit in increasing order. They are never reused:
//!   when `clear` or `gc` would delete the row holding the largest id, a
//!   high-water row with a NULL scope (which no query matches) keeps that id.
//!   This costs nothing per append, where `AUTOINCREMENT` rewrites the
//!   `sqlite_sequence` page in every transaction;
//! - `vgi_scope.touched_at` is in milliseconds of the store's clock.

use rusqlite::{Connection, OptionalExtension};

/// The schema version this build writes and understands.
pub(crate) const VERSION: i64 = 1;

const CREATE_V1: &str = "
CREATE TABLE vgi_kv (
    id INTEGER PRIMARY KEY,
    scope BLOB NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL
);
CREATE UNIQUE INDEX vgi_kv_key ON vgi_kv (scope, key);
CREATE TABLE vgi_log (
    id INTEGER PRIMARY KEY,
    scope BLOB,
    ns BLOB NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX vgi_log_key ON vgi_log (scope, ns, key, id);
CREATE TABLE vgi_queue (
    id INTEGER PRIMARY KEY,
    scope BLOB NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX vgi_queue_scope ON vgi_queue (scope, id);
CREATE TABLE vgi_scope (
    scope BLOB PRIMARY KEY,
    touched_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Copy a reference-written file's contents into the version 1 tables, then
/// drop the reference tables. Log ids are kept (callers may hold them as scan
/// cursors) and the log's id sequence continues past the reference's highest
/// id ever handed out, deleted rows included.
const MIGRATE_REFERENCE: &str = "
INSERT INTO vgi_kv (scope, key, value) SELECT scope, key, value FROM function_state;
INSERT INTO vgi_log (id, scope, ns, key, value)
    SELECT id, scope, ns, key, value FROM function_log ORDER BY id;
INSERT INTO vgi_log (id, scope, ns, key, value)
    SELECT seq, NULL, x'', x'', x'' FROM sqlite_sequence
    WHERE name = 'function_log' AND seq > coalesce((SELECT max(id) FROM vgi_log), 0);
INSERT INTO vgi_queue (id, scope, value) SELECT id, scope, value FROM work_queue ORDER BY id;
INSERT INTO vgi_scope (scope, touched_at) SELECT scope, touched_at * 1000 FROM scope_touch;
DROP TABLE function_state;
DROP TABLE function_log;
DROP TABLE work_queue;
DROP TABLE scope_touch;
";

const REFERENCE_TABLES: [&str; 4] = [
    "function_state",
    "function_log",
    "work_queue",
    "scope_touch",
];

/// The schema version stored in the file.
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// Bring a file at version `< VERSION` up to `VERSION`, inside the caller's
/// IMMEDIATE transaction (so two processes opening one file at once migrate it
/// once). Returns the version found.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<i64> {
    let found = version(conn)?;
    if found == 0 {
        conn.execute_batch(CREATE_V1)?;
        let mut reference = true;
        for table in REFERENCE_TABLES {
            reference &= has_table(conn, table)?;
        }
        if reference {
            conn.execute_batch(MIGRATE_REFERENCE)?;
        }
        conn.pragma_update(None, "user_version", VERSION)?;
    }
    // Later versions add steps here: `if found <= 1 { ... }`.
    Ok(found)
}
