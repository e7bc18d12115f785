//! Embedding Kairos in a Rust program: start a node on an embedded SQLite store, register a
//! Rust function as a task, schedule it, and watch it run.
//!
//! Run it with `cargo run -p kairos --example embedded`. The test suite runs it too
//! (`tests/example.rs`), so it keeps working.

use std::time::Duration;

use kairos::{Embedded, EmbeddedConfig, Event, FunctionCall, FunctionRegistry, JobSpec};

#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;

    // 1. Register the functions jobs may call, by name.
    let functions = FunctionRegistry::new();
    functions.register("greet", |call: FunctionCall| async move {
        let name = call.args["name"].as_str().unwrap_or("world").to_owned();
        call.log(&format!(
            "hello, {name} (run {}, attempt {})",
            call.context.run_id, call.context.attempt
        ));
        Ok(())
    });

    // 2. Start a node: scheduler, worker and rescuer over the store in `data`.
    let node = Embedded::start(EmbeddedConfig::new(data.path()), functions).await?;
    let mut events = node.events();

    // 3. Schedule the function every second (the same job document the API and files take).
    node.jobs()
        .create(JobSpec::from_json(
            r#"{"name": "greeter", "triggers": [{"interval": "1s"}],
                "task": {"kind": "function", "name": "greet", "args": {"name": "Kairos"}}}"#,
        )?)
        .await?;

    // 4. Wait for two runs to finish.
    let mut finished = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while finished < 2 {
            if let Ok(Event::RunFinished { run_id, state, .. }) = events.recv().await {
                println!("run {run_id} finished: {state}");
                finished += 1;
            }
        }
    })
    .await?;

    // 5. Stop gracefully.
    node.shutdown().await;
    Ok(())
}
