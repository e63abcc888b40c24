//! Named checks of single behaviours, edge cases first.

use std::collections::BTreeSet;
use std::time::Duration;

use vgi_storage_core::{ErrorKind, FunctionStorage, LogEntry, StorageError};

use crate::harness::{
    CheckResult, Failure, OrFail, Outcome, Run, ensure, ensure_eq, pattern, show,
};

/// Above this `max_value_len`, building a value just over the limit costs too much memory.
const LIMIT_CHECK_MAX: usize = 64 << 20;

#[allow(clippy::unnecessary_wraps)] // every check ends with it
fn passed() -> CheckResult {
    Ok(Outcome::Passed)
}

fn too_large<T: std::fmt::Debug>(what: &str, res: Result<T, StorageError>) -> Result<(), Failure> {
    match res {
        Err(e) if e.kind() == ErrorKind::TooLarge => Ok(()),
        Err(e) => Err(Failure::storage(
            format!("{what} with a value over max_value_len should fail with TooLarge, but it"),
            e,
        )),
        Ok(v) => Err(Failure::new(format!(
            "{what} with a value over max_value_len should fail with TooLarge, got Ok({})",
            crate::harness::short(&v)
        ))),
    }
}

fn full_scan(
    store: &dyn FunctionStorage,
    s: &[u8],
    n: &[u8],
    k: &[u8],
) -> Result<Vec<LogEntry>, Failure> {
    store.scan(s, n, k, -1, usize::MAX).or_fail("scan")
}

fn gc_set(store: &dyn FunctionStorage, ttl: Duration) -> Result<BTreeSet<Vec<u8>>, Failure> {
    let report = store.gc(ttl).or_fail("gc")?;
    let set: BTreeSet<Vec<u8>> = report.scopes.iter().cloned().collect();
    ensure!(
        set.len() == report.scopes.len(),
        "gc reported a scope more than once: {:?}",
        report.scopes.iter().map(|s| show(s)).collect::<Vec<_>>()
    );
    Ok(set)
}

fn set_of(scopes: &[&[u8]]) -> BTreeSet<Vec<u8>> {
    scopes.iter().map(|s| s.to_vec()).collect()
}

pub(crate) fn kv_get_missing_is_none(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        None,
        "kv_get of a key never put"
    );
    st.kv_put(b"s", b"other", b"v").or_fail("kv_put")?;
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        None,
        "kv_get of a key never put, next to another"
    );
    ensure_eq!(
        st.kv_get(b"t", b"other").or_fail("kv_get")?,
        None,
        "kv_get of the same key in another scope"
    );
    passed()
}

pub(crate) fn kv_put_overwrites_and_get_returns_the_last_value(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    st.kv_put(b"s", b"k", b"one").or_fail("kv_put")?;
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"one".to_vec()),
        "kv_get after kv_put"
    );
    st.kv_put(b"s", b"k", b"two").or_fail("kv_put")?;
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"two".to_vec()),
        "kv_get after an overwrite"
    );
    st.kv_put(b"s", b"k", b"").or_fail("kv_put")?;
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(Vec::new()),
        "kv_get of an empty value (empty is not absent)"
    );
    passed()
}

pub(crate) fn kv_del_of_a_missing_key_succeeds(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    st.kv_del(b"s", b"never")
        .or_fail("kv_del of a missing key")?;
    st.kv_put(b"s", b"a", b"1").or_fail("kv_put")?;
    st.kv_put(b"s", b"b", b"2").or_fail("kv_put")?;
    st.kv_del(b"s", b"a").or_fail("kv_del")?;
    st.kv_del(b"s", b"a")
        .or_fail("kv_del of a key already deleted")?;
    ensure_eq!(
        st.kv_get(b"s", b"a").or_fail("kv_get")?,
        None,
        "kv_get after kv_del"
    );
    ensure_eq!(
        st.kv_get(b"s", b"b").or_fail("kv_get")?,
        Some(b"2".to_vec()),
        "kv_get of a key next to the deleted one"
    );
    passed()
}

/// Byte strings a backend might confuse: empty, NUL, 0xFF, and pairs that are
/// equal once concatenated without a separator.
const AWKWARD: &[&[u8]] = &[
    b"",
    b"\0",
    b"\0\0",
    b"\xff",
    b"\xff\xff",
    b"a",
    b"a\0",
    b"a\0b",
    b"ab",
    b"b",
    b"\0a",
];

pub(crate) fn empty_and_binary_scopes_keys_and_values_round_trip(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let value = |s: usize, k: usize| -> Vec<u8> {
        let mut v = vec![0u8, 0xff, s as u8, k as u8, 0];
        v.extend_from_slice(AWKWARD[k]);
        v
    };
    for (si, s) in AWKWARD.iter().enumerate() {
        for (ki, k) in AWKWARD.iter().enumerate() {
            st.kv_put(s, k, &value(si, ki)).or_fail("kv_put")?;
        }
    }
    for (si, s) in AWKWARD.iter().enumerate() {
        for (ki, k) in AWKWARD.iter().enumerate() {
            ensure_eq!(
                st.kv_get(s, k).or_fail("kv_get")?,
                Some(value(si, ki)),
                "kv_get(scope {}, key {})",
                show(s),
                show(k)
            );
        }
    }
    // Logs: (scope, ns, key) triples that collide if joined without a separator.
    let triples: &[(&[u8], &[u8], &[u8])] = &[
        (b"", b"", b""),
        (b"a", b"b", b""),
        (b"a", b"", b"b"),
        (b"", b"a", b"b"),
        (b"ab", b"", b""),
        (b"a\0", b"b", b""),
        (b"a", b"\0b", b""),
        (b"\xff", b"\0", b"\xff"),
    ];
    let mut ids = Vec::new();
    for (i, (s, n, k)) in triples.iter().enumerate() {
        let id = st.append(s, n, k, &[i as u8, 0, 0xff]).or_fail("append")?;
        ensure!(id >= 0, "append returned a negative id {id}");
        ids.push(id);
    }
    for (i, (s, n, k)) in triples.iter().enumerate() {
        ensure_eq!(
            full_scan(st, s, n, k)?,
            vec![LogEntry {
                id: ids[i],
                value: vec![i as u8, 0, 0xff]
            }],
            "scan of log ({}, {}, {})",
            show(s),
            show(n),
            show(k)
        );
    }
    for (si, s) in AWKWARD.iter().enumerate() {
        st.queue_push(s, &[vec![si as u8], Vec::new(), vec![0, 0xff]])
            .or_fail("queue_push")?;
    }
    for (si, s) in AWKWARD.iter().enumerate() {
        for want in [
            Some(vec![si as u8]),
            Some(Vec::new()),
            Some(vec![0, 0xff]),
            None,
        ] {
            ensure_eq!(
                st.queue_pop(s).or_fail("queue_pop")?,
                want,
                "queue_pop of scope {}",
                show(s)
            );
        }
    }
    passed()
}

pub(crate) fn long_keys_round_trip(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let long = |last: u8| {
        let mut v = pattern(4096, 7);
        v.push(last);
        v
    };
    let (s1, s2, k1, k2) = (long(1), long(2), long(3), long(4));
    st.kv_put(&s1, &k1, b"11").or_fail("kv_put")?;
    st.kv_put(&s1, &k2, b"12").or_fail("kv_put")?;
    st.kv_put(&s2, &k1, b"21").or_fail("kv_put")?;
    ensure_eq!(
        st.kv_get(&s1, &k1).or_fail("kv_get")?,
        Some(b"11".to_vec()),
        "kv_get with 4 KiB scope and key"
    );
    ensure_eq!(
        st.kv_get(&s1, &k2).or_fail("kv_get")?,
        Some(b"12".to_vec()),
        "kv_get of a 4 KiB key differing in its last byte"
    );
    ensure_eq!(
        st.kv_get(&s2, &k1).or_fail("kv_get")?,
        Some(b"21".to_vec()),
        "kv_get in a 4 KiB scope differing in its last byte"
    );
    ensure_eq!(
        st.kv_get(&s2, &k2).or_fail("kv_get")?,
        None,
        "kv_get of a long key never put"
    );
    let a = st.append(&s1, &k1, &k2, b"x").or_fail("append")?;
    let b = st.append(&s1, &k2, &k1, b"y").or_fail("append")?;
    ensure_eq!(
        full_scan(st, &s1, &k1, &k2)?,
        vec![LogEntry {
            id: a,
            value: b"x".to_vec()
        }],
        "scan with 4 KiB scope, ns and key"
    );
    ensure_eq!(
        full_scan(st, &s1, &k2, &k1)?,
        vec![LogEntry {
            id: b,
            value: b"y".to_vec()
        }],
        "scan of the swapped long ns and key"
    );
    st.queue_push(&s2, &[b"q".to_vec()]).or_fail("queue_push")?;
    ensure_eq!(
        st.queue_pop(&s1).or_fail("queue_pop")?,
        None,
        "queue_pop of a long scope that was never pushed"
    );
    ensure_eq!(
        st.queue_pop(&s2).or_fail("queue_pop")?,
        Some(b"q".to_vec()),
        "queue_pop of a 4 KiB scope"
    );
    st.clear(&s1).or_fail("clear")?;
    ensure_eq!(
        st.kv_get(&s1, &k1).or_fail("kv_get")?,
        None,
        "kv_get after clear of a long scope"
    );
    ensure_eq!(
        st.kv_get(&s2, &k1).or_fail("kv_get")?,
        Some(b"21".to_vec()),
        "kv_get of a long scope next to the cleared one"
    );
    passed()
}

pub(crate) fn values_of_a_mebibyte_round_trip(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let len = (1 << 20) + 3;
    let max = st.capabilities().max_value_len;
    if max < len {
        return Ok(Outcome::Skipped(format!(
            "max_value_len is {max} bytes, below a mebibyte"
        )));
    }
    let (a, b, c) = (pattern(len, 1), pattern(len, 2), pattern(len, 3));
    st.kv_put(b"s", b"k", &a).or_fail("kv_put of 1 MiB")?;
    ensure!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?.as_deref() == Some(&a[..]),
        "kv_get of a 1 MiB value returned other bytes"
    );
    let id = st.append(b"s", b"n", b"k", &b).or_fail("append of 1 MiB")?;
    ensure!(
        full_scan(st, b"s", b"n", b"k")?
            == vec![LogEntry {
                id,
                value: b.clone()
            }],
        "scan of a 1 MiB entry returned other bytes"
    );
    st.queue_push(b"s", std::slice::from_ref(&c))
        .or_fail("queue_push of 1 MiB")?;
    ensure!(
        st.queue_pop(b"s").or_fail("queue_pop")?.as_deref() == Some(&c[..]),
        "queue_pop of a 1 MiB item returned other bytes"
    );
    passed()
}

fn limit_skip(max: usize) -> Option<Outcome> {
    (max > LIMIT_CHECK_MAX).then(|| {
        Outcome::Skipped(format!(
            "max_value_len is {max} bytes; the suite builds values just over the limit only up to {LIMIT_CHECK_MAX} bytes"
        ))
    })
}

pub(crate) fn values_over_the_limit_are_too_large_and_write_nothing(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let max = st.capabilities().max_value_len;
    if let Some(skip) = limit_skip(max) {
        return Ok(skip);
    }
    let big = vec![7u8; max + 1];
    let at_max = vec![8u8; max];
    st.kv_put(b"s", b"k", b"old").or_fail("kv_put")?;
    too_large("kv_put", st.kv_put(b"s", b"k", &big))?;
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"old".to_vec()),
        "kv_get after a refused kv_put"
    );
    too_large(
        "kv_compare_and_swap",
        st.kv_compare_and_swap(b"s", b"k", Some(b"old"), Some(&big)),
    )?;
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"old".to_vec()),
        "kv_get after a refused CAS"
    );
    too_large("append", st.append(b"s", b"n", b"k", &big))?;
    too_large(
        "append_batch",
        st.append_batch(
            b"s",
            b"n",
            b"k",
            &[b"a".to_vec(), big.clone(), b"c".to_vec()],
        ),
    )?;
    ensure_eq!(
        full_scan(st, b"s", b"n", b"k")?,
        Vec::new(),
        "scan after refused appends"
    );
    too_large(
        "kv_put_batch",
        st.kv_put_batch(
            b"s",
            &[(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), big.clone())],
        ),
    )?;
    ensure_eq!(
        st.kv_get(b"s", b"a").or_fail("kv_get")?,
        None,
        "kv_get of the first entry of a refused kv_put_batch"
    );
    st.kv_put(b"s", b"max", &at_max)
        .or_fail("kv_put of exactly max_value_len bytes")?;
    ensure!(
        st.kv_get(b"s", b"max").or_fail("kv_get")?.as_deref() == Some(&at_max[..]),
        "kv_get of a value of exactly max_value_len bytes returned other bytes"
    );
    passed()
}

pub(crate) fn cas_on_an_absent_entry(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", Some(b"x"), Some(b"y"))
            .or_fail("kv_compare_and_swap")?,
        false,
        "CAS expecting a value on an absent entry"
    );
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        None,
        "kv_get after a lost CAS"
    );
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", Some(b""), Some(b"y"))
            .or_fail("kv_compare_and_swap")?,
        false,
        "CAS expecting an empty value on an absent entry (empty is not absent)"
    );
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", None, Some(b"first"))
            .or_fail("kv_compare_and_swap")?,
        true,
        "CAS expecting absent on an absent entry"
    );
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"first".to_vec()),
        "kv_get after a won CAS"
    );
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", None, Some(b"second"))
            .or_fail("kv_compare_and_swap")?,
        false,
        "a second CAS expecting absent"
    );
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"first".to_vec()),
        "kv_get after a lost CAS"
    );
    passed()
}

pub(crate) fn cas_on_a_present_entry(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    st.kv_put(b"s", b"k", b"v1").or_fail("kv_put")?;
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", Some(b"v0"), Some(b"x"))
            .or_fail("kv_compare_and_swap")?,
        false,
        "CAS expecting another value"
    );
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", Some(b"v1\0"), Some(b"x"))
            .or_fail("kv_compare_and_swap")?,
        false,
        "CAS expecting the value plus a NUL"
    );
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", None, Some(b"x"))
            .or_fail("kv_compare_and_swap")?,
        false,
        "CAS expecting absent on a present entry"
    );
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"v1".to_vec()),
        "kv_get after lost CASes"
    );
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", Some(b"v1"), Some(b"v2"))
            .or_fail("kv_compare_and_swap")?,
        true,
        "CAS expecting the current value"
    );
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"v2".to_vec()),
        "kv_get after a won CAS"
    );
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", Some(b"v2"), Some(b"v2"))
            .or_fail("kv_compare_and_swap")?,
        true,
        "CAS to the same value"
    );
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", Some(b"v2"), None)
            .or_fail("kv_compare_and_swap")?,
        true,
        "CAS to absent (delete)"
    );
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        None,
        "kv_get after a CAS that deleted"
    );
    ensure_eq!(
        st.kv_get(b"s2", b"k").or_fail("kv_get")?,
        None,
        "kv_get of the same key in another scope"
    );
    passed()
}

pub(crate) fn cas_on_a_deleted_entry(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    st.kv_put(b"s", b"k", b"old").or_fail("kv_put")?;
    st.kv_del(b"s", b"k").or_fail("kv_del")?;
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", Some(b"old"), Some(b"new"))
            .or_fail("kv_compare_and_swap")?,
        false,
        "CAS expecting the deleted value"
    );
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        None,
        "kv_get after a lost CAS on a deleted entry"
    );
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", None, Some(b"new"))
            .or_fail("kv_compare_and_swap")?,
        true,
        "CAS expecting absent on a deleted entry"
    );
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        Some(b"new".to_vec()),
        "kv_get after a won CAS on a deleted entry"
    );
    passed()
}

pub(crate) fn cas_from_absent_to_absent(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"k", None, None)
            .or_fail("kv_compare_and_swap")?,
        true,
        "CAS from absent to absent on an absent entry"
    );
    ensure_eq!(
        st.kv_get(b"s", b"k").or_fail("kv_get")?,
        None,
        "kv_get after a CAS from absent to absent"
    );
    st.kv_put(b"s", b"p", b"v").or_fail("kv_put")?;
    ensure_eq!(
        st.kv_compare_and_swap(b"s", b"p", None, None)
            .or_fail("kv_compare_and_swap")?,
        false,
        "CAS from absent to absent on a present entry"
    );
    ensure_eq!(
        st.kv_get(b"s", b"p").or_fail("kv_get")?,
        Some(b"v".to_vec()),
        "kv_get after a lost CAS from absent to absent"
    );
    // A successful CAS is a write, even when it changes nothing: it stamps the scope.
    clock.advance(Duration::from_secs(10));
    ensure_eq!(
        st.kv_compare_and_swap(b"t", b"k", None, None)
            .or_fail("kv_compare_and_swap")?,
        true,
        "CAS from absent to absent in a fresh scope"
    );
    ensure_eq!(
        gc_set(st, Duration::from_secs(5))?,
        set_of(&[b"s"]),
        "gc after a CAS from absent to absent stamped scope t (it is a write)"
    );
    passed()
}

pub(crate) fn scan_of_a_missing_log_is_empty(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    ensure_eq!(
        full_scan(st, b"s", b"n", b"k")?,
        Vec::new(),
        "scan of a log never appended to"
    );
    st.append(b"s", b"n", b"other", b"v").or_fail("append")?;
    for after in [-1, 0, i64::MIN, i64::MAX] {
        ensure_eq!(
            st.scan(b"s", b"n", b"k", after, 10).or_fail("scan")?,
            Vec::new(),
            "scan(after_id {after}) of a missing log next to another"
        );
    }
    passed()
}

pub(crate) fn scan_with_limit_zero_returns_nothing(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    st.append_batch(b"s", b"n", b"k", &[b"a".to_vec(), b"b".to_vec()])
        .or_fail("append_batch")?;
    for after in [-1, i64::MIN, 0] {
        ensure_eq!(
            st.scan(b"s", b"n", b"k", after, 0).or_fail("scan")?,
            Vec::new(),
            "scan(after_id {after}, limit 0)"
        );
    }
    passed()
}

pub(crate) fn scan_pages_through_a_log_in_id_order(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let mut want = Vec::new();
    for i in 0u8..10 {
        let id = st.append(b"s", b"n", b"k", &[i]).or_fail("append")?;
        // Interleave other logs so a backend cannot get by with one log.
        st.append(b"s", b"n", &[b'k', i], b"noise")
            .or_fail("append")?;
        want.push(LogEntry { id, value: vec![i] });
    }
    let ids: Vec<i64> = want.iter().map(|e| e.id).collect();
    ensure!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids of successive appends to one log do not increase: {ids:?}"
    );
    ensure!(ids[0] >= 0, "append returned a negative id {}", ids[0]);
    ensure_eq!(full_scan(st, b"s", b"n", b"k")?, want.clone(), "full scan");
    for after in [-1, -2, i64::MIN] {
        ensure_eq!(
            st.scan(b"s", b"n", b"k", after, usize::MAX)
                .or_fail("scan")?,
            want.clone(),
            "scan(after_id {after})"
        );
    }
    ensure_eq!(
        st.scan(b"s", b"n", b"k", i64::MAX, usize::MAX)
            .or_fail("scan")?,
        Vec::new(),
        "scan(after_id i64::MAX)"
    );
    let mut paged = Vec::new();
    let mut after = -1;
    loop {
        let page = st.scan(b"s", b"n", b"k", after, 3).or_fail("scan")?;
        ensure!(
            page.len() <= 3,
            "scan with limit 3 returned {} entries",
            page.len()
        );
        let Some(last) = page.last() else { break };
        after = last.id;
        paged.extend(page);
    }
    ensure_eq!(
        paged,
        want.clone(),
        "the log read in pages of 3 with after_id"
    );
    ensure_eq!(
        st.scan(b"s", b"n", b"k", ids[4], 2).or_fail("scan")?,
        want[5..7].to_vec(),
        "scan(after_id of the 5th entry, limit 2)"
    );
    ensure_eq!(
        st.scan(b"s", b"n", b"k", ids[4] - 1, 1).or_fail("scan")?,
        want[4..5].to_vec(),
        "scan(after_id just below the 5th id, limit 1)"
    );
    passed()
}

pub(crate) fn ids_are_never_reused_after_clear(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let mut seen = BTreeSet::new();
    let mut last = -1;
    for round in 0..3u8 {
        for i in 0..4u8 {
            let id = st.append(b"s", b"n", b"k", &[round, i]).or_fail("append")?;
            ensure!(
                seen.insert(id),
                "append returned id {id} again after clear (round {round})"
            );
            ensure!(
                id > last,
                "append after clear returned id {id}, not above the log's earlier id {last}: a tailer would miss it"
            );
            last = id;
        }
        let other = st
            .append(b"other", b"n", b"k", &[round])
            .or_fail("append")?;
        ensure!(seen.insert(other), "append returned id {other} again");
        st.clear(b"s").or_fail("clear")?;
        ensure_eq!(
            full_scan(st, b"s", b"n", b"k")?,
            Vec::new(),
            "scan after clear"
        );
    }
    passed()
}

pub(crate) fn ids_are_never_reused_after_gc(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    let mut seen = BTreeSet::new();
    let mut last = -1;
    for round in 0..3u8 {
        for i in 0..4u8 {
            let id = st.append(b"s", b"n", b"k", &[round, i]).or_fail("append")?;
            ensure!(
                seen.insert(id),
                "append returned id {id} again after gc (round {round})"
            );
            ensure!(
                id > last,
                "append after gc returned id {id}, not above the log's earlier id {last}"
            );
            last = id;
        }
        clock.advance(Duration::from_secs(2));
        ensure_eq!(
            gc_set(st, Duration::from_secs(1))?,
            set_of(&[b"s"]),
            "gc of a stale scope"
        );
        ensure_eq!(
            full_scan(st, b"s", b"n", b"k")?,
            Vec::new(),
            "scan after gc removed the scope"
        );
    }
    passed()
}

pub(crate) fn queue_pop_of_an_empty_queue_is_none(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    ensure_eq!(
        st.queue_pop(b"s").or_fail("queue_pop")?,
        None,
        "queue_pop of a queue never pushed"
    );
    st.queue_push(b"s", &[b"a".to_vec()])
        .or_fail("queue_push")?;
    ensure_eq!(
        st.queue_pop(b"t").or_fail("queue_pop")?,
        None,
        "queue_pop of another scope's queue"
    );
    ensure_eq!(
        st.queue_pop(b"s").or_fail("queue_pop")?,
        Some(b"a".to_vec()),
        "queue_pop"
    );
    ensure_eq!(
        st.queue_pop(b"s").or_fail("queue_pop")?,
        None,
        "queue_pop of an emptied queue"
    );
    passed()
}

pub(crate) fn queue_is_fifo_across_pushes(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let mut want = Vec::new();
    for push in 0u8..6 {
        let items: Vec<Vec<u8>> = (0..=push).map(|i| vec![push, i]).collect();
        st.queue_push(b"s", &items).or_fail("queue_push")?;
        st.queue_push(b"other", &[vec![push]])
            .or_fail("queue_push")?;
        want.extend(items);
        if push == 3 {
            // Pop some in the middle: later pushes still go behind what is left.
            for _ in 0..4 {
                let got = st.queue_pop(b"s").or_fail("queue_pop")?;
                ensure_eq!(
                    got,
                    Some(want.remove(0)),
                    "queue_pop in the middle of pushes"
                );
            }
        }
    }
    for item in want {
        ensure_eq!(
            st.queue_pop(b"s").or_fail("queue_pop")?,
            Some(item),
            "queue_pop (items must come out in push order)"
        );
    }
    ensure_eq!(
        st.queue_pop(b"s").or_fail("queue_pop")?,
        None,
        "queue_pop after every item"
    );
    passed()
}

pub(crate) fn queue_push_of_nothing_is_a_noop(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    st.queue_push(b"s", &[]).or_fail("queue_push of nothing")?;
    ensure_eq!(
        st.queue_pop(b"s").or_fail("queue_pop")?,
        None,
        "queue_pop after a push of nothing"
    );
    clock.advance(Duration::from_millis(5));
    ensure_eq!(
        gc_set(st, Duration::ZERO)?,
        BTreeSet::new(),
        "gc(0) after only a push of nothing (it must not stamp the scope)"
    );
    st.kv_put(b"t", b"k", b"v").or_fail("kv_put")?;
    clock.advance(Duration::from_secs(10));
    st.queue_push(b"t", &[]).or_fail("queue_push of nothing")?;
    ensure_eq!(
        gc_set(st, Duration::from_secs(5))?,
        set_of(&[b"t"]),
        "gc of a stale scope whose only recent call was a push of nothing"
    );
    passed()
}

pub(crate) fn queue_push_is_all_or_nothing(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let max = st.capabilities().max_value_len;
    if let Some(skip) = limit_skip(max) {
        return Ok(skip);
    }
    st.queue_push(b"s", &[b"before".to_vec()])
        .or_fail("queue_push")?;
    let items = vec![b"a".to_vec(), vec![1u8; max + 1], b"c".to_vec()];
    too_large("queue_push", st.queue_push(b"s", &items))?;
    ensure_eq!(
        st.queue_pop(b"s").or_fail("queue_pop")?,
        Some(b"before".to_vec()),
        "queue_pop after a refused push"
    );
    ensure_eq!(
        st.queue_pop(b"s").or_fail("queue_pop")?,
        None,
        "queue_pop after a refused push (no item of it may be visible)"
    );
    passed()
}

pub(crate) fn clear_removes_only_its_scope(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let scopes: [&[u8]; 4] = [b"a", b"a\0", b"ab", b""];
    let mut ids = Vec::new();
    for s in scopes {
        st.kv_put(s, b"k", s).or_fail("kv_put")?;
        ids.push(st.append(s, b"n", b"k", s).or_fail("append")?);
        st.queue_push(s, &[s.to_vec(), b"2".to_vec()])
            .or_fail("queue_push")?;
    }
    st.clear(b"a").or_fail("clear")?;
    st.clear(b"never-used")
        .or_fail("clear of an unknown scope")?;
    ensure_eq!(
        st.kv_get(b"a", b"k").or_fail("kv_get")?,
        None,
        "kv_get in the cleared scope"
    );
    ensure_eq!(
        full_scan(st, b"a", b"n", b"k")?,
        Vec::new(),
        "scan in the cleared scope"
    );
    ensure_eq!(
        st.queue_pop(b"a").or_fail("queue_pop")?,
        None,
        "queue_pop in the cleared scope"
    );
    for (i, s) in scopes.iter().enumerate().skip(1) {
        ensure_eq!(
            st.kv_get(s, b"k").or_fail("kv_get")?,
            Some(s.to_vec()),
            "kv_get in scope {} next to the cleared one",
            show(s)
        );
        ensure_eq!(
            full_scan(st, s, b"n", b"k")?,
            vec![LogEntry {
                id: ids[i],
                value: s.to_vec()
            }],
            "scan in scope {} next to the cleared one",
            show(s)
        );
        ensure_eq!(
            st.queue_pop(s).or_fail("queue_pop")?,
            Some(s.to_vec()),
            "queue_pop in scope {} next to the cleared one",
            show(s)
        );
    }
    passed()
}

pub(crate) fn gc_with_zero_ttl_removes_scopes_written_before_now(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    st.kv_put(b"a", b"k", b"v").or_fail("kv_put")?;
    st.append(b"a", b"n", b"k", b"v").or_fail("append")?;
    st.queue_push(b"a", &[b"v".to_vec()])
        .or_fail("queue_push")?;
    ensure_eq!(
        gc_set(st, Duration::ZERO)?,
        BTreeSet::new(),
        "gc(0) at the instant of the last write (stale means strictly before now)"
    );
    clock.advance(Duration::from_millis(1));
    st.kv_put(b"b", b"k", b"v").or_fail("kv_put")?;
    ensure_eq!(
        gc_set(st, Duration::ZERO)?,
        set_of(&[b"a"]),
        "gc(0) a millisecond after the write"
    );
    ensure_eq!(
        st.kv_get(b"a", b"k").or_fail("kv_get")?,
        None,
        "kv_get in a collected scope"
    );
    ensure_eq!(
        full_scan(st, b"a", b"n", b"k")?,
        Vec::new(),
        "scan in a collected scope"
    );
    ensure_eq!(
        st.queue_pop(b"a").or_fail("queue_pop")?,
        None,
        "queue_pop in a collected scope"
    );
    ensure_eq!(
        st.kv_get(b"b", b"k").or_fail("kv_get")?,
        Some(b"v".to_vec()),
        "kv_get in a scope written now"
    );
    ensure_eq!(
        gc_set(st, Duration::ZERO)?,
        BTreeSet::new(),
        "a second gc(0) at the same instant"
    );
    passed()
}

pub(crate) fn gc_with_a_ttl_beyond_the_clock_removes_nothing(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    st.kv_put(b"a", b"k", b"v").or_fail("kv_put")?;
    clock.advance(Duration::from_secs(3 * 365 * 24 * 3600));
    for ttl in [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 2),
        Duration::from_millis(u64::MAX),
    ] {
        ensure_eq!(gc_set(st, ttl)?, BTreeSet::new(), "gc({ttl:?})");
    }
    ensure_eq!(
        st.kv_get(b"a", b"k").or_fail("kv_get")?,
        Some(b"v".to_vec()),
        "kv_get after gc with a huge ttl"
    );
    passed()
}

pub(crate) fn gc_never_removes_a_scope_written_within_the_ttl(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    let ttl = Duration::from_secs(60);
    st.kv_put(b"old", b"k", b"v").or_fail("kv_put")?;
    clock.advance(Duration::from_secs(30));
    st.append(b"mid", b"n", b"k", b"v").or_fail("append")?;
    clock.advance(Duration::from_secs(30));
    // `edge` is written exactly at the cutoff of the next gc: not strictly before it.
    st.queue_push(b"edge", &[b"v".to_vec()])
        .or_fail("queue_push")?;
    ensure_eq!(
        gc_set(st, ttl)?,
        BTreeSet::new(),
        "gc(60 s) when the oldest write is exactly 60 s old"
    );
    clock.advance(Duration::from_secs(1));
    ensure_eq!(
        gc_set(st, ttl)?,
        set_of(&[b"old"]),
        "gc(60 s) with writes 61, 31 and 1 s old"
    );
    clock.advance(Duration::from_secs(29));
    ensure_eq!(
        gc_set(st, ttl)?,
        BTreeSet::new(),
        "gc(60 s) with writes 60 and 30 s old"
    );
    ensure_eq!(
        full_scan(st, b"mid", b"n", b"k")?.len(),
        1,
        "entries of a scope written within the ttl"
    );
    ensure_eq!(
        st.queue_pop(b"edge").or_fail("queue_pop")?,
        Some(b"v".to_vec()),
        "queue_pop in a scope written within the ttl"
    );
    passed()
}

pub(crate) fn gc_counts_only_writes_as_activity(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    let writes: [&[u8]; 8] = [
        b"w-put",
        b"w-cas",
        b"w-cas-none",
        b"w-append",
        b"w-append-batch",
        b"w-put-batch",
        b"w-push",
        b"w-cas-del",
    ];
    let reads: [&[u8]; 8] = [
        b"r-get",
        b"r-del",
        b"r-cas-lost",
        b"r-scan",
        b"r-pop",
        b"r-push-empty",
        b"r-append-batch-empty",
        b"r-put-batch-empty",
    ];
    for s in writes.iter().chain(&reads) {
        st.kv_put(s, b"k", b"v").or_fail("kv_put")?;
        st.queue_push(s, &[b"q".to_vec()]).or_fail("queue_push")?;
    }
    clock.advance(Duration::from_secs(10));
    st.kv_put(writes[0], b"k2", b"v").or_fail("kv_put")?;
    st.kv_compare_and_swap(writes[1], b"k", Some(b"v"), Some(b"w"))
        .or_fail("kv_compare_and_swap")?;
    st.kv_compare_and_swap(writes[2], b"absent", None, None)
        .or_fail("kv_compare_and_swap")?;
    st.append(writes[3], b"n", b"k", b"v").or_fail("append")?;
    st.append_batch(writes[4], b"n", b"k", &[b"v".to_vec()])
        .or_fail("append_batch")?;
    st.kv_put_batch(writes[5], &[(b"k".to_vec(), b"w".to_vec())])
        .or_fail("kv_put_batch")?;
    st.queue_push(writes[6], &[b"v".to_vec()])
        .or_fail("queue_push")?;
    st.kv_compare_and_swap(writes[7], b"k", Some(b"v"), None)
        .or_fail("kv_compare_and_swap")?;
    st.kv_get(reads[0], b"k").or_fail("kv_get")?;
    st.kv_del(reads[1], b"k").or_fail("kv_del")?;
    st.kv_compare_and_swap(reads[2], b"k", Some(b"not-it"), Some(b"x"))
        .or_fail("kv_compare_and_swap")?;
    st.scan(reads[3], b"n", b"k", -1, 10).or_fail("scan")?;
    st.queue_pop(reads[4]).or_fail("queue_pop")?;
    st.queue_push(reads[5], &[]).or_fail("queue_push")?;
    st.append_batch(reads[6], b"n", b"k", &[])
        .or_fail("append_batch")?;
    st.kv_put_batch(reads[7], &[]).or_fail("kv_put_batch")?;
    ensure_eq!(
        gc_set(st, Duration::from_secs(5))?
            .into_iter()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .collect::<BTreeSet<_>>(),
        reads
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<BTreeSet<_>>(),
        "gc removes the scopes whose last write is stale (the r- scopes saw only reads, deletes, lost CASes and empty batches since)"
    );
    passed()
}

pub(crate) fn gc_reports_each_removed_scope_once(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let clock = env.clock();
    for s in [&b"a"[..], b"b", b""] {
        st.kv_put(s, b"k1", b"v").or_fail("kv_put")?;
        st.kv_put(s, b"k2", b"v").or_fail("kv_put")?;
        st.append(s, b"n1", b"k", b"v").or_fail("append")?;
        st.append(s, b"n2", b"k", b"v").or_fail("append")?;
        st.queue_push(s, &[b"1".to_vec(), b"2".to_vec()])
            .or_fail("queue_push")?;
    }
    st.clear(b"b").or_fail("clear")?;
    clock.advance(Duration::from_secs(2));
    let report = st.gc(Duration::from_secs(1)).or_fail("gc")?;
    let mut scopes = report.scopes.clone();
    scopes.sort();
    ensure_eq!(
        scopes,
        vec![Vec::new(), b"a".to_vec()],
        "gc report of two stale scopes with data of every kind (a cleared scope is no longer there to remove)"
    );
    ensure_eq!(report.scopes_removed(), 2, "GcReport::scopes_removed");
    ensure_eq!(
        gc_set(st, Duration::from_secs(1))?,
        BTreeSet::new(),
        "a second gc right after"
    );
    passed()
}

pub(crate) fn batch_forms_equal_single_calls(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let values: Vec<Vec<u8>> = vec![b"a".to_vec(), Vec::new(), vec![0, 0xff], b"a".to_vec()];
    let mut single_ids = Vec::new();
    for v in &values {
        single_ids.push(st.append(b"single", b"n", b"k", v).or_fail("append")?);
    }
    let batch_ids = st
        .append_batch(b"batch", b"n", b"k", &values)
        .or_fail("append_batch")?;
    ensure_eq!(
        batch_ids.len(),
        values.len(),
        "number of ids append_batch returned"
    );
    ensure!(
        batch_ids.windows(2).all(|w| w[0] < w[1]),
        "ids of one append_batch do not increase: {batch_ids:?}"
    );
    ensure!(
        batch_ids
            .iter()
            .all(|id| !single_ids.contains(id) && *id >= 0),
        "append_batch returned ids {batch_ids:?} that clash with {single_ids:?} or are negative"
    );
    let single = full_scan(st, b"single", b"n", b"k")?;
    let batch = full_scan(st, b"batch", b"n", b"k")?;
    ensure_eq!(
        batch.iter().map(|e| e.id).collect::<Vec<_>>(),
        batch_ids.clone(),
        "ids in a scan of an append_batch"
    );
    ensure_eq!(
        batch.iter().map(|e| e.value.clone()).collect::<Vec<_>>(),
        single.iter().map(|e| e.value.clone()).collect::<Vec<_>>(),
        "values of append_batch against single appends"
    );
    ensure_eq!(
        st.append_batch(b"batch", b"n", b"k", &[])
            .or_fail("append_batch")?,
        Vec::<i64>::new(),
        "append_batch of nothing"
    );
    let more = st
        .append_batch(b"batch", b"n", b"k", &[b"z".to_vec()])
        .or_fail("append_batch")?;
    ensure!(
        more.len() == 1 && more[0] > batch_ids[3],
        "an append_batch after a batch returned ids {more:?}, not above {}",
        batch_ids[3]
    );

    let entries: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"k1".to_vec(), b"1".to_vec()),
        (Vec::new(), Vec::new()),
        (b"k1".to_vec(), b"later".to_vec()),
        (vec![0xff], vec![0]),
    ];
    for (k, v) in &entries {
        st.kv_put(b"single", k, v).or_fail("kv_put")?;
    }
    st.kv_put(b"batch", b"k1", b"before").or_fail("kv_put")?;
    st.kv_put_batch(b"batch", &entries)
        .or_fail("kv_put_batch")?;
    st.kv_put_batch(b"batch", &[])
        .or_fail("kv_put_batch of nothing")?;
    for (k, _) in &entries {
        ensure_eq!(
            st.kv_get(b"batch", k).or_fail("kv_get")?,
            st.kv_get(b"single", k).or_fail("kv_get")?,
            "kv_get({}) after kv_put_batch against single puts",
            show(k)
        );
    }
    ensure_eq!(
        st.kv_get(b"batch", b"k1").or_fail("kv_get")?,
        Some(b"later".to_vec()),
        "a later duplicate key in kv_put_batch wins"
    );
    passed()
}
