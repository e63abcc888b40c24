//! Raw redb with `Durability::Immediate` (an fsync per commit), the redb
//! backend's default: the ceiling of the redb backend.

use std::path::Path;
use std::time::Duration;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use vgi_storage::{
    Capabilities, FunctionStorage, GcReport, LogEntry, Result, SharedClock, gc_cutoff_millis,
};

use super::engine_error;

type Bytes = &'static [u8];
const KV: TableDefinition<(Bytes, Bytes), Bytes> = TableDefinition::new("kv");
const LOG: TableDefinition<(Bytes, Bytes, Bytes, i64), Bytes> = TableDefinition::new("log");
const QUEUE: TableDefinition<(Bytes, u64), Bytes> = TableDefinition::new("queue");
const TOUCH: TableDefinition<Bytes, i64> = TableDefinition::new("touch");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// One redb file, one commit per write call.
pub(crate) struct RawRedb {
    name: String,
    db: Database,
    clock: SharedClock,
}

type R<T> = std::result::Result<T, redb::Error>;

impl RawRedb {
    pub(crate) fn open(path: &Path, clock: SharedClock) -> Result<Self> {
        let name = format!("raw-redb:{}", path.display());
        let db = Database::create(path).map_err(|e| engine_error(&name, "open", e))?;
        let store = Self { name, db, clock };
        store.write("open", |tx| {
            tx.open_table(KV)?;
            tx.open_table(LOG)?;
            tx.open_table(QUEUE)?;
            tx.open_table(TOUCH)?;
            tx.open_table(META)?;
            Ok(((), true))
        })?;
        Ok(store)
    }

    /// Run `f` in a write transaction; commit (durably) when it says so.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&WriteTransaction) -> R<(T, bool)>,
    ) -> Result<T> {
        let err = |e: redb::Error| engine_error(&self.name, op, e);
        let mut tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| err(e.into()))?;
        let (out, commit) = f(&tx).map_err(err)?;
        if commit {
            tx.commit().map_err(|e| err(e.into()))?;
        } else {
            tx.abort().map_err(|e| err(e.into()))?;
        }
        Ok(out)
    }

    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&redb::ReadTransaction) -> R<T>,
    ) -> Result<T> {
        let err = |e: redb::Error| engine_error(&self.name, op, e);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        f(&tx).map_err(err)
    }

    fn touch(&self, tx: &WriteTransaction, scope: &[u8]) -> R<()> {
        tx.open_table(TOUCH)?
            .insert(scope, self.clock.now_millis())?;
        Ok(())
    }
}

/// Take the next value of a counter in META.
fn next(tx: &WriteTransaction, name: &str) -> R<u64> {
    let mut meta = tx.open_table(META)?;
    let n = meta.get(name)?.map_or(0, |v| v.value());
    meta.insert(name, n + 1)?;
    Ok(n)
}

/// The smallest byte string greater than `scope`: every tuple that starts with
/// `scope` sorts below every tuple that starts with `after(scope)`.
fn after(scope: &[u8]) -> Vec<u8> {
    let mut v = scope.to_vec();
    v.push(0);
    v
}

fn delete_scope(tx: &WriteTransaction, scope: &[u8]) -> R<()> {
    let end = after(scope);
    let e: &[u8] = &end;
    tx.open_table(KV)?
        .retain_in((scope, &b""[..])..(e, &b""[..]), |_, _| false)?;
    tx.open_table(LOG)?.retain_in(
        (scope, &b""[..], &b""[..], i64::MIN)..(e, &b""[..], &b""[..], i64::MIN),
        |_, _| false,
    )?;
    tx.open_table(QUEUE)?
        .retain_in((scope, 0)..(e, 0), |_, _| false)?;
    tx.open_table(TOUCH)?.remove(scope)?;
    Ok(())
}

impl FunctionStorage for RawRedb {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new().with_durable(true)
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read("kv_get", |tx| {
            Ok(tx
                .open_table(KV)?
                .get((scope, key))?
                .map(|v| v.value().to_vec()))
        })
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.write("kv_put", |tx| {
            tx.open_table(KV)?.insert((scope, key), value)?;
            self.touch(tx, scope)?;
            Ok(((), true))
        })
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.write("kv_del", |tx| {
            tx.open_table(KV)?.remove((scope, key))?;
            Ok(((), true))
        })
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.write("kv_compare_and_swap", |tx| {
            {
                let mut kv = tx.open_table(KV)?;
                let current = kv.get((scope, key))?.map(|v| v.value().to_vec());
                if current.as_deref() != expected {
                    return Ok((false, false));
                }
                match new {
                    Some(v) => drop(kv.insert((scope, key), v)?),
                    None => drop(kv.remove((scope, key))?),
                }
            }
            self.touch(tx, scope)?;
            Ok((true, true))
        })
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.write("append", |tx| {
            let id = next(tx, "id")? as i64;
            tx.open_table(LOG)?.insert((scope, ns, key, id), value)?;
            self.touch(tx, scope)?;
            Ok((id, true))
        })
    }

    /// One transaction (one fsync) for the whole batch, as the backend does:
    /// `--scale` grows its stores with batches.
    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        self.write("append_batch", |tx| {
            let mut ids = Vec::with_capacity(values.len());
            {
                let mut log = tx.open_table(LOG)?;
                for value in values {
                    let id = next(tx, "id")? as i64;
                    log.insert((scope, ns, key, id), value.as_slice())?;
                    ids.push(id);
                }
            }
            self.touch(tx, scope)?;
            Ok((ids, true))
        })
    }

    /// One transaction (one fsync) for the whole batch, as the backend does.
    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write("kv_put_batch", |tx| {
            {
                let mut kv = tx.open_table(KV)?;
                for (key, value) in entries {
                    kv.insert((scope, key.as_slice()), value.as_slice())?;
                }
            }
            self.touch(tx, scope)?;
            Ok(((), true))
        })
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        self.read("scan", |tx| {
            let log = tx.open_table(LOG)?;
            let from = after_id.saturating_add(1).max(0);
            let mut out = Vec::new();
            for entry in log
                .range((scope, ns, key, from)..=(scope, ns, key, i64::MAX))?
                .take(limit)
            {
                let (k, v) = entry?;
                out.push(LogEntry {
                    id: k.value().3,
                    value: v.value().to_vec(),
                });
            }
            Ok(out)
        })
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.write("queue_push", |tx| {
            let first = {
                let mut meta = tx.open_table(META)?;
                let n = meta.get("seq")?.map_or(0, |v| v.value());
                meta.insert("seq", n + items.len() as u64)?;
                n
            };
            let mut queue = tx.open_table(QUEUE)?;
            for (i, item) in items.iter().enumerate() {
                queue.insert((scope, first + i as u64), item.as_slice())?;
            }
            drop(queue);
            self.touch(tx, scope)?;
            Ok(((), true))
        })
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        self.write("queue_pop", |tx| {
            let mut queue = tx.open_table(QUEUE)?;
            let head = match queue.range((scope, 0)..=(scope, u64::MAX))?.next() {
                Some(entry) => {
                    let (k, v) = entry?;
                    Some((k.value().1, v.value().to_vec()))
                }
                None => None,
            };
            match head {
                Some((seq, item)) => {
                    queue.remove((scope, seq))?;
                    Ok((Some(item), true))
                }
                None => Ok((None, false)),
            }
        })
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.write("clear", |tx| delete_scope(tx, scope).map(|()| ((), true)))
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        let Some(cutoff) = gc_cutoff_millis(self.clock.now_millis(), ttl) else {
            return Ok(GcReport::default());
        };
        self.write("gc", |tx| {
            let mut scopes = Vec::new();
            for entry in tx.open_table(TOUCH)?.iter()? {
                let (k, v) = entry?;
                if v.value() < cutoff {
                    scopes.push(k.value().to_vec());
                }
            }
            for scope in &scopes {
                delete_scope(tx, scope)?;
            }
            Ok((GcReport { scopes }, true))
        })
    }
}
