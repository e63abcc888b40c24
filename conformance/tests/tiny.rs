//! The whole suite against the tiny correct backend of `vgi-storage-core/examples/tiny_backend/backend.rs`,
//! as a backend author would run it: plain, with a small value limit, and "durable".

mod support;

mod plain {
    vgi_storage_conformance::conformance_suite!(super::support::open_tiny);
}

mod limited {
    vgi_storage_conformance::conformance_suite!(super::support::open_tiny_limited);
}

mod durable {
    vgi_storage_conformance::conformance_suite!(super::support::open_tiny_durable);
}

/// `run_all` agrees with the macro: the correct backend passes, and the checks its
/// capabilities do not call for are reported as skipped, not left out.
#[test]
fn run_all_passes_the_tiny_backend_and_shows_skips() {
    let report = vgi_storage_conformance::run_all(&support::open_tiny);
    assert!(report.is_success(), "{report}");
    assert_eq!(report.checks.len(), vgi_storage_conformance::CHECKS.len());
    let skipped = report
        .checks
        .iter()
        .filter(|c| matches!(c.result, Ok(vgi_storage_conformance::Outcome::Skipped(_))))
        .map(|c| c.name)
        .collect::<Vec<_>>();
    assert!(skipped.contains(&"state_survives_reopen"), "{report}");
    assert!(
        skipped.contains(&"queue_pop_is_exactly_once_across_processes"),
        "{report}"
    );
    assert!(report.to_string().contains("skipped state_survives_reopen"));
}

/// The value-limit helper runs its checks on a capped store, and refuses to
/// pass a store whose limit is too large for them to run.
#[test]
fn value_limit_checks_run_on_a_capped_store_and_refuse_an_uncapped_one() {
    use vgi_storage_conformance::{Outcome, run_value_limit_checks_in_test};
    let test = "value_limit_checks_run_on_a_capped_store_and_refuse_an_uncapped_one";
    let capped = run_value_limit_checks_in_test(test, &support::open_tiny_limited);
    assert!(matches!(capped, Ok(Outcome::Passed)), "{capped:?}");
    let uncapped = run_value_limit_checks_in_test(test, &support::open_tiny);
    let message = uncapped
        .err()
        .map(|f| f.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("was skipped"), "{message}");
}
