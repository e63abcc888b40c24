//! Building each compiled-in backend from a validated [`StorageConfig`].

use vgi_storage_core::{Result, SharedClock, SharedStorage};

use crate::{BackendKind, StorageConfig};

/// Open the configured backend; `clock` is a test clock, `None` for the store's
/// own (the system clock locally, the server's clock for PostgreSQL).
#[allow(clippy::needless_pass_by_value)] // consumed only when a backend is compiled in
pub(crate) fn open(
    config: &StorageConfig,
    test_clock: Option<SharedClock>,
) -> Result<SharedStorage> {
    let kind: BackendKind = config.backend;
    #[cfg(feature = "postgres")]
    if kind == BackendKind::Postgres {
        return postgres(config, test_clock);
    }
    let clock = test_clock.unwrap_or_else(vgi_storage_core::system_clock);
    match kind {
        #[cfg(feature = "memory")]
        BackendKind::Memory => Ok(std::sync::Arc::new(
            vgi_storage_memory::MemoryStorage::with_clock(clock),
        )),
        #[cfg(feature = "sqlite")]
        BackendKind::Sqlite => sqlite(config, clock),
        #[cfg(feature = "redb")]
        BackendKind::Redb => redb(config, clock),
        // Reached only in builds without some backend; with every feature on it is dead.
        #[allow(unreachable_patterns)]
        other => {
            let _ = clock;
            other.ensure_compiled_in()?;
            Err(crate::config::config_error(
                other,
                "backend is compiled in but not wired".into(),
            ))
        }
    }
}

#[cfg(feature = "sqlite")]
fn sqlite(config: &StorageConfig, clock: SharedClock) -> Result<SharedStorage> {
    use vgi_storage_sqlite::{SqliteStorage, Synchronous};
    let path = match &config.path {
        Some(path) => path.clone(),
        None => default_file("state.db", config.backend)?,
    };
    let mut builder = SqliteStorage::builder(path).clock(clock);
    if let Some(sync) = config.options.get("synchronous") {
        builder = builder.synchronous(sync.parse::<Synchronous>()?);
    }
    if let Some(ms) = config.u64_option("busy_timeout_ms")? {
        builder = builder.busy_timeout(std::time::Duration::from_millis(ms));
    }
    if let Some(max) = max_value_len(config)? {
        builder = builder.max_value_len(max);
    }
    if let Some(pages) = config.u64_option("checkpoint_pages")? {
        // `validate` admitted only 1 to u32::MAX.
        builder = builder.checkpoint_pages(u32::try_from(pages).unwrap_or(u32::MAX));
    }
    Ok(std::sync::Arc::new(builder.open()?))
}

#[cfg(feature = "redb")]
fn redb(config: &StorageConfig, clock: SharedClock) -> Result<SharedStorage> {
    use vgi_storage_redb::{Durability, RedbStorage};
    let path = match &config.path {
        Some(path) => path.clone(),
        None => default_file("state.redb", config.backend)?,
    };
    let mut builder = RedbStorage::builder(path).clock(clock);
    if let Some(durability) = config.options.get("durability") {
        // `validate` admitted only these two spellings.
        builder = builder.durability(if durability.eq_ignore_ascii_case("deferred") {
            Durability::Deferred
        } else {
            Durability::Immediate
        });
    }
    if let Some(multi) = config.bool_option("multi_process")? {
        builder = builder.multi_process(multi);
    }
    if let Some(max) = max_value_len(config)? {
        builder = builder.max_value_len(max);
    }
    Ok(std::sync::Arc::new(builder.open()?))
}

#[cfg(feature = "postgres")]
fn postgres(config: &StorageConfig, test_clock: Option<SharedClock>) -> Result<SharedStorage> {
    use vgi_storage_postgres::{PostgresSource, PostgresStorage};
    let mut builder = match &config.url {
        Some(url) => PostgresStorage::builder(url.as_str()),
        None => PostgresStorage::builder(PostgresSource::Env),
    };
    if let Some(clock) = test_clock {
        builder = builder.test_clock(clock);
    }
    if let Some(schema) = config.options.get("schema") {
        builder = builder.schema(schema.as_str());
    }
    if let Some(n) = config.u64_option("pool_size")? {
        builder = builder.pool_size(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(ms) = config.u64_option("checkout_timeout_ms")? {
        builder = builder.checkout_timeout(std::time::Duration::from_millis(ms));
    }
    if let Some(max) = max_value_len(config)? {
        builder = builder.max_value_len(max);
    }
    Ok(std::sync::Arc::new(builder.connect()?))
}

/// The `max_value_len` option (a backend clamps it to its own limit).
#[cfg(any(feature = "sqlite", feature = "redb", feature = "postgres"))]
fn max_value_len(config: &StorageConfig) -> Result<Option<usize>> {
    Ok(config
        .u64_option("max_value_len")?
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
}

#[cfg(any(feature = "sqlite", feature = "redb"))]
fn default_file(file: &str, backend: BackendKind) -> Result<std::path::PathBuf> {
    use std::io::ErrorKind as Io;
    use vgi_storage_core::ErrorKind;
    let dir = vgi_storage_core::dirs::default_dir().map_err(|e| {
        let kind = match e.kind() {
            Io::PermissionDenied => ErrorKind::PermissionDenied,
            Io::ReadOnlyFilesystem => ErrorKind::ReadOnly,
            Io::StorageFull => ErrorKind::StorageFull,
            Io::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Other,
        };
        vgi_storage_core::StorageError::open(
            backend.name(),
            std::env::temp_dir(),
            kind,
            "cannot create the per-user default directory; set VGI_WORKER_SHARED_STORAGE \
             to a URL with an explicit path",
            Some(Box::new(e)),
        )
    })?;
    Ok(dir.join(file))
}
