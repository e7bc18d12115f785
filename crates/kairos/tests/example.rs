//! Runs `examples/embedded.rs` as part of the test suite, so the embedding example keeps working.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

#[path = "../examples/embedded.rs"]
mod embedded;

#[test]
fn embedded_example_runs() {
    embedded::main().expect("the example runs to completion");
}
