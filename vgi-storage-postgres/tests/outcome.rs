//! A lost reply: calls that may have taken effect say so (`OutcomeUnknown`),
//! calls that cannot have stay retryable, and a pop cut off before its commit
//! leaves the item queued. A small TCP proxy between store and server drops
//! the server's reply at a chosen message.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use vgi_storage_core::{ErrorKind, FunctionStorage, StorageError};
use vgi_storage_postgres::PostgresStorage;
use vgi_storage_postgres::testing::{PASSWORD, PASSWORD_USER, TestServer};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Forwards 127.0.0.1 connections to the test server. When armed with a
/// backend message type (`b'D'` = DataRow, `b'C'` = CommandComplete), it cuts
/// the connection instead of forwarding the server's bytes that hold the next
/// such message: the server ran the statement, the client never hears.
struct Proxy {
    port: u16,
    armed: Arc<AtomicU8>,
    /// How many times the proxy cut a connection.
    cuts: Arc<Mutex<usize>>,
}

impl Proxy {
    fn start(server_port: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let armed = Arc::new(AtomicU8::new(0));
        let cuts = Arc::new(Mutex::new(0));
        let (a, c) = (armed.clone(), cuts.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    continue;
                };
                let (a, c) = (a.clone(), c.clone());
                let _ = Self::pipe(client, server, a, c);
            }
        });
        Ok(Proxy { port, armed, cuts })
    }

    fn pipe(
        client: TcpStream,
        server: TcpStream,
        armed: Arc<AtomicU8>,
        cuts: Arc<Mutex<usize>>,
    ) -> std::io::Result<()> {
        let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
        thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = c_read.read(&mut buf) {
                if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = s_write.shutdown(Shutdown::Both);
        });
        let (mut s_read, mut c_write) = (server, client);
        thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            // Parse the server's messages (type byte, then a length that counts
            // itself) across reads, to find where each begins.
            let mut skip: usize = 0; // bytes left of the current message's body
            let mut header: Vec<u8> = Vec::new();
            'copy: while let Ok(n) = s_read.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let target = armed.load(Ordering::SeqCst);
                let mut i = 0;
                while i < n {
                    if skip > 0 {
                        let take = skip.min(n - i);
                        skip -= take;
                        i += take;
                        continue;
                    }
                    header.push(buf[i]);
                    i += 1;
                    if header.len() == 5 {
                        if target != 0 && header[0] == target {
                            armed.store(0, Ordering::SeqCst);
                            if let Ok(mut cuts) = cuts.lock() {
                                *cuts += 1;
                            }
                            break 'copy;
                        }
                        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                        skip = (len as usize).saturating_sub(4);
                        header.clear();
                    }
                }
                if c_write.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = c_write.shutdown(Shutdown::Both);
            let _ = s_read.shutdown(Shutdown::Both);
        });
        Ok(())
    }

    fn arm(&self, message: u8) {
        self.armed.store(message, Ordering::SeqCst);
    }

    fn cuts(&self) -> usize {
        self.cuts.lock().map_or(0, |c| *c)
    }

    fn store(&self, schema: &str) -> vgi_storage_core::Result<PostgresStorage> {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(PASSWORD_USER)
            .password(PASSWORD)
            .dbname("postgres")
            // In clear: the proxy parses the server's messages.
            .ssl_mode(postgres::config::SslMode::Disable)
            .connect_timeout(Duration::from_secs(10));
        PostgresStorage::builder(config)
            .schema(schema)
            .pool_size(1)
            .connect()
    }
}

fn kind(result: Result<impl std::fmt::Debug, StorageError>) -> Option<ErrorKind> {
    result.err().map(|e| e.kind())
}

/// Regression: pop was one autocommit `DELETE ... RETURNING`, so when the reply
/// was lost the item was gone for good and the error said "retry the call".
#[test]
fn a_pop_whose_row_never_arrives_leaves_the_item_queued() -> TestResult {
    let server = TestServer::shared()?;
    server.drop_schema("outcome_pop")?;
    let proxy = Proxy::start(server.port())?;
    let store = proxy.store("outcome_pop")?;
    store.queue_push(b"q", &[b"only".to_vec()])?;
    proxy.arm(b'D');
    let err = store.queue_pop(b"q").err().ok_or("the pop got its row")?;
    assert_eq!(proxy.cuts(), 1, "the proxy did not cut the reply");
    // Cut before the commit was sent: nothing happened, and it says so.
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert_eq!(store.queue_pop(b"q")?.as_deref(), Some(&b"only"[..]));
    assert_eq!(store.queue_pop(b"q")?, None);
    Ok(())
}

/// Regression: an append whose reply was lost came back `Unavailable` ("retry
/// the call"), and the retry wrote the entry twice.
#[test]
fn a_write_whose_reply_is_lost_is_outcome_unknown_not_retryable() -> TestResult {
    let server = TestServer::shared()?;
    server.drop_schema("outcome_append")?;
    let proxy = Proxy::start(server.port())?;
    let store = proxy.store("outcome_append")?;

    proxy.arm(b'D');
    let err = store
        .append(b"s", b"n", b"k", b"once")
        .err()
        .ok_or("the append got its reply")?;
    assert_eq!(err.kind(), ErrorKind::OutcomeUnknown, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("scan the log"), "{err}");
    // It did take effect, once: a blind retry would have doubled it.
    assert_eq!(store.scan(b"s", b"n", b"k", -1, 10)?.len(), 1);

    proxy.arm(b'C');
    assert_eq!(
        kind(store.queue_push(b"s", &[b"x".to_vec()])),
        Some(ErrorKind::OutcomeUnknown)
    );
    // Each cut drops the pooled connection; open the next one before arming,
    // so the proxy cuts the call's reply and not the connection's setup.
    assert!(store.kv_get(b"s", b"k")?.is_none());
    proxy.arm(b'C');
    assert_eq!(
        kind(store.kv_put(b"s", b"k", b"v")),
        Some(ErrorKind::OutcomeUnknown)
    );
    // A read that loses its reply changed nothing: it stays retryable.
    assert_eq!(store.scan(b"s", b"n", b"k", -1, 10)?.len(), 1);
    proxy.arm(b'D');
    assert_eq!(kind(store.kv_get(b"s", b"k")), Some(ErrorKind::Unavailable));
    assert_eq!(store.kv_get(b"s", b"k")?.as_deref(), Some(&b"v"[..]));
    assert_eq!(proxy.cuts(), 4);
    Ok(())
}

/// A call that never reached a server (nothing listens) stays `Unavailable`.
#[test]
fn a_call_that_never_reached_the_server_stays_retryable() -> TestResult {
    let server = TestServer::shared()?;
    server.drop_schema("outcome_unreached")?;
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let dead_port = listener.local_addr()?.port();
    drop(listener);
    let mut config = postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(dead_port)
        .user(PASSWORD_USER)
        .password(PASSWORD)
        .dbname("postgres");
    let err = PostgresStorage::builder(config)
        .schema("outcome_unreached")
        .connect()
        .err()
        .ok_or("connected to nothing")?;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    Ok(())
}
