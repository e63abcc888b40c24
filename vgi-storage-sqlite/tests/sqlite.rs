//! Behaviour specific to the SQLite backend: files, schema versions, and the
//! ids and stamps the contract asks for. Migration from the reference
//! implementation is in tests/upgrade.rs.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use vgi_storage_core::{ErrorKind, FunctionStorage, FunctionStorageExt, ManualClock, Result};
use vgi_storage_sqlite::SqliteStorage;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

#[test]
fn new_file_is_owner_only_and_in_wal_mode() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let store = SqliteStorage::open(&path)?;
    store.kv_put(b"s", b"k", b"v")?;
    assert_eq!(
        std::fs::metadata(&path)?.permissions().mode() & 0o777,
        0o600
    );
    let turn = dir.path().join("state.db-turn");
    assert_eq!(
        std::fs::metadata(&turn)?.permissions().mode() & 0o777,
        0o600
    );
    let conn = Connection::open(&path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    assert_eq!(mode, "wal");
    assert_eq!(store.name(), format!("sqlite:{}", path.display()));
    let caps = store.capabilities();
    assert!(caps.durable && caps.shared_across_processes && !caps.shared_across_hosts);
    assert!(caps.max_value_len < 1_000_000_000);
    Ok(())
}

#[test]
fn state_survives_a_reopen_and_log_ids_are_never_reused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let (a, b) = {
        let store = SqliteStorage::open(&path)?;
        store.kv_put(b"s", b"k", b"v")?;
        store.queue_push(b"s", &[b"1".to_vec(), b"2".to_vec()])?;
        let a = store.append(b"s", b"ns", b"log", b"x")?;
        let b = store.append_batch(b"s", b"ns", b"log", &[b"y".to_vec()])?;
        (a, b[0])
    };
    assert!(a >= 0 && b > a);
    let store = SqliteStorage::open(&path)?;
    assert_eq!(store.kv_get(b"s", b"k")?, Some(b"v".to_vec()));
    assert_eq!(store.queue_pop(b"s")?, Some(b"1".to_vec()));
    let ids: Vec<i64> = store
        .scan_all(b"s", b"ns", b"log", -1, 1)?
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![a, b]);
    // Clearing the scope deletes the highest id; the next id must still be new.
    store.clear(b"s")?;
    assert_eq!(store.queue_pop(b"s")?, None);
    let c = store.append(b"t", b"ns", b"log", b"z")?;
    assert!(c > b, "id {c} reused after clear (max was {b})");
    drop(store);
    let store = SqliteStorage::open(&path)?;
    store.gc(Duration::ZERO)?;
    let d = store.append(b"t", b"ns", b"log", b"z")?;
    assert!(d > c, "id {d} reused after reopen and gc (max was {c})");
    Ok(())
}

#[test]
fn gc_removes_stale_scopes_in_batches_and_keeps_fresh_ones() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(1_000_000);
    let store = SqliteStorage::builder(dir.path().join("state.db"))
        .clock(Arc::new(clock.clone()))
        .open()?;
    let stale: Vec<Vec<u8>> = (0..1200u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for scope in &stale {
        store.kv_put(scope, b"k", b"v")?;
    }
    clock.advance(Duration::from_secs(10));
    store.append(b"fresh", b"ns", b"k", b"v")?;
    // Deleting is not a write: it must not refresh the stamp.
    store.kv_del(&stale[0], b"nothing")?;
    let mut removed = store.gc(Duration::from_secs(5))?.scopes;
    removed.sort();
    assert_eq!(removed, stale, "each stale scope reported exactly once");
    assert_eq!(store.kv_get(&stale[7], b"k")?, None);
    assert_eq!(store.scan(b"fresh", b"ns", b"k", -1, 10)?.len(), 1);
    assert!(store.gc(Duration::from_secs(5))?.scopes.is_empty());
    assert!(store.gc(Duration::MAX)?.scopes.is_empty());
    Ok(())
}

#[test]
fn reads_see_writes_of_the_same_process_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(
        SqliteStorage::builder(dir.path().join("state.db"))
            .read_connections(2)
            .open()?,
    );
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> Result<()> {
                for i in 0..50u8 {
                    store.kv_put(&[t], &[i], &[t, i])?;
                    assert_eq!(store.kv_get(&[t], &[i])?, Some(vec![t, i]));
                    let id = store.append(&[t], b"", b"", &[i])?;
                    let seen = store.scan(&[t], b"", b"", id - 1, 1)?;
                    assert_eq!(seen.first().map(|e| e.id), Some(id));
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "reader thread panicked")??;
    }
    Ok(())
}

#[test]
fn compare_and_swap_from_absent_to_absent_stamps_the_scope() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(0);
    let store = SqliteStorage::builder(dir.path().join("state.db"))
        .clock(Arc::new(clock.clone()))
        .open()?;
    store.kv_put(b"s", b"k", b"old")?;
    assert!(!store.kv_compare_and_swap(b"s", b"k", Some(b"other"), Some(b"new"))?);
    assert!(store.kv_compare_and_swap(b"s", b"k", Some(b"old"), None)?);
    clock.advance(Duration::from_secs(10));
    assert!(store.kv_compare_and_swap(b"s", b"gone", None, None)?);
    store.kv_put(b"t", b"k", b"v")?;
    clock.advance(Duration::from_secs(1));
    // `s` was stamped by the None -> None swap at t=10 s, so a 5 s ttl keeps it.
    assert!(store.gc(Duration::from_secs(5))?.scopes.is_empty());
    assert_eq!(store.kv_get(b"s", b"k")?, None);
    Ok(())
}

#[test]
fn a_newer_schema_version_is_refused_and_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    SqliteStorage::open(&path)?.kv_put(b"s", b"k", b"v")?;
    Connection::open(&path)?.execute_batch("PRAGMA user_version = 99")?;
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("opened a newer file")?;
    assert_eq!(err.kind(), ErrorKind::IncompatibleVersion);
    let msg = err.to_string();
    assert!(msg.contains("state.db") && msg.contains("99"), "{msg}");
    Connection::open(&path)?.execute_batch("PRAGMA user_version = 1")?;
    assert_eq!(
        SqliteStorage::open(&path)?.kv_get(b"s", b"k")?,
        Some(b"v".to_vec())
    );
    Ok(())
}

#[test]
fn a_missing_directory_or_a_directory_path_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let err = SqliteStorage::open(dir.path().join("no/such/state.db")).err();
    let err = err.ok_or("opened in a missing directory")?;
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("no/such"), "{err}");
    assert!(
        !dir.path().join("no").exists(),
        "created a directory it was not asked to"
    );
    let err = SqliteStorage::open(dir.path())
        .err()
        .ok_or("opened a directory")?;
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = SqliteStorage::open(":memory:")
        .err()
        .ok_or("opened :memory:")?;
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    Ok(())
}

#[test]
fn default_path_is_state_db_in_the_private_dir() -> TestResult {
    let path = SqliteStorage::default_path()?;
    assert_eq!(path.file_name().and_then(|n| n.to_str()), Some("state.db"));
    let dir = path.parent().ok_or("no parent")?;
    assert_eq!(std::fs::metadata(dir)?.permissions().mode() & 0o777, 0o700);
    Ok(())
}
