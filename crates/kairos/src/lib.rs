//! Kairos: a job scheduler and task runner.
//!
//! This crate is the `kairos` binary (server and CLI) and the facade for programs that embed a
//! node and register Rust functions as tasks:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let functions = kairos::FunctionRegistry::new();
//! functions.register("greet", |call: kairos::FunctionCall| async move {
//!     call.log(&format!("hello, {}", call.args["name"]));
//!     Ok(())
//! });
//! let node = kairos::Embedded::start(kairos::EmbeddedConfig::new("./kairos-data"), functions).await?;
//! node.jobs().create(kairos::JobSpec::from_json(
//!     r#"{"name":"greet","triggers":[{"interval":"10s"}],
//!         "task":{"kind":"function","name":"greet","args":{"name":"world"}}}"#,
//! )?).await?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod client;
pub mod cmd;
pub mod config;
mod embedded;
pub mod server;
pub mod store_url;
mod table;
pub mod tls;

pub use embedded::{Embedded, EmbeddedConfig};
pub use kairos_core::{JobSpec, ValidationErrors};
pub use kairos_exec::{FunctionCall, FunctionRegistry};
pub use kairos_runtime::{Event, JobService};

/// Sets up `tracing` output: text for people, or one JSON object per line.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAIROS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The wall clock, for commands that need "now" outside a node (`kairos next`).
pub fn wall_clock_now() -> jiff::Timestamp {
    use kairos_runtime::Clock;
    kairos_runtime::SystemClock.now()
}
