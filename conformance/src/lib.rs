//! The conformance suite (work in progress: see issue 2).

mod fixture;

pub use fixture::{Factory, Fixture};
pub use proptest;
