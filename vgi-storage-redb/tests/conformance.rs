//! The shared conformance suite, on the default (exclusive, one-process) mode.

use std::sync::Arc;

use vgi_storage_conformance::Fixture;
use vgi_storage_core::{Result, SharedStorage};
use vgi_storage_redb::RedbStorage;

fn open(fx: &Fixture) -> Result<SharedStorage> {
    // All of the store is in files under the fixture's directory: the fault checks run.
    fx.declare_file_backed();
    let mut builder = RedbStorage::builder(fx.path("state.redb")).clock(fx.clock());
    // A check that asks for a short wait on a held lock gets it.
    if let Some(timeout) = fx.busy_timeout() {
        builder = builder.busy_timeout(timeout);
    }
    Ok(Arc::new(builder.open()?))
}

vgi_storage_conformance::conformance_suite!(open);

/// The suite skips its size checks at redb's own limit (a value that large
/// would need a gigabyte or more of memory); with a small configured limit they run.
#[test]
fn a_configured_value_limit_is_enforced_whole() {
    let open_capped = |fx: &Fixture| -> Result<SharedStorage> {
        Ok(Arc::new(
            RedbStorage::builder(fx.path("state.redb"))
                .clock(fx.clock())
                .max_value_len(64 * 1024)
                .open()?,
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
