#![doc = include_str!("../README.md")]

mod error;
mod group;
mod inspect;
mod ops;
mod store;

pub use store::{DEFAULT_BUSY_TIMEOUT, Durability, MAX_VALUE_LEN, RedbBuilder, RedbStorage};
