//! Checks at exact boundaries: the value limit in every write form, empty
//! versus absent in CAS, the empty names in `clear` and `gc`, names a lossy
//! encoding would merge, and CAS on long values that differ at the end.

use std::collections::BTreeSet;
use std::time::Duration;

use vgi_storage_core::{ErrorKind, LogEntry};

use crate::harness::{
    CheckResult, Failure, OrFail, Outcome, Run, ensure, ensure_eq, expect_kind, noise, show,
};

/// Above this `max_value_len`, building a value just over the limit costs too much memory.
const LIMIT_CHECK_MAX: usize = 64 << 20;

#[allow(clippy::too_many_lines)]
pub(crate) fn every_write_form_takes_exactly_the_limit_and_refuses_one_more(
    run: &Run<'_>,
) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let max = st.capabilities().max_value_len;
    if max > LIMIT_CHECK_MAX {
        return Ok(Outcome::Skipped(format!(
            "max_value_len is {max} bytes; the suite builds values just over the limit only up to {LIMIT_CHECK_MAX} bytes (run it on a store with a small configured limit through run_value_limit_checks_in_test)"
        )));
    }
    let at = noise(max, 3);
    let over = noise(max + 1, 4);
    let too_large = |what: &str, res: Result<(), vgi_storage_core::StorageError>| {
        expect_kind(
            ErrorKind::TooLarge,
            &format!("{what} of max_value_len + 1 ({}) bytes", max + 1),
            res,
        )
    };
    let get = |k: &[u8]| st.kv_get(b"s", k).or_fail("kv_get");
    let whole = |what: &str, got: Option<Vec<u8>>| -> Result<(), Failure> {
        ensure!(
            got.as_deref() == Some(&at[..]),
            "{what} of exactly max_value_len ({max}) bytes read back {}",
            got.map_or_else(
                || "nothing".to_owned(),
                |g| format!("{} other bytes", g.len())
            )
        );
        Ok(())
    };

    // kv_put
    st.kv_put(b"s", b"put", &at)
        .or_fail("kv_put of exactly max_value_len bytes")?;
    whole("kv_put", get(b"put")?)?;
    too_large("kv_put", st.kv_put(b"s", b"put", &over))?;
    whole("kv_get after a refused kv_put: the value", get(b"put")?)?;

    // the new value of a CAS, from present and from absent
    st.kv_put(b"s", b"cas", b"old").or_fail("kv_put")?;
    too_large(
        "kv_compare_and_swap new value",
        st.kv_compare_and_swap(b"s", b"cas", Some(b"old"), Some(&over))
            .map(drop),
    )?;
    too_large(
        "kv_compare_and_swap from absent, new value",
        st.kv_compare_and_swap(b"s", b"absent", None, Some(&over))
            .map(drop),
    )?;
    ensure_eq!(
        get(b"cas")?,
        Some(b"old".to_vec()),
        "kv_get after a refused CAS"
    );
    ensure_eq!(
        get(b"absent")?,
        None,
        "kv_get after a refused CAS from absent"
    );
    ensure!(
        st.kv_compare_and_swap(b"s", b"cas", Some(b"old"), Some(&at))
            .or_fail("kv_compare_and_swap to exactly max_value_len bytes")?,
        "a CAS from the current value to exactly max_value_len bytes lost"
    );
    whole("kv_compare_and_swap", get(b"cas")?)?;

    // kv_put_batch: the oversized entry last, so a prefix would be visible
    too_large(
        "kv_put_batch",
        st.kv_put_batch(
            b"s",
            &[(b"b1".to_vec(), at.clone()), (b"b2".to_vec(), over.clone())],
        ),
    )?;
    ensure_eq!(
        get(b"b1")?.map(|v| v.len()),
        None,
        "kv_get of the first entry of a refused kv_put_batch"
    );
    st.kv_put_batch(
        b"s",
        &[
            (b"b1".to_vec(), b"x".to_vec()),
            (b"b2".to_vec(), at.clone()),
        ],
    )
    .or_fail("kv_put_batch with a value of exactly max_value_len bytes")?;
    whole("kv_put_batch", get(b"b2")?)?;

    // append and append_batch
    too_large("append", st.append(b"s", b"n", b"k", &over).map(drop))?;
    too_large(
        "append_batch",
        st.append_batch(b"s", b"n", b"k", &[at.clone(), over.clone()])
            .map(drop),
    )?;
    ensure_eq!(
        st.scan(b"s", b"n", b"k", -1, usize::MAX)
            .or_fail("scan")?
            .len(),
        0,
        "entries in a log after a refused append and append_batch"
    );
    let id = st
        .append(b"s", b"n", b"k", &at)
        .or_fail("append of exactly max_value_len bytes")?;
    let ids = st
        .append_batch(b"s", b"n", b"k", &[b"x".to_vec(), at.clone()])
        .or_fail("append_batch with a value of exactly max_value_len bytes")?;
    let log = st.scan(b"s", b"n", b"k", -1, usize::MAX).or_fail("scan")?;
    ensure_eq!(
        log.iter().map(|e| e.id).collect::<Vec<_>>(),
        [vec![id], ids].concat(),
        "ids in the log after appends of exactly max_value_len bytes"
    );
    whole("append", log.first().map(|e| e.value.clone()))?;
    whole("append_batch", log.last().map(|e| e.value.clone()))?;
    drop(log);

    // queue_push
    too_large(
        "queue_push",
        st.queue_push(b"s", &[at.clone(), over.clone()]).map(drop),
    )?;
    st.queue_push(b"s", &[b"x".to_vec(), at.clone()])
        .or_fail("queue_push with an item of exactly max_value_len bytes")?;
    ensure_eq!(
        st.queue_pop(b"s").or_fail("queue_pop")?,
        Some(b"x".to_vec()),
        "the first item popped after a refused push and a push at the limit (no item of the refused push may be visible)"
    );
    whole("queue_push", st.queue_pop(b"s").or_fail("queue_pop")?)?;
    ensure_eq!(
        st.queue_pop(b"s").or_fail("queue_pop")?,
        None,
        "queue_pop after both items"
    );
    Ok(Outcome::Passed)
}

pub(crate) fn cas_tells_empty_from_absent_in_every_direction(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let states: [Option<&[u8]>; 3] = [None, Some(b""), Some(b"x")];
    let news: [Option<&[u8]>; 3] = [None, Some(b""), Some(b"y")];
    let label = |v: Option<&[u8]>| v.map_or_else(|| "absent".to_owned(), show);
    let mut n = 0u32;
    for current in states {
        for expected in states {
            for new in news {
                n += 1;
                let key = format!("k{n}").into_bytes();
                if let Some(v) = current {
                    st.kv_put(b"s", &key, v).or_fail("kv_put")?;
                }
                let wins = current == expected;
                let got = st
                    .kv_compare_and_swap(b"s", &key, expected, new)
                    .or_fail("kv_compare_and_swap")?;
                let what = format!(
                    "CAS on {} expecting {} to {}",
                    label(current),
                    label(expected),
                    label(new)
                );
                ensure_eq!(got, wins, "{what}: result");
                let after = st.kv_get(b"s", &key).or_fail("kv_get")?;
                let want = if wins { new } else { current };
                ensure_eq!(after.as_deref(), want, "{what}: the value afterwards");
            }
        }
    }
    Ok(Outcome::Passed)
}

pub(crate) fn clear_and_gc_of_the_empty_names(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let fill = |s: &[u8]| -> Result<(), Failure> {
        st.kv_put(s, b"", b"empty key").or_fail("kv_put")?;
        st.append(s, b"", b"", b"empty ns and key")
            .or_fail("append")?;
        st.queue_push(s, &[Vec::new()]).or_fail("queue_push")?;
        Ok(())
    };
    let holds = |s: &[u8]| -> Result<[bool; 3], Failure> {
        Ok([
            st.kv_get(s, b"").or_fail("kv_get")?.is_some(),
            !st.scan(s, b"", b"", -1, usize::MAX)
                .or_fail("scan")?
                .is_empty(),
            // Peek by popping and pushing back: the queue holds one empty item.
            match st.queue_pop(s).or_fail("queue_pop")? {
                Some(item) => {
                    st.queue_push(s, &[item]).or_fail("queue_push")?;
                    true
                }
                None => false,
            },
        ])
    };
    fill(b"")?;
    fill(b"x")?;
    st.clear(b"").or_fail("clear of the empty scope")?;
    ensure_eq!(
        holds(b"")?,
        [false; 3],
        "kv, log and queue of the empty scope after clear of the empty scope"
    );
    ensure_eq!(
        holds(b"x")?,
        [true; 3],
        "kv, log and queue of scope \"x\" after clear of the empty scope"
    );
    st.clear(b"x").or_fail("clear")?;
    fill(b"")?;
    env.clock().advance(Duration::from_secs(7200));
    fill(b"x")?;
    let removed = st.gc(Duration::from_secs(3600)).or_fail("gc")?.scopes;
    ensure_eq!(
        removed,
        vec![Vec::<u8>::new()],
        "scopes gc removed: the stale empty scope, not the fresh \"x\""
    );
    ensure_eq!(
        holds(b"")?,
        [false; 3],
        "kv, log and queue of the empty scope after gc removed it"
    );
    ensure_eq!(
        holds(b"x")?,
        [true; 3],
        "kv, log and queue of the fresh scope \"x\" after gc"
    );
    Ok(Outcome::Passed)
}

/// Names that differ as bytes but that a lossy text encoding (invalid UTF-8
/// replaced by U+FFFD), a NUL-terminated string, a case-insensitive or a
/// space-trimming comparison would merge.
const LOOKALIKES: &[&[u8]] = &[
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xef\xbf\xbd",
    b"a\xffb",
    b"a\xfeb",
    b"a\xef\xbf\xbdb",
    b"a",
    b"a\0",
    b"a\0b",
    b"a\0c",
    b"A",
    b"a ",
    b"a  ",
    b" a",
    b"K",
    b"k",
];

pub(crate) fn names_a_lossy_encoding_would_merge_stay_distinct(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let value = |i: usize, j: usize| format!("{i}/{j}").into_bytes();
    for (i, s) in LOOKALIKES.iter().enumerate() {
        for (j, k) in LOOKALIKES.iter().enumerate() {
            st.kv_put(s, k, &value(i, j)).or_fail("kv_put")?;
        }
        st.append(b"log", s, b"k", &value(i, 0)).or_fail("append")?;
        st.append(b"log", b"n", s, &value(0, i)).or_fail("append")?;
        st.queue_push(s, &[value(i, i)]).or_fail("queue_push")?;
    }
    for (i, s) in LOOKALIKES.iter().enumerate() {
        for (j, k) in LOOKALIKES.iter().enumerate() {
            ensure_eq!(
                st.kv_get(s, k).or_fail("kv_get")?,
                Some(value(i, j)),
                "kv_get(scope {}, key {}) among names a lossy encoding would merge",
                show(s),
                show(k)
            );
        }
        let values = |log: Vec<LogEntry>| log.into_iter().map(|e| e.value).collect::<Vec<_>>();
        ensure_eq!(
            values(st.scan(b"log", s, b"k", -1, usize::MAX).or_fail("scan")?),
            vec![value(i, 0)],
            "scan of the log in namespace {}",
            show(s)
        );
        ensure_eq!(
            values(st.scan(b"log", b"n", s, -1, usize::MAX).or_fail("scan")?),
            vec![value(0, i)],
            "scan of the log with key {}",
            show(s)
        );
        ensure_eq!(
            st.queue_pop(s).or_fail("queue_pop")?,
            Some(value(i, i)),
            "queue_pop of scope {}",
            show(s)
        );
    }
    // Each name is its own scope to gc too.
    env.clock().advance(Duration::from_secs(7200));
    let removed: BTreeSet<Vec<u8>> = st
        .gc(Duration::from_secs(3600))
        .or_fail("gc")?
        .scopes
        .into_iter()
        .collect();
    let want: BTreeSet<Vec<u8>> = LOOKALIKES
        .iter()
        .map(|s| s.to_vec())
        .chain([b"log".to_vec()])
        .collect();
    ensure!(
        removed == want,
        "gc should report each of {} look-alike scopes by its exact bytes; it reported {:?}",
        want.len(),
        removed.iter().map(|s| show(s)).collect::<Vec<_>>()
    );
    Ok(Outcome::Passed)
}

pub(crate) fn cas_compares_long_values_to_the_last_byte(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    let max = st.capabilities().max_value_len;
    let mut ran = false;
    for len in [4 << 10, 64 << 10] {
        if len > max {
            continue;
        }
        ran = true;
        let a = noise(len, len as u64);
        let mut b = a.clone();
        b[len - 1] ^= 1;
        let prefix = &a[..len - 1];
        let key = format!("k{len}").into_bytes();
        st.kv_put(b"s", &key, &a).or_fail("kv_put")?;
        for (expected, what) in [
            (&b[..], "differing in the last byte"),
            (prefix, "one byte shorter"),
        ] {
            ensure!(
                !st.kv_compare_and_swap(b"s", &key, Some(expected), Some(b"lost"))
                    .or_fail("kv_compare_and_swap")?,
                "a CAS on a value of {len} bytes won expecting a value {what}"
            );
            ensure!(
                st.kv_get(b"s", &key).or_fail("kv_get")?.as_deref() == Some(&a[..]),
                "a losing CAS (expecting a value {what}) changed a value of {len} bytes"
            );
        }
        ensure!(
            st.kv_compare_and_swap(b"s", &key, Some(&a), Some(&b))
                .or_fail("kv_compare_and_swap")?,
            "a CAS on a value of {len} bytes expecting exactly it lost"
        );
        ensure!(
            !st.kv_compare_and_swap(b"s", &key, Some(&a), None)
                .or_fail("kv_compare_and_swap")?,
            "a CAS expecting the old value of {len} bytes won after it was swapped for one differing in the last byte"
        );
        ensure!(
            st.kv_get(b"s", &key).or_fail("kv_get")?.as_deref() == Some(&b[..]),
            "a value of {len} bytes swapped for one differing in the last byte did not read back"
        );
        ensure!(
            st.kv_compare_and_swap(b"s", &key, Some(&b), None)
                .or_fail("kv_compare_and_swap")?,
            "a CAS deleting the current value of {len} bytes lost"
        );
    }
    if !ran {
        return Ok(Outcome::Skipped(format!(
            "max_value_len is {max} bytes, below 4 KiB"
        )));
    }
    Ok(Outcome::Passed)
}
