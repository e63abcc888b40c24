//! The whole suite against the memory backend, as its own crate runs it, plus
//! the broken wrappers on top of it: the suite must catch them on a real backend too.

#![allow(clippy::unnecessary_wraps)] // the suite's factory signature

mod support;

use std::sync::Arc;

use support::{Broken, Fault};
use vgi_storage_conformance::{CHECKS, Fixture, Settings};
use vgi_storage_core::{Result, SharedStorage};
use vgi_storage_memory::MemoryStorage;

fn open(fx: &Fixture) -> Result<SharedStorage> {
    Ok(Arc::new(MemoryStorage::with_clock(fx.clock())))
}

vgi_storage_conformance::conformance_suite!(open);

#[test]
fn broken_wrappers_on_the_memory_backend_are_caught() {
    let cases = [
        (Fault::DropsAPushedItem, "queue_is_fifo_across_pushes"),
        (
            Fault::ScansOutOfOrder,
            "scan_pages_through_a_log_in_id_order",
        ),
        (
            Fault::ReusesIdsAfterClear,
            "ids_are_never_reused_after_clear",
        ),
        (
            Fault::GcRemovesFreshScopes,
            "gc_never_removes_a_scope_written_within_the_ttl",
        ),
        (
            Fault::LosesCasRaces,
            "cas_counter_loses_no_update_across_threads",
        ),
    ];
    for (fault, name) in cases {
        let factory = move |fx: &Fixture| -> Result<SharedStorage> {
            Ok(Arc::new(Broken::new(open(fx)?, fault)))
        };
        let Some(check) = CHECKS.iter().find(|c| c.name() == name) else {
            panic!("no check named {name}");
        };
        assert!(
            check.run(&factory, &Settings::default()).is_err(),
            "{name} let {fault:?} through on the memory backend"
        );
    }
}
