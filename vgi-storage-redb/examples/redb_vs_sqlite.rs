//! Side-by-side throughput: raw redb (the engine's ceiling), this backend, and the
//! SQLite backend, single- and multi-threaded, in one run.
//!
//! ```text
//! cargo run --release -p vgi-storage-redb --example redb_vs_sqlite
//! ```
//!
//! Files go to a temp dir under `VGI_BENCH_DIR` (default: the system temp dir).
//! Every number is the median of several runs, in operations per second. Runs of
//! the backends are interleaved, so a burst of load from elsewhere on the machine
//! hits all of them alike. Name workloads on the command line to run only those.
#![allow(
    clippy::cast_precision_loss,
    reason = "rates are approximate by nature"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use vgi_storage_core::{
    Capabilities, ErrorKind, FunctionStorage, GcReport, LogEntry, Result, SharedStorage,
    StorageError,
};
use vgi_storage_redb::RedbStorage;
use vgi_storage_sqlite::{SqliteStorage, Synchronous};

const KV: TableDefinition<(&[u8], &[u8]), &[u8]> = TableDefinition::new("kv");
type LogKey = (&'static [u8], &'static [u8], &'static [u8], u64);
const LOG: TableDefinition<LogKey, &[u8]> = TableDefinition::new("log");
const QUEUE: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("queue");

/// Raw redb doing the same work with the same durability (one Immediate commit per
/// call), with nothing of ours on top: no scope stamps, counters kept in memory.
struct Raw {
    db: Database,
    next: AtomicU64,
}

fn raw_err(e: impl Into<redb::Error>) -> StorageError {
    StorageError::operation("raw", "raw", ErrorKind::Other, "raw redb", e.into())
}

impl Raw {
    fn open(path: &std::path::Path) -> Result<Self> {
        let db = Database::create(path).map_err(raw_err)?;
        let txn = db.begin_write().map_err(raw_err)?;
        txn.open_table(KV).map_err(raw_err)?;
        txn.open_table(LOG).map_err(raw_err)?;
        txn.open_table(QUEUE).map_err(raw_err)?;
        txn.commit().map_err(raw_err)?;
        Ok(Self {
            db,
            next: AtomicU64::new(1),
        })
    }
}

fn unsupported() -> StorageError {
    StorageError::Unsupported {
        backend: "raw".into(),
        hint: "not measured".into(),
    }
}

impl FunctionStorage for Raw {
    fn name(&self) -> &'static str {
        "raw-redb"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }
    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(raw_err)?;
        let t = txn.open_table(KV).map_err(raw_err)?;
        Ok(t.get((scope, key))
            .map_err(raw_err)?
            .map(|v| v.value().to_vec()))
    }
    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        let txn = self.db.begin_write().map_err(raw_err)?;
        txn.open_table(KV)
            .map_err(raw_err)?
            .insert((scope, key), value)
            .map_err(raw_err)?;
        txn.commit().map_err(raw_err)
    }
    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let txn = self.db.begin_write().map_err(raw_err)?;
        {
            let mut t = txn.open_table(KV).map_err(raw_err)?;
            for (k, v) in entries {
                t.insert((scope, k.as_slice()), v.as_slice())
                    .map_err(raw_err)?;
            }
        }
        txn.commit().map_err(raw_err)
    }
    fn kv_del(&self, _: &[u8], _: &[u8]) -> Result<()> {
        Err(unsupported())
    }
    fn kv_compare_and_swap(
        &self,
        _: &[u8],
        _: &[u8],
        _: Option<&[u8]>,
        _: Option<&[u8]>,
    ) -> Result<bool> {
        Err(unsupported())
    }
    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        let txn = self.db.begin_write().map_err(raw_err)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        txn.open_table(LOG)
            .map_err(raw_err)?
            .insert((scope, ns, key, id), value)
            .map_err(raw_err)?;
        txn.commit().map_err(raw_err)?;
        Ok(id as i64)
    }
    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        let txn = self.db.begin_write().map_err(raw_err)?;
        let mut ids = Vec::new();
        {
            let mut t = txn.open_table(LOG).map_err(raw_err)?;
            for value in values {
                let id = self.next.fetch_add(1, Ordering::Relaxed);
                t.insert((scope, ns, key, id), value.as_slice())
                    .map_err(raw_err)?;
                ids.push(id as i64);
            }
        }
        txn.commit().map_err(raw_err)?;
        Ok(ids)
    }
    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let txn = self.db.begin_read().map_err(raw_err)?;
        let t = txn.open_table(LOG).map_err(raw_err)?;
        let start = (after_id + 1).max(0) as u64;
        let mut out = Vec::new();
        for row in t
            .range((scope, ns, key, start)..=(scope, ns, key, u64::MAX))
            .map_err(raw_err)?
            .take(limit)
        {
            let (k, v) = row.map_err(raw_err)?;
            out.push(LogEntry {
                id: k.value().3 as i64,
                value: v.value().to_vec(),
            });
        }
        Ok(out)
    }
    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        let txn = self.db.begin_write().map_err(raw_err)?;
        {
            let mut t = txn.open_table(QUEUE).map_err(raw_err)?;
            for item in items {
                let seq = self.next.fetch_add(1, Ordering::Relaxed);
                t.insert((scope, seq), item.as_slice()).map_err(raw_err)?;
            }
        }
        txn.commit().map_err(raw_err)
    }
    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_write().map_err(raw_err)?;
        let item = {
            let mut t = txn.open_table(QUEUE).map_err(raw_err)?;
            let first = t
                .range((scope, 0)..=(scope, u64::MAX))
                .map_err(raw_err)?
                .next()
                .transpose()
                .map_err(raw_err)?
                .map(|(k, v)| (k.value().1, v.value().to_vec()));
            if let Some((seq, _)) = &first {
                t.remove((scope, *seq)).map_err(raw_err)?;
            }
            first.map(|(_, v)| v)
        };
        txn.commit().map_err(raw_err)?;
        Ok(item)
    }
    fn clear(&self, _: &[u8]) -> Result<()> {
        Err(unsupported())
    }
    fn gc(&self, _: Duration) -> Result<GcReport> {
        Err(unsupported())
    }
}

const RUNS: usize = 5;
const WRITES: usize = 200;
const READS: usize = 20_000;
const SCANS: usize = 20_000;
const BATCH: usize = 1_000;

/// Run `per_thread` operations on each of `threads` threads; ops/s.
fn timed(
    threads: usize,
    per_thread: usize,
    store: &SharedStorage,
    op: &(dyn Fn(&dyn FunctionStorage, usize, usize) -> Result<()> + Sync),
) -> Result<f64> {
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = Arc::clone(store);
                s.spawn(move || -> Result<()> {
                    for i in 0..per_thread {
                        op(&*store, t, i)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| unsupported())??;
        }
        Ok(())
    })?;
    Ok((threads * per_thread) as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn key(t: usize, i: usize) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&(t as u64).to_be_bytes());
    k[8..].copy_from_slice(&(i as u64).to_be_bytes());
    k
}

/// One run of one workload on a fresh store of one backend: ops/s.
fn measure(
    open: &dyn Fn(&std::path::Path) -> Result<SharedStorage>,
    dir: &std::path::Path,
    backend: usize,
    workload: &str,
    threads: usize,
    run: usize,
) -> Result<f64> {
    let value = vec![0x5A_u8; 100];
    {
        let path = dir.join(format!("{backend}-{workload}-{threads}-{run}.db"));
        let store = open(&path)?;
        let rate = match workload {
            "kv_put" => timed(threads, WRITES, &store, &|s, t, i| {
                s.kv_put(b"scope", &key(t, i), &value)
            })?,
            "kv_get" => {
                let entries: Vec<_> = (0..1000)
                    .map(|i| (key(0, i).to_vec(), value.clone()))
                    .collect();
                store.kv_put_batch(b"scope", &entries)?;
                timed(threads, READS, &store, &|s, t, i| {
                    s.kv_get(b"scope", &key(0, (i * 7 + t) % 1000)).map(drop)
                })?
            }
            "kv_put_batch" => {
                let entries: Vec<_> = (0..BATCH)
                    .map(|i| (key(0, i).to_vec(), value.clone()))
                    .collect();
                let start = Instant::now();
                for _ in 0..10 {
                    store.kv_put_batch(b"scope", &entries)?;
                }
                (10 * BATCH) as f64 / start.elapsed().as_secs_f64()
            }
            "append" => timed(threads, WRITES, &store, &|s, _, _| {
                s.append(b"scope", b"ns", b"log", &value).map(drop)
            })?,
            "scan" => {
                let values = vec![value.clone(); 1000];
                store.append_batch(b"scope", b"ns", b"log", &values)?;
                let all = store.scan(b"scope", b"ns", b"log", -1, usize::MAX)?;
                let first = all.first().map_or(0, |e| e.id);
                timed(threads, SCANS, &store, &|s, t, i| {
                    let after = first + ((i * 13 + t) % 900) as i64;
                    let page = s.scan(b"scope", b"ns", b"log", after, 100)?;
                    if page.len() == 100 {
                        Ok(())
                    } else {
                        Err(unsupported())
                    }
                })?
            }
            "queue_push" => timed(threads, WRITES, &store, &|s, _, _| {
                s.queue_push(b"scope", std::slice::from_ref(&value))
            })?,
            "queue_pop" => {
                let items: Vec<_> = (0..threads * WRITES).map(|_| value.clone()).collect();
                store.queue_push(b"scope", &items)?;
                timed(threads, WRITES, &store, &|s, _, _| {
                    s.queue_pop(b"scope")?.map(drop).ok_or_else(unsupported)
                })?
            }
            other => {
                return Err(StorageError::Config {
                    store: other.into(),
                    hint: "unknown workload".into(),
                    source: None,
                });
            }
        };
        Ok(rate)
    }
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

type Opener = Box<dyn Fn(&std::path::Path) -> Result<SharedStorage>>;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var_os("VGI_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base)?;
    let only: Vec<String> = std::env::args().skip(1).collect();
    let backends: Vec<(&str, Opener)> = vec![
        (
            "raw redb",
            Box::new(|p| Ok(Arc::new(Raw::open(p)?) as SharedStorage)),
        ),
        (
            "RedbStorage",
            Box::new(|p| Ok(Arc::new(RedbStorage::open(p)?) as SharedStorage)),
        ),
        (
            "SQLite FULL",
            Box::new(|p| {
                Ok(Arc::new(
                    SqliteStorage::builder(p)
                        .synchronous(Synchronous::Full)
                        .open()?,
                ) as SharedStorage)
            }),
        ),
        (
            "SQLite NORMAL",
            Box::new(|p| Ok(Arc::new(SqliteStorage::open(p)?) as SharedStorage)),
        ),
    ];
    let workloads: [(&str, usize); 11] = [
        ("kv_put", 1),
        ("kv_get", 1),
        ("kv_put_batch", 1),
        ("append", 1),
        ("scan", 1),
        ("queue_push", 1),
        ("queue_pop", 1),
        ("kv_put", 4),
        ("kv_get", 4),
        ("append", 4),
        ("queue_pop", 4),
    ];
    println!(
        "ops/s, median of {RUNS} runs; files in {}",
        dir.path().display()
    );
    print!("| workload | threads |");
    for (name, _) in &backends {
        print!(" {name} |");
    }
    println!(" redb/raw |");
    print!("|---|---|");
    for _ in 0..=backends.len() {
        print!("---|");
    }
    println!();
    for (workload, threads) in workloads {
        if !only.is_empty() && !only.iter().any(|w| w == workload) {
            continue;
        }
        let mut rates = vec![Vec::new(); backends.len()];
        for run in 0..RUNS {
            for (backend, (_, open)) in backends.iter().enumerate() {
                rates[backend].push(measure(
                    open.as_ref(),
                    dir.path(),
                    backend,
                    workload,
                    threads,
                    run,
                )?);
            }
        }
        let rates: Vec<f64> = rates.into_iter().map(median).collect();
        print!("| {workload} | {threads} |");
        for r in &rates {
            print!(" {} |", human(*r));
        }
        println!(" {:.2}x |", rates[1] / rates[0]);
    }
    Ok(())
}
