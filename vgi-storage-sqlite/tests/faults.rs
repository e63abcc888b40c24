//! Faults: each test asserts the exact error kind and that nothing already
//! stored is lost.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use vgi_storage_core::{ErrorKind, FunctionStorage, FunctionStorageExt, dirs};
use vgi_storage_sqlite::SqliteStorage;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// A store at `path` holding one kv entry, one log entry and two queue items,
/// closed again (so the WAL is checkpointed into the main file).
fn populate(path: &Path) -> TestResult {
    let store = SqliteStorage::open(path)?;
    store.kv_put(b"s", b"k", b"kept")?;
    store.append(b"s", b"ns", b"log", b"entry")?;
    store.queue_push(b"s", &[b"one".to_vec(), b"two".to_vec()])?;
    Ok(())
}

fn assert_intact(store: &SqliteStorage) -> TestResult {
    assert_eq!(store.kv_get(b"s", b"k")?, Some(b"kept".to_vec()));
    assert_eq!(store.scan(b"s", b"ns", b"log", -1, 10)?.len(), 1);
    assert_eq!(
        store.queue_drain(b"s")?,
        vec![b"one".to_vec(), b"two".to_vec()]
    );
    Ok(())
}

#[test]
fn a_file_that_is_not_a_database_is_corrupt_and_left_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let text = b"these are somebody's notes, not a database\n".repeat(200);
    std::fs::write(&path, &text)?;
    // Owner-only, so it is refused for its contents, not for its mode.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("opened a text file")?;
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("state.db"), "{err}");
    assert_eq!(std::fs::read(&path)?, text, "the file was modified");
    let left: Vec<_> = std::fs::read_dir(dir.path())?.collect::<std::io::Result<_>>()?;
    assert_eq!(left.len(), 1, "a refused file got companions: {left:?}");
    Ok(())
}

#[test]
fn a_file_truncated_mid_page_is_corrupt_and_left_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    populate(&path)?;
    let bytes = std::fs::read(&path)?;
    assert!(bytes.len() >= 8192, "store is {} bytes", bytes.len());
    let cut = &bytes[..bytes.len() - 1500];
    std::fs::write(&path, cut)?;
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("opened a truncated file")?;
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(std::fs::read(&path)?, cut, "the file was modified");
    Ok(())
}

/// Makes a file or directory read-only: by mode for a normal user, by the
/// immutable attribute (`chattr +i`) for root, whom modes do not stop. Undone on drop.
struct ReadOnly<'a>(&'a Path, bool);

impl<'a> ReadOnly<'a> {
    fn set(path: &'a Path) -> std::io::Result<Option<Self>> {
        if dirs::current_uid()? == 0 {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            return Ok(ok.then_some(Self(path, true)));
        }
        let mode = if path.is_dir() { 0o500 } else { 0o400 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(Some(Self(path, false)))
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        if self.1 {
            let _ = Command::new("chattr").arg("-i").arg(self.0).status();
        } else {
            let mode = if self.0.is_dir() { 0o700 } else { 0o600 };
            let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(mode));
        }
    }
}

#[test]
fn a_read_only_file_or_directory_is_refused_as_read_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    populate(&path)?;
    {
        let Some(_guard) = ReadOnly::set(dir.path())? else {
            println!("skipped: running as root and chattr +i is not supported here");
            return Ok(());
        };
        let err = SqliteStorage::open(dir.path().join("new.db")).err();
        let err = err.ok_or("created a store in a read-only directory")?;
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
        // A closed store needs its -wal and -shm created beside it again.
        let err = SqliteStorage::open(&path)
            .err()
            .ok_or("opened in a read-only directory")?;
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
    }
    {
        let Some(_guard) = ReadOnly::set(&path)? else {
            return Err("could make the directory read-only but not the file".into());
        };
        let err = SqliteStorage::open(&path)
            .err()
            .ok_or("opened a read-only file")?;
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
    }
    assert_intact(&SqliteStorage::open(&path)?)
}

#[test]
fn a_lock_held_past_the_busy_timeout_is_busy_and_the_queue_keeps_its_items() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    populate(&path)?;
    let store = SqliteStorage::builder(&path)
        .busy_timeout(Duration::from_millis(150))
        .open()?;
    let other = Connection::open(&path)?;
    other.execute_batch("BEGIN EXCLUSIVE")?;
    let started = Instant::now();
    let push = store.queue_push(b"s", &[b"three".to_vec()]).err();
    let waited = started.elapsed();
    let pop = store.queue_pop(b"s").err();
    let put = store.kv_put(b"s", b"k", b"lost").err();
    for (what, err) in [("push", push), ("pop", pop), ("put", put)] {
        let err = err.ok_or(format!("{what} succeeded under another writer's lock"))?;
        assert_eq!(err.kind(), ErrorKind::Busy, "{what}: {err}");
        assert!(err.is_retryable());
    }
    assert!(
        waited >= Duration::from_millis(140),
        "gave up after {waited:?}"
    );
    // WAL readers are not blocked by a writer.
    assert_eq!(store.kv_get(b"s", b"k")?, Some(b"kept".to_vec()));
    other.execute_batch("COMMIT")?;
    assert_intact(&store)
}

const CHILD_ENV: &str = "VGI_SQLITE_DISK_FULL_CHILD";

/// Fill the disk in a child process whose file size limit (RLIMIT_FSIZE) is
/// just above the store's size. SIGXFSZ is ignored so write(2) fails with EFBIG
/// instead of killing the child.
#[test]
fn a_full_disk_is_storage_full_and_loses_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    populate(&path)?;
    let limit_blocks = std::fs::metadata(&path)?.len() / 512 + 200;
    let exe = std::env::current_exe()?;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_blocks}; exec \"$0\" \"$@\""
        ))
        .arg(exe)
        .args([
            "--exact",
            "disk_full_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "{}",
        stdout
            .lines()
            .filter(|l| l.contains("child:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("child: kind StorageFull"), "{stdout}");
    let store = SqliteStorage::open(&path)?;
    assert_intact(&store)?;
    let written = store.scan(b"big", b"", b"", -1, usize::MAX)?.len();
    assert!(
        written > 0,
        "the child wrote nothing before the disk filled"
    );
    Ok(())
}

/// The child half of `a_full_disk_is_storage_full_and_loses_nothing`.
#[test]
#[ignore = "run as a child process by a_full_disk_is_storage_full_and_loses_nothing"]
fn disk_full_child() -> TestResult {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return Ok(());
    };
    let store = SqliteStorage::open(&path)?;
    let value = vec![7u8; 4096];
    for _ in 0..10_000 {
        if let Err(err) = store.append(b"big", b"", b"", &value) {
            let source = std::error::Error::source(&err).map(ToString::to_string);
            println!("child: kind {:?}: {err}; source: {source:?}", err.kind());
            assert_eq!(store.kv_get(b"s", b"k")?, Some(b"kept".to_vec()));
            return Ok(());
        }
    }
    Err("the disk never filled".into())
}

const POP_CHILD_ENV: &str = "VGI_SQLITE_POP_FULL_CHILD";

/// Run the ignored test `child` of this binary in a child process whose file
/// size limit is `limit_blocks` 512-byte blocks, SIGXFSZ ignored (so write(2)
/// fails with EFBIG), with `env` set to `path`; returns its stdout.
fn run_capped_child(
    child: &str,
    env: &str,
    path: &Path,
    limit_blocks: u64,
) -> std::result::Result<String, Box<dyn std::error::Error>> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_blocks}; exec \"$0\" \"$@\""
        ))
        .arg(std::env::current_exe()?)
        .args([
            "--exact",
            child,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, path)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// `queue_pop` ran `DELETE ... RETURNING` in autocommit and read the row with
/// `query_row`, so the commit (done when the statement is reset) was never
/// checked: with the disk full while another connection held a read
/// transaction, every pop returned `Ok(Some(head))` and the head stayed
/// queued, to be handed out again to every consumer. A pop must hand out its
/// item only once its commit succeeded: a failed commit is `StorageFull` and
/// the item stays queued, popped later exactly once.
#[test]
fn a_pop_whose_commit_fails_on_a_full_disk_hands_nothing_out() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let items: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100]).collect();
    {
        let store = SqliteStorage::open(&path)?;
        store.queue_push(b"q", &items)?;
    }
    let limit_blocks = std::fs::metadata(&path)?.len() / 512 + 400;
    let stdout = run_capped_child("pop_full_child", POP_CHILD_ENV, &path, limit_blocks)?;
    let mut handed_out = Vec::new();
    let mut failed = 0;
    for line in stdout.lines() {
        // libtest prints `test pop_full_child ... ` with no newline before the
        // child's first line, so a report may start mid-line.
        let Some((_, line)) = line.split_once("child: ") else {
            continue;
        };
        if let Some(i) = line.strip_prefix("popped ") {
            handed_out.push(i.parse::<u8>()?);
        } else if let Some(kind) = line.strip_prefix("pop failed ") {
            assert_eq!(kind, "StorageFull", "{stdout}");
            failed += 1;
        }
    }
    assert!(failed >= 5, "no pop met the full disk: {stdout}");
    let store = SqliteStorage::open(&path)?;
    let left = store.queue_drain(b"q")?;
    let mut all: Vec<Vec<u8>> = handed_out.iter().map(|i| vec![*i; 100]).collect();
    all.extend(left);
    assert_eq!(
        all, items,
        "items handed out by the child then still queued, or lost: handed out {handed_out:?}; the child said: {stdout}"
    );
    Ok(())
}

/// The child half of `a_pop_whose_commit_fails_on_a_full_disk_hands_nothing_out`.
#[test]
#[ignore = "run as a child process by a_pop_whose_commit_fails_on_a_full_disk_hands_nothing_out"]
fn pop_full_child() -> TestResult {
    let Some(path) = std::env::var_os(POP_CHILD_ENV) else {
        return Ok(());
    };
    let store = SqliteStorage::open(&path)?;
    // A reader holding a snapshot keeps the WAL from being restarted, so
    // every commit needs room at its end.
    let reader = Connection::open(&path)?;
    reader.execute_batch("BEGIN")?;
    let _: i64 = reader.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    let value = vec![7u8; 4096];
    let mut full = false;
    for _ in 0..10_000 {
        if let Err(err) = store.append(b"fill", b"", b"", &value) {
            assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
            full = true;
            break;
        }
    }
    assert!(full, "the disk never filled");
    for _ in 0..8 {
        match store.queue_pop(b"q") {
            Ok(Some(item)) => println!("child: popped {}", item[0]),
            Ok(None) => println!("child: queue empty"),
            Err(err) => println!("child: pop failed {:?}", err.kind()),
        }
    }
    Ok(())
}

/// `gc` commits in batches of 512 scopes; when a later batch failed, the call
/// returned a plain `Err` and the scopes the earlier batches had removed were
/// reported nowhere, although they were gone. A failed step must return
/// `GcInterrupted` listing exactly the scopes already removed, every other
/// scope untouched, and a second `gc` must finish the work.
#[test]
fn a_gc_that_fails_partway_reports_the_scopes_it_removed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let clock = vgi_storage_core::ManualClock::starting_now();
    let store = SqliteStorage::builder(&path)
        .clock(std::sync::Arc::new(clock.clone()))
        .open()?;
    let scopes: Vec<Vec<u8>> = (0..700).map(|i| format!("s{i:04}").into_bytes()).collect();
    for scope in &scopes {
        store.kv_put(scope, b"k", b"v")?;
    }
    clock.advance(Duration::from_secs(10));
    // The 601st scope deleted, counted across transactions, fails its statement.
    let conn = Connection::open(&path)?;
    conn.execute_batch(
        "CREATE TABLE fault_count (n INTEGER NOT NULL); INSERT INTO fault_count VALUES (0);
         CREATE TRIGGER fault AFTER DELETE ON vgi_scope BEGIN
           UPDATE fault_count SET n = n + 1;
           SELECT RAISE(ABORT, 'injected fault') WHERE (SELECT n FROM fault_count) > 600;
         END;",
    )?;
    let err = store
        .gc(Duration::from_secs(1))
        .err()
        .ok_or("gc passed the fault")?;
    let vgi_storage_core::StorageError::GcInterrupted { removed, .. } = &err else {
        return Err(format!("not GcInterrupted: {err:?}").into());
    };
    assert_eq!(removed.len(), 512, "{err}");
    for scope in &scopes {
        let present = store.kv_get(scope, b"k")?.is_some();
        assert_eq!(present, !removed.contains(scope), "{scope:?}");
    }
    conn.execute_batch("DROP TRIGGER fault")?;
    let rest = store.gc(Duration::from_secs(1))?;
    assert_eq!(rest.scopes.len() + removed.len(), scopes.len());
    Ok(())
}
