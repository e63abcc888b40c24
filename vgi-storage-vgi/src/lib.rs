#![doc = include_str!("../README.md")]

mod adapter;
mod retry;

pub use adapter::VgiStorage;
pub use retry::RetryPolicy;
/// The `vgi` crate this adapter was built against, so a worker can check that
/// it names the same version (`vgi_storage_vgi::vgi::storage::FunctionStorage`).
pub use vgi;
