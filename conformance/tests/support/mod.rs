//! Backends for the suite's own tests: the tiny correct backend of the example,
//! a "durable" variant of it, and wrappers that break one promise each.

#![allow(dead_code, unreachable_pub, clippy::unnecessary_wraps)]

#[path = "../../../vgi-storage-core/examples/tiny_backend/backend.rs"]
#[allow(dead_code)]
pub mod tiny;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tiny::TinyStorage;
use vgi_storage_conformance::Fixture;
use vgi_storage_core::{
    Capabilities, ErrorKind, FunctionStorage, GcReport, LogEntry, Result, SharedStorage,
    StorageError,
};

/// The tiny backend, fresh per fixture.
pub fn open_tiny(fx: &Fixture) -> Result<SharedStorage> {
    Ok(Arc::new(TinyStorage::new(fx.clock())))
}

/// The tiny backend with a small value limit, so the too-large checks run.
pub fn open_tiny_limited(fx: &Fixture) -> Result<SharedStorage> {
    Ok(Arc::new(TinyStorage::new(fx.clock()).with_capabilities(
        Capabilities::new().with_max_value_len(64 * 1024),
    )))
}

type Registry = Mutex<BTreeMap<PathBuf, Arc<TinyStorage>>>;

static DURABLE: Registry = Mutex::new(BTreeMap::new());

/// The tiny backend made "durable" within this process: its state outlives the
/// handle, kept in a registry keyed by the fixture's directory, so a reopen from
/// the same fixture finds it again.
pub fn open_tiny_durable(fx: &Fixture) -> Result<SharedStorage> {
    let mut stores = DURABLE.lock().unwrap_or_else(PoisonError::into_inner);
    // Forget stores whose fixture is gone, so the registry does not grow forever.
    stores.retain(|dir, _| dir.exists());
    if fx.is_reopen() {
        let store = stores.get(fx.dir()).cloned().ok_or_else(|| {
            StorageError::open(
                "tiny-durable",
                fx.dir(),
                ErrorKind::NotFound,
                "no store was built on this fixture",
                None,
            )
        })?;
        return Ok(store);
    }
    let store = Arc::new(
        TinyStorage::new(fx.clock()).with_capabilities(Capabilities::new().with_durable(true)),
    );
    stores.insert(fx.dir().to_path_buf(), Arc::clone(&store));
    Ok(store)
}

/// Declares durability but loses everything on reopen.
pub fn open_forgetful(fx: &Fixture) -> Result<SharedStorage> {
    Ok(Arc::new(
        TinyStorage::new(fx.clock()).with_capabilities(Capabilities::new().with_durable(true)),
    ))
}

/// The one promise a [`Broken`] store breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `queue_push` of two or more items drops the second.
    DropsAPushedItem,
    /// `scan` returns its first two entries swapped.
    ScansOutOfOrder,
    /// Log ids restart from 0 after any `clear`.
    ReusesIdsAfterClear,
    /// `gc` reads the ttl's seconds as milliseconds, so it removes fresh scopes.
    GcRemovesFreshScopes,
    /// CAS is a get and then a put: two racers can both win.
    LosesCasRaces,
}

/// A correct store wrapped to break one promise.
pub struct Broken {
    inner: SharedStorage,
    fault: Fault,
    /// For [`Fault::ReusesIdsAfterClear`]: the next id handed out, and each real id's fake.
    ids: Mutex<(i64, HashMap<i64, i64>)>,
}

impl Broken {
    pub fn new(inner: SharedStorage, fault: Fault) -> Self {
        Self {
            inner,
            fault,
            ids: Mutex::new((0, HashMap::new())),
        }
    }

    fn fake_id(&self, real: i64) -> i64 {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        let fake = ids.0;
        ids.0 += 1;
        ids.1.insert(real, fake);
        fake
    }
}

/// A factory for the tiny backend broken by `fault`.
pub fn broken(fault: Fault) -> impl Fn(&Fixture) -> Result<SharedStorage> + Sync {
    move |fx: &Fixture| Ok(Arc::new(Broken::new(open_tiny(fx)?, fault)) as SharedStorage)
}

impl FunctionStorage for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.kv_get(scope, key)
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.kv_put(scope, key, value)
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.inner.kv_del(scope, key)
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        if self.fault != Fault::LosesCasRaces {
            return self.inner.kv_compare_and_swap(scope, key, expected, new);
        }
        if self.inner.kv_get(scope, key)?.as_deref() != expected {
            return Ok(false);
        }
        // The window a real get-then-put leaves open, widened a little.
        std::thread::yield_now();
        if let Some(v) = new {
            self.inner.kv_put(scope, key, v)?;
        } else {
            self.inner.kv_del(scope, key)?;
            // Keep the stamp a successful CAS gives, so only atomicity is broken.
            self.inner.kv_compare_and_swap(scope, key, None, None)?;
        }
        Ok(true)
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        let real = self.inner.append(scope, ns, key, value)?;
        Ok(if self.fault == Fault::ReusesIdsAfterClear {
            self.fake_id(real)
        } else {
            real
        })
    }

    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        let real = self.inner.append_batch(scope, ns, key, values)?;
        Ok(if self.fault == Fault::ReusesIdsAfterClear {
            real.into_iter().map(|id| self.fake_id(id)).collect()
        } else {
            real
        })
    }

    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.inner.kv_put_batch(scope, entries)
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        match self.fault {
            Fault::ScansOutOfOrder => {
                let mut entries = self.inner.scan(scope, ns, key, after_id, limit)?;
                if entries.len() >= 2 {
                    entries.swap(0, 1);
                }
                Ok(entries)
            }
            Fault::ReusesIdsAfterClear => {
                let all = self.inner.scan(scope, ns, key, -1, usize::MAX)?;
                let ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(all
                    .into_iter()
                    .map(|e| LogEntry {
                        id: ids.1.get(&e.id).copied().unwrap_or(e.id),
                        value: e.value,
                    })
                    .filter(|e| e.id > after_id)
                    .take(limit)
                    .collect())
            }
            _ => self.inner.scan(scope, ns, key, after_id, limit),
        }
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        if self.fault == Fault::DropsAPushedItem && items.len() >= 2 {
            let mut kept = items.to_vec();
            kept.remove(1);
            return self.inner.queue_push(scope, &kept);
        }
        self.inner.queue_push(scope, items)
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.queue_pop(scope)
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.inner.clear(scope)?;
        if self.fault == Fault::ReusesIdsAfterClear {
            self.ids.lock().unwrap_or_else(PoisonError::into_inner).0 = 0;
        }
        Ok(())
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        if self.fault == Fault::GcRemovesFreshScopes {
            return self.inner.gc(Duration::from_millis(ttl.as_secs()));
        }
        self.inner.gc(ttl)
    }

    fn list_scopes(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<vgi_storage_core::ScopeInfo>> {
        self.inner.list_scopes(after, limit)
    }

    fn scope_stats(&self, scope: &[u8]) -> Result<vgi_storage_core::ScopeStats> {
        self.inner.scope_stats(scope)
    }

    fn export_kv(
        &self,
        scope: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.export_kv(scope, after, limit)
    }

    fn export_queue(&self, scope: &[u8], skip: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        self.inner.export_queue(scope, skip, limit)
    }

    fn id_high_water(&self) -> Result<i64> {
        self.inner.id_high_water()
    }

    fn raise_id_high_water(&self, id: i64) -> Result<()> {
        self.inner.raise_id_high_water(id)
    }

    fn import_log(&self, records: &[vgi_storage_core::LogRecord]) -> Result<Vec<i64>> {
        self.inner.import_log(records)
    }

    fn check(&self) -> Result<Vec<String>> {
        self.inner.check()
    }
}
