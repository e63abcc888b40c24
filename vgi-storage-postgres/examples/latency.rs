//! Single-op latency of the postgres store over the local socket and over TCP
//! (plain, and TLS with `sslmode=require`): median and p99 of `kv_get`,
//! `kv_put`, `append` and `queue_pop` (of a pushed item), one caller.
//!
//! ```text
//! cargo run --release -p vgi-storage-postgres --features testing --example latency
//! ```
//!
//! Starts its own PostgreSQL (fsync on, a TLS certificate made with the
//! `openssl` command line) from the installed binaries. `VGI_LATENCY_OPS` sets
//! the calls per operation (default 2000).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vgi_storage_core::FunctionStorage;
use vgi_storage_postgres::PostgresStorage;
use vgi_storage_postgres::testing::{PASSWORD, PASSWORD_USER, TestServer};

type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let last = sorted.len().saturating_sub(1);
    sorted.get(last * pct / 100).copied().unwrap_or_default()
}

fn time(ops: usize, mut f: impl FnMut(usize) -> BoxResult<()>) -> BoxResult<(Duration, Duration)> {
    let mut lat = Vec::with_capacity(ops);
    for i in 0..ops {
        let start = Instant::now();
        f(i)?;
        lat.push(start.elapsed());
    }
    lat.sort_unstable();
    Ok((percentile(&lat, 50), percentile(&lat, 99)))
}

fn measure(label: &str, store: &PostgresStorage, ops: usize) -> BoxResult<()> {
    let value = [7u8; 100];
    store.kv_put(b"s", b"k", &value)?;
    let items: Vec<Vec<u8>> = (0..ops).map(|_| value.to_vec()).collect();
    store.queue_push(b"q", &items)?;
    let rows = [
        (
            "kv_get",
            time(ops, |_| Ok(store.kv_get(b"s", b"k").map(drop)?))?,
        ),
        (
            "kv_put",
            time(ops, |_| Ok(store.kv_put(b"s", b"k", &value)?))?,
        ),
        (
            "append",
            time(ops, |_| {
                Ok(store.append(b"s", b"n", b"k", &value).map(drop)?)
            })?,
        ),
        (
            "queue_pop",
            time(ops, |_| Ok(store.queue_pop(b"q").map(drop)?))?,
        ),
    ];
    for (op, (p50, p99)) in rows {
        println!(
            "{label:<14} {op:<10} p50 {:>7.1} µs   p99 {:>7.1} µs",
            micros(p50),
            micros(p99)
        );
    }
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() -> BoxResult<()> {
    let ops: usize = std::env::var("VGI_LATENCY_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let openssl = |args: &[&str]| -> BoxResult<()> {
        let status = Command::new("openssl").args(args).current_dir(d).status()?;
        if status.success() {
            Ok(())
        } else {
            Err("openssl failed".into())
        }
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
    ])?;
    // Durable as a deployment, as the bench's postgres column.
    let server = TestServer::start_with_tls(
        &[
            ("fsync", "on"),
            ("full_page_writes", "on"),
            ("synchronous_commit", "on"),
        ],
        &Path::new(d).join("server.crt"),
        &Path::new(d).join("server.key"),
        None,
    )?;
    let socket = server.builder("latency_socket").connect()?;
    measure("unix socket", &socket, ops)?;
    let tcp = |mode: &str, schema: &str| {
        PostgresStorage::connect(&format!(
            "postgres://{PASSWORD_USER}:{PASSWORD}@127.0.0.1:{}/postgres?sslmode={mode}&schema={schema}",
            server.port()
        ))
    };
    measure("tcp", &tcp("disable", "latency_tcp")?, ops)?;
    measure("tcp + tls", &tcp("require", "latency_tls")?, ops)?;
    Ok(())
}
