//! The ceilings: each raw engine doing the work of the workloads in the most
//! direct way, with the same durability as our backend on that engine.
//!
//! They implement `FunctionStorage` only so the same workload functions drive
//! them; they are not backends. They keep what the workloads need (scope
//! stamps for `gc`, ids that grow within a log, exactly-once pops) and nothing
//! else: no error classification, no value-size checks, no format versioning,
//! no migration, no per-call hints.

pub(crate) mod map;
pub(crate) mod naive;
pub(crate) mod postgres;
pub(crate) mod redb;
pub(crate) mod sqlite;

use vgi_storage::{ErrorKind, StorageError};

/// A raw engine error, kept as the source.
fn engine_error(
    store: &str,
    op: &'static str,
    e: impl Into<vgi_storage::BoxError>,
) -> StorageError {
    StorageError::operation(store, op, ErrorKind::Other, "raw engine call failed", e)
}
