#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backends;
mod config;
mod env;
mod kind;
mod redact;
#[cfg(feature = "tracing")]
mod traced;

pub use config::StorageConfig;
pub use env::{
    DEFAULT_TTL, EnvStorage, STORAGE_VAR, TTL_VAR, config_from_vars, from_env, from_vars,
    ttl_from_vars,
};
pub use kind::BackendKind;
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub use traced::TracedStorage;
pub use vgi_storage_core::*;

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use vgi_storage_memory as memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use vgi_storage_postgres as postgres;
#[cfg(feature = "redb")]
#[cfg_attr(docsrs, doc(cfg(feature = "redb")))]
pub use vgi_storage_redb as redb;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use vgi_storage_sqlite as sqlite;

/// Build a store from a URL: `memory:`, `sqlite:/path/state.db?synchronous=full`,
/// `redb:/path/state.redb`, `postgres://user@host/db?schema=vgi`, or a bare
/// backend name for its default location.
///
/// See [`StorageConfig`] for every form and option. An unknown scheme, a bad
/// option, or a backend whose feature is not compiled in is an error that says
/// what to fix; there is no fallback to another backend.
pub fn open(url: &str) -> Result<SharedStorage> {
    StorageConfig::from_url(url)?.open()
}
