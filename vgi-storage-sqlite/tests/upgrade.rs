//! Upgrading from the reference implementation (vgi 0.5.0): its file opens with
//! all its contents, never while an older worker may still be using its
//! tables, and tables an older worker re-creates later are found and merged.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use vgi_storage_core::{ErrorKind, FunctionStorage, FunctionStorageExt, ManualClock, dirs};
use vgi_storage_sqlite::SqliteStorage;

/// The tables of a file written by the reference implementation.
const REFERENCE_SCHEMA: &str = include_str!("reference_schema.sql");

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// A connection as a reference worker holds one: WAL mode, its tables created
/// if missing (it runs `CREATE TABLE IF NOT EXISTS` at every start), and the
/// file read, so it holds its lock for as long as it lives.
fn reference_worker(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    conn.execute_batch(REFERENCE_SCHEMA)?;
    Ok(conn)
}

fn reference_tables(path: &Path) -> rusqlite::Result<i64> {
    Connection::open(path)?.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name IN \
         ('function_state', 'function_log', 'work_queue', 'scope_touch')",
        [],
        |r| r.get(0),
    )
}

/// A store that gives up on a held file quickly, so refusals are fast to test.
fn open_quickly(path: &Path) -> vgi_storage_core::Result<SqliteStorage> {
    SqliteStorage::builder(path)
        .busy_timeout(Duration::from_millis(200))
        .open()
}

/// A file as the reference implementation (vgi 0.5.0) leaves it: its four
/// tables, WITHOUT ROWID kv, `touched_at` in seconds, and an AUTOINCREMENT
/// sequence past the highest log id still stored (the top entries were cleared).
///
/// Made owner-only, as the upgrade procedure asks (the reference itself leaves
/// the umask's mode, relying on its owner-only directory).
fn write_reference_file(path: &Path) -> std::io::Result<()> {
    dirs::ensure_private_file(path)?;
    let conn = reference_worker(path).map_err(std::io::Error::other)?;
    conn.execute_batch(
        "INSERT INTO function_state VALUES (x'00ff', x'6b', x'0102'), (x'', x'', x'');
         INSERT INTO function_log (id, scope, ns, key, value) VALUES
             (3, x'00ff', x'6e73', x'6c', x'61'), (7, x'00ff', x'6e73', x'6c', x'62'),
             (9, x'00ff', x'6e73', x'6c', x'63');
         DELETE FROM function_log WHERE id = 9;
         INSERT INTO work_queue (scope, value) VALUES (x'00ff', x'71'), (x'00ff', x'72');
         INSERT INTO scope_touch VALUES (x'00ff', 2000), (x'', 1000);",
    )
    .map_err(std::io::Error::other)
}

#[test]
fn a_reference_file_opens_with_all_its_contents() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    write_reference_file(&path)?;
    // Clock at 2500 s: scope x'' (touched at 1000 s) is stale for a 1000 s ttl,
    // scope 00ff (2000 s) is not -- only if seconds became milliseconds.
    let clock = ManualClock::new(2_500_000);
    let store = SqliteStorage::builder(&path)
        .clock(Arc::new(clock))
        .open()?;
    assert_eq!(store.kv_get(b"\x00\xff", b"k")?, Some(vec![1, 2]));
    assert_eq!(store.kv_get(b"", b"")?, Some(Vec::new()));
    let log = store.scan(b"\x00\xff", b"ns", b"l", -1, 10)?;
    let log: Vec<(i64, Vec<u8>)> = log.into_iter().map(|e| (e.id, e.value)).collect();
    assert_eq!(log, vec![(3, b"a".to_vec()), (7, b"b".to_vec())]);
    let next = store.append(b"\x00\xff", b"ns", b"l", b"d")?;
    assert!(
        next > 9,
        "new id {next} reuses one the reference handed out"
    );
    assert_eq!(
        store.queue_drain(b"\x00\xff")?,
        vec![b"q".to_vec(), b"r".to_vec()]
    );
    let gone = store.gc(Duration::from_secs(1000))?.scopes;
    assert_eq!(gone, vec![Vec::<u8>::new()]);
    assert_eq!(store.kv_get(b"", b"")?, None);
    drop(store);
    // The migration ran once: the reference tables are gone, ours carry version 1.
    let conn = Connection::open(&path)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let left: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name IN ('function_state','function_log','work_queue','scope_touch')",
        [],
        |r| r.get(0),
    )?;
    assert_eq!((version, left), (1, 0));
    Ok(())
}

/// Regression: opening a file while a reference worker still had it open
/// migrated it and dropped the old tables, so that worker's later writes failed
/// (the reference logs and drops them). Now the open is refused, the worker
/// keeps writing, and its writes are migrated once it has stopped.
#[test]
fn a_reference_file_in_use_by_an_older_worker_is_refused_until_it_stops() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    write_reference_file(&path)?;
    let worker = reference_worker(&path)?;
    let err = open_quickly(&path)
        .err()
        .ok_or("migrated under a live reference worker")?;
    assert_eq!(err.kind(), ErrorKind::AlreadyOpen, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("state.db") && msg.contains("stop every worker of the reference"),
        "{msg}"
    );
    // The older worker did not lose its tables: it still writes.
    worker.execute(
        "INSERT INTO function_state VALUES (x'77', x'6b', x'6c617465')",
        [],
    )?;
    assert_eq!(reference_tables(&path)?, 4);
    drop(worker);
    let store = open_quickly(&path)?;
    assert_eq!(store.kv_get(b"w", b"k")?, Some(b"late".to_vec()));
    assert_eq!(store.kv_get(b"\x00\xff", b"k")?, Some(vec![1, 2]));
    assert_eq!(reference_tables(&path)?, 0);
    Ok(())
}

/// Regression: a reference worker restarted after the upgrade re-created its
/// empty tables and wrote there, and the store never saw those rows. Now the
/// next open merges them: kv entries, log entries under new ids above every id
/// handed out (in their order), queue items behind ours.
#[test]
fn tables_a_restarted_reference_worker_recreated_are_merged_at_the_next_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    write_reference_file(&path)?;
    let top = {
        let store = SqliteStorage::open(&path)?;
        store.kv_put(b"s", b"ours", b"1")?;
        store.kv_put(b"t", b"both", b"ours")?;
        store.queue_push(b"s", &[b"first".to_vec()])?;
        store.append(b"s", b"ns", b"l", b"ours")?
    };
    assert_eq!(reference_tables(&path)?, 0);
    {
        let worker = reference_worker(&path)?;
        worker.execute_batch(
            // Key `ours` of scope `s` again, stamped long before our write:
            // ours stays. Key `both` of scope `t`, stamped in 2100: theirs wins.
            "INSERT INTO function_state VALUES (x'73', x'7468656972', x'32'),
                 (x'73', x'6f757273', x'6f6c64'), (x'74', x'626f7468', x'7468656972');
             INSERT INTO scope_touch VALUES (x'74', 4102444800);
             INSERT INTO function_log (scope, ns, key, value) VALUES
                 (x'73', x'6e73', x'6c', x'61'), (x'73', x'6e73', x'6c', x'62');
             INSERT INTO work_queue (scope, value) VALUES (x'73', x'7365636f6e64');
             INSERT INTO scope_touch VALUES (x'73', 1);",
        )?;
    }
    assert_eq!(reference_tables(&path)?, 4);
    let store = SqliteStorage::open(&path)?;
    assert_eq!(reference_tables(&path)?, 0);
    assert_eq!(store.kv_get(b"s", b"ours")?, Some(b"1".to_vec()));
    assert_eq!(store.kv_get(b"s", b"their")?, Some(b"2".to_vec()));
    assert_eq!(store.kv_get(b"t", b"both")?, Some(b"their".to_vec()));
    let log: Vec<(i64, Vec<u8>)> = store
        .scan(b"s", b"ns", b"l", -1, 10)?
        .into_iter()
        .map(|e| (e.id, e.value))
        .collect();
    let ids: Vec<i64> = log.iter().map(|e| e.0).collect();
    let values: Vec<&[u8]> = log.iter().map(|e| e.1.as_slice()).collect();
    assert_eq!(values, [&b"ours"[..], b"a", b"b"]);
    assert!(ids[0] == top && ids[1] > top && ids[2] > ids[1], "{ids:?}");
    assert_eq!(
        store.queue_drain(b"s")?,
        vec![b"first".to_vec(), b"second".to_vec()]
    );
    Ok(())
}

/// Reappeared tables are not merged while another store has the file open
/// (it could be the reference worker that made them); the open says what to do.
#[test]
fn reappeared_tables_are_not_merged_while_the_file_is_in_use() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let running = SqliteStorage::open(&path)?;
    running.kv_put(b"s", b"k", b"v")?;
    reference_worker(&path)?.execute("INSERT INTO scope_touch VALUES (x'73', 1)", [])?;
    let err = open_quickly(&path)
        .err()
        .ok_or("merged while another store had the file open")?;
    assert_eq!(err.kind(), ErrorKind::AlreadyOpen, "{err}");
    assert_eq!(reference_tables(&path)?, 4);
    drop(running);
    let store = open_quickly(&path)?;
    assert_eq!(store.kv_get(b"s", b"k")?, Some(b"v".to_vec()));
    assert_eq!(reference_tables(&path)?, 0);
    Ok(())
}

/// Regression: a file with only some of the reference tables was left
/// unmigrated without a word, its rows invisible. Now it is refused, naming
/// what is there and what is missing, and left as it was.
#[test]
fn a_file_with_only_some_reference_tables_is_refused_and_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    write_reference_file(&path)?;
    Connection::open(&path)?.execute_batch("DROP TABLE work_queue; DROP TABLE scope_touch;")?;
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("opened a file with half the reference tables")?;
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("function_state, function_log") && msg.contains("work_queue, scope_touch"),
        "{msg}"
    );
    let conn = Connection::open(&path)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let ours: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name LIKE 'vgi_%'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!((version, ours, reference_tables(&path)?), (0, 0, 2));
    Ok(())
}

/// Workers of the new version starting together on a reference file hold each
/// other's file open for a moment; each steps back until one has migrated it,
/// and all of them open it, with every item once.
#[test]
fn stores_opening_a_reference_file_at_once_all_open_and_migrate_it_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    write_reference_file(&path)?;
    let stores = std::thread::scope(|s| {
        let opening: Vec<_> = (0..4)
            .map(|_| s.spawn(|| SqliteStorage::open(&path)))
            .collect();
        opening
            .into_iter()
            .map(|t| t.join().map_err(|_| "an opening thread panicked"))
            .collect::<std::result::Result<Vec<_>, _>>()
    })?;
    let stores = stores
        .into_iter()
        .collect::<vgi_storage_core::Result<Vec<_>>>()?;
    assert_eq!(
        stores[0].queue_drain(b"\x00\xff")?,
        vec![b"q".to_vec(), b"r".to_vec()]
    );
    assert_eq!(stores[3].queue_pop(b"\x00\xff")?, None);
    assert_eq!(reference_tables(&path)?, 0);
    Ok(())
}

/// Where the child acting as a reference worker finds its file.
const WORKER_ENV: &str = "VGI_SQLITE_REFERENCE_WORKER";

/// Run by `an_older_worker_in_another_process_keeps_its_writes_through_the_upgrade`
/// in a child process: a reference worker that writes, says `ready`, writes
/// again when told (after the new version was refused), and exits.
#[test]
#[ignore = "run as a child process by an_older_worker_in_another_process_keeps_its_writes_through_the_upgrade"]
fn reference_worker_child() -> TestResult {
    let Some(path) = std::env::var_os(WORKER_ENV) else {
        return Ok(());
    };
    let worker = reference_worker(Path::new(&path))?;
    worker.execute(
        "INSERT INTO work_queue (scope, value) VALUES (x'77', x'31')",
        [],
    )?;
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    worker.execute(
        "INSERT INTO work_queue (scope, value) VALUES (x'77', x'32')",
        [],
    )?;
    Ok(())
}

/// Regression, across processes as a rolling upgrade runs: a worker of the new
/// version started while a reference worker in another process had the file
/// open migrated it and dropped the tables under that worker, whose next
/// writes were lost. Now the new worker is refused, and once the older one
/// has stopped, everything it wrote, before and after the refusal, is there.
#[test]
fn an_older_worker_in_another_process_keeps_its_writes_through_the_upgrade() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    write_reference_file(&path)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "reference_worker_child",
            "--ignored",
            "--nocapture",
        ])
        .env(WORKER_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut lines = BufReader::new(stdout)
        .lines()
        .map_while(std::result::Result::ok);
    let ready = lines.any(|line| line == "ready");
    assert!(ready, "the child worker did not start");
    let refused = open_quickly(&path).err().map(|e| e.kind());
    let mut stdin = child.stdin.take().ok_or("no child stdin")?;
    writeln!(stdin)?;
    drop(stdin);
    lines.for_each(drop);
    let status = child.wait()?;
    assert_eq!(refused, Some(ErrorKind::AlreadyOpen));
    assert!(
        status.success(),
        "the older worker failed a write: {status}"
    );
    let store = SqliteStorage::open(&path)?;
    assert_eq!(store.queue_drain(b"w")?, vec![b"1".to_vec(), b"2".to_vec()]);
    Ok(())
}

/// A reference file as the reference leaves it, with the umask's mode (0644
/// here), is refused until it is made owner-only, as the upgrade procedure
/// says; the message names the fix, and the file is not touched before.
#[test]
fn a_reference_file_readable_by_others_is_refused_until_chmod_600() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    write_reference_file(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("opened a reference file readable by others")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert_eq!(reference_tables(&path)?, 4);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let store = SqliteStorage::open(&path)?;
    assert_eq!(store.kv_get(b"\x00\xff", b"k")?, Some(vec![1, 2]));
    Ok(())
}
