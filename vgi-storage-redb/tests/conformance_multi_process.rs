//! The shared conformance suite, in multi-process mode (redb's
//! `ConcurrencyMode::MultiWriter`): the across-processes checks run here.

use std::sync::Arc;

use vgi_storage_conformance::Fixture;
use vgi_storage_core::{Result, SharedStorage};
use vgi_storage_redb::RedbStorage;

fn open(fx: &Fixture) -> Result<SharedStorage> {
    // All of the store is in files under the fixture's directory: the fault checks run.
    fx.declare_file_backed();
    Ok(Arc::new(
        RedbStorage::builder(fx.path("state.redb"))
            .clock(fx.clock())
            .multi_process(true)
            .open()?,
    ))
}

vgi_storage_conformance::conformance_suite!(open);
