//! The suite proves its own power: each deliberately broken backend must fail
//! the named checks that cover the promise it breaks. A check that passes a
//! broken backend is a bug in the suite, and these tests fail.

mod support;

use support::{Fault, broken, open_forgetful};
use vgi_storage_conformance::{CHECKS, Factory, Settings};

fn assert_caught(factory: &dyn Factory, checks: &[&str]) {
    for name in checks {
        let check = CHECKS
            .iter()
            .find(|c| c.name() == *name)
            .unwrap_or_else(|| panic!("no check named {name}"));
        match check.run(factory, &Settings::default()) {
            Err(failure) => eprintln!(
                "{name} caught it: {}",
                failure.message().lines().next().unwrap_or_default()
            ),
            Ok(outcome) => panic!("{name} let a broken backend through: {outcome:?}"),
        }
    }
}

#[test]
fn a_push_that_drops_an_item_is_caught() {
    assert_caught(
        &broken(Fault::DropsAPushedItem),
        &[
            "queue_is_fifo_across_pushes",
            "queue_pop_is_exactly_once_across_threads",
            "model_matches_random_operations",
        ],
    );
}

#[test]
fn a_scan_out_of_order_is_caught() {
    assert_caught(
        &broken(Fault::ScansOutOfOrder),
        &[
            "scan_pages_through_a_log_in_id_order",
            "log_tail_sees_every_entry_in_order_across_threads",
            "model_matches_random_operations",
        ],
    );
}

#[test]
fn ids_reused_after_clear_are_caught() {
    assert_caught(
        &broken(Fault::ReusesIdsAfterClear),
        &[
            "ids_are_never_reused_after_clear",
            "model_matches_random_operations",
        ],
    );
}

#[test]
fn gc_removing_a_fresh_scope_is_caught() {
    assert_caught(
        &broken(Fault::GcRemovesFreshScopes),
        &[
            "gc_never_removes_a_scope_written_within_the_ttl",
            "model_matches_random_operations",
        ],
    );
}

#[test]
fn a_cas_that_loses_races_is_caught() {
    assert_caught(
        &broken(Fault::LosesCasRaces),
        &["cas_counter_loses_no_update_across_threads"],
    );
}

#[test]
fn a_store_that_forgets_on_reopen_is_caught() {
    assert_caught(
        &open_forgetful,
        &[
            "state_survives_reopen",
            "ids_are_never_reused_after_reopen",
            "model_matches_random_operations_across_reopens",
        ],
    );
}

/// The report of `run_all` shows the failure too, not only the single check.
#[test]
fn run_all_reports_a_broken_backend_as_failed() {
    let report = vgi_storage_conformance::run_all(&broken(Fault::ScansOutOfOrder));
    assert!(!report.is_success());
    assert!(
        report
            .failures()
            .any(|(name, _)| name == "scan_pages_through_a_log_in_id_order")
    );
}
