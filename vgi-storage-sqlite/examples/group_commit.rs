//! What group commit buys: the rate of `kv_put` (1 KiB) and `append` (64 KiB)
//! with 1 and with N writing threads of one process, for `synchronous`
//! normal and full, each pair measured back to back on fresh stores, and the
//! ratio of the N-thread rate to the one-thread rate (median over the runs).
//!
//! Run with `cargo run --release -p vgi-storage-sqlite --example group_commit`.
//! `VGI_BENCH_DIR` picks the directory (default: the temp dir), `VGI_BENCH_RUNS`
//! the runs (default 3), `VGI_BENCH_THREADS` N (default 4), `VGI_BENCH_OPS`
//! the writes per measurement (default 4000; a quarter of that under full),
//! `VGI_BENCH_ONLY` only the rows whose workload or mode contains it.

// A measurement harness: rates are f64 by nature.
#![allow(clippy::cast_precision_loss)]

use std::time::Instant;

use vgi_storage_core::FunctionStorage;
use vgi_storage_sqlite::{SqliteStorage, Synchronous};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;
type Write = fn(&SqliteStorage, usize) -> vgi_storage_core::Result<()>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes per second of `ops` writes spread over `threads` threads.
fn rate(sync: Synchronous, threads: usize, ops: usize, write: Write) -> Res<f64> {
    let base = std::env::var_os("VGI_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base)?;
    let store = SqliteStorage::builder(dir.path().join("state.db"))
        .synchronous(sync)
        .open()?;
    let start = Instant::now();
    std::thread::scope(|s| -> Res<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = &store;
                s.spawn(move || -> vgi_storage_core::Result<()> {
                    for i in (t..ops).step_by(threads) {
                        write(store, i)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a writer panicked")??;
        }
        Ok(())
    })?;
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

fn kv_put(store: &SqliteStorage, i: usize) -> vgi_storage_core::Result<()> {
    store.kv_put(b"agg", format!("key-{i:08}").as_bytes(), &[7; 1024])
}

fn append(store: &SqliteStorage, _: usize) -> vgi_storage_core::Result<()> {
    store
        .append(b"buf", b"sink", b"0", &vec![7; 64 << 10])
        .map(|_| ())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Res<()> {
    let runs = env("VGI_BENCH_RUNS", 3).max(1);
    let threads = env("VGI_BENCH_THREADS", 4).max(2);
    let ops = env("VGI_BENCH_OPS", 4000);
    println!(
        "| workload | synchronous | 1 thread | {threads} threads | ratio (median of {runs}) |"
    );
    println!("|---|---|---:|---:|---:|");
    let workloads: [(&str, Write, usize); 2] =
        [("kv_put 1 KiB", kv_put, 1), ("append 64 KiB", append, 4)];
    for sync in Synchronous::ALL {
        for (name, write, divisor) in workloads {
            if let Ok(only) = std::env::var("VGI_BENCH_ONLY")
                && !format!("{name} {sync}").contains(&only)
            {
                continue;
            }
            let n = match sync {
                Synchronous::Full => ops / 4 / divisor,
                _ => ops / divisor,
            }
            .max(threads);
            let (mut one, mut many, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
            for run in 0..runs {
                // Alternate which goes first, so drift does not land on one.
                let (a, b) = if run % 2 == 0 {
                    let a = rate(sync, 1, n, write)?;
                    (a, rate(sync, threads, n, write)?)
                } else {
                    let b = rate(sync, threads, n, write)?;
                    (rate(sync, 1, n, write)?, b)
                };
                one.push(a);
                many.push(b);
                ratio.push(b / a);
            }
            println!(
                "| {name} ({n} writes) | {sync} | {:.0}/s | {:.0}/s | {:.2}x |",
                median(one),
                median(many),
                median(ratio)
            );
        }
    }
    Ok(())
}
