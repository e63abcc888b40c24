//! What a check hands the backend's factory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vgi_storage_core::{ManualClock, Result, SharedClock, SharedStorage};

/// Builds the store under test. The suite calls it once per store it needs,
/// and again with [`Fixture::is_reopen`] set to reopen the same store.
pub trait Factory: Fn(&Fixture) -> Result<SharedStorage> + Sync {}
impl<F: Fn(&Fixture) -> Result<SharedStorage> + Sync> Factory for F {}

/// Everything a factory needs to build (or rebuild) one store for one check.
///
/// - [`dir`](Fixture::dir): a fresh directory, unique to the check, that lives as
///   long as the check; put the store's files here.
/// - [`name`](Fixture::name): a token unique to the check (`[a-z0-9_]`, starts
///   with a letter), the same on reopen and in child processes; a server backend
///   uses it for its schema or database name.
/// - [`clock`](Fixture::clock): the check's manual clock; stamp writes with it so
///   `gc` checks can move time.
/// - [`is_reopen`](Fixture::is_reopen): `true` when the store was built before
///   from this fixture and must be opened again on the same data.
/// - [`declare_file_backed`](Fixture::declare_file_backed): a store that keeps
///   all its data in files under `dir()` calls it, and the fault checks run.
#[derive(Debug, Clone)]
pub struct Fixture {
    dir: PathBuf,
    name: String,
    clock: ManualClock,
    reopen: bool,
    file_backed: Arc<AtomicBool>,
    busy_timeout: Option<Duration>,
}

impl Fixture {
    /// A fixture on an existing directory (the suite makes these; backend tests may too).
    #[must_use]
    pub fn new(dir: PathBuf, name: String, clock: ManualClock, reopen: bool) -> Self {
        Self {
            dir,
            name,
            clock,
            reopen,
            file_backed: Arc::default(),
            busy_timeout: None,
        }
    }

    /// Declare that the store keeps all its data in files directly under
    /// [`dir`](Fixture::dir), and nowhere else.
    ///
    /// A factory calls it to opt in to the fault checks, which cap the size of
    /// those files (`RLIMIT_FSIZE`) or make them read-only while the store is
    /// open, and expect `StorageFull` or `ReadOnly` errors that leave nothing
    /// half-written. The declaration holds for every reopen of the fixture.
    pub fn declare_file_backed(&self) {
        self.file_backed.store(true, Ordering::SeqCst);
    }

    /// Whether the factory called [`declare_file_backed`](Fixture::declare_file_backed).
    #[must_use]
    pub fn is_file_backed(&self) -> bool {
        self.file_backed.load(Ordering::SeqCst)
    }

    /// The same fixture, asking the factory for a busy timeout of `timeout`.
    #[must_use]
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = Some(timeout);
        self
    }

    /// How long the store should wait on a lock held by another connection or
    /// process before it gives up with a retryable error, when the check asks
    /// for a specific (short) wait; `None` means the backend's default.
    ///
    /// A factory whose backend has such a setting applies it:
    ///
    /// ```ignore
    /// let mut builder = MyStorage::builder(fx.path("state.db"));
    /// if let Some(timeout) = fx.busy_timeout() {
    ///     builder = builder.busy_timeout(timeout);
    /// }
    /// ```
    #[must_use]
    pub fn busy_timeout(&self) -> Option<Duration> {
        self.busy_timeout
    }

    /// The check's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir().join(file)`: where to put a store file.
    #[must_use]
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A token unique to this check, stable across reopen and child processes.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The check's clock, as backends take it.
    #[must_use]
    pub fn clock(&self) -> SharedClock {
        Arc::new(self.clock.clone())
    }

    /// The check's clock, to move time.
    #[must_use]
    pub fn manual_clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Whether this build is a reopen of a store built earlier from this fixture.
    #[must_use]
    pub fn is_reopen(&self) -> bool {
        self.reopen
    }

    /// The same fixture, marked as a reopen.
    #[must_use]
    pub fn reopened(&self) -> Self {
        Self {
            reopen: true,
            ..self.clone()
        }
    }
}
