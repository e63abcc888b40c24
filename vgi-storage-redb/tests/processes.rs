//! Tests across processes: the test binary re-executes itself as a child
//! (`child_process_entry`, ignored unless asked for) to hold the file, to be killed
//! mid-write, or to share the file in multi-process mode.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vgi_storage_core::{ErrorKind, FunctionStorage, FunctionStorageExt};
use vgi_storage_redb::RedbStorage;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const ROLE: &str = "VGI_REDB_TEST_CHILD_ROLE";
const PATH: &str = "VGI_REDB_TEST_CHILD_PATH";
const MARK: &str = "@@child@@ ";

fn spawn(role: &str, path: &Path) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_process_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(PATH, path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Print one line and flush it, so the parent sees exactly what was acknowledged.
fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    // The harness may have printed "test child_process_entry ... " on this line.
    writeln!(out, "{MARK}{line}")?;
    out.flush()
}

/// The child's side of every test here; does nothing unless the parent set the role.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_process_entry() -> TestResult {
    let (Ok(role), Ok(path)) = (std::env::var(ROLE), std::env::var(PATH)) else {
        return Ok(());
    };
    match role.as_str() {
        // Hold the file until the parent closes our stdin.
        "hold" => {
            let _store = RedbStorage::open(&path)?;
            say("ready")?;
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line)?;
        }
        // Write forever; acknowledge each write after its call returned.
        "write" => {
            let store = RedbStorage::open(&path)?;
            say("ready")?;
            for i in 0_u64.. {
                store.kv_put(b"crash", &i.to_be_bytes(), &[0xAB; 300])?;
                let id = store.append(b"crash", b"log", b"", &i.to_be_bytes())?;
                store.queue_push(b"crash", &[i.to_be_bytes().to_vec()])?;
                say(&format!("ack {i} {id}"))?;
            }
        }
        // Share the file with the parent: append and pop.
        "share" => {
            let store = RedbStorage::builder(&path).multi_process(true).open()?;
            say("ready")?;
            for i in 0_u64..50 {
                store.append(b"shared", b"log", b"", format!("child-{i}").as_bytes())?;
            }
            let mut popped = 0;
            while store.queue_pop(b"shared")?.is_some() {
                popped += 1;
            }
            say(&format!("popped {popped}"))?;
        }
        // Hold redb's multi-process write lock until the parent closes our stdin,
        // as a hung peer would.
        "hold-write-lock" => {
            let mut builder = redb::Builder::new();
            builder.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
            let db = builder.create(&path)?;
            let txn = db.begin_write()?;
            say("ready")?;
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line)?;
            txn.abort()?;
        }
        other => return Err(format!("unknown role {other}").into()),
    }
    Ok(())
}

fn read_line(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Result<String, String> {
    for line in lines {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(at) = line.find(MARK) {
            return Ok(line[at + MARK.len()..].to_owned());
        }
    }
    Err("the child exited without a word".into())
}

#[test]
fn a_file_held_by_another_process_is_already_open_with_a_useful_message() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("held.redb");
    let mut child = spawn("hold", &path)?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    assert_eq!(read_line(&mut lines)?, "ready");

    let err = RedbStorage::open(&path)
        .err()
        .ok_or("second open succeeded")?;
    assert_eq!(err.kind(), ErrorKind::AlreadyOpen);
    assert!(!err.is_retryable());
    let msg = err.to_string();
    for needle in [
        &*path.to_string_lossy(),
        "another process",
        "multi_process",
        "SQLite",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert!(
        std::error::Error::source(&err).is_some(),
        "redb's error is kept"
    );

    drop(child.stdin.take()); // lets the child go
    assert!(child.wait()?.success());
    // Once the holder is gone, the file opens.
    assert!(RedbStorage::open(&path)?.kv_get(b"x", b"y")?.is_none());
    Ok(())
}

/// A child killed with SIGKILL mid-write leaves a file that reopens, passes redb's
/// integrity check, and holds every write whose call had returned.
#[test]
fn every_acknowledged_write_survives_sigkill() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("crash.redb");
    let mut child = spawn("write", &path)?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    assert_eq!(read_line(&mut lines)?, "ready");
    let mut acked: Vec<(u64, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.len() < 150 && Instant::now() < deadline {
        let line = read_line(&mut lines)?;
        let mut parts = line.split(' ').skip(1);
        let i = parts.next().ok_or("short ack")?.parse()?;
        let id = parts.next().ok_or("short ack")?.parse()?;
        acked.push((i, id));
    }
    child.kill()?; // SIGKILL on Unix
    let status = child.wait()?;
    assert!(!status.success());
    // Lines fully printed before the kill were acknowledged too.
    while let Ok(line) = read_line(&mut lines) {
        let mut parts = line.split(' ');
        if let (Some("ack"), Some(Ok(i)), Some(Ok(id))) = (
            parts.next(),
            parts.next().map(str::parse),
            parts.next().map(str::parse),
        ) {
            acked.push((i, id));
        }
    }
    assert!(acked.len() >= 10, "only {} acks", acked.len());

    let mut store = RedbStorage::open(&path)?;
    assert!(store.check_integrity()?, "integrity check failed");
    let log = store.scan_all(b"crash", b"log", b"", -1, 1000)?;
    for (i, id) in &acked {
        assert!(
            store.kv_get(b"crash", &i.to_be_bytes())?.is_some(),
            "kv {i} lost"
        );
        assert!(log.iter().any(|e| e.id == *id), "append {i} (id {id}) lost");
    }
    let queued = store.queue_drain(b"crash")?;
    assert!(queued.len() >= acked.len());
    for (n, (i, _)) in acked.iter().enumerate() {
        assert_eq!(queued[n], i.to_be_bytes(), "queue order");
    }
    // Ids handed out before the crash are not handed out again.
    let max = acked.iter().map(|(_, id)| *id).max().unwrap_or(0);
    assert!(store.append(b"crash", b"log", b"", b"after")? > max);
    Ok(())
}

#[test]
fn multi_process_mode_shares_the_file_between_processes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shared.redb");
    let store = RedbStorage::builder(&path).multi_process(true).open()?;
    assert!(store.capabilities().shared_across_processes);
    let items: Vec<Vec<u8>> = (0..200_u32).map(|i| i.to_be_bytes().to_vec()).collect();
    store.queue_push(b"shared", &items)?;

    let mut child = spawn("share", &path)?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    assert_eq!(read_line(&mut lines)?, "ready");
    for i in 0_u64..50 {
        store.append(b"shared", b"log", b"", format!("parent-{i}").as_bytes())?;
    }
    let mut popped = 0;
    while store.queue_pop(b"shared")?.is_some() {
        popped += 1;
    }
    let line = read_line(&mut lines)?;
    let child_popped: usize = line.strip_prefix("popped ").ok_or("bad line")?.parse()?;
    assert!(child.wait()?.success());
    assert_eq!(
        popped + child_popped,
        items.len(),
        "every item popped exactly once"
    );
    let log = store.scan_all(b"shared", b"log", b"", -1, 64)?;
    assert_eq!(log.len(), 100);
    assert!(log.windows(2).all(|w| w[0].id < w[1].id));
    Ok(())
}

/// In multi-process mode a writer blocked on redb's file lock with no
/// deadline: a hung peer holding the write lock stalled every write and every
/// pop of the other processes forever. A writer must wait at most the busy
/// timeout and then fail with `Busy`, having written nothing; once the peer
/// lets go, writes go through again.
#[test]
fn a_write_lock_held_by_a_hung_process_is_busy_after_the_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shared.redb");
    let store = RedbStorage::builder(&path)
        .multi_process(true)
        .busy_timeout(Duration::from_millis(200))
        .open()?;
    store.queue_push(b"q", &[b"item".to_vec()])?;
    let mut child = spawn("hold-write-lock", &path)?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    assert_eq!(read_line(&mut lines)?, "ready");

    let put = store.kv_put(b"s", b"k", b"v").err();
    let pop = store.queue_pop(b"q").err();
    let gc = store.gc(Duration::ZERO).err();
    for (what, err) in [("kv_put", put), ("queue_pop", pop), ("gc", gc)] {
        let err = err.ok_or(format!("{what} went through a held write lock"))?;
        assert_eq!(err.kind(), ErrorKind::Busy, "{what}: {err}");
        assert!(err.is_retryable());
    }
    // Reads do not need the write lock.
    assert_eq!(store.kv_get(b"s", b"k")?, None);

    drop(child.stdin.take());
    assert!(child.wait()?.success());
    store.kv_put(b"s", b"k", b"v")?;
    assert_eq!(store.queue_drain(b"q")?, vec![b"item".to_vec()]);
    Ok(())
}
