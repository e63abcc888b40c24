//! The shared conformance suite against the memory backend, called exactly as a
//! third-party backend would call it.

use std::sync::Arc;

use vgi_storage_conformance::Fixture;
use vgi_storage_core::{Result, SharedStorage};
use vgi_storage_memory::MemoryStorage;

/// A fresh store on the fixture's clock. The memory backend is not durable, so
/// a reopen starts empty; the suite skips the checks that need durability.
#[expect(
    clippy::unnecessary_wraps,
    reason = "the suite's factory returns Result; this backend cannot fail to open"
)]
fn open(fx: &Fixture) -> Result<SharedStorage> {
    Ok(Arc::new(MemoryStorage::with_clock(fx.clock())))
}

vgi_storage_conformance::conformance_suite!(open);
