#![doc = include_str!("../README.md")]

mod capabilities;
mod clock;
pub mod dirs;
mod error;
mod storage;

pub use capabilities::Capabilities;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, gc_cutoff_millis, system_clock};
pub use error::{BoxError, ErrorKind, Result, StorageError, default_hint};
pub use storage::{
    FunctionStorage, FunctionStorageExt, GcReport, LogEntry, SharedStorage, check_value_len,
};
