//! Two vgi worker processes sharing state through one vgi-storage SQLite file.
//!
//! Run without arguments, the program is the driver: it makes a temporary
//! SQLite file and starts itself twice on it, first as the `sink` (the phase of
//! a buffering function that writes state), then as the `source` (the phase
//! that reads it back in another process), and checks what the source printed.
//! Each role builds a real `vgi::worker::Worker` and installs the store with
//! `Worker::set_storage`; state goes through the very handle the worker holds,
//! by the `vgi` storage trait's calls.

use std::error::Error;
use std::path::Path;
use std::process::Command;

use vgi::storage::SharedStorage as VgiSharedStorage;
use vgi::worker::Worker;
use vgi_storage_vgi::VgiStorage;

type Res<T = ()> = Result<T, Box<dyn Error>>;

const EXEC: &[u8] = b"exec-42";

/// A worker with a vgi-storage SQLite store at `db` installed, and the handle it holds.
fn worker_on(db: &Path) -> Res<(Worker, VgiSharedStorage)> {
    let ours = vgi_storage::open(&format!("sqlite:{}", db.display()))?;
    let store = VgiStorage::new(ours).into_shared();
    let mut worker = Worker::new();
    worker.set_storage(store.clone());
    Ok((worker, store))
}

/// The sink phase: aggregate state, buffered batches and a scan's work queue.
fn sink(db: &Path) -> Res {
    let (worker, store) = worker_on(db)?;
    store.kv_put(EXEC, b"agg:0", &42_u64.to_le_bytes());
    let ids = store.append_many(
        EXEC,
        b"buf",
        b"",
        vec![b"batch-0".to_vec(), b"batch-1".to_vec()],
    );
    let last = store.append(EXEC, b"buf", b"", b"batch-2".to_vec());
    store.queue_push(EXEC, &[b"task-a".to_vec(), b"task-b".to_vec()]);
    let server = worker.build_server();
    println!(
        "sink pid {}: wrote agg:0, log ids {ids:?} then {last}, 2 tasks; worker serves {} methods",
        std::process::id(),
        server.methods().len()
    );
    Ok(())
}

/// The source phase, in another process: read back everything the sink wrote.
fn source(db: &Path) -> Res {
    let (worker, store) = worker_on(db)?;
    let agg = store.kv_get(EXEC, b"agg:0").ok_or("agg:0 missing")?;
    let agg = u64::from_le_bytes(agg.as_slice().try_into()?);
    println!("agg:0 = {agg}");
    let log = store.scan(EXEC, b"buf", b"", -1, usize::MAX);
    let ascending = log.windows(2).all(|w| w[0].0 < w[1].0);
    let batches: Vec<String> = log
        .iter()
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    println!("log = {batches:?}, ids ascending: {ascending}");
    while let Some(task) = store.queue_pop(EXEC) {
        println!("popped {}", String::from_utf8_lossy(&task));
    }
    println!("queue empty");
    store.clear(EXEC);
    println!("cleared: {}", store.kv_get(EXEC, b"agg:0").is_none());
    drop(worker);
    Ok(())
}

const EXPECTED: &str = "agg:0 = 42
log = [\"batch-0\", \"batch-1\", \"batch-2\"], ids ascending: true
popped task-a
popped task-b
queue empty
cleared: true
";

fn run_role(role: &str, db: &Path) -> Res<String> {
    let out = Command::new(std::env::current_exe()?)
        .arg(role)
        .arg(db)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "{role} process failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn drive() -> Res {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    print!("{}", run_role("sink", &db)?);
    let read = run_role("source", &db)?;
    print!("{read}");
    if read != EXPECTED {
        return Err(format!("the source process read\n{read}\nexpected\n{EXPECTED}").into());
    }
    println!("vgi worker example: ok (vgi 0.48, two processes, one SQLite file)");
    Ok(())
}

fn main() -> Res {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (None, _) => drive(),
        (Some("sink"), Some(db)) => sink(Path::new(db)),
        (Some("source"), Some(db)) => source(Path::new(db)),
        _ => Err("usage: vgi-worker-example [sink|source <db>]".into()),
    }
}
