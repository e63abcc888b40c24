//! A VGI worker's three uses of shared state, played by real processes sharing one store.
//!
//! Run: `cargo run --example worker` (the default backend: SQLite in the per-user
//! directory), or pick another with `VGI_WORKER_SHARED_STORAGE=redb:/tmp/w.redb?multi_process=true`.
//!
//! 1. Buffering function: sink processes append batches to one log; a source
//!    process scans them back in order.
//! 2. Aggregate: processes add to per-group counters through compare-and-swap.
//! 3. Parallel scan: processes drain one work queue; every item is claimed once.
//!
//! Where the store is not shared across processes (memory), the roles run as
//! threads of this process instead. The example ends with a check of every
//! result and exits non-zero if any fails.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vgi_storage::{FunctionStorage, FunctionStorageExt, SharedStorage, from_env};

const WORKERS: usize = 3;
const BATCHES_PER_SINK: usize = 40;
const INCREMENTS_PER_WORKER: usize = 60;
const GROUPS: usize = 4;
const WORK_ITEMS: usize = 240;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Outcome<T = ()> = Result<T, Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--role") => child(&args[2..]),
        _ => parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one role does, given the store, the run's scope and the worker's index.
/// Returns the lines to report to the parent (claimed work items).
fn run_role(
    store: &dyn FunctionStorage,
    role: &str,
    scope: &[u8],
    index: usize,
) -> Outcome<Vec<String>> {
    match role {
        "sink" => {
            let batches: Vec<Vec<u8>> = (0..BATCHES_PER_SINK)
                .map(|j| format!("sink {index} batch {j:03}").into_bytes())
                .collect();
            // A sink appends as batches arrive: half one at a time, half as one batch call.
            let (single, rest) = batches.split_at(BATCHES_PER_SINK / 2);
            for batch in single {
                store.append(scope, b"buffer", b"batches", batch)?;
            }
            store.append_batch(scope, b"buffer", b"batches", rest)?;
            Ok(Vec::new())
        }
        "aggregate" => {
            for i in 0..INCREMENTS_PER_WORKER {
                let group = format!("group-{}", (i + index) % GROUPS);
                store.kv_update(scope, group.as_bytes(), |old| {
                    let n = old
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u64::from_le_bytes);
                    Some((n + 1).to_le_bytes().to_vec())
                })?;
            }
            Ok(Vec::new())
        }
        "scan" => {
            let mut claimed = Vec::new();
            while let Some(item) = store.queue_pop(scope)? {
                claimed.push(String::from_utf8(item)?);
            }
            Ok(claimed)
        }
        other => Err(format!("unknown role {other}").into()),
    }
}

fn child(args: &[String]) -> Outcome {
    let [role, scope, index] = args else {
        return Err("usage: worker --role ROLE SCOPE INDEX".into());
    };
    let env = from_env()?;
    for line in run_role(env.storage.as_ref(), role, scope.as_bytes(), index.parse()?)? {
        println!("{line}");
    }
    Ok(())
}

/// Run `role` in `WORKERS` processes (or threads, where the store is not shared)
/// and collect what they report.
fn run_workers(store: &SharedStorage, role: &str, scope: &str) -> Outcome<Vec<String>> {
    if store.capabilities().shared_across_processes {
        let exe = std::env::current_exe()?;
        let children = (0..WORKERS)
            .map(|i| {
                Command::new(&exe)
                    .args(["--role", role, scope, &i.to_string()])
                    .stdout(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut lines = Vec::new();
        for child in children {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                return Err(format!("a {role} process failed: {}", out.status).into());
            }
            lines.extend(String::from_utf8(out.stdout)?.lines().map(str::to_owned));
        }
        Ok(lines)
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..WORKERS)
                .map(|i| s.spawn(move || run_role(store.as_ref(), role, scope.as_bytes(), i)))
                .collect();
            let mut lines = Vec::new();
            for handle in handles {
                lines.extend(handle.join().map_err(|_| "a worker thread panicked")??);
            }
            Ok(lines)
        })
    }
}

fn parent() -> Outcome {
    let start = Instant::now();
    let env = from_env()?;
    let store = Arc::clone(&env.storage);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let scope = format!("worker-example-{}-{nanos}", std::process::id());
    let shared = store.capabilities().shared_across_processes;
    println!(
        "store {} ({}; start-up gc removed {} stale scopes)",
        store.name(),
        if shared {
            "shared: roles run as processes"
        } else {
            "not shared: roles run as threads"
        },
        env.gc.scopes_removed()
    );
    let result = play(&store, &scope);
    // Leave nothing behind, whatever happened.
    store.clear(scope.as_bytes())?;
    result?;
    println!("check: ok ({} ms)", start.elapsed().as_millis());
    Ok(())
}

fn play(store: &SharedStorage, scope: &str) -> Outcome {
    let scope_bytes = scope.as_bytes();

    // 1. Buffering: sinks append, one source scans back in pages.
    run_workers(store, "sink", scope)?;
    let entries = store.scan_all(scope_bytes, b"buffer", b"batches", -1, 16)?;
    let ids_ascending = entries.windows(2).all(|w| w[0].id < w[1].id);
    let mut per_sink: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in &entries {
        let text = String::from_utf8(entry.value.clone())?;
        let sink = text.split(" batch").next().unwrap_or_default().to_owned();
        per_sink.entry(sink).or_default().push(text);
    }
    let in_order = per_sink.values().all(|v| v.windows(2).all(|w| w[0] < w[1]));
    println!(
        "buffering: {} sinks appended {} batches; the source read {} back, ids ascending: {}, each sink in order: {}",
        WORKERS,
        WORKERS * BATCHES_PER_SINK,
        entries.len(),
        ids_ascending,
        in_order
    );
    if entries.len() != WORKERS * BATCHES_PER_SINK || !ids_ascending || !in_order {
        return Err("buffering check failed".into());
    }

    // 2. Aggregate: per-group counters through compare-and-swap.
    run_workers(store, "aggregate", scope)?;
    let mut total = 0;
    for g in 0..GROUPS {
        let raw = store.kv_get(scope_bytes, format!("group-{g}").as_bytes())?;
        total += raw
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
    }
    let expected = (WORKERS * INCREMENTS_PER_WORKER) as u64;
    println!(
        "aggregate: {WORKERS} workers made {expected} increments over {GROUPS} groups; the groups sum to {total}"
    );
    if total != expected {
        return Err(format!("aggregate check failed: {total} != {expected} (lost updates)").into());
    }

    // 3. Parallel scan: one queue, drained by every worker.
    let items: Vec<Vec<u8>> = (0..WORK_ITEMS)
        .map(|i| format!("row-group {i:04}").into_bytes())
        .collect();
    store.queue_push(scope_bytes, &items)?;
    let claimed = run_workers(store, "scan", scope)?;
    let distinct: BTreeSet<&String> = claimed.iter().collect();
    println!(
        "parallel scan: {WORK_ITEMS} work items pushed; {} claimed, {} distinct",
        claimed.len(),
        distinct.len()
    );
    if claimed.len() != WORK_ITEMS || distinct.len() != WORK_ITEMS {
        return Err("parallel scan check failed: an item was lost or claimed twice".into());
    }
    Ok(())
}
