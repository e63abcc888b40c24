//! [`VgiStorage`]: a vgi-storage store behind the `vgi` crate's storage trait.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use vgi_storage_core::{SharedStorage, StorageError};

use crate::retry::{GaveUp, Repeat, RetryPolicy};

/// Any vgi-storage store as a [`vgi::storage::FunctionStorage`], for
/// `vgi::worker::Worker::set_storage`.
///
/// Every call goes to the wrapped store. A retryable error is retried under
/// the [`RetryPolicy`]; an error that outlasts it, or a permanent one, fails
/// loudly: a `tracing` error event, then a panic whose message holds the
/// whole error chain. The `vgi` RPC layer turns that panic into an error for
/// the one call (see the crate docs). No write is dropped and no read answers
/// empty because of an error.
#[derive(Clone)]
pub struct VgiStorage {
    store: SharedStorage,
    policy: RetryPolicy,
}

impl VgiStorage {
    /// Wrap `store` with the default [`RetryPolicy`].
    #[must_use]
    pub fn new(store: SharedStorage) -> Self {
        Self {
            store,
            policy: RetryPolicy::DEFAULT,
        }
    }

    /// This adapter with another retry policy.
    #[must_use]
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The wrapped store, for the calls the `vgi` trait lacks
    /// (compare-and-swap, batch puts) and for fallible access.
    #[must_use]
    pub fn store(&self) -> &SharedStorage {
        &self.store
    }

    /// The retry policy in force.
    #[must_use]
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// This adapter as the handle `Worker::set_storage` takes.
    #[must_use]
    pub fn into_shared(self) -> vgi::storage::SharedStorage {
        Arc::new(self)
    }

    /// Run one call of the wrapped store under the policy; fail loudly if it
    /// does not succeed.
    fn call<T>(
        &self,
        operation: &'static str,
        repeat: Repeat,
        call: impl FnMut() -> Result<T, StorageError>,
    ) -> T {
        match self.policy.run(self.store.name(), operation, repeat, call) {
            Ok(value) => value,
            Err(gave_up) => self.fail_loudly(operation, &gave_up),
        }
    }

    #[cold]
    fn fail_loudly(&self, operation: &'static str, gave_up: &GaveUp) -> ! {
        let message = gave_up.message(self.store.name(), operation);
        tracing::error!(
            store = self.store.name(),
            operation,
            attempts = gave_up.attempts,
            kind = ?gave_up.error.kind(),
            error = %message,
            "vgi-storage: storage call failed; panicking so the vgi RPC layer fails this call"
        );
        // The vgi trait has no error channel. Answering `None`, an empty scan or
        // a made-up id, or dropping the write, would be silently wrong; the vgi
        // RPC layer catches this panic and fails the one request instead.
        panic!("{message}");
    }
}

impl fmt::Debug for VgiStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VgiStorage")
            .field("store", &self.store.name())
            .field("policy", &self.policy)
            .finish()
    }
}

impl vgi::storage::FunctionStorage for VgiStorage {
    fn kv_get(&self, scope: &[u8], key: &[u8]) -> Option<Vec<u8>> {
        self.call("kv_get", Repeat::Idempotent, || {
            self.store.kv_get(scope, key)
        })
    }

    fn kv_put(&self, scope: &[u8], key: &[u8], value: &[u8]) {
        self.call("kv_put", Repeat::Idempotent, || {
            self.store.kv_put(scope, key, value)
        });
    }

    fn kv_del(&self, scope: &[u8], key: &[u8]) {
        self.call("kv_del", Repeat::Idempotent, || {
            self.store.kv_del(scope, key)
        });
    }

    fn append(&self, scope: &[u8], ns: &[u8], key: &[u8], value: Vec<u8>) -> i64 {
        self.call("append", Repeat::Once, || {
            self.store.append(scope, ns, key, &value)
        })
    }

    #[cfg(feature = "append-many")]
    fn append_many(&self, scope: &[u8], ns: &[u8], key: &[u8], values: Vec<Vec<u8>>) -> Vec<i64> {
        self.call("append_batch", Repeat::Once, || {
            self.store.append_batch(scope, ns, key, &values)
        })
    }

    fn scan(
        &self,
        scope: &[u8],
        ns: &[u8],
        key: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Vec<(i64, Vec<u8>)> {
        self.call("scan", Repeat::Idempotent, || {
            self.store.scan(scope, ns, key, after_id, limit)
        })
        .into_iter()
        .map(|entry| (entry.id, entry.value))
        .collect()
    }

    fn queue_push(&self, scope: &[u8], items: &[Vec<u8>]) {
        self.call("queue_push", Repeat::Once, || {
            self.store.queue_push(scope, items)
        });
    }

    fn queue_pop(&self, scope: &[u8]) -> Option<Vec<u8>> {
        self.call("queue_pop", Repeat::Once, || self.store.queue_pop(scope))
    }

    fn clear(&self, scope: &[u8]) {
        self.call("clear", Repeat::Idempotent, || self.store.clear(scope));
    }

    /// A sweep that fails is logged, not raised: `gc` loses nothing by
    /// stopping (the next pass finishes the work), and it runs outside any
    /// request (`vgi` itself calls it only in `default_storage`, on its own
    /// store; a host sweeps from a timer or at start-up), where a panic would
    /// not be caught per call.
    fn gc(&self, ttl: Duration) {
        match self
            .policy
            .run(self.store.name(), "gc", Repeat::Idempotent, || {
                self.store.gc(ttl)
            }) {
            Ok(report) => tracing::debug!(
                store = self.store.name(),
                removed = report.scopes_removed(),
                "vgi-storage: gc pass done"
            ),
            Err(gave_up) => tracing::error!(
                store = self.store.name(),
                attempts = gave_up.attempts,
                kind = ?gave_up.error.kind(),
                error = %gave_up.message(self.store.name(), "gc"),
                "vgi-storage: gc pass failed; the next pass will finish it"
            ),
        }
    }
}
