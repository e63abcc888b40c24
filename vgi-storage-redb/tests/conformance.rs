//! The shared conformance suite, on the default (exclusive, one-process) mode.

use std::sync::Arc;

use vgi_storage_conformance::Fixture;
use vgi_storage_core::{Result, SharedStorage};
use vgi_storage_redb::RedbStorage;

fn open(fx: &Fixture) -> Result<SharedStorage> {
    Ok(Arc::new(
        RedbStorage::builder(fx.path("state.redb"))
            .clock(fx.clock())
            .open()?,
    ))
}

vgi_storage_conformance::conformance_suite!(open);
