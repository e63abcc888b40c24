//! Faults a PostgreSQL store must survive: the server going away mid-run,
//! several processes creating the schema at once, a wrong password, TLS asked
//! for of a server without it, a pool with no free connection.

use std::collections::BTreeSet;
use std::error::Error as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use vgi_storage_core::{ErrorKind, FunctionStorage, Result, StorageError};
use vgi_storage_postgres::PostgresStorage;
use vgi_storage_postgres::testing::{PASSWORD, PASSWORD_USER, TestServer, open_store};

type Shared<T> = Arc<Mutex<Vec<T>>>;
type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// The message and every source, and the Debug form: everything a log could show.
fn full_text(err: &StorageError) -> String {
    let mut text = format!("{err} | {err:?}");
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(" | ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn push<T>(list: &Mutex<Vec<T>>, item: T) {
    if let Ok(mut list) = list.lock() {
        list.push(item);
    }
}

/// Retry `f` while it fails with a retryable error, up to `within`.
fn retry<T>(within: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

#[test]
fn server_crash_mid_run_gives_retryable_errors_and_loses_nothing_acknowledged() -> TestResult {
    let server = TestServer::start()?;
    let store = Arc::new(
        server
            .builder("crash")
            .pool_size(4)
            .checkout_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2))
            .connect()?,
    );
    let acked: Shared<(i64, Vec<u8>)> = Arc::default();
    let acked_kv: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<ErrorKind>>> = Arc::default();
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let (store, acked, acked_kv, stop, errors) = (
                store.clone(),
                acked.clone(),
                acked_kv.clone(),
                stop.clone(),
                errors.clone(),
            );
            thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let value = format!("w{w}-{n}").into_bytes();
                    match store.append(b"s", b"ns", b"log", &value) {
                        Ok(id) => push(&acked, (id, value.clone())),
                        Err(e) => push(&errors, e.kind()),
                    }
                    match store.kv_put(b"s", &value, &value) {
                        Ok(()) => push(&acked_kv, value),
                        Err(e) => push(&errors, e.kind()),
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();

    thread::sleep(Duration::from_millis(300));
    server.kill()?;
    // While the server is down every call fails, and says a retry may help.
    for _ in 0..3 {
        let err = store.kv_get(b"s", b"k").err();
        assert!(
            err.as_ref().is_some_and(StorageError::is_retryable),
            "{err:?}"
        );
        let err = store.queue_pop(b"s").err();
        assert!(
            err.as_ref().is_some_and(StorageError::is_retryable),
            "{err:?}"
        );
    }
    thread::sleep(Duration::from_millis(200));
    server.start_again()?;
    // Writers keep going until they have succeeded again after the restart.
    let before = acked.lock().map_or(0, |a| a.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().map_or(0, |a| a.len()) < before + 20 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().map_err(|_| "writer panicked")?;
    }

    let errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
    assert!(
        !errors.is_empty(),
        "the writers never saw the server go away"
    );
    // A write cut off mid-request may have committed: that is OutcomeUnknown,
    // never a plain "retry"; everything else is retryable.
    assert!(
        errors
            .iter()
            .all(|k| k.is_retryable() || *k == ErrorKind::OutcomeUnknown),
        "errors during the outage that are neither retryable nor outcome-unknown: {errors:?}"
    );
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        acked.len() > before,
        "no append succeeded after the restart"
    );
    let log = retry(Duration::from_secs(10), || {
        store.scan(b"s", b"ns", b"log", -1, usize::MAX)
    })?;
    let stored: BTreeSet<(i64, Vec<u8>)> = log.into_iter().map(|e| (e.id, e.value)).collect();
    for entry in &acked {
        assert!(
            stored.contains(entry),
            "acknowledged append lost: {entry:?}"
        );
    }
    for key in acked_kv.lock().map(|a| a.clone()).unwrap_or_default() {
        let value = retry(Duration::from_secs(10), || store.kv_get(b"s", &key))?;
        assert_eq!(value.as_deref(), Some(&key[..]), "acknowledged put lost");
    }
    Ok(())
}

/// Regression: waiters re-checked the schema with `to_regclass` under the advisory lock, saw a stale "missing", re-ran the DDL and deadlocked (40P01) with the creator's statement preparation.
#[test]
fn many_processes_creating_the_schema_at_once_all_succeed() -> TestResult {
    let server = TestServer::shared()?;
    let n = 6;
    let barrier = Arc::new(Barrier::new(n));
    // Separate stores have separate pools and sessions: to the server these are
    // separate clients, exactly as separate processes would be.
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let builder = server.builder("created_at_once").pool_size(1);
            thread::spawn(move || {
                barrier.wait();
                let store = builder.connect()?;
                store.kv_put(b"scope", format!("k{i}").as_bytes(), b"v")?;
                Ok::<_, StorageError>(store)
            })
        })
        .collect();
    let mut stores = Vec::new();
    for h in handles {
        stores.push(h.join().map_err(|_| "connect panicked")??);
    }
    for i in 0..n {
        let key = format!("k{i}");
        assert_eq!(
            stores[0].kv_get(b"scope", key.as_bytes())?.as_deref(),
            Some(&b"v"[..])
        );
    }
    Ok(())
}

#[test]
fn wrong_password_is_a_clear_error_that_does_not_echo_it() -> TestResult {
    let server = TestServer::shared()?;
    let secret = "wrong-horse-7f3a9c";
    let err = PostgresStorage::builder(server.tcp_url(PASSWORD_USER, secret))
        .schema("wrong_password")
        .connect()
        .err()
        .ok_or("connected with a wrong password")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let text = full_text(&err);
    assert!(!text.contains(secret), "password echoed: {text}");
    assert!(text.contains("password"), "not clear: {text}");
    // The same path with the right password works, so the failure was the password.
    let store = PostgresStorage::builder(server.tcp_url(PASSWORD_USER, PASSWORD))
        .schema("wrong_password")
        .connect()?;
    assert!(!format!("{store:?} {}", store.name()).contains(PASSWORD));
    store.kv_put(b"s", b"k", b"v")?;
    Ok(())
}

#[test]
fn tls_required_of_a_server_without_tls_is_refused_rather_than_sent_in_clear() -> TestResult {
    let server = TestServer::shared()?;
    let url = server
        .tcp_url(PASSWORD_USER, PASSWORD)
        .replace("sslmode=disable", "sslmode=require");
    let err = PostgresStorage::connect(&url)
        .err()
        .ok_or("connected without TLS")?;
    let text = full_text(&err);
    assert!(text.contains("does not offer TLS"), "{text}");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(!text.contains(PASSWORD), "{text}");
    Ok(())
}

#[test]
fn exhausted_pool_fails_after_the_checkout_timeout() -> TestResult {
    let server = TestServer::shared()?;
    let store = Arc::new(
        server
            .builder("exhausted")
            .pool_size(1)
            .checkout_timeout(Duration::from_millis(300))
            .connect()?,
    );
    store.kv_put(b"s", b"k", b"v")?;
    // Another session locks the table, so the store's only connection blocks in a read.
    let mut locker = server.config().connect(postgres::NoTls)?;
    let mut tx = locker.transaction()?;
    tx.batch_execute("LOCK TABLE exhausted.kv IN ACCESS EXCLUSIVE MODE")?;
    let blocked = {
        let store = store.clone();
        thread::spawn(move || store.kv_get(b"s", b"k"))
    };
    thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let err = store.kv_get(b"s", b"k").err().ok_or("got a connection")?;
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert!(start.elapsed() < Duration::from_secs(5), "hung");
    tx.rollback()?;
    let value = blocked.join().map_err(|_| "reader panicked")??;
    assert_eq!(value.as_deref(), Some(&b"v"[..]));
    Ok(())
}

/// Appenders on separate pools (as on separate hosts) and a tailer: the tailer
/// must end up with every entry, which fails if any id ever became visible
/// behind the tailer's cursor.
#[test]
fn a_tailing_reader_never_misses_an_entry_of_concurrent_appenders() -> TestResult {
    let clock: vgi_storage_core::SharedClock = vgi_storage_core::system_clock();
    let writers: Vec<_> = (0..4)
        .map(|_| open_store("tailing", clock.clone()))
        .collect::<Result<_>>()?;
    let reader = open_store("tailing", clock)?;
    let done = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            thread::spawn(move || -> Result<()> {
                for i in 0..150 {
                    store.append(b"s", b"n", b"k", format!("{w}-{i}").as_bytes())?;
                }
                Ok(())
            })
        })
        .collect();
    let tail = {
        let done = done.clone();
        thread::spawn(move || -> Result<Vec<i64>> {
            let mut seen = Vec::new();
            let mut after = -1;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = reader.scan(b"s", b"n", b"k", after, 64)?;
                if let Some(last) = batch.last() {
                    after = last.id;
                }
                seen.extend(batch.iter().map(|e| e.id));
                if finished && batch.is_empty() {
                    return Ok(seen);
                }
            }
        })
    };
    for h in handles {
        h.join().map_err(|_| "appender panicked")??;
    }
    done.store(true, Ordering::SeqCst);
    let seen = tail.join().map_err(|_| "tailer panicked")??;
    assert_eq!(seen.len(), 600, "the tailer missed entries");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    Ok(())
}

/// Pins down what orders log ids by visibility: an append draws its id only
/// after it holds its scope's touch row lock (kept to commit). Were the id drawn
/// first, a slower appender could commit a smaller id behind a reader's cursor.
#[test]
fn an_append_draws_its_id_only_after_taking_the_scope_lock() -> TestResult {
    let server = TestServer::shared()?;
    let store = Arc::new(server.builder("id_after_lock").connect()?);
    store.append(b"s", b"n", b"k", b"first")?;
    let mut other = server.config().connect(postgres::NoTls)?;
    let mut tx = other.transaction()?;
    let scope: &[u8] = b"s";
    tx.execute(
        "SELECT 1 FROM id_after_lock.touch WHERE scope = $1 FOR UPDATE",
        &[&scope],
    )?;
    let appender = {
        let store = store.clone();
        thread::spawn(move || store.append(b"s", b"n", b"k", b"second"))
    };
    thread::sleep(Duration::from_millis(300));
    let drawn: i64 = tx
        .query_one("SELECT nextval('id_after_lock.log_id')", &[])?
        .get(0);
    tx.commit()?;
    let id = appender.join().map_err(|_| "appender panicked")??;
    assert!(
        id > drawn,
        "append drew id {id} before the lock (other drew {drawn})"
    );
    Ok(())
}

/// Regression: pop skipped rows locked by pops in flight (`SKIP LOCKED`) and
/// answered `Ok(None)` while the only item was merely locked, though the
/// locking pop was about to roll back and release it.
#[test]
fn a_pop_never_answers_empty_while_an_item_is_locked() -> TestResult {
    let server = TestServer::shared()?;
    server.drop_schema("pop_locked")?;
    let store = Arc::new(server.builder("pop_locked").connect()?);
    store.queue_push(b"q", &[b"only".to_vec()])?;
    // Another session claims the row, as a pop in flight does, then rolls back.
    let mut other = server.config().connect(postgres::NoTls)?;
    let mut tx = other.transaction()?;
    let scope: &[u8] = b"q";
    let locked = tx.query(
        "SELECT id FROM pop_locked.queue WHERE scope = $1 FOR UPDATE",
        &[&scope],
    )?;
    assert_eq!(locked.len(), 1);
    let popper = {
        let store = store.clone();
        thread::spawn(move || store.queue_pop(b"q"))
    };
    thread::sleep(Duration::from_millis(200));
    tx.rollback()?;
    let item = popper.join().map_err(|_| "popper panicked")??;
    assert_eq!(item.as_deref(), Some(&b"only"[..]));

    // A locker that commits the delete leaves the queue empty: then None.
    store.queue_push(b"q", &[b"taken".to_vec()])?;
    let mut tx = other.transaction()?;
    let taken = tx.execute("DELETE FROM pop_locked.queue WHERE scope = $1", &[&scope])?;
    assert_eq!(taken, 1);
    let popper = {
        let store = store.clone();
        thread::spawn(move || store.queue_pop(b"q"))
    };
    thread::sleep(Duration::from_millis(200));
    tx.commit()?;
    assert_eq!(popper.join().map_err(|_| "popper panicked")??, None);
    Ok(())
}

/// Regression: a batch larger than one protocol message dropped the session,
/// came back as retryable `Unavailable`, and emptied the pool. Now it is
/// refused before anything is sent, with `TooLarge`, and writes nothing. (The
/// request limit is lowered here; the default sits just under the server's
/// 1 GiB message limit.)
#[test]
fn a_request_over_the_message_limit_is_too_large_and_writes_nothing() -> TestResult {
    let server = TestServer::shared()?;
    server.drop_schema("request_limit")?;
    let store = server
        .builder("request_limit")
        .max_request_len(64 * 1024)
        .connect()?;
    let chunk = vec![7u8; 30 * 1024];
    let three = vec![chunk.clone(), chunk.clone(), chunk.clone()];
    let too_large = |r: Result<()>| r.err().map(|e| e.kind()) == Some(ErrorKind::TooLarge);
    assert!(too_large(
        store.append_batch(b"s", b"n", b"k", &three).map(|_| ())
    ));
    assert!(too_large(store.queue_push(b"s", &three)));
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..3u8).map(|i| (vec![i], chunk.clone())).collect();
    assert!(too_large(store.kv_put_batch(b"s", &entries)));
    // One value under the value limit, with a long key, is too large as a request.
    assert!(too_large(store.kv_put(
        b"s",
        &chunk,
        &[chunk.clone(), chunk.clone()].concat()
    )));
    let err = store.append_batch(b"s", b"n", b"k", &three).err();
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("split the batch"), "{text}");
    // Nothing was written, and the store goes on working.
    assert_eq!(store.scan(b"s", b"n", b"k", -1, 10)?, vec![]);
    assert_eq!(store.queue_pop(b"s")?, None);
    assert_eq!(store.kv_get(b"s", &[0])?, None);
    store.append_batch(b"s", b"n", b"k", &three[..2])?;
    assert_eq!(store.scan(b"s", b"n", b"k", -1, 10)?.len(), 2);
    Ok(())
}
