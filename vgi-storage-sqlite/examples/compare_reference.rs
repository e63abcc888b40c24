//! Side-by-side measurement of `SqliteStorage` against a baseline written the
//! way the reference implementation (vgi 0.5.0) works: one `Mutex<Connection>`,
//! a second autocommit statement (the scope touch) per write, no statement
//! cache, its `WITHOUT ROWID` kv schema, select-then-delete gc, and its default
//! page cache (2 MB). Each scan row appends its own log and reads it straight
//! back, as a buffering function's sink and source do, so the reference reads
//! pages its one connection just wrote, as it does in a worker.
//!
//! Run with `cargo run --release -p vgi-storage-sqlite --example compare_reference`.
//! `VGI_BENCH_DIR` picks the directory for the files (default: the temp dir);
//! `VGI_BENCH_RUNS` the number of runs whose median is shown (default 3);
//! `VGI_BENCH_ONLY` runs only the workloads whose name contains it.
//! `VGI_BENCH_READERS`, `VGI_BENCH_MMAP` and `VGI_BENCH_CACHE_KIB` set the
//! backend's read connections, mmap size and cache size.

// A measurement harness: rates are f64 by nature, and the workload list reads
// best as one long function in the order of the table.
#![allow(clippy::cast_precision_loss, clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use vgi_storage_core::{
    Capabilities, ErrorKind, FunctionStorage, FunctionStorageExt, GcReport, LogEntry, ManualClock,
    Result, SharedStorage, StorageError,
};
use vgi_storage_sqlite::SqliteStorage;

/// The tables of a file written by the reference implementation.
const REFERENCE_SCHEMA: &str = include_str!("../tests/reference_schema.sql");

const N: usize = 10_000;
const VALUE: usize = 1024;
const PAGE: usize = 100;
/// Entries of the 64 KiB (Arrow-batch-sized) scan rows, and their page.
const BIG_N: usize = 1000;
const BIG: usize = 64 * 1024;
const BIG_PAGE: usize = 16;
/// Entries of the worker-cursor row: 1 MiB Arrow batches read back one per
/// call, `scan(after = cursor, limit = 1)`, as a vgi worker's FINALIZE does.
const HUGE_N: usize = 64;
const HUGE: usize = 1 << 20;
/// Scopes of the clear row.
const CLEAR_SCOPES: usize = 1000;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One table row: workload, target, reference rates, our rates, per-run ratios.
type Row = (String, &'static str, Vec<f64>, Vec<f64>, Vec<f64>);

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("pop-child") {
        return pop_child(&args[2], Path::new(&args[3]));
    }
    let runs: usize = std::env::var("VGI_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let base = std::env::var_os("VGI_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let mut rows: Vec<Row> = Vec::new();
    let mut fairness = Vec::new();
    for run in 0..runs {
        // Both stores live side by side; each workload runs on one and then
        // at once on the other (the order alternating by run), so load from
        // other programs on the machine hits both alike.
        let dir = tempfile::tempdir_in(&base)?;
        let mut envs = Vec::new();
        for which in ["reference", "sqlite"] {
            let sub = dir.path().join(which);
            std::fs::create_dir(&sub)?;
            envs.push(Env::new(which, &sub)?);
        }
        if run % 2 == 1 {
            envs.reverse();
        }
        let only = std::env::var("VGI_BENCH_ONLY").unwrap_or_default();
        let steps = steps()
            .into_iter()
            .filter(|(name, ..)| name.contains(only.as_str()));
        for (i, (name, target, step)) in steps.enumerate() {
            let mut rate = [0.0; 2];
            for env in &envs {
                let (r, note) = step(env)?;
                let slot = usize::from(env.which != "reference");
                rate[slot] = r;
                if let Some(note) = note {
                    fairness.push(format!("{}, run {}: {note}", env.which, run + 1));
                }
            }
            if run == 0 {
                rows.push((name.to_owned(), target, Vec::new(), Vec::new(), Vec::new()));
            }
            rows[i].2.push(rate[0]);
            rows[i].3.push(rate[1]);
            rows[i].4.push(rate[1] / rate[0]);
        }
    }
    println!("median of {runs} runs, operations (items, entries, scopes) per second\n");
    println!("| workload | reference approach | vgi-storage-sqlite | ratio | target |");
    println!("|---|---:|---:|---:|---:|");
    for (name, target, r, s, ratio) in &mut rows {
        let (r, s, ratio) = (median(r), median(s), median(ratio));
        println!("| {name} | {r:.0} | {s:.0} | {ratio:.2}x | {target} |");
    }
    println!("\nratio: median of the per-run ratios (both measured back to back in a run)");
    println!("\nitems popped by each of 2 processes draining {N} items:");
    for line in fairness {
        println!("- {line}");
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn open(which: &str, path: &Path, clock: Option<ManualClock>) -> Res<SharedStorage> {
    if which == "reference" {
        return Ok(Arc::new(Baseline::open(path)?));
    }
    let mut b = SqliteStorage::builder(path);
    if let Some(n) = std::env::var("VGI_BENCH_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        b = b.read_connections(n);
    }
    if let Some(n) = std::env::var("VGI_BENCH_MMAP")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        b = b.mmap_size(n);
    }
    if let Some(n) = std::env::var("VGI_BENCH_CACHE_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        b = b.cache_size_kib(n);
    }
    if let Some(c) = clock {
        b = b.clock(Arc::new(c));
    }
    Ok(Arc::new(b.open()?))
}

/// One backend's store, its gc store and clock, in its own directory.
struct Env {
    which: &'static str,
    path: PathBuf,
    store: SharedStorage,
    gc_path: PathBuf,
    gc_store: SharedStorage,
    clock: ManualClock,
}

impl Env {
    fn new(which: &'static str, dir: &Path) -> Res<Self> {
        let path = dir.join("state.db");
        let gc_path = dir.join("gc.db");
        let clock = ManualClock::new(1_000_000_000);
        Ok(Self {
            which,
            store: open(which, &path, None)?,
            gc_store: open(which, &gc_path, Some(clock.clone()))?,
            path,
            gc_path,
            clock,
        })
    }
}

type Step = fn(&Env) -> Res<(f64, Option<String>)>;

fn rate(n: usize, since: Instant) -> f64 {
    n as f64 / since.elapsed().as_secs_f64()
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

fn value() -> Vec<u8> {
    vec![0xab; VALUE]
}

/// A fixed pseudo-random order of the keys, the same for both backends.
fn shuffled(seed: u64) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v: Vec<usize> = (0..N).collect();
    for i in (1..N).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn threads2(store: &SharedStorage, f: fn(&dyn FunctionStorage, u64) -> Result<usize>) -> Res<f64> {
    let start = Instant::now();
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            let s = Arc::clone(store);
            std::thread::spawn(move || f(&*s, t + 1))
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| "thread panicked")??;
    }
    Ok(rate(total, start))
}

fn gets(store: &dyn FunctionStorage, seed: u64) -> Result<usize> {
    let mut n = 0;
    for i in shuffled(seed) {
        n += usize::from(store.kv_get(b"scope", &key(i))?.is_some());
    }
    assert_eq!(n, N);
    Ok(n)
}

fn paged_scans(store: &dyn FunctionStorage, _: u64) -> Result<usize> {
    let n = store.scan_all(b"scope", b"ns", b"log-mt", -1, PAGE)?.len();
    assert_eq!(n, N);
    Ok(n)
}

fn pops(store: &dyn FunctionStorage, _: u64) -> Result<usize> {
    Ok(store.queue_drain(b"q")?.len())
}

/// Append `n` entries of `size` bytes to log `log` of scope `scope`, one call each.
fn fill_log(store: &dyn FunctionStorage, log: &[u8], n: usize, size: usize) -> Result<()> {
    let entry = vec![0xab; size];
    for _ in 0..n {
        store.append(b"scope", b"ns", log, &entry)?;
    }
    Ok(())
}

fn clear_scope(i: usize) -> Vec<u8> {
    format!("clear-{i:06}").into_bytes()
}

fn items() -> Vec<Vec<u8>> {
    (0..N).map(key).collect()
}

/// A scan row: write `n` entries of `size` bytes to the log `log`, then read
/// them back at once, in one call (`page` `None`) or in pages of `page`; the
/// rate of the read.
fn scan_row(e: &Env, log: &[u8], n: usize, size: usize, page: Option<usize>) -> Result<f64> {
    fill_log(&*e.store, log, n, size)?;
    let start = Instant::now();
    let read = match page {
        None => e.store.scan(b"scope", b"ns", log, -1, usize::MAX)?.len(),
        Some(page) => e.store.scan_all(b"scope", b"ns", log, -1, page)?.len(),
    };
    assert_eq!(read, n);
    Ok(rate(read, start))
}

fn steps() -> Vec<(&'static str, &'static str, Step)> {
    vec![
        ("kv_put 1 KiB, 10k keys", ">= 1.3x", |e| {
            let value = value();
            let start = Instant::now();
            for i in 0..N {
                e.store.kv_put(b"scope", &key(i), &value)?;
            }
            Ok((rate(N, start), None))
        }),
        ("kv_get, 1 thread", ">= 2x", |e| {
            let start = Instant::now();
            gets(&*e.store, 1)?;
            Ok((rate(N, start), None))
        }),
        ("kv_get, 2 threads (total)", ">= 3x", |e| {
            Ok((threads2(&e.store, gets)?, None))
        }),
        ("append 1 KiB", ">= 1.3x", |e| {
            let value = value();
            let start = Instant::now();
            for _ in 0..N {
                e.store.append(b"scope", b"ns", b"log", &value)?;
            }
            Ok((rate(N, start), None))
        }),
        // Each scan row writes its own log and reads it back at once, as a
        // buffering function's sink and source do: the reference reads on the
        // connection that just wrote the pages (its cache holds the newest),
        // ours wherever its read path puts the call.
        ("scan 10k x 1 KiB, whole log in one call", ">= 1.5x", |e| {
            Ok((scan_row(e, b"scan-1k-whole", N, VALUE, None)?, None))
        }),
        ("scan 10k x 1 KiB, pages of 100", ">= 1.5x", |e| {
            Ok((scan_row(e, b"scan-1k-paged", N, VALUE, Some(PAGE))?, None))
        }),
        ("scan 1k x 64 KiB, whole log in one call", ">= 1.5x", |e| {
            Ok((scan_row(e, b"scan-64k-whole", BIG_N, BIG, None)?, None))
        }),
        ("scan 1k x 64 KiB, pages of 16", ">= 1.5x", |e| {
            Ok((
                scan_row(e, b"scan-64k-paged", BIG_N, BIG, Some(BIG_PAGE))?,
                None,
            ))
        }),
        (
            "scan 64 x 1 MiB, one entry per call (worker cursor)",
            "",
            |e| {
                fill_log(&*e.store, b"scan-1m-cursor", HUGE_N, HUGE)?;
                let start = Instant::now();
                let (mut n, mut cursor) = (0, -1);
                while let Some(entry) = e
                    .store
                    .scan(b"scope", b"ns", b"scan-1m-cursor", cursor, 1)?
                    .pop()
                {
                    assert_eq!(entry.value.len(), HUGE);
                    (n, cursor) = (n + 1, entry.id);
                }
                assert_eq!(n, HUGE_N);
                Ok((rate(n, start), None))
            },
        ),
        (
            "scan 10k x 1 KiB, pages of 100, 2 threads (total)",
            "",
            |e| {
                fill_log(&*e.store, b"log-mt", N, VALUE)?;
                Ok((threads2(&e.store, paged_scans)?, None))
            },
        ),
        ("queue_push, one call of 10k items", ">= 2x", |e| {
            let items = items();
            let start = Instant::now();
            e.store.queue_push(b"q", &items)?;
            Ok((rate(N, start), None))
        }),
        ("queue_pop until empty", "", |e| {
            let start = Instant::now();
            let n = pops(&*e.store, 0)?;
            assert_eq!(n, N);
            Ok((rate(n, start), None))
        }),
        ("queue_push, 10k calls of one item", "", |e| {
            let items = items();
            let start = Instant::now();
            for item in &items {
                e.store.queue_push(b"q", std::slice::from_ref(item))?;
            }
            Ok((rate(N, start), None))
        }),
        ("queue_pop until empty, 2 threads (total)", "", |e| {
            Ok((threads2(&e.store, pops)?, None))
        }),
        (
            "queue_pop until empty, 2 processes (total)",
            "both progress",
            |e| {
                e.store.queue_push(b"q", &items())?;
                // Both children pop at once; the rate counts process start-up too.
                let exe = std::env::current_exe()?;
                let start = Instant::now();
                let spawned: Vec<_> = (0..2)
                    .map(|_| {
                        Command::new(&exe)
                            .args(["pop-child", e.which])
                            .arg(&e.path)
                            .stdout(std::process::Stdio::piped())
                            .spawn()
                    })
                    .collect::<std::io::Result<_>>()?;
                let mut counts = Vec::new();
                for child in spawned {
                    let out = child.wait_with_output()?;
                    let text = String::from_utf8_lossy(&out.stdout);
                    counts.push(
                        text.trim()
                            .parse::<usize>()
                            .map_err(|_| format!("child said {text:?}"))?,
                    );
                }
                let r = rate(N, start);
                assert_eq!(
                    counts.iter().sum::<usize>(),
                    N,
                    "items lost or duplicated: {counts:?}"
                );
                Ok((r, Some(format!("{counts:?}"))))
            },
        ),
        (
            "clear one scope of 4 kv + 4 log + 4 queue items (scopes/s)",
            ">= 2x",
            |e| {
                let small = vec![0xcd; 100];
                let entry = value();
                for i in 0..CLEAR_SCOPES {
                    let scope = clear_scope(i);
                    for k in 0..4 {
                        e.store.kv_put(&scope, &key(k), &small)?;
                        e.store.append(&scope, b"ns", b"log", &entry)?;
                    }
                    e.store
                        .queue_push(&scope, &[small.clone(), small.clone()])?;
                    e.store
                        .queue_push(&scope, &[small.clone(), small.clone()])?;
                }
                let start = Instant::now();
                for i in 0..CLEAR_SCOPES {
                    e.store.clear(&clear_scope(i))?;
                }
                let r = rate(CLEAR_SCOPES, start);
                for i in [0, CLEAR_SCOPES - 1] {
                    let scope = clear_scope(i);
                    assert!(e.store.kv_get(&scope, &key(0))?.is_none());
                    assert!(e.store.scan(&scope, b"ns", b"log", -1, 10)?.is_empty());
                    assert!(e.store.queue_pop(&scope)?.is_none());
                }
                Ok((r, None))
            },
        ),
        ("gc of 10k scopes, half stale (scopes/s)", ">= 10x", |e| {
            for i in 0..N {
                e.gc_store.kv_put(&key(i), b"k", b"v")?;
                if i == N / 2 - 1 {
                    e.clock.advance(Duration::from_secs(3600));
                }
            }
            if e.which == "reference" {
                // The baseline stamps with the system clock in seconds.
                Baseline::backdate_below(&e.gc_path, &key(N / 2))?;
            }
            let start = Instant::now();
            let removed = e.gc_store.gc(Duration::from_secs(1800))?.scopes_removed();
            let r = rate(removed, start);
            assert_eq!(removed, N / 2);
            assert_eq!(
                e.gc_store.kv_get(&key(N - 1), b"k")?.as_deref(),
                Some(&b"v"[..])
            );
            Ok((r, None))
        }),
    ]
}

fn pop_child(which: &str, path: &Path) -> Res<()> {
    let store = open(which, path, None)?;
    let mut n = 0;
    while store.queue_pop(b"q")?.is_some() {
        n += 1;
    }
    println!("{n}");
    Ok(())
}

/// The reference's way, rebuilt: infallible-style statements, now as Results.
struct Baseline {
    conn: Mutex<Connection>,
}

fn other(op: &'static str, e: rusqlite::Error) -> StorageError {
    StorageError::operation("reference", op, ErrorKind::Other, "baseline", e)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Baseline {
    fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute_batch(REFERENCE_SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn backdate_below(path: &Path, below: &[u8]) -> rusqlite::Result<()> {
        let conn = Connection::open(path)?;
        conn.execute(
            "UPDATE scope_touch SET touched_at = 0 WHERE scope < ?1",
            [below],
        )?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn touch(conn: &Connection, scope: &[u8]) {
        let _ = conn.execute(
            "INSERT INTO scope_touch (scope, touched_at) VALUES (?1, ?2)
             ON CONFLICT(scope) DO UPDATE SET touched_at = excluded.touched_at",
            params![scope, now_secs()],
        );
    }
}

impl FunctionStorage for Baseline {
    fn name(&self) -> &'static str {
        "reference"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }
    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.lock()
            .query_row(
                "SELECT value FROM function_state WHERE scope = ?1 AND key = ?2",
                params![scope, key],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| other("kv_get", e))
    }
    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO function_state (scope, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT(scope, key) DO UPDATE SET value = excluded.value",
            params![scope, key, value],
        )
        .map_err(|e| other("kv_put", e))?;
        Self::touch(&conn, scope);
        Ok(())
    }
    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.lock()
            .execute(
                "DELETE FROM function_state WHERE scope = ?1 AND key = ?2",
                params![scope, key],
            )
            .map_err(|e| other("kv_del", e))?;
        Ok(())
    }
    fn kv_compare_and_swap(
        &self,
        _: &[u8],
        _: &[u8],
        _: Option<&[u8]>,
        _: Option<&[u8]>,
    ) -> Result<bool> {
        Err(StorageError::Unsupported {
            backend: "reference".into(),
            hint: "no CAS".into(),
        })
    }
    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO function_log (scope, ns, key, value) VALUES (?1, ?2, ?3, ?4)",
            params![scope, ns, key, value],
        )
        .map_err(|e| other("append", e))?;
        Self::touch(&conn, scope);
        Ok(conn.last_insert_rowid())
    }
    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let conn = self.lock();
        let limit = i64::try_from(limit).unwrap_or(-1);
        let mut stmt = conn
            .prepare(
                "SELECT id, value FROM function_log
                 WHERE scope = ?1 AND ns = ?2 AND key = ?3 AND id > ?4
                 ORDER BY id LIMIT ?5",
            )
            .map_err(|e| other("scan", e))?;
        let rows = stmt
            .query_map(params![scope, ns, key, after_id, limit], |r| {
                Ok(LogEntry {
                    id: r.get(0)?,
                    value: r.get(1)?,
                })
            })
            .map_err(|e| other("scan", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| other("scan", e))
    }
    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| other("queue_push", e))?;
        for item in items {
            tx.execute(
                "INSERT INTO work_queue (scope, value) VALUES (?1, ?2)",
                params![scope, item],
            )
            .map_err(|e| other("queue_push", e))?;
        }
        tx.commit().map_err(|e| other("queue_push", e))?;
        Self::touch(&conn, scope);
        Ok(())
    }
    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        self.lock()
            .query_row(
                "DELETE FROM work_queue WHERE id = (
                     SELECT id FROM work_queue WHERE scope = ?1 ORDER BY id LIMIT 1
                 ) RETURNING value",
                params![scope],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| other("queue_pop", e))
    }
    fn clear(&self, scope: &[u8]) -> Result<()> {
        let conn = self.lock();
        for sql in [
            "DELETE FROM function_state WHERE scope = ?1",
            "DELETE FROM function_log WHERE scope = ?1",
            "DELETE FROM work_queue WHERE scope = ?1",
            "DELETE FROM scope_touch WHERE scope = ?1",
        ] {
            conn.execute(sql, params![scope])
                .map_err(|e| other("clear", e))?;
        }
        Ok(())
    }
    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let cutoff = now_secs() - ttl.as_secs() as i64;
        let conn = self.lock();
        let stale: Vec<Vec<u8>> = conn
            .prepare("SELECT scope FROM scope_touch WHERE touched_at < ?1")
            .and_then(|mut s| s.query_map(params![cutoff], |row| row.get(0))?.collect())
            .map_err(|e| other("gc", e))?;
        for scope in &stale {
            for sql in [
                "DELETE FROM function_state WHERE scope = ?1",
                "DELETE FROM function_log WHERE scope = ?1",
                "DELETE FROM work_queue WHERE scope = ?1",
                "DELETE FROM scope_touch WHERE scope = ?1",
            ] {
                conn.execute(sql, params![scope])
                    .map_err(|e| other("gc", e))?;
            }
        }
        Ok(GcReport { scopes: stale })
    }
}
