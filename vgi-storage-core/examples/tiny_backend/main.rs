//! A complete small backend, written from scratch, that passes the conformance suite.
//!
//! The backend is in `backend.rs` (vgi-storage-core's crate docs show it too). In
//! a backend crate, the last step is one line in `tests/conformance.rs`:
//!
//! ```ignore
//! vgi_storage_conformance::conformance_suite!(open);
//! ```
//!
//! Here `main` runs the same checks with `run_all` and prints the report:
//! `cargo run -p vgi-storage-core --example tiny_backend`.

use std::process::ExitCode;

include!("backend.rs");

fn main() -> ExitCode {
    let report = vgi_storage_conformance::run_all(&open);
    println!("{report}");
    if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
