//! `from_env`: the store a worker gets from its environment, as the reference reads it.

use std::time::Duration;

use vgi_storage_core::{GcReport, Result, SharedStorage, StorageError};

use crate::{BackendKind, StorageConfig};

/// Picks the backend: `memory`, `sqlite`, `redb`, `postgres`, or a URL such as
/// `sqlite:/path/state.db`. Unset or empty means SQLite in the per-user default directory.
pub const STORAGE_VAR: &str = "VGI_WORKER_SHARED_STORAGE";

/// The orphan TTL in whole seconds for the `gc` pass run when the store is built.
pub const TTL_VAR: &str = "VGI_BUFFERING_STORE_TTL_SECS";

/// The orphan TTL when [`TTL_VAR`] is unset: 24 hours.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A store built from the environment, with the result of its start-up `gc` pass.
#[derive(Clone)]
#[non_exhaustive]
pub struct EnvStorage {
    /// The store.
    pub storage: SharedStorage,
    /// The config it was built from.
    pub config: StorageConfig,
    /// The orphan TTL the `gc` pass used.
    pub ttl: Duration,
    /// What the start-up `gc` pass removed.
    pub gc: GcReport,
}

impl std::fmt::Debug for EnvStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvStorage")
            .field("storage", &self.storage.name())
            .field("config", &self.config)
            .field("ttl", &self.ttl)
            .field("gc", &self.gc)
            .finish()
    }
}

/// Build the store the environment asks for and run one `gc` pass on it.
///
/// Reads [`STORAGE_VAR`] and [`TTL_VAR`]. A malformed value of either is an
/// error naming the variable, never silently ignored.
///
/// ```no_run
/// let env = vgi_storage::from_env()?;
/// println!("{} (gc removed {} stale scopes)", env.storage.name(), env.gc.scopes_removed());
/// # Ok::<(), vgi_storage::StorageError>(())
/// ```
pub fn from_env() -> Result<EnvStorage> {
    from_vars(|name| std::env::var(name).ok())
}

/// [`from_env`] with the variables read through `var` instead of the process
/// environment (for tests, and for workers that keep their settings elsewhere).
pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<EnvStorage> {
    let config = config_from_vars(&var)?;
    let ttl = ttl_from_vars(&var)?;
    let storage = config.open()?;
    let gc = storage.gc(ttl)?;
    Ok(EnvStorage {
        storage,
        config,
        ttl,
        gc,
    })
}

/// The config [`STORAGE_VAR`] names, without opening it.
///
/// The reference implementation's `fs` and `http` values have no backend here;
/// they are refused with an error naming what to use instead.
pub fn config_from_vars(var: impl Fn(&str) -> Option<String>) -> Result<StorageConfig> {
    let value = var(STORAGE_VAR);
    if let Some(hint) = value
        .as_deref()
        .map(str::trim)
        .and_then(reference_only_value)
    {
        return Err(StorageError::Config {
            store: "vgi-storage".to_owned(),
            hint,
            source: None,
        });
    }
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(StorageConfig::new(BackendKind::Sqlite)),
        Some(value) => StorageConfig::from_url(value).map_err(|e| StorageError::Config {
            store: "vgi-storage".to_owned(),
            hint: format!("{STORAGE_VAR} is not a backend name or storage URL"),
            source: Some(Box::new(e)),
        }),
    }
}

/// What to use instead of a [`STORAGE_VAR`] value that only the reference
/// implementation accepts (`fs`, `http`), or `None` for any other value.
fn reference_only_value(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    match lower.as_str() {
        "fs" => Some(format!(
            "{STORAGE_VAR}={value} picks the reference implementation's filesystem store, \
             which vgi-storage does not have; use sqlite (unset {STORAGE_VAR} for the \
             per-user default file, or sqlite:/path/state.db) to share state between the \
             processes of one host"
        )),
        "http" | "https" => Some(format!(
            "{STORAGE_VAR}={value} picks the reference implementation's HTTP storage \
             service client, which vgi-storage does not have; for workers on many hosts use \
             a PostgreSQL server (postgres://user@host/db, Cargo feature `postgres` of \
             vgi-storage), or sqlite:/path/state.db when they share one host"
        )),
        _ => None,
    }
}

/// The TTL [`TTL_VAR`] sets, or [`DEFAULT_TTL`].
pub fn ttl_from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Duration> {
    match var(TTL_VAR) {
        None => Ok(DEFAULT_TTL),
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| StorageError::Config {
                store: "vgi-storage".to_owned(),
                hint: format!(
                    "{TTL_VAR}={raw} is not a whole number of seconds; unset it for 24 h"
                ),
                source: Some(Box::new(e)),
            }),
    }
}
