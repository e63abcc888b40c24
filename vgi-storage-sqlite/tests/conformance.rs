//! The shared conformance suite, with the store in a temp file (multi-process
//! checks included), called exactly as a third-party backend would call it.

use std::sync::Arc;

use vgi_storage_conformance::Fixture;
use vgi_storage_core::{Result, SharedStorage};
use vgi_storage_sqlite::SqliteStorage;

/// The store on the fixture's file and clock, with the fixture's busy timeout
/// when a check asks for a short one.
fn open(fx: &Fixture) -> Result<SharedStorage> {
    // All of the store is in files under the fixture's directory: the fault checks run.
    fx.declare_file_backed();
    let mut builder = SqliteStorage::builder(fx.path("state.db")).clock(fx.clock());
    if let Some(timeout) = fx.busy_timeout() {
        builder = builder.busy_timeout(timeout);
    }
    Ok(Arc::new(builder.open()?))
}

vgi_storage_conformance::conformance_suite!(open);

/// The suite skips its size checks at SQLite's own limit (a value that large
/// would need a gigabyte or more of memory); with a small configured limit they run.
#[test]
fn a_configured_value_limit_is_enforced_whole() {
    let open_capped = |fx: &Fixture| -> Result<SharedStorage> {
        Ok(Arc::new(
            SqliteStorage::builder(fx.path("state.db"))
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

/// The crash checks again, with a store that checkpoints after every commit
/// or two (`checkpoint_pages(2)`): the writer processes are killed while
/// their checkpointer threads, and writers past the limit, are copying the
/// WAL into the database, and every acknowledged write must still be there
/// (issue 14: checkpoints moved off the committing call onto a thread).
#[test]
fn kills_during_checkpoints_lose_no_acknowledged_write() {
    let open_eager = |fx: &Fixture| -> Result<SharedStorage> {
        fx.declare_file_backed();
        Ok(Arc::new(
            SqliteStorage::builder(fx.path("state.db"))
                .clock(fx.clock())
                .checkpoint_pages(2)
                .open()?,
        ))
    };
    for check in [
        "acknowledged_writes_survive_sigkill",
        "queue_pop_loses_at_most_the_item_in_flight_per_kill",
    ] {
        let outcome = vgi_storage_conformance::run_in_test(
            check,
            "kills_during_checkpoints_lose_no_acknowledged_write",
            None,
            &open_eager,
        );
        assert!(
            matches!(outcome, Ok(vgi_storage_conformance::Outcome::Passed)),
            "{check}: {outcome:?}"
        );
    }
}
