//! `kairos-bench`: see `kairos-bench --help` and the crate documentation.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kairos_bench::cli::main().await
}

/// The allocator of the `kairos` binary, so the benchmarks measure what a node runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
