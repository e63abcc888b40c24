//! Checks at sizes where caps and cutoffs hide: long logs, many stale scopes,
//! long queues, long names and values above 16 MiB.
//!
//! Each size has a default that keeps the suite quick and a deeper one under
//! `VGI_CONFORMANCE_DEEP`. Every paging or draining loop stops after the
//! expected count and fails, so a broken backend cannot make a check run forever.

use std::collections::BTreeSet;
use std::time::Duration;

use vgi_storage_core::{ErrorKind, FunctionStorage, FunctionStorageExt, LogEntry};

use crate::concurrency::item;
use crate::harness::{
    CheckResult, Failure, OrFail, Outcome, Run, ensure, ensure_eq, expect_kind, noise, scaled, show,
};

/// Above this declared `max_key_len`, the suite does not build names at the limit.
const NAME_LIMIT_CHECK_MAX: usize = 64 << 20;
/// The smallest value of the large-value check: just above 16 MiB.
const ABOVE_16_MIB: usize = (16 << 20) + 1;

/// Append `n` entries to `log`, mixing single appends and batches of several
/// sizes; returns the entries as the store must hold them.
pub(crate) fn make_log(
    st: &dyn FunctionStorage,
    log: (&[u8], &[u8], &[u8]),
    n: usize,
) -> Result<Vec<LogEntry>, Failure> {
    const SIZES: [usize; 4] = [1000, 1, 333, 7];
    let mut entries = Vec::with_capacity(n);
    let mut round = 0;
    while entries.len() < n {
        let size = SIZES[round % SIZES.len()].min(n - entries.len());
        round += 1;
        let values: Vec<Vec<u8>> = (entries.len()..entries.len() + size)
            .map(|i| format!("entry-{i}").into_bytes())
            .collect();
        let ids = if size == 1 {
            vec![
                st.append(log.0, log.1, log.2, &values[0])
                    .or_fail("append")?,
            ]
        } else {
            st.append_batch(log.0, log.1, log.2, &values)
                .or_fail("append_batch")?
        };
        ensure_eq!(
            ids.len(),
            values.len(),
            "ids returned by an append_batch of {} values",
            values.len()
        );
        for (id, value) in ids.into_iter().zip(values) {
            ensure!(
                entries.last().is_none_or(|e: &LogEntry| e.id < id),
                "append returned id {id} after id {:?} in the same log",
                entries.last().map(|e| e.id)
            );
            entries.push(LogEntry { id, value });
        }
    }
    Ok(entries)
}

/// Compare a read of a log with what it must hold, naming the first difference.
fn same_log(what: &str, got: &[LogEntry], want: &[LogEntry]) -> Result<(), Failure> {
    if let Some(i) = (0..got.len().min(want.len())).find(|i| got[*i] != want[*i]) {
        return Err(Failure::new(format!(
            "{what}: entry {i} is id {} {}, expected id {} {}",
            got[i].id,
            show(&got[i].value),
            want[i].id,
            show(&want[i].value)
        )));
    }
    ensure_eq!(got.len(), want.len(), "{what}: number of entries");
    Ok(())
}

/// Read a log by hand in pages of `limit`, stopping (and failing) after the
/// pages the expected length needs.
fn read_in_pages(
    st: &dyn FunctionStorage,
    log: (&[u8], &[u8], &[u8]),
    want: &[LogEntry],
    limit: usize,
) -> Result<(), Failure> {
    let mut got: Vec<LogEntry> = Vec::with_capacity(want.len());
    let mut after = -1;
    for _ in 0..=want.len() / limit + 1 {
        let page = st.scan(log.0, log.1, log.2, after, limit).or_fail("scan")?;
        let expected = limit.min(want.len() - got.len().min(want.len()));
        ensure_eq!(
            page.len(),
            expected,
            "entries in the page of scan(after_id {after}, limit {limit}) of a log of {} entries, after {} read",
            want.len(),
            got.len()
        );
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        got.extend(page);
    }
    same_log(&format!("the log read in pages of {limit}"), &got, want)
}

pub(crate) fn logs_of_ten_thousand_entries_read_whole_and_by_page(run: &Run<'_>) -> CheckResult {
    let n = scaled(10_000, 100_000);
    let env = run.env()?;
    let st = &*env.store;
    let log: (&[u8], &[u8], &[u8]) = (b"s", b"n", b"k");
    let want = make_log(st, log, n)?;
    let whole = st
        .scan(log.0, log.1, log.2, -1, usize::MAX)
        .or_fail("scan")?;
    same_log(
        &format!("scan(after_id -1, limit usize::MAX) of a log of {n} entries"),
        &whole,
        &want,
    )?;
    for page in [1000, 4096] {
        let all = st
            .scan_all(log.0, log.1, log.2, -1, page)
            .or_fail("scan_all")?;
        same_log(&format!("scan_all in pages of {page}"), &all, &want)?;
    }
    read_in_pages(st, log, &want, 997)?;
    let mid = want[n / 2].id;
    let tail = st
        .scan(log.0, log.1, log.2, mid, usize::MAX)
        .or_fail("scan")?;
    same_log(
        &format!("scan(after_id {mid}, limit usize::MAX), from the middle"),
        &tail,
        &want[n / 2 + 1..],
    )?;
    Ok(Outcome::Passed)
}

pub(crate) fn gc_removes_five_thousand_stale_scopes_in_one_call(run: &Run<'_>) -> CheckResult {
    let m = scaled(5_000, 50_000);
    let env = run.env()?;
    let st = &*env.store;
    let scope = |i: usize| format!("stale-{i}").into_bytes();
    for i in 0..m {
        let s = scope(i);
        match i % 3 {
            0 => st.kv_put(&s, b"k", b"v").or_fail("kv_put")?,
            1 => drop(st.append(&s, b"n", b"k", b"v").or_fail("append")?),
            _ => st.queue_push(&s, &[b"v".to_vec()]).or_fail("queue_push")?,
        }
    }
    env.clock().advance(Duration::from_secs(7200));
    st.kv_put(b"fresh", b"k", b"v").or_fail("kv_put")?;
    let report = st.gc(Duration::from_secs(3600)).or_fail("gc")?;
    let removed: BTreeSet<Vec<u8>> = report.scopes.iter().cloned().collect();
    ensure_eq!(
        removed.len(),
        report.scopes.len(),
        "distinct scopes in a gc report (each removed scope is reported once)"
    );
    ensure!(
        !removed.contains(&b"fresh"[..]),
        "gc removed a scope written within the ttl"
    );
    let missing: Vec<usize> = (0..m)
        .filter(|i| !removed.contains(&scope(*i)))
        .take(5)
        .collect();
    ensure!(
        removed.len() == m && missing.is_empty(),
        "one gc call should remove all {m} stale scopes; it reported {} (not e.g. stale-{missing:?})",
        removed.len()
    );
    for i in (0..m).step_by(97).chain([m - 1]) {
        let s = scope(i);
        ensure!(
            st.kv_get(&s, b"k").or_fail("kv_get")?.is_none()
                && st
                    .scan(&s, b"n", b"k", -1, usize::MAX)
                    .or_fail("scan")?
                    .is_empty()
                && st.queue_pop(&s).or_fail("queue_pop")?.is_none(),
            "scope stale-{i} still holds data after gc reported it removed"
        );
    }
    ensure_eq!(
        st.kv_get(b"fresh", b"k").or_fail("kv_get")?,
        Some(b"v".to_vec()),
        "the fresh scope after gc"
    );
    ensure_eq!(
        st.gc(Duration::from_secs(3600))
            .or_fail("gc")?
            .scopes_removed(),
        0,
        "scopes removed by a second gc right after the first"
    );
    Ok(Outcome::Passed)
}

pub(crate) fn queues_of_ten_thousand_items_drain_in_order(run: &Run<'_>) -> CheckResult {
    const SIZES: [usize; 3] = [1, 50, 999];
    let n = scaled(10_000, 100_000);
    let env = run.env()?;
    let st = &*env.store;
    let half: Vec<Vec<u8>> = (0..n / 2).map(item).collect();
    st.queue_push(b"q", &half).or_fail("queue_push")?;
    let mut pushed = n / 2;
    let mut round = 0;
    while pushed < n {
        let size = SIZES[round % SIZES.len()].min(n - pushed);
        round += 1;
        let items: Vec<Vec<u8>> = (pushed..pushed + size).map(item).collect();
        st.queue_push(b"q", &items).or_fail("queue_push")?;
        pushed += size;
    }
    for i in 0..n {
        let got = st.queue_pop(b"q").or_fail("queue_pop")?;
        if got.as_deref() != Some(&item(i)[..]) {
            return Err(Failure::new(format!(
                "pop {i} of a queue of {n} items (one push of {} then smaller ones) gave {}, expected {}",
                n / 2,
                got.as_deref().map_or_else(|| "None".to_owned(), show),
                show(&item(i))
            )));
        }
    }
    ensure_eq!(
        st.queue_pop(b"q").or_fail("queue_pop")?,
        None,
        "queue_pop after all {n} items were popped"
    );
    Ok(Outcome::Passed)
}

/// `base` with its last byte changed.
fn last_byte_flipped(base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    if let Some(b) = v.last_mut() {
        *b ^= 0x5a;
    }
    v
}

/// Every operation with scope, namespace and key names of `len` incompressible
/// bytes, next to names that differ from them only in the last byte or by one
/// byte of length.
fn long_names_work(st: &dyn FunctionStorage, len: usize, seed: u64) -> Result<(), Failure> {
    let s1 = noise(len, seed);
    let s2 = last_byte_flipped(&s1);
    let s3 = s1[..len - 1].to_vec();
    let k1 = noise(len, seed + 1);
    let k2 = last_byte_flipped(&k1);
    let n1 = noise(len, seed + 2);
    let at = |what: &str| format!("{what} with names of {len} bytes");
    st.kv_put(&s1, &k1, b"11").or_fail(&at("kv_put"))?;
    st.kv_put(&s1, &k2, b"12").or_fail(&at("kv_put"))?;
    st.kv_put(&s2, &k1, b"21").or_fail(&at("kv_put"))?;
    st.kv_put_batch(&s3, &[(k1.clone(), b"31".to_vec())])
        .or_fail(&at("kv_put_batch"))?;
    for (s, k, want) in [
        (&s1, &k1, Some(&b"11"[..])),
        (&s1, &k2, Some(b"12")),
        (&s2, &k1, Some(b"21")),
        (&s2, &k2, None),
        (&s3, &k1, Some(b"31")),
    ] {
        let got = st.kv_get(s, k).or_fail(&at("kv_get"))?;
        ensure_eq!(
            got.as_deref(),
            want,
            "kv_get with a scope and key of {len} bytes (names differing only in the last byte or one byte of length must stay distinct)"
        );
    }
    ensure!(
        st.kv_compare_and_swap(&s1, &k1, Some(b"11"), Some(b"11b"))
            .or_fail(&at("kv_compare_and_swap"))?,
        "a CAS with names of {len} bytes from the current value lost"
    );
    st.kv_del(&s1, &k2).or_fail(&at("kv_del"))?;
    ensure_eq!(
        st.kv_get(&s1, &k2).or_fail(&at("kv_get"))?,
        None,
        "kv_get after kv_del with names of {len} bytes"
    );
    let a = st.append(&s1, &n1, &k1, b"x").or_fail(&at("append"))?;
    let b = st
        .append_batch(&s1, &k1, &n1, &[b"y".to_vec()])
        .or_fail(&at("append_batch"))?;
    ensure_eq!(
        st.scan(&s1, &n1, &k1, -1, usize::MAX)
            .or_fail(&at("scan"))?,
        vec![LogEntry {
            id: a,
            value: b"x".to_vec()
        }],
        "scan of a log with scope, namespace and key of {len} bytes"
    );
    ensure_eq!(
        st.scan(&s1, &k1, &n1, -1, usize::MAX)
            .or_fail(&at("scan"))?
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        b,
        "ids in the log with namespace and key swapped, names of {len} bytes"
    );
    st.queue_push(&s2, &[b"q".to_vec()])
        .or_fail(&at("queue_push"))?;
    ensure_eq!(
        st.queue_pop(&s1).or_fail(&at("queue_pop"))?,
        None,
        "queue_pop of a scope of {len} bytes never pushed, next to one differing in its last byte"
    );
    ensure_eq!(
        st.queue_pop(&s2).or_fail(&at("queue_pop"))?,
        Some(b"q".to_vec()),
        "queue_pop of a scope of {len} bytes"
    );
    st.clear(&s2).or_fail(&at("clear"))?;
    ensure_eq!(
        st.kv_get(&s1, &k1).or_fail(&at("kv_get"))?,
        Some(b"11b".to_vec()),
        "kv_get of a scope of {len} bytes after clear of a scope differing in its last byte"
    );
    Ok(())
}

pub(crate) fn names_of_64_kib_and_1_mib_round_trip(run: &Run<'_>) -> CheckResult {
    let sizes: Vec<usize> = scaled(vec![64 << 10, 1 << 20], vec![64 << 10, 1 << 20, 4 << 20]);
    let env = run.env()?;
    let st = &*env.store;
    let max = st.capabilities().max_key_len;
    let mut ran = Vec::new();
    for (i, len) in sizes.iter().copied().enumerate() {
        if len > max {
            continue;
        }
        long_names_work(st, len, 10 * i as u64)?;
        ran.push(len);
    }
    // gc removes the long scopes whole and reports their exact bytes.
    env.clock().advance(Duration::from_secs(7200));
    let report = st.gc(Duration::from_secs(3600)).or_fail("gc")?;
    let removed: BTreeSet<Vec<u8>> = report.scopes.into_iter().collect();
    for (i, len) in sizes.iter().copied().enumerate() {
        if !ran.contains(&len) {
            continue;
        }
        let s1 = noise(len, 10 * i as u64);
        let s3 = s1[..len - 1].to_vec();
        ensure!(
            removed.contains(&s1) && removed.contains(&s3),
            "gc should report the stale scopes of {len} and {} bytes with their exact bytes; it reported {} scopes",
            len - 1,
            removed.len()
        );
    }
    if ran.is_empty() {
        return Ok(Outcome::Skipped(format!(
            "the backend declares max_key_len {max}, below 64 KiB; names_of_exactly_max_key_len_work_and_longer_are_refused checks that limit"
        )));
    }
    Ok(Outcome::Passed)
}

/// Every method that takes a name, called with `long` in one name position.
#[allow(clippy::type_complexity)]
fn calls_with_a_long_name<'a>(
    long: &'a [u8],
) -> Vec<(
    &'static str,
    Box<dyn Fn(&dyn FunctionStorage) -> Result<(), vgi_storage_core::StorageError> + 'a>,
)> {
    let v = || b"v".to_vec();
    vec![
        (
            "kv_get(long scope)",
            Box::new(move |st| st.kv_get(long, b"k").map(drop)),
        ),
        (
            "kv_get(long key)",
            Box::new(move |st| st.kv_get(b"s", long).map(drop)),
        ),
        (
            "kv_put(long scope)",
            Box::new(move |st| st.kv_put(long, b"k", b"v")),
        ),
        (
            "kv_put(long key)",
            Box::new(move |st| st.kv_put(b"s", long, b"v")),
        ),
        (
            "kv_del(long scope)",
            Box::new(move |st| st.kv_del(long, b"k")),
        ),
        (
            "kv_del(long key)",
            Box::new(move |st| st.kv_del(b"s", long)),
        ),
        (
            "kv_compare_and_swap(long scope)",
            Box::new(move |st| {
                st.kv_compare_and_swap(long, b"k", None, Some(b"v"))
                    .map(drop)
            }),
        ),
        (
            "kv_compare_and_swap(long key)",
            Box::new(move |st| {
                st.kv_compare_and_swap(b"s", long, None, Some(b"v"))
                    .map(drop)
            }),
        ),
        (
            "append(long scope)",
            Box::new(move |st| st.append(long, b"n", b"k", b"v").map(drop)),
        ),
        (
            "append(long namespace)",
            Box::new(move |st| st.append(b"s", long, b"k", b"v").map(drop)),
        ),
        (
            "append(long key)",
            Box::new(move |st| st.append(b"s", b"n", long, b"v").map(drop)),
        ),
        (
            "append_batch(long scope)",
            Box::new(move |st| st.append_batch(long, b"n", b"k", &[v()]).map(drop)),
        ),
        (
            "append_batch(long namespace)",
            Box::new(move |st| st.append_batch(b"s", long, b"k", &[v()]).map(drop)),
        ),
        (
            "append_batch(long key)",
            Box::new(move |st| st.append_batch(b"s", b"n", long, &[v()]).map(drop)),
        ),
        (
            "kv_put_batch(long scope)",
            Box::new(move |st| st.kv_put_batch(long, &[(b"k".to_vec(), v())])),
        ),
        (
            "kv_put_batch(long second key)",
            Box::new(move |st| {
                st.kv_put_batch(b"s", &[(b"k".to_vec(), v()), (long.to_vec(), v())])
            }),
        ),
        (
            "scan(long scope)",
            Box::new(move |st| st.scan(long, b"n", b"k", -1, usize::MAX).map(drop)),
        ),
        (
            "scan(long namespace)",
            Box::new(move |st| st.scan(b"s", long, b"k", -1, usize::MAX).map(drop)),
        ),
        (
            "scan(long key)",
            Box::new(move |st| st.scan(b"s", b"n", long, -1, usize::MAX).map(drop)),
        ),
        (
            "queue_push(long scope)",
            Box::new(move |st| st.queue_push(long, &[v()])),
        ),
        (
            "queue_pop(long scope)",
            Box::new(move |st| st.queue_pop(long).map(drop)),
        ),
        ("clear(long scope)", Box::new(move |st| st.clear(long))),
    ]
}

pub(crate) fn names_of_exactly_max_key_len_work_and_longer_are_refused(
    run: &Run<'_>,
) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let max = st.capabilities().max_key_len;
    if max == usize::MAX {
        return Ok(Outcome::Skipped(
            "the backend declares no name limit (max_key_len is usize::MAX); names_of_64_kib_and_1_mib_round_trip proves names of a mebibyte work".into(),
        ));
    }
    if max > NAME_LIMIT_CHECK_MAX {
        return Ok(Outcome::Skipped(format!(
            "max_key_len is {max} bytes; the suite builds names at the limit only up to {NAME_LIMIT_CHECK_MAX} bytes"
        )));
    }
    // Names of exactly the limit work in every position.
    if max > 0 {
        let at = noise(max, 77);
        st.kv_put(&at, &at, b"kv")
            .or_fail("kv_put with names of exactly max_key_len bytes")?;
        ensure_eq!(
            st.kv_get(&at, &at)
                .or_fail("kv_get with names of exactly max_key_len bytes")?,
            Some(b"kv".to_vec()),
            "kv_get with scope and key of exactly max_key_len ({max}) bytes"
        );
        let id = st
            .append(&at, &at, &at, b"log")
            .or_fail("append with names of exactly max_key_len bytes")?;
        ensure_eq!(
            st.scan(&at, &at, &at, -1, usize::MAX)
                .or_fail("scan with names of exactly max_key_len bytes")?,
            vec![LogEntry {
                id,
                value: b"log".to_vec()
            }],
            "scan with scope, namespace and key of exactly max_key_len ({max}) bytes"
        );
        st.queue_push(&at, &[b"q".to_vec()])
            .or_fail("queue_push with a scope of exactly max_key_len bytes")?;
        ensure_eq!(
            st.queue_pop(&at)
                .or_fail("queue_pop with a scope of exactly max_key_len bytes")?,
            Some(b"q".to_vec()),
            "queue_pop with a scope of exactly max_key_len ({max}) bytes"
        );
        st.clear(&at)
            .or_fail("clear of a scope of exactly max_key_len bytes")?;
    }
    // One byte longer is refused everywhere, and writes nothing: scope `s`
    // goes stale first, so a refused call that stamped it would keep it from gc.
    st.kv_put(b"s", b"k", b"old").or_fail("kv_put")?;
    env.clock().advance(Duration::from_secs(7200));
    let long = noise(max + 1, 78);
    for (what, call) in calls_with_a_long_name(&long) {
        expect_kind(
            ErrorKind::InvalidInput,
            &format!("{what} with a name of max_key_len + 1 ({}) bytes", max + 1),
            call(st),
        )?;
    }
    let cut = &long[..max];
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"old".to_vec()),
        "kv_get next to refused calls with a name one byte too long"
    );
    ensure!(
        st.kv_get(cut, b"k").or_fail("kv_get")?.is_none()
            && st.kv_get(b"s", cut).or_fail("kv_get")?.is_none()
            && st
                .scan(b"s", cut, b"k", -1, usize::MAX)
                .or_fail("scan")?
                .is_empty()
            && st
                .scan(b"s", b"n", cut, -1, usize::MAX)
                .or_fail("scan")?
                .is_empty()
            && st
                .scan(cut, b"n", b"k", -1, usize::MAX)
                .or_fail("scan")?
                .is_empty()
            && st.queue_pop(cut).or_fail("queue_pop")?.is_none(),
        "a call refused for a name one byte too long wrote under the name cut to max_key_len"
    );
    let removed = st.gc(Duration::from_secs(3600)).or_fail("gc")?.scopes;
    ensure_eq!(
        removed,
        vec![b"s".to_vec()],
        "scopes gc removed after refused calls (a refused call must not stamp or create a scope)"
    );
    Ok(Outcome::Passed)
}

pub(crate) fn values_above_16_mib_round_trip(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let max = st.capabilities().max_value_len;
    if max < ABOVE_16_MIB {
        return Ok(Outcome::Skipped(format!(
            "max_value_len is {max} bytes, not above 16 MiB"
        )));
    }
    let len = max.min(scaled(24 << 20, 96 << 20));
    let same = |what: &str, got: Option<&[u8]>, want: &[u8]| -> Result<(), Failure> {
        match got {
            Some(g) if g == want => Ok(()),
            Some(g) => Err(Failure::new(format!(
                "{what} of a value of {len} bytes returned {} bytes{}",
                g.len(),
                g.iter()
                    .zip(want)
                    .position(|(a, b)| a != b)
                    .map_or_else(String::new, |i| format!(", first different at byte {i}"))
            ))),
            None => Err(Failure::new(format!(
                "{what} of a value of {len} bytes returned nothing"
            ))),
        }
    };
    let a = noise(len, 1);
    st.kv_put(b"s", b"k", &a)
        .or_fail("kv_put of a value above 16 MiB")?;
    same(
        "kv_get",
        st.kv_get(b"s", b"k").or_fail("kv_get")?.as_deref(),
        &a,
    )?;
    let b = noise(len, 2);
    ensure!(
        st.kv_compare_and_swap(b"s", b"k", Some(&a), Some(&b))
            .or_fail("kv_compare_and_swap of values above 16 MiB")?,
        "a CAS expecting the current value of {len} bytes lost"
    );
    drop(a);
    same(
        "kv_get after CAS",
        st.kv_get(b"s", b"k").or_fail("kv_get")?.as_deref(),
        &b,
    )?;
    st.kv_del(b"s", b"k").or_fail("kv_del")?;
    let id = st
        .append(b"s", b"n", b"k", &b)
        .or_fail("append of a value above 16 MiB")?;
    let log = st.scan(b"s", b"n", b"k", -1, usize::MAX).or_fail("scan")?;
    ensure_eq!(log.len(), 1, "entries in a log of one value above 16 MiB");
    ensure_eq!(log[0].id, id, "id of the entry above 16 MiB");
    same("scan", Some(&log[0].value), &b)?;
    drop(log);
    st.clear(b"s").or_fail("clear")?;
    st.queue_push(b"q", std::slice::from_ref(&b))
        .or_fail("queue_push of a value above 16 MiB")?;
    same(
        "queue_pop",
        st.queue_pop(b"q").or_fail("queue_pop")?.as_deref(),
        &b,
    )?;
    Ok(Outcome::Passed)
}
