#![doc = include_str!("../README.md")]

mod blocking;
mod config;
mod error;
mod inspect;
mod pool;
mod schema;
mod store;
// Test support, not public API: the `testing` feature exists for this
// workspace's own tests and benchmarks and may change in any release.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
mod tls;

pub use config::{
    DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_SCHEMA,
    PostgresBuilder, PostgresSource,
};
pub use postgres::Config as PgConfig;
pub use store::{MAX_REQUEST_LEN, MAX_VALUE_LEN, PostgresStorage};
