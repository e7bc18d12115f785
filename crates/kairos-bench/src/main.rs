//! `kairos-bench`: see `kairos-bench --help` and the crate documentation.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kairos_bench::cli::main().await
}
