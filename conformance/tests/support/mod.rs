//! Backends for the suite's own tests: the tiny correct backend of the example,
//! a "durable" variant of it, and wrappers that break one promise each.

#![allow(dead_code, unreachable_pub, clippy::unnecessary_wraps)]

#[path = "../../../vgi-storage-core/examples/tiny_backend/backend.rs"]
#[allow(dead_code)]
pub mod tiny;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tiny::TinyStorage;
use vgi_storage_conformance::Fixture;
use vgi_storage_core::{
    Capabilities, ErrorKind, FunctionStorage, GcReport, LogEntry, Result, SharedClock,
    SharedStorage, StorageError, check_name_len, check_value_len, gc_cutoff_millis,
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
    /// `scan` returns at most 1000 entries, whatever the limit (a page cap).
    CapsScansAt1000,
    /// `gc` removes at most 1000 scopes per call.
    GcRemovesAtMost1000,
    /// A push of more than 1000 items keeps only the first 1000.
    CapsPushesAt1000,
    /// Names are cut to 32 KiB before they reach the store.
    CutsNamesAt32Kib,
    /// Values longer than 16 MiB are cut to 16 MiB.
    CutsValuesAt16Mib,
    /// Declares a value limit one byte below the store's and enforces it in every
    /// write form but `queue_push`.
    QueuePushIgnoresTheLimit,
    /// CAS compares `unwrap_or_default()` of current and expected: empty equals absent.
    CasTakesEmptyForAbsent,
    /// `clear` of the empty scope does nothing.
    ClearIgnoresTheEmptyScope,
    /// Names pass through a lossy UTF-8 conversion before they reach the store.
    LossyNames,
    /// CAS compares only the first 1 KiB of the values.
    CasComparesAPrefix,
    /// A scan whose `after_id` is the id of an entry skips the entry after it too.
    ScanSkipsOneAfterAnExistingId,
    /// `kv_put` deletes the old value and then inserts the new one, in two steps.
    PutDeletesThenInserts,
    /// `append` and `append_batch` reserve ids first and insert later, so a later
    /// id can become visible before an earlier one.
    ReservesIdsBeforeInserting,
    /// `queue_push` pushes its items one by one.
    PushesOneAtATime,
    /// `gc` lists the stale scopes, then removes them without checking again.
    GcRemovesWithoutRechecking,
    /// `clear` returns at once and removes the data a moment later.
    ClearReturnsBeforeItIsDone,
    /// `queue_pop` answers "empty" when another pop holds the store's lock.
    BusyPopSaysEmpty,
}

type Bytes = Vec<u8>;
/// One log of [`Fault::ReservesIdsBeforeInserting`], by id.
type IdLog = BTreeMap<i64, Bytes>;

/// A correct store wrapped to break one promise.
pub struct Broken {
    inner: SharedStorage,
    fault: Fault,
    /// For [`Fault::ReusesIdsAfterClear`]: the next id handed out, and each real id's fake.
    ids: Mutex<(i64, HashMap<i64, i64>)>,
    /// For the gc faults: the store's clock and each scope's last write.
    clock: Option<SharedClock>,
    stamps: Mutex<BTreeMap<Bytes, i64>>,
    /// For [`Fault::ReservesIdsBeforeInserting`]: the next id, and the logs.
    next_id: AtomicI64,
    logs: Mutex<BTreeMap<(Bytes, Bytes, Bytes), IdLog>>,
    /// For [`Fault::BusyPopSaysEmpty`]: the lock file every pop takes (across threads and processes).
    lock_path: Option<PathBuf>,
}

impl Broken {
    pub fn new(inner: SharedStorage, fault: Fault) -> Self {
        Self {
            inner,
            fault,
            ids: Mutex::new((0, HashMap::new())),
            clock: None,
            stamps: Mutex::new(BTreeMap::new()),
            next_id: AtomicI64::new(0),
            logs: Mutex::new(BTreeMap::new()),
            lock_path: None,
        }
    }

    /// The wrapper on a fixture: it keeps the fixture's clock (for its own gc)
    /// and a lock file in the fixture's directory (for its "busy" pops).
    pub fn on_fixture(inner: SharedStorage, fault: Fault, fx: &Fixture) -> Self {
        Self {
            clock: Some(fx.clock()),
            lock_path: Some(fx.path("broken-busy.lock")),
            ..Self::new(inner, fault)
        }
    }

    fn now(&self) -> i64 {
        self.clock.as_ref().map_or(0, |c| c.now_millis())
    }

    /// Remember a write to `scope` for the wrapper's own gc.
    fn stamp(&self, scope: &[u8]) {
        if self.clock.is_some() {
            let now = self.now();
            lock(&self.stamps).insert(scope.to_vec(), now);
        }
    }

    fn name<'a>(&self, name: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self.fault {
            Fault::CutsNamesAt32Kib => {
                std::borrow::Cow::Borrowed(&name[..name.len().min(32 << 10)])
            }
            Fault::LossyNames => {
                std::borrow::Cow::Owned(String::from_utf8_lossy(name).into_owned().into_bytes())
            }
            _ => std::borrow::Cow::Borrowed(name),
        }
    }

    fn value<'a>(&self, value: &'a [u8]) -> &'a [u8] {
        if self.fault == Fault::CutsValuesAt16Mib {
            &value[..value.len().min(16 << 20)]
        } else {
            value
        }
    }

    /// For [`Fault::QueuePushIgnoresTheLimit`]: the limit it declares and enforces elsewhere.
    fn check_len(&self, len: usize) -> Result<()> {
        if self.fault == Fault::QueuePushIgnoresTheLimit {
            check_value_len("broken", self.capabilities().max_value_len, len)?;
        }
        Ok(())
    }

    /// A pause that widens the window a racy implementation leaves open.
    fn pause() {
        std::thread::sleep(Duration::from_micros(200));
    }

    fn fake_id(&self, real: i64) -> i64 {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        let fake = ids.0;
        ids.0 += 1;
        ids.1.insert(real, fake);
        fake
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A factory for the tiny backend broken by `fault`.
pub fn broken(fault: Fault) -> impl Fn(&Fixture) -> Result<SharedStorage> + Sync {
    move |fx: &Fixture| {
        let inner = if fault == Fault::QueuePushIgnoresTheLimit {
            open_tiny_limited(fx)?
        } else {
            open_tiny(fx)?
        };
        Ok(Arc::new(Broken::on_fixture(inner, fault, fx)) as SharedStorage)
    }
}

impl FunctionStorage for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }

    fn capabilities(&self) -> Capabilities {
        let caps = self.inner.capabilities();
        if self.fault == Fault::QueuePushIgnoresTheLimit {
            caps.with_max_value_len(caps.max_value_len - 1)
        } else {
            caps
        }
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.kv_get(&self.name(scope), &self.name(key))
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.check_len(value.len())?;
        let (scope, key) = (self.name(scope), self.name(key));
        if self.fault == Fault::PutDeletesThenInserts {
            self.inner.kv_del(&scope, &key)?;
            Self::pause();
        }
        self.inner.kv_put(&scope, &key, self.value(value))?;
        self.stamp(&scope);
        Ok(())
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.inner.kv_del(&self.name(scope), &self.name(key))
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        if let Some(v) = new {
            self.check_len(v.len())?;
        }
        let (scope, key) = (self.name(scope), self.name(key));
        let new = new.map(|v| self.value(v));
        let won = match self.fault {
            Fault::LosesCasRaces | Fault::CasTakesEmptyForAbsent | Fault::CasComparesAPrefix => {
                let current = self.inner.kv_get(&scope, &key)?;
                let matches = match self.fault {
                    Fault::CasTakesEmptyForAbsent => {
                        current.unwrap_or_default() == expected.unwrap_or_default()
                    }
                    Fault::CasComparesAPrefix => match (current.as_deref(), expected) {
                        (Some(c), Some(e)) => c[..c.len().min(1024)] == e[..e.len().min(1024)],
                        (c, e) => c == e,
                    },
                    _ => current.as_deref() == expected,
                };
                if !matches {
                    return Ok(false);
                }
                // The window a real get-then-put leaves open, widened a little.
                std::thread::yield_now();
                if let Some(v) = new {
                    self.inner.kv_put(&scope, &key, v)?;
                } else {
                    self.inner.kv_del(&scope, &key)?;
                    // Keep the stamp a successful CAS gives, so only atomicity is broken.
                    self.inner.kv_compare_and_swap(&scope, &key, None, None)?;
                }
                true
            }
            _ => self
                .inner
                .kv_compare_and_swap(&scope, &key, expected, new)?,
        };
        if won {
            self.stamp(&scope);
        }
        Ok(won)
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.check_len(value.len())?;
        let (scope, ns, key) = (self.name(scope), self.name(ns), self.name(key));
        if self.fault == Fault::ReservesIdsBeforeInserting {
            return Ok(self.reserve_and_insert(&scope, &ns, &key, &[value.to_vec()])[0]);
        }
        let real = self.inner.append(&scope, &ns, &key, self.value(value))?;
        self.stamp(&scope);
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
        values.iter().try_for_each(|v| self.check_len(v.len()))?;
        let (scope, ns, key) = (self.name(scope), self.name(ns), self.name(key));
        if self.fault == Fault::ReservesIdsBeforeInserting {
            return Ok(self.reserve_and_insert(&scope, &ns, &key, values));
        }
        let values: Vec<Vec<u8>> = values.iter().map(|v| self.value(v).to_vec()).collect();
        let real = self.inner.append_batch(&scope, &ns, &key, &values)?;
        if !values.is_empty() {
            self.stamp(&scope);
        }
        Ok(if self.fault == Fault::ReusesIdsAfterClear {
            real.into_iter().map(|id| self.fake_id(id)).collect()
        } else {
            real
        })
    }

    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        entries
            .iter()
            .try_for_each(|(_, v)| self.check_len(v.len()))?;
        let scope = self.name(scope);
        let entries: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| (self.name(k).into_owned(), self.value(v).to_vec()))
            .collect();
        self.inner.kv_put_batch(&scope, &entries)?;
        if !entries.is_empty() {
            self.stamp(&scope);
        }
        Ok(())
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let (scope, ns, key) = (self.name(scope), self.name(ns), self.name(key));
        let (scope, ns, key) = (&scope[..], &ns[..], &key[..]);
        match self.fault {
            Fault::ScansOutOfOrder => {
                let mut entries = self.inner.scan(scope, ns, key, after_id, limit)?;
                if entries.len() >= 2 {
                    entries.swap(0, 1);
                }
                Ok(entries)
            }
            Fault::CapsScansAt1000 => self.inner.scan(scope, ns, key, after_id, limit.min(1000)),
            Fault::ScanSkipsOneAfterAnExistingId => {
                let all = self.inner.scan(scope, ns, key, -1, usize::MAX)?;
                let skip = usize::from(all.iter().any(|e| e.id == after_id));
                Ok(all
                    .into_iter()
                    .filter(|e| e.id > after_id)
                    .skip(skip)
                    .take(limit)
                    .collect())
            }
            Fault::ReservesIdsBeforeInserting => {
                let logs = lock(&self.logs);
                Ok(logs
                    .get(&(scope.to_vec(), ns.to_vec(), key.to_vec()))
                    .map(|log| {
                        log.range(after_id.saturating_add(1)..)
                            .take(limit)
                            .map(|(id, v)| LogEntry {
                                id: *id,
                                value: v.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default())
            }
            Fault::ReusesIdsAfterClear => {
                let all = self.inner.scan(scope, ns, key, -1, usize::MAX)?;
                let ids = lock(&self.ids);
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
        let scope = self.name(scope);
        let items: Vec<Vec<u8>> = items.iter().map(|v| self.value(v).to_vec()).collect();
        match self.fault {
            Fault::DropsAPushedItem if items.len() >= 2 => {
                let mut kept = items.clone();
                kept.remove(1);
                self.inner.queue_push(&scope, &kept)?;
            }
            Fault::CapsPushesAt1000 => {
                self.inner
                    .queue_push(&scope, &items[..items.len().min(1000)])?;
            }
            Fault::PushesOneAtATime => {
                for item in &items {
                    self.inner.queue_push(&scope, std::slice::from_ref(item))?;
                    Self::pause();
                }
            }
            _ => self.inner.queue_push(&scope, &items)?,
        }
        if !items.is_empty() {
            self.stamp(&scope);
        }
        Ok(())
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        let scope = self.name(scope);
        if let (Fault::BusyPopSaysEmpty, Some(path)) = (self.fault, &self.lock_path) {
            {
                let io = |e: std::io::Error| {
                    StorageError::operation("broken", "queue_pop", ErrorKind::Io, "lock file", e)
                };
                let file = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .map_err(io)?;
                // The bug: a store that finds its lock taken says "empty" instead of Err(Busy).
                if file.try_lock().is_err() {
                    return Ok(None);
                }
                let item = self.inner.queue_pop(&scope);
                // Hold the lock a moment, as a commit would.
                Self::pause();
                drop(file);
                return item;
            }
        }
        self.inner.queue_pop(&scope)
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        let scope = self.name(scope);
        match self.fault {
            Fault::ClearIgnoresTheEmptyScope if scope.is_empty() => return Ok(()),
            Fault::ClearReturnsBeforeItIsDone => {
                let inner = Arc::clone(&self.inner);
                let scope = scope.into_owned();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(5));
                    let _ = inner.clear(&scope);
                });
                return Ok(());
            }
            _ => {}
        }
        self.inner.clear(&scope)?;
        lock(&self.stamps).remove(&scope[..]);
        if self.fault == Fault::ReusesIdsAfterClear {
            lock(&self.ids).0 = 0;
        }
        Ok(())
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
        match self.fault {
            Fault::GcRemovesFreshScopes => self.inner.gc(Duration::from_millis(ttl.as_secs())),
            Fault::GcRemovesAtMost1000 | Fault::GcRemovesWithoutRechecking => {
                let cutoff = gc_cutoff_millis(self.now(), ttl);
                let stale: Vec<Bytes> = lock(&self.stamps)
                    .iter()
                    .filter(|(_, t)| cutoff.is_some_and(|c| **t < c))
                    .map(|(s, _)| s.clone())
                    .take(if self.fault == Fault::GcRemovesAtMost1000 {
                        1000
                    } else {
                        usize::MAX
                    })
                    .collect();
                if self.fault == Fault::GcRemovesWithoutRechecking && !stale.is_empty() {
                    // The bug: writes landing now are removed with the scope
                    // below. Wait (a bounded while) for one to land, so the
                    // bug shows however the threads are scheduled: a loaded
                    // machine must not let it through.
                    let deadline = std::time::Instant::now() + Duration::from_millis(300);
                    while std::time::Instant::now() < deadline {
                        let stamps = lock(&self.stamps);
                        let rewritten = stale.iter().any(|s| {
                            stamps
                                .get(s)
                                .is_some_and(|t| cutoff.is_some_and(|c| *t >= c))
                        });
                        drop(stamps);
                        if rewritten {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                for s in &stale {
                    self.inner.clear(s)?;
                    lock(&self.stamps).remove(s);
                }
                Ok(GcReport { scopes: stale })
            }
            _ => self.inner.gc(ttl),
        }
    }
}

impl Broken {
    /// For [`Fault::ReservesIdsBeforeInserting`]: take ids now, insert after a
    /// pause (longer for batches), so ids become visible out of order.
    fn reserve_and_insert(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Vec<i64> {
        let n = i64::try_from(values.len()).unwrap_or(i64::MAX);
        let first = self.next_id.fetch_add(n, Ordering::SeqCst);
        if values.len() > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut logs = lock(&self.logs);
        let log = logs
            .entry((scope.to_vec(), ns.to_vec(), key.to_vec()))
            .or_default();
        (first..first + n)
            .zip(values)
            .map(|(id, v)| {
                log.insert(id, v.clone());
                id
            })
            .collect()
    }
}

/// A correct wrapper that declares a name limit and refuses longer names in
/// every method; with `check_batches` false it forgets the batch forms (broken).
pub struct NameLimit {
    pub inner: SharedStorage,
    pub max: usize,
    pub check_batches: bool,
}

/// A factory for the tiny backend behind a [`NameLimit`] of 1 KiB.
pub fn name_limited(check_batches: bool) -> impl Fn(&Fixture) -> Result<SharedStorage> + Sync {
    move |fx: &Fixture| {
        Ok(Arc::new(NameLimit {
            inner: open_tiny(fx)?,
            max: 1024,
            check_batches,
        }) as SharedStorage)
    }
}

impl NameLimit {
    fn check(&self, names: &[(&'static str, &[u8])]) -> Result<()> {
        names
            .iter()
            .try_for_each(|(what, n)| check_name_len("name-limited", self.max, what, n.len()))
    }
}

impl FunctionStorage for NameLimit {
    fn name(&self) -> &'static str {
        "name-limited"
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_max_key_len(self.max)
    }

    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check(&[("scope", scope), ("key", key)])?;
        self.inner.kv_get(scope, key)
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.check(&[("scope", scope), ("key", key)])?;
        self.inner.kv_put(scope, key, value)
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) -> Result<()> {
        self.check(&[("scope", scope), ("key", key)])?;
        self.inner.kv_del(scope, key)
    }

    fn kv_compare_and_swap(
        &self,
        scope: &[u8],
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.check(&[("scope", scope), ("key", key)])?;
        self.inner.kv_compare_and_swap(scope, key, expected, new)
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: &[u8]) -> Result<i64> {
        self.check(&[("scope", scope), ("namespace", ns), ("key", key)])?;
        self.inner.append(scope, ns, key, value)
    }

    fn append_batch(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        values: &[Vec<u8>],
    ) -> Result<Vec<i64>> {
        if self.check_batches {
            self.check(&[("scope", scope), ("namespace", ns), ("key", key)])?;
        }
        self.inner.append_batch(scope, ns, key, values)
    }

    fn kv_put_batch(&self, scope: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if self.check_batches {
            self.check(&[("scope", scope)])?;
            entries
                .iter()
                .try_for_each(|(k, _)| self.check(&[("key", k)]))?;
        }
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
        self.check(&[("scope", scope), ("namespace", ns), ("key", key)])?;
        self.inner.scan(scope, ns, key, after_id, limit)
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) -> Result<()> {
        self.check(&[("scope", scope)])?;
        self.inner.queue_push(scope, items)
    }

    fn queue_pop(&self, scope: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check(&[("scope", scope)])?;
        self.inner.queue_pop(scope)
    }

    fn clear(&self, scope: &[u8]) -> Result<()> {
        self.check(&[("scope", scope)])?;
        self.inner.clear(scope)
    }

    fn gc(&self, ttl: Duration) -> Result<GcReport> {
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
