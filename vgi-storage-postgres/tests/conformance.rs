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

/// The suite skips its size checks at the server's own limit (a value that large
/// would need a gigabyte of memory); with a small configured limit they run.
#[test]
fn a_configured_value_limit_is_enforced_whole() {
    let open_capped = |fx: &Fixture| -> Result<SharedStorage> {
        Ok(Arc::new(
            vgi_storage_postgres::testing::store_builder(fx.name())?
                .test_clock(fx.clock())
                .max_value_len(64 * 1024)
                .connect()?,
        ))
    };
    let outcome = vgi_storage_conformance::run_value_limit_checks_in_test(
        "a_configured_value_limit_is_enforced_whole",
        &open_capped,
    );
    assert!(
        matches!(outcome, Ok(vgi_storage_conformance::Outcome::Passed)),
        "{outcome:?}"
    );
}
