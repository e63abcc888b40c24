//! PostgreSQL beside SQLite on the same machine, in one run: ops/s for kv put,
//! kv get, append, scan (pages of 100) and queue pop with 1 and 4 poppers.
//!
//! ```text
//! cargo run --release -p vgi-storage-postgres --features testing --example postgres_vs_sqlite
//! ```
//!
//! Starts its own PostgreSQL (with fsync on) from the installed binaries, or
//! uses `VGI_STORAGE_PG_URL` when set. Data goes under `VGI_BENCH_DIR` or the
//! temp dir. `VGI_COMPARE_OPS` sets the operations per workload (default 2000).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use vgi_storage_core::{FunctionStorage, Result};
use vgi_storage_postgres::PostgresStorage;
use vgi_storage_postgres::testing::TestServer;
use vgi_storage_sqlite::{SqliteStorage, Synchronous};

type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const VALUE: &[u8] = &[7u8; 100];
const WORKLOADS: [&str; 6] = [
    "kv put",
    "kv get",
    "append",
    "scan (100/page)",
    "queue pop x1",
    "queue pop x4",
];

fn rate(ops: usize, start: Instant) -> f64 {
    f64::from(u32::try_from(ops).unwrap_or(u32::MAX)) / start.elapsed().as_secs_f64()
}

/// Ops/s of each workload, in the order of [`WORKLOADS`].
fn measure(store: &Arc<dyn FunctionStorage>, ops: usize) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    let scope = b"bench";
    let start = Instant::now();
    for i in 0..ops {
        store.kv_put(scope, format!("k{i}").as_bytes(), VALUE)?;
    }
    out.push(rate(ops, start));

    let start = Instant::now();
    for i in 0..ops {
        store.kv_get(scope, format!("k{i}").as_bytes())?;
    }
    out.push(rate(ops, start));

    let start = Instant::now();
    for _ in 0..ops {
        store.append(scope, b"ns", b"log", VALUE)?;
    }
    out.push(rate(ops, start));

    let start = Instant::now();
    let mut calls = 0;
    for _ in 0..(ops / 100).max(1) * 5 {
        let mut after = -1;
        loop {
            let page = store.scan(scope, b"ns", b"log", after, 100)?;
            calls += 1;
            match page.last() {
                Some(last) if page.len() == 100 => after = last.id,
                _ => break,
            }
        }
        if calls >= ops {
            break;
        }
    }
    out.push(rate(calls, start));

    for poppers in [1, 4] {
        let q = format!("queue-{poppers}").into_bytes();
        let items: Vec<Vec<u8>> = vec![VALUE.to_vec(); 100];
        for _ in 0..ops / 100 {
            store.queue_push(&q, &items)?;
        }
        let popped = AtomicUsize::new(0);
        let start = Instant::now();
        thread::scope(|s| {
            let handles: Vec<_> = (0..poppers)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        while store.queue_pop(&q)?.is_some() {
                            popped.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().unwrap_or(Ok(())))
        })?;
        out.push(rate(popped.load(Ordering::Relaxed), start));
    }
    Ok(out)
}

fn main() -> BoxResult<()> {
    let ops: usize = std::env::var("VGI_COMPARE_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let base = std::env::var_os("VGI_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(&base)?;

    let server;
    let url = if let Ok(url) = std::env::var("VGI_STORAGE_PG_URL") {
        url
    } else {
        server = TestServer::start_with(&[("fsync", "on"), ("full_page_writes", "on")])?;
        server.url()
    };

    let mut columns: Vec<(String, Arc<dyn FunctionStorage>)> = vec![
        (
            "sqlite normal".into(),
            Arc::new(
                SqliteStorage::builder(dir.path().join("normal.db"))
                    .synchronous(Synchronous::Normal)
                    .open()?,
            ),
        ),
        (
            "sqlite full".into(),
            Arc::new(
                SqliteStorage::builder(dir.path().join("full.db"))
                    .synchronous(Synchronous::Full)
                    .open()?,
            ),
        ),
        (
            "postgres".into(),
            Arc::new(
                PostgresStorage::builder(url.as_str())
                    .schema("compare_sync")
                    .connect()?,
            ),
        ),
    ];
    // The same server, commits not waiting for the WAL flush (like SQLite's NORMAL).
    let sep = if url.contains('?') { '&' } else { '?' };
    columns.push((
        "postgres async commit".into(),
        Arc::new(
            PostgresStorage::builder(format!("{url}{sep}options=-c%20synchronous_commit%3Doff"))
                .schema("compare_async")
                .connect()?,
        ),
    ));

    let mut results = Vec::new();
    for (name, store) in &columns {
        eprintln!("measuring {name} ...");
        store.clear(b"bench")?;
        results.push(measure(store, ops)?);
    }

    let mut header = format!("| ops/s ({ops} ops) |");
    let mut rule = String::from("|---|");
    for (name, _) in &columns {
        let _ = write!(header, " {name} |");
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for (i, workload) in WORKLOADS.iter().enumerate() {
        let mut line = format!("| {workload} |");
        for r in &results {
            let _ = write!(line, " {:.0} |", r[i]);
        }
        println!("{line}");
    }
    Ok(())
}
