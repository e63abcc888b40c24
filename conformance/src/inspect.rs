//! Checks of the inspection surface (`list_scopes`, `scope_stats`, the paged
//! exports, `import_log`, the id high-water mark and `check`) against a plain
//! model of what was written. Skipped when `capabilities().inspect` is false.

use std::collections::BTreeMap;
use std::time::Duration;

use vgi_storage_core::{Clock, ErrorKind, FunctionStorage, LogRecord, LogStats, ScopeStats};

use crate::harness::{CheckResult, Failure, OrFail, Outcome, Run, ensure, ensure_eq};

fn skipped_unless_inspect(store: &dyn FunctionStorage) -> Option<CheckResult> {
    (!store.capabilities().inspect).then(|| {
        Ok(Outcome::Skipped(
            "the backend does not implement inspection (capabilities().inspect is false)".into(),
        ))
    })
}

/// What the checks write, and the stats the model expects of it.
struct Written {
    /// `scope -> expected stats`, stamps left out (compared separately).
    stats: BTreeMap<Vec<u8>, ScopeStats>,
    /// `scope -> kv`, for the export checks.
    kv: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// `scope -> queue`, oldest first.
    queue: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
}

/// Write three scopes (empty, NUL and 0xFF bytes among the names) with data of
/// every kind, one scope cleared afterwards, and model what each holds.
fn write_sample(st: &dyn FunctionStorage) -> Result<Written, Failure> {
    let scopes: [&[u8]; 4] = [b"", b"a\0", b"b\xff", b"gone"];
    let mut w = Written {
        stats: BTreeMap::new(),
        kv: BTreeMap::new(),
        queue: BTreeMap::new(),
    };
    for (i, scope) in scopes.iter().enumerate() {
        let mut stats = ScopeStats {
            scope: scope.to_vec(),
            ..ScopeStats::default()
        };
        let kv = w.kv.entry(scope.to_vec()).or_default();
        for k in 0..=i {
            let key = vec![b'k', k as u8, 0xff];
            let value = vec![b'v'; k * 3];
            st.kv_put(scope, &key, &value).or_fail("kv_put")?;
            kv.insert(key, value);
        }
        // Overwrite one and delete another, so counts follow the live entries.
        st.kv_put(scope, b"over", b"1").or_fail("kv_put")?;
        st.kv_put(scope, b"over", b"12345").or_fail("kv_put")?;
        kv.insert(b"over".to_vec(), b"12345".to_vec());
        st.kv_put(scope, b"del", b"x").or_fail("kv_put")?;
        st.kv_del(scope, b"del").or_fail("kv_del")?;
        stats.kv_entries = kv.len() as u64;
        stats.kv_bytes = kv.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        for (ns, key, n) in [
            (&b"n"[..], &b""[..], 3usize),
            (b"n", b"k", 1),
            (b"", b"\0", 2),
        ] {
            let values: Vec<Vec<u8>> = (0..n).map(|j| vec![j as u8; j + i]).collect();
            let ids = st
                .append_batch(scope, ns, key, &values)
                .or_fail("append_batch")?;
            let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
                return Err(Failure::new("append_batch returned no ids"));
            };
            stats.logs.push(LogStats {
                ns: ns.to_vec(),
                key: key.to_vec(),
                entries: n as u64,
                bytes: values.iter().map(|v| v.len() as u64).sum(),
                first_id: *first,
                last_id: *last,
            });
        }
        stats
            .logs
            .sort_by(|a, b| (&a.ns, &a.key).cmp(&(&b.ns, &b.key)));
        let items: Vec<Vec<u8>> = (0..=i + 1).map(|j| vec![b'q'; j]).collect();
        st.queue_push(scope, &items).or_fail("queue_push")?;
        st.queue_push(scope, &[b"last".to_vec()])
            .or_fail("queue_push")?;
        let popped = st.queue_pop(scope).or_fail("queue_pop")?;
        ensure_eq!(popped, Some(Vec::new()), "the first item popped");
        let queue: Vec<Vec<u8>> = items
            .into_iter()
            .skip(1)
            .chain([b"last".to_vec()])
            .collect();
        stats.queue_depth = queue.len() as u64;
        stats.queue_bytes = queue.iter().map(|v| v.len() as u64).sum();
        w.queue.insert(scope.to_vec(), queue);
        w.stats.insert(scope.to_vec(), stats);
    }
    st.clear(b"gone").or_fail("clear")?;
    w.stats.remove(&b"gone"[..]);
    w.kv.remove(&b"gone"[..]);
    w.queue.remove(&b"gone"[..]);
    Ok(w)
}

/// `list_scopes` pages through exactly the scopes written (a cleared one
/// gone), in byte order, each stamped with its last write; `scope_stats` of
/// each equals the model's count of kv entries, logs and queue items.
pub(crate) fn inspection_lists_and_measures_scopes_as_the_model_says(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    if let Some(skip) = skipped_unless_inspect(st) {
        return skip;
    }
    let w = write_sample(st)?;
    // A store on a server's clock (shared across hosts) stamps with that clock.
    let now = (!st.capabilities().shared_across_hosts).then(|| env.clock().now_millis());
    let mut listed = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = st.list_scopes(after.as_deref(), 2).or_fail("list_scopes")?;
        ensure!(
            page.len() <= 2,
            "list_scopes returned {} scopes for a limit of 2",
            page.len()
        );
        let done = page.len() < 2;
        if let Some(last) = page.last() {
            after = Some(last.scope.clone());
        }
        listed.extend(page);
        if done || listed.len() > 10 {
            break;
        }
    }
    ensure_eq!(
        listed.iter().map(|s| s.scope.clone()).collect::<Vec<_>>(),
        w.stats.keys().cloned().collect::<Vec<_>>(),
        "scopes listed page by page (limit 2), in byte order, the cleared one gone"
    );
    for info in &listed {
        ensure!(
            info.last_write_millis.is_some() && (now.is_none() || info.last_write_millis == now),
            "last-write stamp {:?} of a scope written at the clock's current time {now:?}",
            info.last_write_millis
        );
    }
    ensure_eq!(
        st.list_scopes(None, 0).or_fail("list_scopes")?.len(),
        0,
        "list_scopes with limit 0"
    );
    for (scope, want) in &w.stats {
        let mut got = st.scope_stats(scope).or_fail("scope_stats")?;
        ensure!(
            got.last_write_millis.is_some() && (now.is_none() || got.last_write_millis == now),
            "scope_stats stamp {:?}, the clock read {now:?}",
            got.last_write_millis
        );
        got.last_write_millis = None;
        ensure_eq!(&got, want, "scope_stats of a scope against the model");
    }
    let gone = st.scope_stats(b"gone").or_fail("scope_stats")?;
    ensure!(
        gone.is_empty(),
        "a cleared scope measures empty, got {gone:?}"
    );
    Ok(Outcome::Passed)
}

/// `export_kv` pages through a scope's entries in key order and
/// `export_queue` through its queue oldest first, without popping anything.
pub(crate) fn inspection_exports_every_entry_in_order_without_popping(
    run: &Run<'_>,
) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    if let Some(skip) = skipped_unless_inspect(st) {
        return skip;
    }
    let w = write_sample(st)?;
    for (scope, kv) in &w.kv {
        let mut got = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = st
                .export_kv(scope, after.as_deref(), 2)
                .or_fail("export_kv")?;
            let done = page.len() < 2;
            if let Some((k, _)) = page.last() {
                after = Some(k.clone());
            }
            got.extend(page);
            if done || got.len() > 100 {
                break;
            }
        }
        ensure_eq!(
            got,
            kv.clone().into_iter().collect::<Vec<_>>(),
            "kv entries exported page by page (limit 2)"
        );
    }
    for (scope, queue) in &w.queue {
        let mut got = Vec::new();
        let mut skip = 0u64;
        loop {
            let page = st.export_queue(scope, skip, 2).or_fail("export_queue")?;
            let done = page.len() < 2;
            skip += page.len() as u64;
            got.extend(page);
            if done || got.len() > 100 {
                break;
            }
        }
        ensure_eq!(
            &got,
            queue,
            "queue exported page by page (limit 2), oldest first"
        );
        ensure_eq!(
            st.scope_stats(scope).or_fail("scope_stats")?.queue_depth,
            queue.len() as u64,
            "queue depth after exporting (export must not pop)"
        );
    }
    Ok(Outcome::Passed)
}

/// A log record of namespace `n` to import.
fn rec(scope: &[u8], key: &[u8], id: i64, value: &[u8]) -> LogRecord {
    LogRecord {
        scope: scope.to_vec(),
        ns: b"n".to_vec(),
        key: key.to_vec(),
        id,
        value: value.to_vec(),
    }
}

/// `import_log` keeps ids above the high-water mark and raises it, so later
/// appends are above them; ids at or below the mark are remapped, in order,
/// above it; records out of id order are refused whole; `raise_id_high_water`
/// never lowers the mark.
pub(crate) fn import_log_keeps_ids_above_the_mark_and_never_reuses_one(
    run: &Run<'_>,
) -> CheckResult {
    let env = run.env()?;
    let st = &*env.store;
    if let Some(skip) = skipped_unless_inspect(st) {
        return skip;
    }
    // Marks at or below the first id (an empty source's) are harmless.
    st.raise_id_high_water(-1).or_fail("raise_id_high_water")?;
    st.raise_id_high_water(0).or_fail("raise_id_high_water")?;
    let first = st.append(b"s", b"n", b"a", b"before").or_fail("append")?;
    ensure!(
        first > 0,
        "the first append after raising the mark to 0 gave id {first}"
    );
    let mark = st.id_high_water().or_fail("id_high_water")?;
    ensure!(
        mark >= first,
        "id_high_water {mark} is below an id handed out ({first})"
    );
    let high = mark + 100;
    let kept = st
        .import_log(&[
            rec(b"s", b"a", high, b"x"),
            rec(b"t", b"b", high + 5, b"y"),
            rec(b"s", b"a", high + 6, b"z"),
        ])
        .or_fail("import_log")?;
    ensure_eq!(
        kept,
        vec![high, high + 5, high + 6],
        "ids of entries imported above the mark"
    );
    ensure!(
        st.id_high_water().or_fail("id_high_water")? >= high + 6,
        "the mark did not rise to the last imported id"
    );
    let scanned = st.scan(b"s", b"n", b"a", -1, 10).or_fail("scan")?;
    ensure_eq!(
        scanned
            .iter()
            .map(|e| (e.id, e.value.clone()))
            .collect::<Vec<_>>(),
        vec![
            (first, b"before".to_vec()),
            (high, b"x".to_vec()),
            (high + 6, b"z".to_vec())
        ],
        "the log after the import"
    );
    let next = st.append(b"s", b"n", b"a", b"after").or_fail("append")?;
    ensure!(
        next > high + 6,
        "an append after the import got id {next}, not above {}",
        high + 6
    );
    let remapped = st
        .import_log(&[rec(b"u", b"c", 0, b"old0"), rec(b"u", b"c", 1, b"old1")])
        .or_fail("import_log")?;
    ensure!(
        remapped.len() == 2 && remapped[0] > next && remapped[0] < remapped[1],
        "ids at or below the mark must be remapped above it ({next}), in order; got {remapped:?}"
    );
    let before = st.id_high_water().or_fail("id_high_water")?;
    let refused = st.import_log(&[
        rec(b"v", b"d", before + 10, b"1"),
        rec(b"v", b"d", before + 9, b"2"),
    ]);
    match refused {
        Err(e) if e.kind() == ErrorKind::InvalidInput => {}
        other => {
            return Err(Failure::new(format!(
                "import_log of records out of id order should fail with InvalidInput, got {other:?}"
            )));
        }
    }
    ensure!(
        st.scope_stats(b"v").or_fail("scope_stats")?.is_empty(),
        "a refused import wrote something"
    );
    st.raise_id_high_water(before + 50)
        .or_fail("raise_id_high_water")?;
    st.raise_id_high_water(0).or_fail("raise_id_high_water")?;
    let after = st.append(b"s", b"n", b"a", b"raised").or_fail("append")?;
    ensure!(
        after > before + 50,
        "append after raising the mark to {} gave {after}",
        before + 50
    );
    ensure_eq!(
        st.check().or_fail("check")?,
        Vec::<String>::new(),
        "problems check found in a healthy store"
    );
    // A gc pass removes imported scopes like any other.
    env.clock().advance(Duration::from_secs(2));
    let report = st.gc(Duration::from_secs(1)).or_fail("gc")?;
    ensure_eq!(report.scopes_removed(), 3, "scopes gc removed (s, t, u)");
    Ok(Outcome::Passed)
}
