//! Several processes popping one queue: this backend beside raw rusqlite with
//! SQLite's own busy handler, on the same file, back to back in each run.
//!
//! Run with `cargo run --release -p vgi-storage-sqlite --example drain_processes`.
//! `VGI_BENCH_RUNS` runs (default 3), `VGI_BENCH_ITEMS` items per drain
//! (default 30000), `VGI_BENCH_PROCS` process counts (default `2,4`),
//! `VGI_BENCH_DIR` the directory for the files (default: the temp dir).
//! Prints each drain's rate, median time per pop and items per process.

#![allow(clippy::cast_precision_loss)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};
use vgi_storage_core::FunctionStorage;
use vgi_storage_sqlite::SqliteStorage;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const POP: &str = "DELETE FROM vgi_queue WHERE id =
    (SELECT id FROM vgi_queue WHERE scope = ?1 ORDER BY id LIMIT 1) RETURNING value";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, cmd, which, path] = args.as_slice()
        && cmd == "child"
    {
        return child(which, Path::new(path));
    }
    let runs: usize = env_or("VGI_BENCH_RUNS", 3);
    let items: u32 = env_or("VGI_BENCH_ITEMS", 30_000);
    let procs: Vec<usize> = std::env::var("VGI_BENCH_PROCS")
        .unwrap_or_else(|_| "2,4".to_owned())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let base = std::env::var_os("VGI_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let mut summary: Vec<(String, Vec<f64>)> = Vec::new();
    for run in 0..runs {
        for &n in &procs {
            let mut order = ["raw", "sqlite"];
            if run % 2 == 1 {
                order.reverse();
            }
            for which in order {
                let dir = tempfile::tempdir_in(&base)?;
                let path = dir.path().join("state.db");
                {
                    let store = SqliteStorage::open(&path)?;
                    let all: Vec<Vec<u8>> = (0..items).map(|i| i.to_be_bytes().to_vec()).collect();
                    store.queue_push(b"q", &all)?;
                }
                let (rate, p50, counts) = drain(which, &path, n)?;
                assert_eq!(counts.iter().sum::<u32>(), items, "{counts:?}");
                println!(
                    "run {} {which:>6} {n}p: {rate:>8.0} pops/s, p50 {:>5.0} us, per process {counts:?}",
                    run + 1,
                    p50.as_secs_f64() * 1e6
                );
                let label = format!("{which} {n}p");
                match summary.iter_mut().find(|(l, _)| *l == label) {
                    Some((_, v)) => v.push(rate),
                    None => summary.push((label, vec![rate])),
                }
            }
        }
    }
    for (label, mut v) in summary {
        v.sort_by(f64::total_cmp);
        println!("median {label}: {:.0} pops/s", v[v.len() / 2]);
    }
    Ok(())
}

fn drain(which: &str, path: &Path, n: usize) -> Res<(f64, Duration, Vec<u32>)> {
    let exe = std::env::current_exe()?;
    let mut children = (0..n)
        .map(|_| {
            Command::new(&exe)
                .args(["child", which])
                .arg(path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut outs = Vec::new();
    for c in &mut children {
        let mut out = BufReader::new(c.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        outs.push(out);
    }
    let start = Instant::now();
    for c in &mut children {
        c.stdin.take().ok_or("no stdin")?.write_all(b"go\n")?;
    }
    let mut texts = Vec::new();
    for mut out in outs {
        let mut text = String::new();
        out.read_to_string(&mut text)?;
        texts.push(text);
    }
    let secs = start.elapsed().as_secs_f64();
    let mut counts = Vec::new();
    let mut lat = Vec::new();
    for (c, text) in children.iter_mut().zip(texts) {
        if !c.wait()?.success() {
            return Err("child failed".into());
        }
        let mut nums = text.split_whitespace().map(str::parse::<u64>);
        counts.push(u32::try_from(nums.next().ok_or("no count")??)?);
        for ns in nums {
            lat.push(ns?);
        }
    }
    lat.sort_unstable();
    let p50 = Duration::from_nanos(lat.get(lat.len() / 2).copied().unwrap_or(0));
    let total: u32 = counts.iter().sum();
    Ok((f64::from(total) / secs, p50, counts))
}

fn child(which: &str, path: &Path) -> Res<()> {
    let raw = (which == "raw")
        .then(|| -> rusqlite::Result<Connection> {
            let c = Connection::open(path)?;
            c.busy_timeout(Duration::from_secs(10))?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.pragma_update(None, "cache_size", -8192)?;
            Ok(c)
        })
        .transpose()?;
    let store = if raw.is_none() {
        Some(SqliteStorage::open(path)?)
    } else {
        None
    };
    println!("ready");
    std::io::stdout().flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let mut lat = Vec::new();
    loop {
        let t = Instant::now();
        let got = match (&raw, &store) {
            (Some(c), _) => c
                .prepare_cached(POP)?
                .query_row([&b"q"[..]], |r| r.get::<_, Vec<u8>>(0))
                .optional()?,
            (_, Some(s)) => s.queue_pop(b"q")?,
            _ => None,
        };
        lat.push(t.elapsed().as_nanos());
        if got.is_none() {
            break;
        }
    }
    lat.pop();
    let mut out = format!("{}", lat.len());
    for ns in lat {
        out.push(' ');
        out.push_str(&ns.to_string());
    }
    println!("{out}");
    Ok(())
}
