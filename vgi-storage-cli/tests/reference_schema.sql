-- The schema of a file written by the reference implementation (vgi 0.5.0).
-- Shared by the migration test (tests/sqlite.rs) and the reference-style
-- baseline of examples/compare_reference.rs, so both mean the same file.
CREATE TABLE IF NOT EXISTS function_state (
    scope BLOB NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS function_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope BLOB NOT NULL, ns BLOB NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS function_log_key ON function_log (scope, ns, key, id);
CREATE TABLE IF NOT EXISTS work_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, scope BLOB NOT NULL, value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS work_queue_scope ON work_queue (scope, id);
CREATE TABLE IF NOT EXISTS scope_touch (
    scope BLOB PRIMARY KEY, touched_at INTEGER NOT NULL
) WITHOUT ROWID;
