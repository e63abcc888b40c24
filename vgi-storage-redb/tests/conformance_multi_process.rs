//! The shared conformance suite, in multi-process mode (redb's
//! `ConcurrencyMode::MultiWriter`): the across-processes checks run here.

use std::sync::Arc;

use vgi_storage_conformance::Fixture;
use vgi_storage_core::{Result, SharedStorage};
use vgi_storage_redb::RedbStorage;

fn open(fx: &Fixture) -> Result<SharedStorage> {
    // All of the store is in files under the fixture's directory: the fault checks run.
    fx.declare_file_backed();
    let mut builder = RedbStorage::builder(fx.path("state.redb"))
        .clock(fx.clock())
        .multi_process(true);
    // A check that asks for a short wait on a held lock gets it.
    if let Some(timeout) = fx.busy_timeout() {
        builder = builder.busy_timeout(timeout);
    }
    Ok(Arc::new(builder.open()?))
}

vgi_storage_conformance::conformance_suite!(open);
