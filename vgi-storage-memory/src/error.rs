//! The memory backend's errors, built in this one place.
//!
//! There is no engine underneath, so the only failure an operation can meet is
//! running out of log ids.

use std::fmt;

use vgi_storage_core::{ErrorKind, StorageError};

/// The engine-level cause kept as the `source` when log ids run out.
#[derive(Debug)]
struct IdsExhausted {
    requested: usize,
}

impl fmt::Display for IdsExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no room for {} more log ids below i64::MAX",
            self.requested
        )
    }
}

impl std::error::Error for IdsExhausted {}

/// `operation` needed `requested` log ids and the store has handed out all of them.
pub(crate) fn ids_exhausted(
    store: &str,
    operation: &'static str,
    requested: usize,
) -> StorageError {
    StorageError::operation(
        store,
        operation,
        ErrorKind::StorageFull,
        "the store has handed out every log id; open a new store",
        IdsExhausted { requested },
    )
}
