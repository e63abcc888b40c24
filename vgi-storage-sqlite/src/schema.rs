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
//!
//! The reference tables are moved into ours only by a connection that holds
//! the file alone ([`migrate_alone`]), since
//! a worker of the reference implementation may still be writing them. They
//! can reappear in a version 1 file, when such a worker starts on it again:
//! every open looks for them ([`plan`]).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use vgi_storage_core::{ErrorKind, Result, StorageError};

use crate::error;

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

/// Copy a reference-written file's contents into the (new, empty) version 1
/// tables. Log ids are kept (callers may hold them as scan cursors) and the
/// log's id sequence continues past the reference's highest id ever handed
/// out, deleted rows included.
const MIGRATE_REFERENCE: &str = "
INSERT INTO vgi_kv (scope, key, value) SELECT scope, key, value FROM function_state;
INSERT INTO vgi_log (id, scope, ns, key, value)
    SELECT id, scope, ns, key, value FROM function_log ORDER BY id;
INSERT INTO vgi_log (id, scope, ns, key, value)
    SELECT seq, NULL, x'', x'', x'' FROM sqlite_sequence
    WHERE name = 'function_log' AND seq > coalesce((SELECT max(id) FROM vgi_log), 0);
INSERT INTO vgi_queue (id, scope, value) SELECT id, scope, value FROM work_queue ORDER BY id;
INSERT INTO vgi_scope (scope, touched_at) SELECT scope, touched_at * 1000 FROM scope_touch;
";

/// Merge reference tables that reappeared in a version 1 file (a reference
/// worker started on it after the upgrade and re-created them) into ours.
///
/// - kv: a key both wrote keeps the value of the scope stamped later (the
///   reference stamps whole seconds, so a tie goes to the reference: its
///   tables were created after ours);
/// - log: entries get new ids above every id this store handed out, in the
///   reference's order, since the re-created table counted from 1 again;
/// - queue: items go behind ours, in the reference's order;
/// - stamps: the later of the two.
const MERGE_REAPPEARED: &str = "
INSERT INTO vgi_kv (scope, key, value) SELECT scope, key, value FROM function_state WHERE true
    ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value
    WHERE coalesce((SELECT touched_at * 1000 FROM scope_touch WHERE scope = excluded.scope), 0)
        >= coalesce((SELECT touched_at FROM vgi_scope WHERE scope = excluded.scope), 0);
INSERT INTO vgi_queue (scope, value) SELECT scope, value FROM work_queue ORDER BY id;
INSERT INTO vgi_scope (scope, touched_at) SELECT scope, touched_at * 1000 FROM scope_touch WHERE true
    ON CONFLICT (scope) DO UPDATE SET touched_at = max(touched_at, excluded.touched_at);
";

/// The log part of [`MERGE_REAPPEARED`]; `?1` is the largest id in `vgi_log`.
const MERGE_REAPPEARED_LOG: &str = "
INSERT INTO vgi_log (id, scope, ns, key, value)
    SELECT ?1 + row_number() OVER (ORDER BY id), scope, ns, key, value
    FROM function_log ORDER BY id";

const DROP_REFERENCE: &str = "
DROP TABLE function_state;
DROP TABLE function_log;
DROP TABLE work_queue;
DROP TABLE scope_touch;
";

/// The tables a file of the reference implementation has, all of them.
pub(crate) const REFERENCE_TABLES: [&str; 4] = [
    "function_state",
    "function_log",
    "work_queue",
    "scope_touch",
];

/// What opening a file must do to its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Version [`VERSION`] and no reference table: nothing.
    Current,
    /// Written by a newer version of this backend, the one given.
    Newer(i64),
    /// Version 0 without reference tables (a new file): create ours.
    Create,
    /// All four reference tables: move their rows into ours and drop them.
    /// Only with no other connection on the file, as a worker of the
    /// reference implementation may still be using them. `reappeared`: the
    /// file is ours already, and a reference worker re-created them since.
    Migrate {
        /// The file was at version [`VERSION`] already.
        reappeared: bool,
    },
    /// Some but not all of the reference tables: neither a reference file
    /// nor ours. The tables present are listed.
    Partial(Vec<&'static str>),
}

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

/// Look at the file and say what opening it must do.
pub(crate) fn plan(conn: &Connection) -> rusqlite::Result<Plan> {
    let found = version(conn)?;
    if found > VERSION {
        return Ok(Plan::Newer(found));
    }
    let mut present = Vec::new();
    for table in REFERENCE_TABLES {
        if has_table(conn, table)? {
            present.push(table);
        }
    }
    Ok(match (present.len(), found) {
        (0, VERSION) => Plan::Current,
        (0, _) => Plan::Create,
        (n, _) if n == REFERENCE_TABLES.len() => Plan::Migrate {
            reappeared: found == VERSION,
        },
        _ => Plan::Partial(present),
    })
}

/// Bring the file to [`VERSION`] inside the caller's IMMEDIATE transaction (so
/// two processes opening one file at once do it once), and return the plan
/// found there.
///
/// A [`Plan::Migrate`] is carried out only when `alone` (the caller holds the
/// file exclusively, so no older worker can be using the reference tables);
/// otherwise it is returned undone, for the caller to retry alone.
pub(crate) fn apply(conn: &Connection, alone: bool) -> rusqlite::Result<Plan> {
    let plan = plan(conn)?;
    match plan {
        Plan::Create => {
            conn.execute_batch(CREATE_V1)?;
            conn.pragma_update(None, "user_version", VERSION)?;
        }
        Plan::Migrate { reappeared } if alone => {
            if reappeared {
                let top: i64 =
                    conn.query_row("SELECT coalesce(max(id), 0) FROM vgi_log", [], |r| r.get(0))?;
                conn.execute(MERGE_REAPPEARED_LOG, [top])?;
                conn.execute_batch(MERGE_REAPPEARED)?;
            } else {
                conn.execute_batch(CREATE_V1)?;
                conn.execute_batch(MIGRATE_REFERENCE)?;
            }
            conn.execute_batch(DROP_REFERENCE)?;
            conn.pragma_update(None, "user_version", VERSION)?;
        }
        // Later versions add steps here.
        _ => {}
    }
    Ok(plan)
}

/// The fix for a file that older workers may still be using.
pub(crate) const STOP_OLDER_WORKERS: &str = "stop every worker of the reference implementation (vgi 0.5) \
    and every other program that has the file open, then open it again (see \"Upgrading from \
    the reference implementation\" in the vgi-storage-sqlite README)";

/// How long one try of [`migrate_alone`] waits for the file: not at all, so a
/// failed try (which blocks new readers while it waits) is over at once.
const ALONE_TRY: Duration = Duration::ZERO;

/// Migrate the reference tables on a connection that holds the file alone.
///
/// Every connection to a WAL database holds a SHARED lock on the database file
/// for as long as it is open (SQLite relies on it to tell the last connection
/// to close), and in `locking_mode = EXCLUSIVE` a write transaction takes an
/// EXCLUSIVE lock on it: so `BEGIN IMMEDIATE` succeeds only when no other
/// connection, in any process, has the file open. A worker of the reference
/// implementation keeps its connection for its whole life, so it is always
/// seen. Tries without waiting, stepping back between tries (two processes of
/// ours opening at once would otherwise hold each other off), until the busy
/// timeout; then refuses, naming the fix.
pub(crate) fn migrate_alone(name: &str, path: &Path, busy_timeout: Duration) -> Result<()> {
    let fail = |e| error::open_in_dir(name, path, e);
    let deadline = Instant::now() + busy_timeout;
    let mut tries: u32 = 0;
    loop {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(fail)?;
        let attempt = (|| {
            conn.busy_timeout(ALONE_TRY)?;
            // Another process of ours may have migrated it meanwhile, and then
            // keeps it open: no need to hold it alone any more.
            if !matches!(plan(&conn)?, Plan::Migrate { .. }) {
                return Ok(());
            }
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            // Dropped uncommitted, it rolls back.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            apply(&tx, true)?;
            tx.commit()
        })();
        let err = match attempt {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // Closing drops every lock this connection took or tried to take.
        drop(conn);
        if error::classify(&err) != ErrorKind::Busy {
            return Err(error::open(name, path, err));
        }
        if Instant::now() >= deadline {
            return Err(StorageError::open(
                name,
                path,
                ErrorKind::AlreadyOpen,
                format!(
                    "the file holds tables of the reference implementation that must be \
                     migrated, and another connection has it open: a worker of the older \
                     version may still be writing them, and migrating would strand its \
                     writes; {STOP_OLDER_WORKERS}"
                ),
                Some(Box::new(err)),
            ));
        }
        tries += 1;
        std::thread::sleep(
            step_back(tries).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

/// A pause of 1 to 16 ms that differs between processes and tries, so two
/// processes that collided do not collide again.
fn step_back(tries: u32) -> Duration {
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(tries.wrapping_mul(40_503))
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(1 + u64::from(seed % 16))
}

/// A file with some of the reference tables, `present`, but not all.
pub(crate) fn partial_reference(name: &str, path: &Path, present: &[&str]) -> StorageError {
    let missing: Vec<&str> = REFERENCE_TABLES
        .into_iter()
        .filter(|t| !present.contains(t))
        .collect();
    error::open_check(
        name,
        path,
        ErrorKind::Corrupt,
        format!(
            "the file has the reference implementation's tables {} but not {}, so it can be \
             neither migrated nor ignored without losing rows; if a worker of the reference \
             implementation is starting on this file, stop it and open again; otherwise \
             restore the file from a backup, or drop the stray tables if their rows are not \
             needed",
            present.join(", "),
            missing.join(", ")
        ),
    )
}
