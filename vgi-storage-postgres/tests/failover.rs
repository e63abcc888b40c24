//! Failover: a primary with a synchronous standby, the primary killed mid-load,
//! the standby promoted, and the store (on a multi-host URL with
//! `target_session_attrs=read-write`, as libpq does) carrying on against it.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use vgi_storage_core::{ErrorKind, FunctionStorage, FunctionStorageExt, StorageError};
use vgi_storage_postgres::PostgresStorage;
use vgi_storage_postgres::testing::{PASSWORD, PASSWORD_USER, TestServer};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

#[derive(Default)]
struct Seen {
    appended: Vec<(i64, Vec<u8>)>,
    pushed: Vec<Vec<u8>>,
    popped: Vec<Vec<u8>>,
    /// Pops whose outcome is unknown: their item may be gone unseen.
    pops_unknown: usize,
    errors: Vec<ErrorKind>,
}

fn note(seen: &Mutex<Seen>, f: impl FnOnce(&mut Seen)) {
    if let Ok(mut seen) = seen.lock() {
        f(&mut seen);
    }
}

fn error(seen: &Mutex<Seen>, e: &StorageError) {
    let kind = e.kind();
    note(seen, |s| s.errors.push(kind));
}

/// Wait until the primary reports a synchronous standby.
fn wait_for_sync(primary: &TestServer) -> TestResult {
    let mut admin = primary.config().connect(postgres::NoTls)?;
    for _ in 0..600 {
        let row = admin.query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
            &[],
        )?;
        if row.get::<_, i64>(0) > 0 {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err("the standby never became synchronous".into())
}

/// A writer (append and push) and a popper, recording what was acknowledged,
/// until `stop`.
fn spawn_load(
    store: &Arc<PostgresStorage>,
    seen: &Arc<Mutex<Seen>>,
    stop: &Arc<AtomicBool>,
) -> [thread::JoinHandle<()>; 2] {
    let writer = {
        let (store, seen, stop) = (Arc::clone(store), Arc::clone(seen), Arc::clone(stop));
        thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let value = format!("v{n}").into_bytes();
                match store.append(b"s", b"n", b"log", &value) {
                    Ok(id) => note(&seen, |s| s.appended.push((id, value.clone()))),
                    Err(e) => error(&seen, &e),
                }
                match store.queue_push(b"q", std::slice::from_ref(&value)) {
                    Ok(()) => note(&seen, |s| s.pushed.push(value)),
                    Err(e) => error(&seen, &e),
                }
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let popper = {
        let (store, seen, stop) = (Arc::clone(store), Arc::clone(seen), Arc::clone(stop));
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match store.queue_pop(b"q") {
                    Ok(Some(item)) => note(&seen, |s| s.popped.push(item)),
                    Ok(None) => thread::sleep(Duration::from_millis(3)),
                    Err(e) => {
                        if e.kind() == ErrorKind::OutcomeUnknown {
                            note(&seen, |s| s.pops_unknown += 1);
                        }
                        error(&seen, &e);
                    }
                }
            }
        })
    };

    [writer, popper]
}

#[test]
fn a_promoted_synchronous_standby_has_every_acknowledged_write() -> TestResult {
    let primary = TestServer::start()?;
    let standby = TestServer::start_standby(&primary)?;
    primary.superuser_sql("ALTER SYSTEM SET synchronous_standby_names = '*'")?;
    primary.superuser_sql("SELECT pg_reload_conf()")?;
    wait_for_sync(&primary)?;

    let url = format!(
        "postgres://{PASSWORD_USER}:{PASSWORD}@127.0.0.1:{},127.0.0.1:{}/postgres\
         ?target_session_attrs=read-write&sslmode=disable&connect_timeout=2&schema=failover",
        primary.port(),
        standby.port()
    );
    let store = Arc::new(
        PostgresStorage::builder(url.as_str())
            .pool_size(4)
            .checkout_timeout(Duration::from_secs(2))
            .connect()?,
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let load = spawn_load(&store, &seen, &stop);
    let count = |seen: &Mutex<Seen>| seen.lock().map_or(0, |s| s.appended.len());
    while count(&seen) < 50 {
        thread::sleep(Duration::from_millis(10));
    }
    primary.kill()?;
    standby.promote()?;
    // Carry on until the store has written again, on the new primary.
    let before = count(&seen);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&seen) < before + 50 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    for thread in load {
        thread.join().map_err(|_| "a load thread panicked")?;
    }

    let seen = Arc::try_unwrap(seen)
        .map_err(|_| "threads still hold the record")?
        .into_inner()
        .map_err(|_| "poisoned")?;
    assert!(
        seen.appended.len() >= before + 50,
        "no writes succeeded after the promotion"
    );
    eprintln!(
        "failover: {} appends, {} pushes, {} pops acknowledged; errors {:?}",
        seen.appended.len(),
        seen.pushed.len(),
        seen.popped.len(),
        seen.errors
    );
    assert!(!seen.errors.is_empty(), "the load never saw the primary go");
    assert!(
        seen.errors
            .iter()
            .all(|k| k.is_retryable() || *k == ErrorKind::OutcomeUnknown),
        "errors that are neither retryable nor outcome-unknown: {:?}",
        seen.errors
    );

    // Every acknowledged append is on the new primary.
    let reader = PostgresStorage::builder(url.as_str()).connect()?;
    let log: BTreeSet<(i64, Vec<u8>)> = reader
        .scan(b"s", b"n", b"log", -1, usize::MAX)?
        .into_iter()
        .map(|e| (e.id, e.value))
        .collect();
    for entry in &seen.appended {
        assert!(log.contains(entry), "acknowledged append lost: {entry:?}");
    }
    // No item is handed out twice, and every acknowledged push is either popped
    // or still queued, but for items whose pop's outcome is unknown.
    let mut out: Vec<Vec<u8>> = seen.popped.clone();
    out.extend(reader.queue_drain(b"q")?);
    let distinct: HashSet<&Vec<u8>> = out.iter().collect();
    assert_eq!(distinct.len(), out.len(), "an item was popped twice");
    let missing = seen
        .pushed
        .iter()
        .filter(|item| !distinct.contains(item))
        .count();
    assert!(
        missing <= seen.pops_unknown,
        "{missing} acknowledged pushes lost, only {} pops of unknown outcome",
        seen.pops_unknown
    );
    Ok(())
}
