#![doc = include_str!("../README.md")]
//!
//! ```rust
#![doc = include_str!("../examples/tiny_backend/backend.rs")]
//! // In the backend's tests/conformance.rs, one line runs every check:
//! vgi_storage_conformance::conformance_suite!(open);
//! # fn main() { assert!(vgi_storage_conformance::run_all(&open).is_success()); }
//! ```

// The backends use std::os::unix (owner-only modes, file locks, uids).
#[cfg(not(unix))]
compile_error!("vgi-storage supports Unix only (Linux, macOS, the BSDs): it uses std::os::unix");

mod capabilities;
mod clock;
pub mod dirs;
mod error;
mod inspect;
mod storage;
mod text;

pub use capabilities::Capabilities;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, gc_cutoff_millis, system_clock};
pub use error::{BoxError, ErrorKind, Result, StorageError, default_hint};
pub use inspect::{LogRecord, LogStats, ScopeInfo, ScopeStats, inspection_unsupported};
pub use storage::{
    FunctionStorage, FunctionStorageExt, GcReport, LogEntry, SharedStorage, check_import_order,
    check_name_len, check_value_len,
};
pub use text::percent_decode;
