//! The shared conformance suite against a throwaway PostgreSQL server, one schema per check.

use std::sync::Arc;

use vgi_storage_conformance::Fixture;
use vgi_storage_core::{Result, SharedStorage};

/// Each check gets its own schema, named after the fixture; a reopen (or a
/// child process) connects to the same schema and finds the same data.
fn open(fx: &Fixture) -> Result<SharedStorage> {
    Ok(Arc::new(vgi_storage_postgres::testing::open_store(
        fx.name(),
        fx.clock(),
    )?))
}

vgi_storage_conformance::conformance_suite!(open);
