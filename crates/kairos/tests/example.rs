//! Runs `examples/embedded.rs` as part of the test suite, so the embedding example keeps working.

#[path = "../examples/embedded.rs"]
mod embedded;

#[test]
fn embedded_example_runs() {
    embedded::main().expect("the example runs to completion");
}
