#![doc = include_str!("../README.md")]

mod boundaries;
mod child;
mod concurrency;
mod crash;
mod durability;
mod edge;
mod faults;
mod fixture;
mod harness;
mod inspect;
mod model;
mod process;
mod races;
mod runtime;
mod sizes;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use fixture::{Factory, Fixture};
pub use harness::{
    CheckResult, DEEP_ENV, DEFAULT_CASES, DEFAULT_CONCENTRATED_CASES, Failure, Outcome, Settings,
    deep,
};
pub use proptest;

use harness::Run;

/// One named check of the suite.
#[derive(Clone, Copy)]
pub struct Check {
    name: &'static str,
    run: fn(&Run<'_>) -> CheckResult,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Check {
    /// The check's name, a sentence such as `kv_get_missing_is_none`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Run the check against stores built by `factory`.
    pub fn run(&self, factory: &dyn Factory, settings: &Settings) -> CheckResult {
        (self.run)(&Run { factory, settings })
    }

    /// Run the check, turning a panic (of the backend or the check) into a [`Failure`].
    fn run_caught(&self, factory: &dyn Factory, settings: &Settings) -> CheckResult {
        catch_unwind(AssertUnwindSafe(|| self.run(factory, settings))).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Failure::new(format!(
                "the check panicked (a store must return Err, never panic): {msg}"
            )))
        })
    }
}

/// Declares every check once: the public function and its entry in [`CHECKS`].
macro_rules! checks {
    ($( $(#[$meta:meta])* $name:ident => $path:path; )*) => {
        /// Every check of the suite, in the order [`run_all`] runs them.
        pub const CHECKS: &[Check] = &[ $( Check { name: stringify!($name), run: $path }, )* ];

        $(
            $(#[$meta])*
            ///
            /// Builds its own fixtures and stores with `factory`, and destroys their data.
            pub fn $name(factory: &dyn Factory) -> CheckResult {
                $path(&Run { factory, settings: &Settings::default() })
            }
        )*
    };
}

checks! {
    /// A kv key never put reads as `None`, also next to other keys and scopes.
    kv_get_missing_is_none => edge::kv_get_missing_is_none;
    /// `kv_put` overwrites; `kv_get` returns the last value, an empty value included.
    kv_put_overwrites_and_get_returns_the_last_value => edge::kv_put_overwrites_and_get_returns_the_last_value;
    /// Deleting a missing key succeeds; deleting touches no other key.
    kv_del_of_a_missing_key_succeeds => edge::kv_del_of_a_missing_key_succeeds;
    /// Empty, NUL and 0xFF scopes, namespaces, keys and values round-trip and never collide.
    empty_and_binary_scopes_keys_and_values_round_trip => edge::empty_and_binary_scopes_keys_and_values_round_trip;
    /// 4 KiB scopes, namespaces and keys round-trip and stay distinct.
    long_keys_round_trip => edge::long_keys_round_trip;
    /// Values of a mebibyte round-trip through kv, log and queue.
    values_of_a_mebibyte_round_trip => edge::values_of_a_mebibyte_round_trip;
    /// A value over `max_value_len` fails with `TooLarge` and writes nothing, in every write form.
    values_over_the_limit_are_too_large_and_write_nothing => edge::values_over_the_limit_are_too_large_and_write_nothing;
    /// CAS on an absent entry: wins only when expecting absent.
    cas_on_an_absent_entry => edge::cas_on_an_absent_entry;
    /// CAS on a present entry: wins only when expecting exactly the current value; `None` deletes.
    cas_on_a_present_entry => edge::cas_on_a_present_entry;
    /// CAS on a deleted entry behaves as on an absent one.
    cas_on_a_deleted_entry => edge::cas_on_a_deleted_entry;
    /// CAS from absent to absent wins on an absent entry, changes nothing, and stamps the scope.
    cas_from_absent_to_absent => edge::cas_from_absent_to_absent;
    /// A scan of a log never appended to is empty, for any `after_id`.
    scan_of_a_missing_log_is_empty => edge::scan_of_a_missing_log_is_empty;
    /// A scan with `limit` 0 returns nothing.
    scan_with_limit_zero_returns_nothing => edge::scan_with_limit_zero_returns_nothing;
    /// Ids increase; scans are ascending, honour `after_id` (negative, huge) and page with `limit`.
    scan_pages_through_a_log_in_id_order => edge::scan_pages_through_a_log_in_id_order;
    /// Ids are never reused after `clear`, and stay above the log's earlier ids.
    ids_are_never_reused_after_clear => edge::ids_are_never_reused_after_clear;
    /// Ids are never reused after `gc` removed their scope.
    ids_are_never_reused_after_gc => edge::ids_are_never_reused_after_gc;
    /// Popping an empty or unknown queue gives `None`.
    queue_pop_of_an_empty_queue_is_none => edge::queue_pop_of_an_empty_queue_is_none;
    /// Items come out in push order, across pushes and interleaved pops.
    queue_is_fifo_across_pushes => edge::queue_is_fifo_across_pushes;
    /// Pushing nothing is a no-op and does not stamp the scope.
    queue_push_of_nothing_is_a_noop => edge::queue_push_of_nothing_is_a_noop;
    /// A push with a too-large item in the middle fails whole: no item becomes visible.
    queue_push_is_all_or_nothing => edge::queue_push_is_all_or_nothing;
    /// `clear` removes kv, log and queue data of its scope only; clearing an unknown scope succeeds.
    clear_removes_only_its_scope => edge::clear_removes_only_its_scope;
    /// `gc` with ttl 0 removes scopes written strictly before now, not those written now.
    gc_with_zero_ttl_removes_scopes_written_before_now => edge::gc_with_zero_ttl_removes_scopes_written_before_now;
    /// `gc` with a ttl beyond the clock's range (`Duration::MAX`) removes nothing.
    gc_with_a_ttl_beyond_the_clock_removes_nothing => edge::gc_with_a_ttl_beyond_the_clock_removes_nothing;
    /// `gc` never removes a scope written within the ttl, the exact cutoff included.
    gc_never_removes_a_scope_written_within_the_ttl => edge::gc_never_removes_a_scope_written_within_the_ttl;
    /// Only writes (put, successful CAS, append, non-empty push and batches) keep a scope alive.
    gc_counts_only_writes_as_activity => edge::gc_counts_only_writes_as_activity;
    /// `gc` reports each removed scope once, and a cleared scope not at all.
    gc_reports_each_removed_scope_once => edge::gc_reports_each_removed_scope_once;
    /// `list_scopes` pages through the scopes written, stamped; `scope_stats` of each equals the model (inspecting backends).
    inspection_lists_and_measures_scopes_as_the_model_says => inspect::inspection_lists_and_measures_scopes_as_the_model_says;
    /// `export_kv` and `export_queue` page through a scope in order without popping (inspecting backends).
    inspection_exports_every_entry_in_order_without_popping => inspect::inspection_exports_every_entry_in_order_without_popping;
    /// `import_log` keeps ids above the high-water mark, remaps the rest above it, and no id is reused (inspecting backends).
    import_log_keeps_ids_above_the_mark_and_never_reuses_one => inspect::import_log_keeps_ids_above_the_mark_and_never_reuses_one;
    /// `append_batch` and `kv_put_batch` equal the single calls in order; empty batches are no-ops.
    batch_forms_equal_single_calls => edge::batch_forms_equal_single_calls;
    /// With the file size capped partway (a full disk), every call takes full effect or none, and fails as `StorageFull` (file-backed backends).
    writes_on_a_full_disk_take_full_effect_or_none => faults::writes_on_a_full_disk_take_full_effect_or_none;
    /// With the store's files made read-only partway, every call takes full effect or none, and fails as `ReadOnly` (file-backed backends).
    writes_on_a_read_only_store_take_full_effect_or_none => faults::writes_on_a_read_only_store_take_full_effect_or_none;
    /// Writers killed at random moments lose no acknowledged write and leave unacknowledged ones whole or absent (durable backends).
    acknowledged_writes_survive_sigkill => crash::acknowledged_writes_survive_sigkill;
    /// Popping processes killed at random: no item popped twice, at most one lost in flight per kill (backends shared across processes).
    queue_pop_loses_at_most_the_item_in_flight_per_kill => crash::queue_pop_loses_at_most_the_item_in_flight_per_kill;
    /// Random operation sequences give exactly the model's results (proptest, shrinking).
    model_matches_random_operations => model::model_matches_random_operations;
    /// The same with the store dropped and reopened at random points (durable backends).
    model_matches_random_operations_across_reopens => model::model_matches_random_operations_across_reopens;
    /// State of every kind, and the gc stamps, survive dropping and reopening the store (durable backends).
    state_survives_reopen => durability::state_survives_reopen;
    /// Ids after a reopen are new and above the log's earlier ids (durable backends).
    ids_are_never_reused_after_reopen => durability::ids_are_never_reused_after_reopen;
    /// Every method works (or returns `Err`) inside a multi-threaded and a current-thread tokio runtime.
    every_call_works_inside_a_tokio_runtime => runtime::every_call_works_inside_a_tokio_runtime;
    /// Threads popping one queue while another pushes get every item exactly once, in order.
    queue_pop_is_exactly_once_across_threads => concurrency::queue_pop_is_exactly_once_across_threads;
    /// A reader tailing a log with `after_id` while threads append sees every entry, in order.
    log_tail_sees_every_entry_in_order_across_threads => concurrency::log_tail_sees_every_entry_in_order_across_threads;
    /// Threads incrementing one counter through CAS lose no update.
    cas_counter_loses_no_update_across_threads => concurrency::cas_counter_loses_no_update_across_threads;
    /// `gc` racing writers never removes a scope written within the ttl.
    gc_racing_writers_never_removes_a_fresh_scope => concurrency::gc_racing_writers_never_removes_a_fresh_scope;
    /// Processes popping one queue get every item exactly once (backends shared across processes).
    queue_pop_is_exactly_once_across_processes => process::queue_pop_is_exactly_once_across_processes;
    /// A reader tailing a log that other processes append to sees every entry, in order.
    log_tail_sees_every_entry_in_order_across_processes => process::log_tail_sees_every_entry_in_order_across_processes;
    /// Processes incrementing one counter through CAS lose no update.
    cas_counter_loses_no_update_across_processes => process::cas_counter_loses_no_update_across_processes;
    /// A log of 10k entries (100k deep) reads whole with `limit = usize::MAX`, with `scan_all`, and page by page.
    logs_of_ten_thousand_entries_read_whole_and_by_page => sizes::logs_of_ten_thousand_entries_read_whole_and_by_page;
    /// One `gc` call removes all of 5k stale scopes (50k deep), each reported once, and keeps the fresh one.
    gc_removes_five_thousand_stale_scopes_in_one_call => sizes::gc_removes_five_thousand_stale_scopes_in_one_call;
    /// A queue of 10k items (100k deep), one big push and many small ones, drains whole and in order.
    queues_of_ten_thousand_items_drain_in_order => sizes::queues_of_ten_thousand_items_drain_in_order;
    /// Scopes, namespaces and keys of 64 KiB and 1 MiB of incompressible bytes work and stay distinct (up to `max_key_len`).
    names_of_64_kib_and_1_mib_round_trip => sizes::names_of_64_kib_and_1_mib_round_trip;
    /// With a declared `max_key_len`, names of exactly that length work; one byte longer is refused with `InvalidInput` by every method, writing nothing.
    names_of_exactly_max_key_len_work_and_longer_are_refused => sizes::names_of_exactly_max_key_len_work_and_longer_are_refused;
    /// Values above 16 MiB (up to 24 MiB, 96 MiB deep, or `max_value_len`) round-trip byte for byte through kv, CAS, log and queue.
    values_above_16_mib_round_trip => sizes::values_above_16_mib_round_trip;
    /// Exactly `max_value_len` is accepted and one byte more refused with nothing written, in every write form.
    every_write_form_takes_exactly_the_limit_and_refuses_one_more => boundaries::every_write_form_takes_exactly_the_limit_and_refuses_one_more;
    /// CAS tells an empty value from an absent one in every direction (current, expected and new).
    cas_tells_empty_from_absent_in_every_direction => boundaries::cas_tells_empty_from_absent_in_every_direction;
    /// `clear` and `gc` of the empty scope, with the empty namespace and key, remove it and nothing else.
    clear_and_gc_of_the_empty_names => boundaries::clear_and_gc_of_the_empty_names;
    /// Invalid-UTF-8, NUL-holding, case-only and trailing-space look-alike names stay distinct everywhere.
    names_a_lossy_encoding_would_merge_stay_distinct => boundaries::names_a_lossy_encoding_would_merge_stay_distinct;
    /// CAS on values of 4 KiB and 64 KiB compares every byte: a value differing only in the last byte loses.
    cas_compares_long_values_to_the_last_byte => boundaries::cas_compares_long_values_to_the_last_byte;
    /// Random sequences on one or two scopes and few keys and logs give the model's results.
    model_matches_concentrated_operations => model::model_matches_concentrated_operations;
    /// Puts, gets and CAS racing on one key: never absent, never an unwritten or an outdated value.
    kv_put_get_and_cas_on_one_key_see_only_written_values => races::kv_put_get_and_cas_on_one_key_see_only_written_values;
    /// Readers tailing a log while writers append singly and in batches never see an id appear below one already seen.
    log_tailed_while_appending_in_batches_never_goes_back => races::log_tailed_while_appending_in_batches_never_goes_back;
    /// Pushes racing pops: once an item of a push is popped, no pop answers empty until the whole push is out.
    pushes_racing_pops_never_answer_empty_mid_push => races::pushes_racing_pops_never_answer_empty_mid_push;
    /// Every write kind racing `gc` while the clock moves: no write is lost unless a pass could rightly remove its scope.
    every_write_racing_gc_as_the_clock_moves_is_kept => races::every_write_racing_gc_as_the_clock_moves_is_kept;
    /// `clear` racing readers and writers: once it returned, nothing written before it began is visible.
    clear_racing_readers_and_writers_hides_what_was_written_before => races::clear_racing_readers_and_writers_hides_what_was_written_before;
    /// Threads draining a queue of N items with a short busy timeout never get "empty" before the N-th item is out.
    a_busy_queue_never_answers_empty_across_threads => races::a_busy_queue_never_answers_empty_across_threads;
    /// The same with processes sharing the store (backends shared across processes).
    a_busy_queue_never_answers_empty_across_processes => process::a_busy_queue_never_answers_empty_across_processes;
}

/// The result of one check in a [`Report`].
#[derive(Debug)]
pub struct CheckReport {
    /// The check's name.
    pub name: &'static str,
    /// How it ended.
    pub result: CheckResult,
}

/// What [`run_all`] found: one entry per check, in order.
#[derive(Debug, Default)]
pub struct Report {
    /// Every check's result.
    pub checks: Vec<CheckReport>,
}

impl Report {
    /// Whether no check failed (skipped checks do not fail).
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.checks.iter().all(|c| c.result.is_ok())
    }

    /// The checks that failed, with why.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, &Failure)> {
        self.checks
            .iter()
            .filter_map(|c| c.result.as_ref().err().map(|f| (c.name, f)))
    }

    /// The result of the check called `name`, if it ran.
    #[must_use]
    pub fn result(&self, name: &str) -> Option<&CheckResult> {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.result)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mut passed, mut skipped, mut failed) = (0, 0, 0);
        for c in &self.checks {
            match &c.result {
                Ok(Outcome::Passed) => {
                    passed += 1;
                    writeln!(f, "ok      {}", c.name)?;
                }
                Ok(Outcome::Skipped(why)) => {
                    skipped += 1;
                    writeln!(f, "skipped {}: {why}", c.name)?;
                }
                Err(e) => {
                    failed += 1;
                    writeln!(f, "FAILED  {}: {}", c.name, e.report())?;
                }
            }
        }
        write!(f, "{passed} passed, {skipped} skipped, {failed} failed")
    }
}

/// Run every check against stores built by `factory`, with [`Settings::default`].
///
/// A check that panics is reported as failed. The across-processes checks are
/// skipped here (they need [`conformance_suite!`] to re-execute the test binary).
/// Destroys the data of every store the factory builds.
pub fn run_all(factory: &dyn Factory) -> Report {
    run_all_with(factory, &Settings::default())
}

/// [`run_all`] with explicit settings.
pub fn run_all_with(factory: &dyn Factory, settings: &Settings) -> Report {
    Report {
        checks: CHECKS
            .iter()
            .map(|c| CheckReport {
                name: c.name,
                result: c.run_caught(factory, settings),
            })
            .collect(),
    }
}

/// Expand to one `#[test]` per check, each running it against `factory`.
///
/// `factory` is a function or closure `Fn(&Fixture) -> vgi_storage_core::Result<SharedStorage>`.
/// A skipped check prints `skipped: <reason>` to stderr and passes; a failed one
/// panics with what the backend did wrong. Proptest keeps failing cases in
/// `tests/proptest-regressions/<check>.txt` of the calling crate.
///
/// ```ignore
/// // tests/conformance.rs
/// fn open(fx: &vgi_storage_conformance::Fixture) -> vgi_storage_core::Result<vgi_storage_core::SharedStorage> {
///     Ok(std::sync::Arc::new(MyStorage::open(fx.path("state.db"), fx.clock())?))
/// }
/// vgi_storage_conformance::conformance_suite!(open);
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr $(,)?) => {
        $crate::conformance_suite!(@tests $factory;
            kv_get_missing_is_none,
            kv_put_overwrites_and_get_returns_the_last_value,
            kv_del_of_a_missing_key_succeeds,
            empty_and_binary_scopes_keys_and_values_round_trip,
            long_keys_round_trip,
            values_of_a_mebibyte_round_trip,
            values_over_the_limit_are_too_large_and_write_nothing,
            cas_on_an_absent_entry,
            cas_on_a_present_entry,
            cas_on_a_deleted_entry,
            cas_from_absent_to_absent,
            scan_of_a_missing_log_is_empty,
            scan_with_limit_zero_returns_nothing,
            scan_pages_through_a_log_in_id_order,
            ids_are_never_reused_after_clear,
            ids_are_never_reused_after_gc,
            queue_pop_of_an_empty_queue_is_none,
            queue_is_fifo_across_pushes,
            queue_push_of_nothing_is_a_noop,
            queue_push_is_all_or_nothing,
            clear_removes_only_its_scope,
            gc_with_zero_ttl_removes_scopes_written_before_now,
            gc_with_a_ttl_beyond_the_clock_removes_nothing,
            gc_never_removes_a_scope_written_within_the_ttl,
            gc_counts_only_writes_as_activity,
            gc_reports_each_removed_scope_once,
            inspection_lists_and_measures_scopes_as_the_model_says,
            inspection_exports_every_entry_in_order_without_popping,
            import_log_keeps_ids_above_the_mark_and_never_reuses_one,
            batch_forms_equal_single_calls,
            writes_on_a_full_disk_take_full_effect_or_none,
            writes_on_a_read_only_store_take_full_effect_or_none,
            acknowledged_writes_survive_sigkill,
            queue_pop_loses_at_most_the_item_in_flight_per_kill,
            model_matches_random_operations,
            model_matches_random_operations_across_reopens,
            state_survives_reopen,
            ids_are_never_reused_after_reopen,
            every_call_works_inside_a_tokio_runtime,
            queue_pop_is_exactly_once_across_threads,
            log_tail_sees_every_entry_in_order_across_threads,
            cas_counter_loses_no_update_across_threads,
            gc_racing_writers_never_removes_a_fresh_scope,
            queue_pop_is_exactly_once_across_processes,
            log_tail_sees_every_entry_in_order_across_processes,
            cas_counter_loses_no_update_across_processes,
            logs_of_ten_thousand_entries_read_whole_and_by_page,
            gc_removes_five_thousand_stale_scopes_in_one_call,
            queues_of_ten_thousand_items_drain_in_order,
            names_of_64_kib_and_1_mib_round_trip,
            names_of_exactly_max_key_len_work_and_longer_are_refused,
            values_above_16_mib_round_trip,
            every_write_form_takes_exactly_the_limit_and_refuses_one_more,
            cas_tells_empty_from_absent_in_every_direction,
            clear_and_gc_of_the_empty_names,
            names_a_lossy_encoding_would_merge_stay_distinct,
            cas_compares_long_values_to_the_last_byte,
            model_matches_concentrated_operations,
            kv_put_get_and_cas_on_one_key_see_only_written_values,
            log_tailed_while_appending_in_batches_never_goes_back,
            pushes_racing_pops_never_answer_empty_mid_push,
            every_write_racing_gc_as_the_clock_moves_is_kept,
            clear_racing_readers_and_writers_hides_what_was_written_before,
            a_busy_queue_never_answers_empty_across_threads,
            a_busy_queue_never_answers_empty_across_processes,
        );
    };
    (@tests $factory:expr; $($check:ident,)*) => {
        $(
            #[test]
            fn $check() {
                $crate::__private::run_test(
                    module_path!(),
                    stringify!($check),
                    concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/tests/proptest-regressions/",
                        stringify!($check),
                        ".txt"
                    ),
                    &$factory,
                );
            }
        )*
    };
}

/// Run the check named `check` from inside the `#[test]` whose libtest name is
/// `test_name` (its module path within the test binary and its function name,
/// e.g. `broken::cas_is_caught`).
///
/// This is what each test of [`conformance_suite!`] does; call it yourself to
/// run one check against a backend outside the macro, for example to show that
/// a deliberately broken backend fails it. The cross-process checks re-execute
/// the test binary to run `test_name` in child processes: when this process is
/// such a child, the function plays the child's role with `factory` and then
/// ends the process (exit code 0 when the role ran, 1 when it failed), so the
/// test's own assertions never run in a child.
///
/// An unknown check name is a [`Failure`].
pub fn run_in_test(
    check: &str,
    test_name: &str,
    regressions: Option<&'static str>,
    factory: &dyn Factory,
) -> CheckResult {
    if process::child_test().as_deref() == Some(test_name) {
        let result = match child::job() {
            Some(job) => child::job_main(&job, factory),
            None => process::child_main(factory),
        };
        let code = match result {
            Ok(()) => 0,
            Err(failure) => {
                eprintln!(
                    "conformance child process for {test_name} failed: {}",
                    failure.report()
                );
                1
            }
        };
        std::process::exit(code);
    }
    let Some(c) = CHECKS.iter().find(|c| c.name() == check) else {
        return Err(Failure::new(format!(
            "the suite has no check named {check}"
        )));
    };
    let settings = Settings {
        cases: None,
        regressions,
        test_name: Some(test_name.to_owned()),
    };
    c.run(factory, &settings)
}

/// The checks that write a value just over the backend's `max_value_len`.
///
/// The suite skips them when the limit is large (building such a value would
/// cost gigabytes of memory), so a backend with a large limit proves them with a
/// small configured cap instead: see [`run_value_limit_checks_in_test`].
pub const VALUE_LIMIT_CHECKS: [&str; 3] = [
    "values_over_the_limit_are_too_large_and_write_nothing",
    "queue_push_is_all_or_nothing",
    "every_write_form_takes_exactly_the_limit_and_refuses_one_more",
];

/// Run every check of [`VALUE_LIMIT_CHECKS`] with [`run_in_test`] from the
/// `#[test]` named `test_name`, against a `factory` that builds the store with
/// a small value limit (64 KiB, say).
///
/// - every check passing gives `Ok(Outcome::Passed)`
/// - a check skipped (the factory's limit is too large to test) is a [`Failure`]:
///   the caller asked for these checks to run
/// - the first failing check's [`Failure`] is returned
///
/// ```ignore
/// #[test]
/// fn a_configured_value_limit_is_enforced_whole() {
///     let open_capped = |fx: &Fixture| -> Result<SharedStorage> {
///         Ok(Arc::new(MyStorage::builder(fx.path("db")).max_value_len(64 * 1024).open()?))
///     };
///     let outcome = run_value_limit_checks_in_test("a_configured_value_limit_is_enforced_whole", &open_capped);
///     assert!(matches!(outcome, Ok(Outcome::Passed)), "{outcome:?}");
/// }
/// ```
pub fn run_value_limit_checks_in_test(test_name: &str, factory: &dyn Factory) -> CheckResult {
    for check in VALUE_LIMIT_CHECKS {
        if let Outcome::Skipped(why) = run_in_test(check, test_name, None, factory)? {
            return Err(Failure::new(format!(
                "{check} was skipped ({why}); build the store with a smaller value limit"
            )));
        }
    }
    Ok(Outcome::Passed)
}

#[doc(hidden)]
pub mod __private {
    //! What [`conformance_suite!`](crate::conformance_suite) expands to; not a stable API.

    use crate::{Factory, Outcome, run_in_test};

    /// The body of one generated `#[test]`: run the check and panic on failure
    /// (or, in a child process, play the child's role).
    #[allow(clippy::panic)]
    pub fn run_test(
        module_path: &str,
        check: &str,
        regressions: &'static str,
        factory: &dyn Factory,
    ) {
        let test_name = match module_path.split_once("::") {
            Some((_, rest)) => format!("{rest}::{check}"),
            None => check.to_owned(),
        };
        match run_in_test(check, &test_name, Some(regressions), factory) {
            Ok(Outcome::Passed) => {}
            Ok(Outcome::Skipped(why)) => eprintln!("skipped: {why}"),
            Err(failure) => panic!("conformance check {check} failed: {}", failure.report()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CHECKS, Check};

    /// The macro lists every check by hand; this keeps the list and [`CHECKS`] in step.
    #[test]
    fn the_macro_lists_every_check_once() {
        let src = include_str!("lib.rs");
        let start = src.find("(@tests $factory;").unwrap_or(0);
        let end = src[start..].find(");").map_or(src.len(), |e| start + e);
        let listed: Vec<&str> = src[start..end]
            .lines()
            .skip(1)
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| !l.is_empty())
            .collect();
        let names: Vec<&str> = CHECKS.iter().map(Check::name).collect();
        assert_eq!(listed, names);
    }
}
