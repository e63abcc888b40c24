#![doc = include_str!("../README.md")]

mod error;
mod scope;
mod storage;

pub use storage::MemoryStorage;
