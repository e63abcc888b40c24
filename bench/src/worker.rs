//! The real worker's pattern, as the `vgi` crate's worker (0.48, its `dispatch`
//! module) uses the store: at bind, a handful of small `kv_put`s per execution
//! id, read back later by `kv_get`; a table-in-out FINALIZE flush written as
//! one batch append of Arrow IPC batches (64 KiB to several MiB each), read back
//! by `scan(after = cursor, limit = 1)`, one batch per call; `clear` at the end.
//!
//! The one-entry scan after a cursor should cost about one indexed lookup:
//! compare its p50 with the `kv get 1 KiB` row's.

use std::time::Instant;

use vgi_storage::FunctionStorage;

use crate::stats::{Recorder, Sample};
use crate::workloads::Sizes;
use crate::{BenchResult, bail};

/// Small state entries each execution id puts at bind.
const BIND_KEYS: [&[u8]; 4] = [b"schema", b"options", b"phase", b"cursor"];

/// The sizes of the flushed batches, cycled: from 64 KiB to several MiB.
const BATCH_SIZES: [usize; 4] = [64 << 10, 256 << 10, 1 << 20, 3 << 20];

/// How many execution ids bind, and how many batches one flush writes.
fn counts(sizes: &Sizes) -> (usize, usize) {
    ((sizes.scopes / 20).max(4), (sizes.log_entries / 64).max(4))
}

fn execution(i: usize) -> Vec<u8> {
    format!("exec-{i:06}").into_bytes()
}

/// About 100 bytes of bind state for key `k` of execution `i`.
fn bind_value(i: usize, k: usize) -> Vec<u8> {
    let mut v = format!("{i}:{k}:").into_bytes();
    v.resize(100, b'a' + u8::try_from(k % 26).unwrap_or(0));
    v
}

/// Batch `i`: its number, then bytes that depend on it.
fn batch(i: usize) -> Vec<u8> {
    let len = BATCH_SIZES[i % BATCH_SIZES.len()];
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(i as u64).to_le_bytes());
    v.extend((8..len).map(|j| u8::try_from((j.wrapping_mul(31) ^ i) & 0xff).unwrap_or(0)));
    v
}

fn sample(ops: usize, bytes: usize, secs: f64, lat_ns: Vec<u64>) -> Sample {
    Sample {
        ops: ops as u64,
        bytes: bytes as u64,
        secs,
        lat_ns,
        extra: std::collections::BTreeMap::new(),
    }
}

/// Run `f`, pushing its latency in nanoseconds.
fn timed<T>(lat: &mut Vec<u64>, f: impl FnOnce() -> BenchResult<T>) -> BenchResult<T> {
    let t = Instant::now();
    let r = f();
    lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    r
}

/// The worker's pattern; every value read back is checked.
pub(crate) fn worker_pattern(
    store: &dyn FunctionStorage,
    sizes: &Sizes,
    rec: &mut Recorder,
) -> BenchResult<()> {
    let (execs, batches) = counts(sizes);
    let puts = execs * BIND_KEYS.len();

    let mut lat = Vec::with_capacity(puts);
    let start = Instant::now();
    for i in 0..execs {
        let scope = execution(i);
        for (k, key) in BIND_KEYS.iter().enumerate() {
            timed(&mut lat, || {
                Ok(store.kv_put(&scope, key, &bind_value(i, k))?)
            })?;
        }
    }
    rec.record(
        "worker.bind.put",
        sample(puts, puts * 100, start.elapsed().as_secs_f64(), lat),
    );

    let mut lat = Vec::with_capacity(puts);
    let start = Instant::now();
    for i in 0..execs {
        let scope = execution(i);
        for (k, key) in BIND_KEYS.iter().enumerate() {
            let got = timed(&mut lat, || Ok(store.kv_get(&scope, key)?))?;
            if got.as_deref() != Some(bind_value(i, k).as_slice()) {
                bail!("worker.bind.get: execution {i} key {k} read back wrong");
            }
        }
    }
    rec.record(
        "worker.bind.get",
        sample(puts, puts * 100, start.elapsed().as_secs_f64(), lat),
    );

    // One execution flushes its output, then the source reads it back.
    let scope = execution(0);
    let (ns, key) = (b"finalize".as_slice(), b"output".as_slice());
    let values: Vec<Vec<u8>> = (0..batches).map(batch).collect();
    let bytes: usize = values.iter().map(Vec::len).sum();
    let mut lat = Vec::with_capacity(1);
    let start = Instant::now();
    let ids = timed(&mut lat, || {
        Ok(store.append_batch(&scope, ns, key, &values)?)
    })?;
    rec.record(
        "worker.flush",
        sample(batches, bytes, start.elapsed().as_secs_f64(), lat),
    );
    if ids.len() != batches || ids.windows(2).any(|w| w[0] >= w[1]) {
        bail!(
            "worker.flush: {} ids for {batches} batches, or not increasing",
            ids.len()
        );
    }

    let mut lat = Vec::with_capacity(batches + 1);
    let mut cursor = -1;
    let mut read = 0;
    let start = Instant::now();
    loop {
        let page = timed(&mut lat, || Ok(store.scan(&scope, ns, key, cursor, 1)?))?;
        let Some(entry) = page.first() else {
            break;
        };
        if page.len() != 1
            || values.get(read) != Some(&entry.value)
            || ids.get(read) != Some(&entry.id)
        {
            bail!("worker.scan1: call {read} returned the wrong batch or more than one");
        }
        cursor = entry.id;
        read += 1;
    }
    rec.record(
        "worker.scan1",
        sample(lat.len(), bytes, start.elapsed().as_secs_f64(), lat),
    );
    if read != batches {
        bail!("worker.scan1: read {read} batches back of {batches}");
    }

    let mut lat = Vec::with_capacity(execs);
    let start = Instant::now();
    for i in 0..execs {
        timed(&mut lat, || Ok(store.clear(&execution(i))?))?;
    }
    rec.record(
        "worker.clear",
        sample(execs, 0, start.elapsed().as_secs_f64(), lat),
    );
    for i in 0..execs {
        let scope = execution(i);
        if store.kv_get(&scope, BIND_KEYS[0])?.is_some()
            || !store.scan(&scope, ns, key, -1, 1)?.is_empty()
        {
            bail!("worker.clear: execution {i} still holds state");
        }
    }
    Ok(())
}
