//! The cross-process checks prove their power too: a correct backend shared by
//! processes (SQLite), broken one promise at a time, must fail the check that
//! covers it. Each test re-executes itself in child processes, so it calls
//! `run_in_test` with its own libtest name.

mod support;

use std::sync::Arc;

use support::{Broken, Fault};
use vgi_storage_conformance::{Fixture, run_in_test};
use vgi_storage_core::{Result, SharedStorage};
use vgi_storage_sqlite::SqliteStorage;

fn broken_sqlite(fault: Fault) -> impl Fn(&Fixture) -> Result<SharedStorage> + Sync {
    move |fx: &Fixture| {
        let mut builder = SqliteStorage::builder(fx.path("state.db")).clock(fx.clock());
        if let Some(timeout) = fx.busy_timeout() {
            builder = builder.busy_timeout(timeout);
        }
        let sqlite = builder.open()?;
        Ok(Arc::new(Broken::on_fixture(Arc::new(sqlite), fault, fx)) as SharedStorage)
    }
}

fn assert_caught(check: &str, test_name: &str, fault: Fault) {
    match run_in_test(check, test_name, None, &broken_sqlite(fault)) {
        Err(failure) => eprintln!("{check} caught it: {}", failure.message()),
        Ok(outcome) => panic!("{check} let a broken backend through: {outcome:?}"),
    }
}

#[test]
fn a_cas_that_loses_races_between_processes_is_caught() {
    assert_caught(
        "cas_counter_loses_no_update_across_processes",
        "a_cas_that_loses_races_between_processes_is_caught",
        Fault::LosesCasRaces,
    );
}

#[test]
fn a_push_that_drops_an_item_is_caught_across_processes() {
    assert_caught(
        "queue_pop_is_exactly_once_across_processes",
        "a_push_that_drops_an_item_is_caught_across_processes",
        Fault::DropsAPushedItem,
    );
}

#[test]
fn a_scan_out_of_order_is_caught_across_processes() {
    assert_caught(
        "log_tail_sees_every_entry_in_order_across_processes",
        "a_scan_out_of_order_is_caught_across_processes",
        Fault::ScansOutOfOrder,
    );
}

#[test]
fn a_busy_pop_that_says_empty_is_caught_across_processes() {
    assert_caught(
        "a_busy_queue_never_answers_empty_across_processes",
        "a_busy_pop_that_says_empty_is_caught_across_processes",
        Fault::BusyPopSaysEmpty,
    );
}

/// The same checks pass the unbroken backend, so the failures above come from the faults.
#[test]
fn the_unbroken_backend_passes_the_cross_process_checks() {
    let open = |fx: &Fixture| -> Result<SharedStorage> {
        Ok(Arc::new(
            SqliteStorage::builder(fx.path("state.db"))
                .clock(fx.clock())
                .open()?,
        ))
    };
    for check in [
        "cas_counter_loses_no_update_across_processes",
        "queue_pop_is_exactly_once_across_processes",
        "log_tail_sees_every_entry_in_order_across_processes",
        "a_busy_queue_never_answers_empty_across_processes",
    ] {
        let outcome = run_in_test(
            check,
            "the_unbroken_backend_passes_the_cross_process_checks",
            None,
            &open,
        );
        assert!(
            matches!(outcome, Ok(vgi_storage_conformance::Outcome::Passed)),
            "{check}: {outcome:?}"
        );
    }
}
