//! The inspection surface (see `FunctionStorage::list_scopes` and the
//! methods after it), kept apart from the write path in `ops.rs`.
//!
//! Every read runs in one redb read transaction, so each call sees one
//! snapshot. `import_log` and `raise_id_high_water` run in their own write
//! transaction (redb serialises them with the group-committed writes) and keep
//! the `scope_touch` index in step exactly as `ops.rs` does.

use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use vgi_storage_core::{LogRecord, LogStats, ScopeInfo, ScopeStats};

use crate::ops::{KV, LOG, META, NEXT_ID, NEXT_SEQ, QUEUE, TOUCH, TOUCH_BY_TIME, successor};

type Res<T> = Result<T, redb::Error>;

pub(crate) fn list_scopes(
    txn: &ReadTransaction,
    after: Option<&[u8]>,
    limit: usize,
) -> Res<Vec<ScopeInfo>> {
    let touch = txn.open_table(TOUCH)?;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut out = Vec::new();
    for row in touch.range::<&[u8]>((start, Bound::Unbounded))?.take(limit) {
        let (k, v) = row?;
        out.push(ScopeInfo {
            scope: k.value().to_vec(),
            last_write_millis: Some(v.value()),
        });
    }
    Ok(out)
}

pub(crate) fn scope_stats(txn: &ReadTransaction, scope: &[u8]) -> Res<ScopeStats> {
    let end = successor(scope);
    let end = end.as_slice();
    let none: &[u8] = &[];
    let mut stats = ScopeStats {
        scope: scope.to_vec(),
        last_write_millis: txn.open_table(TOUCH)?.get(scope)?.map(|v| v.value()),
        ..ScopeStats::default()
    };
    for row in txn.open_table(KV)?.range((scope, none)..(end, none))? {
        let (k, v) = row?;
        stats.kv_entries += 1;
        stats.kv_bytes += (k.value().1.len() + v.value().len()) as u64;
    }
    for row in txn
        .open_table(LOG)?
        .range((scope, none, none, 0)..(end, none, none, 0))?
    {
        let (k, v) = row?;
        let (_, ns, key, id) = k.value();
        let id = id as i64;
        let bytes = v.value().len() as u64;
        match stats.logs.last_mut() {
            Some(log) if log.ns == ns && log.key == key => {
                log.entries += 1;
                log.bytes += bytes;
                log.last_id = id;
            }
            _ => stats.logs.push(LogStats {
                ns: ns.to_vec(),
                key: key.to_vec(),
                entries: 1,
                bytes,
                first_id: id,
                last_id: id,
            }),
        }
    }
    for row in txn.open_table(QUEUE)?.range((scope, 0)..(end, 0))? {
        let (_, v) = row?;
        stats.queue_depth += 1;
        stats.queue_bytes += v.value().len() as u64;
    }
    Ok(stats)
}

pub(crate) fn export_kv(
    txn: &ReadTransaction,
    scope: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Res<Vec<(Vec<u8>, Vec<u8>)>> {
    let end = successor(scope);
    let none: &[u8] = &[];
    let start = after.map_or(Bound::Included((scope, none)), |after| {
        Bound::Excluded((scope, after))
    });
    let kv = txn.open_table(KV)?;
    let mut out = Vec::new();
    for row in kv
        .range::<(&[u8], &[u8])>((start, Bound::Excluded((end.as_slice(), none))))?
        .take(limit)
    {
        let (k, v) = row?;
        out.push((k.value().1.to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

pub(crate) fn export_queue(
    txn: &ReadTransaction,
    scope: &[u8],
    skip: u64,
    limit: usize,
) -> Res<Vec<Vec<u8>>> {
    let end = successor(scope);
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    let queue = txn.open_table(QUEUE)?;
    let mut out = Vec::new();
    for row in queue
        .range((scope, 0)..(end.as_slice(), 0))?
        .skip(skip)
        .take(limit)
    {
        out.push(row?.1.value().to_vec());
    }
    Ok(out)
}

/// The next log id to hand out (ids start at 1).
fn next_id_read(txn: &ReadTransaction) -> Res<u64> {
    Ok(txn.open_table(META)?.get(NEXT_ID)?.map_or(1, |v| v.value()))
}

pub(crate) fn high_water(txn: &ReadTransaction) -> Res<i64> {
    Ok(next_id_read(txn)? as i64 - 1)
}

/// Raise the next id to at least `id + 1`.
pub(crate) fn raise_high_water(txn: &WriteTransaction, id: i64) -> Res<()> {
    let want = (id.max(0) as u64).saturating_add(1);
    let mut meta = txn.open_table(META)?;
    let next = meta.get(NEXT_ID)?.map_or(1, |v| v.value());
    if want > next {
        meta.insert(NEXT_ID, want)?;
    }
    Ok(())
}

/// Write `records` (ascending ids, checked by the caller): ids kept while
/// above the mark, fresh ones from the first that is not.
pub(crate) fn import_log(txn: &WriteTransaction, records: &[LogRecord], now: i64) -> Res<Vec<i64>> {
    let mut meta = txn.open_table(META)?;
    let mut next = meta.get(NEXT_ID)?.map_or(1, |v| v.value());
    let mut log = txn.open_table(LOG)?;
    let mut ids = Vec::with_capacity(records.len());
    let mut remapping = false;
    for r in records {
        let id = match u64::try_from(r.id) {
            Ok(id) if !remapping && id >= next => id,
            _ => {
                remapping = true;
                next
            }
        };
        if id >= i64::MAX as u64 {
            return Err(redb::Error::Corrupted(
                "next_log_id counter would pass i64::MAX".into(),
            ));
        }
        log.insert(
            (r.scope.as_slice(), r.ns.as_slice(), r.key.as_slice(), id),
            r.value.as_slice(),
        )?;
        next = id + 1;
        ids.push(id as i64);
    }
    meta.insert(NEXT_ID, next)?;
    let mut touch = txn.open_table(TOUCH)?;
    let mut by_time = txn.open_table(TOUCH_BY_TIME)?;
    let mut last: Option<&[u8]> = None;
    for r in records {
        let scope = r.scope.as_slice();
        if last == Some(scope) {
            continue;
        }
        last = Some(scope);
        let old = touch.insert(scope, now)?.map(|g| g.value());
        if old != Some(now) {
            if let Some(old) = old {
                by_time.remove((old, scope))?;
            }
            by_time.insert((now, scope), ())?;
        }
    }
    Ok(ids)
}

/// The store's invariants: ids and sequence numbers below their counters,
/// every scope with data stamped, the two stamp tables in step.
pub(crate) fn check(txn: &ReadTransaction) -> Res<Vec<String>> {
    let mut problems = Vec::new();
    let meta = txn.open_table(META)?;
    let next_id = meta.get(NEXT_ID)?.map_or(1, |v| v.value());
    let next_seq = meta.get(NEXT_SEQ)?.map_or(1, |v| v.value());
    let touch = txn.open_table(TOUCH)?;
    let stamped = |scope: &[u8]| -> Res<bool> { Ok(touch.get(scope)?.is_some()) };
    let lossy = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    for row in txn.open_table(LOG)?.iter()? {
        let (k, _) = row?;
        let (scope, _, _, id) = k.value();
        if id >= next_id {
            problems.push(format!(
                "scope {} holds log id {id} at or above the next id {next_id}",
                lossy(scope)
            ));
        }
        if !stamped(scope)? {
            problems.push(format!(
                "scope {} holds a log entry but no stamp",
                lossy(scope)
            ));
        }
    }
    for row in txn.open_table(QUEUE)?.iter()? {
        let (k, _) = row?;
        let (scope, seq) = k.value();
        if seq >= next_seq {
            problems.push(format!(
                "scope {} holds queue item {seq} at or above the next sequence {next_seq}",
                lossy(scope)
            ));
        }
        if !stamped(scope)? {
            problems.push(format!(
                "scope {} holds a queue item but no stamp",
                lossy(scope)
            ));
        }
    }
    for row in txn.open_table(KV)?.iter()? {
        let (k, _) = row?;
        let scope = k.value().0;
        if !stamped(scope)? {
            problems.push(format!(
                "scope {} holds a kv entry but no stamp",
                lossy(scope)
            ));
        }
    }
    let by_time = txn.open_table(TOUCH_BY_TIME)?;
    for row in touch.iter()? {
        let (k, v) = row?;
        if by_time.get((v.value(), k.value()))?.is_none() {
            problems.push(format!(
                "scope {} is missing from the by-time index",
                lossy(k.value())
            ));
        }
    }
    problems.dedup();
    problems.truncate(100);
    Ok(problems)
}
