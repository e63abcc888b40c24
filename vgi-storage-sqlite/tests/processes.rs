//! Processes sharing one store: two processes popping one queue both make
//! progress (with the reference implementation one often took every item
//! while the other slept in SQLite's busy handler).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vgi_storage_core::FunctionStorage;
use vgi_storage_sqlite::SqliteStorage;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const CHILD_ENV: &str = "VGI_SQLITE_POP_CHILD";
const ITEMS: u32 = 3000;

fn wait_for(what: impl Fn() -> bool) -> TestResult {
    let start = Instant::now();
    while !what() {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("timed out waiting for the other processes".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[test]
fn two_popping_processes_both_make_progress() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let store = SqliteStorage::open(&path)?;
    let items: Vec<Vec<u8>> = (0..ITEMS).map(|i| i.to_be_bytes().to_vec()).collect();
    store.queue_push(b"q", &items)?;
    let exe = std::env::current_exe()?;
    let children = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "pop_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &path)
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    // Start both at once, once both have opened the store.
    let ready = |n: usize| {
        std::fs::read_dir(dir.path()).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("ready-"))
            })
            .count()
        }) >= n
    };
    wait_for(|| ready(2))?;
    std::fs::write(dir.path().join("go"), b"")?;
    let mut counts = Vec::new();
    for child in children {
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        let n = stdout
            .split("popped ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or(format!("no count in {stdout:?}"))?;
        counts.push(n);
    }
    println!("items popped by each process: {counts:?}");
    assert_eq!(
        counts.iter().sum::<u32>(),
        ITEMS,
        "items lost or popped twice"
    );
    assert!(
        counts.iter().all(|&n| n > 0),
        "a process made no progress: {counts:?}"
    );
    Ok(())
}

/// The child half of `two_popping_processes_both_make_progress`.
#[test]
#[ignore = "run as a child process by two_popping_processes_both_make_progress"]
fn pop_child() -> TestResult {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return Ok(());
    };
    let path = Path::new(&path);
    let dir = path.parent().ok_or("no directory")?;
    let store = SqliteStorage::open(path)?;
    std::fs::write(dir.join(format!("ready-{}", std::process::id())), b"")?;
    wait_for(|| dir.join("go").exists())?;
    let mut n = 0;
    while store.queue_pop(b"q")?.is_some() {
        n += 1;
    }
    println!("popped {n}");
    Ok(())
}
