//! Running the blocking client from anywhere, a tokio runtime included.
//!
//! The `postgres` crate is a blocking wrapper around `tokio-postgres`: every
//! connection owns a small current-thread runtime and each call `block_on`s it.
//! Tokio refuses to block on a runtime from a thread that is already driving
//! one ("Cannot start a runtime from within a runtime"), and a dropped
//! connection's runtime refuses to shut down there too. A VGI worker serving
//! HTTP calls the store from exactly such threads.
//!
//! So a call made from inside a runtime runs on a helper thread of its own,
//! which borrows everything it needs and is joined before the call returns;
//! a connection dropped inside a runtime is dropped on a detached helper
//! thread. A call from a plain thread runs where it is, paying nothing. A
//! thread per call costs tens of microseconds, small next to a round trip to
//! the server, and only callers inside a runtime pay it.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

use vgi_storage_core::{ErrorKind, Result, StorageError};

/// Whether the current thread is inside a tokio runtime, where blocking on
/// the client's own runtime would panic.
pub(crate) fn in_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// Run `f` here, or on a helper thread when this thread is inside a tokio runtime.
///
/// `store` and `operation` name the call in the error returned when no helper
/// thread can be started.
pub(crate) fn off_runtime<T: Send>(
    store: &str,
    operation: &'static str,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    if !in_runtime() {
        return f();
    }
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("vgi-storage-postgres".to_owned())
            .spawn_scoped(scope, f)
            .map_err(|e| {
                StorageError::operation(
                    store,
                    operation,
                    ErrorKind::Unavailable,
                    "called inside a tokio runtime, the call needs a helper thread and the \
                     system refused to start one; retry the call, or call from a blocking \
                     thread (tokio::task::spawn_blocking)",
                    e,
                )
            })?;
        // Our code does not panic; if the client did, let the panic go on as it would
        // have without the helper thread.
        helper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A value (a client with its own runtime) that must not be dropped inside a
/// tokio runtime: dropped there, it is dropped on a helper thread instead.
pub(crate) struct DropOffRuntime<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> DropOffRuntime<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(Some(value))
    }
}

impl<T: Send + 'static> Deref for DropOffRuntime<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Only `drop` takes the value out.
        match &self.0 {
            Some(v) => v,
            None => unreachable!("value used after drop"),
        }
    }
}

impl<T: Send + 'static> DerefMut for DropOffRuntime<T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.0 {
            Some(v) => v,
            None => unreachable!("value used after drop"),
        }
    }
}

impl<T: Send + 'static> Drop for DropOffRuntime<T> {
    fn drop(&mut self) {
        if !in_runtime() {
            return;
        }
        let Some(value) = self.0.take() else {
            return;
        };
        let slot = Arc::new(Mutex::new(Some(value)));
        let helper_slot = Arc::clone(&slot);
        let spawned = std::thread::Builder::new()
            .name("vgi-storage-postgres-close".to_owned())
            .spawn(move || {
                drop(
                    helper_slot
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take(),
                );
            });
        if spawned.is_err() {
            // Dropping it here would panic; leak it instead (the server closes the
            // session when this process exits).
            let value = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            std::mem::forget(value);
        }
    }
}
