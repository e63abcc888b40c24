#![doc = include_str!("../README.md")]

mod checkpoint;
mod config;
mod error;
mod group;
mod inspect;
mod read;
mod schema;
mod storage;
mod turn;

pub use config::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_CACHE_KIB, DEFAULT_CHECKPOINT_PAGES, DEFAULT_MMAP_SIZE,
    DEFAULT_READ_CONNECTIONS, SqliteBuilder, Synchronous,
};
pub use storage::{MAX_VALUE_LEN, SqliteStorage};
