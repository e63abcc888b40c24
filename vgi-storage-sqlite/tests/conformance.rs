//! The shared conformance suite, with the store in a temp file (multi-process
//! checks included), called exactly as a third-party backend would call it.

use std::sync::Arc;

use vgi_storage_conformance::Fixture;
use vgi_storage_core::{Result, SharedStorage};
use vgi_storage_sqlite::SqliteStorage;

fn open(fx: &Fixture) -> Result<SharedStorage> {
    Ok(Arc::new(
        SqliteStorage::builder(fx.path("state.db"))
            .clock(fx.clock())
            .open()?,
    ))
}

vgi_storage_conformance::conformance_suite!(open);
