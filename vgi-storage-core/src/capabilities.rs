//! What a backend promises, so callers and the conformance suite know what to expect.

/// What a backend promises.
///
/// A `Copy` struct of flags and limits. Build it with the `const fn` methods so a
/// third-party backend can declare its capabilities in a `const`:
///
/// ```
/// use vgi_storage_core::Capabilities;
///
/// const CAPS: Capabilities = Capabilities::new()
///     .with_durable(true)
///     .with_shared_across_processes(true)
///     .with_max_value_len(1 << 30);
/// assert!(CAPS.durable && !CAPS.shared_across_hosts);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
// Independent flags a backend declares, not states of one machine.
#[allow(clippy::struct_excessive_bools)]
pub struct Capabilities {
    /// State survives the process that wrote it and a reopen of the store.
    pub durable: bool,
    /// Several processes on one host may open the store at once and see one state.
    pub shared_across_processes: bool,
    /// Processes on several hosts may share the store.
    pub shared_across_hosts: bool,
    /// The largest value, in bytes, that `kv_put`, `append` and `queue_push` accept.
    /// A larger value is refused with [`crate::ErrorKind::TooLarge`] and nothing is written.
    pub max_value_len: usize,
    /// The longest scope, namespace or key, in bytes, that every method accepts.
    /// A longer name is refused with [`crate::ErrorKind::InvalidInput`]
    /// ([`crate::StorageError::NameTooLong`]) before anything is written.
    /// `usize::MAX` (the default) means no limit: names of a mebibyte and more work.
    pub max_key_len: usize,
    /// The backend implements the inspection surface natively
    /// ([`FunctionStorage::list_scopes`](crate::FunctionStorage::list_scopes) and
    /// the methods after it). When `false`, those methods refuse with
    /// [`crate::ErrorKind::Unsupported`].
    pub inspect: bool,
}

impl Capabilities {
    /// No promises beyond the contract itself, and values up to `usize::MAX` bytes.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            durable: false,
            shared_across_processes: false,
            shared_across_hosts: false,
            max_value_len: usize::MAX,
            max_key_len: usize::MAX,
            inspect: false,
        }
    }

    /// Set [`Capabilities::durable`].
    #[must_use]
    pub const fn with_durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Set [`Capabilities::shared_across_processes`].
    #[must_use]
    pub const fn with_shared_across_processes(mut self, shared: bool) -> Self {
        self.shared_across_processes = shared;
        self
    }

    /// Set [`Capabilities::shared_across_hosts`] (which implies sharing across processes).
    #[must_use]
    pub const fn with_shared_across_hosts(mut self, shared: bool) -> Self {
        self.shared_across_hosts = shared;
        if shared {
            self.shared_across_processes = true;
        }
        self
    }

    /// Set [`Capabilities::max_value_len`].
    #[must_use]
    pub const fn with_max_value_len(mut self, max: usize) -> Self {
        self.max_value_len = max;
        self
    }

    /// Set [`Capabilities::max_key_len`].
    #[must_use]
    pub const fn with_max_key_len(mut self, max: usize) -> Self {
        self.max_key_len = max;
        self
    }
}

impl Capabilities {
    /// Set [`Capabilities::inspect`].
    #[must_use]
    pub const fn with_inspect(mut self, inspect: bool) -> Self {
        self.inspect = inspect;
        self
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::new()
    }
}
