//! `kairos run …`.

use std::io::Write;

use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use crate::cli::RunCmd;
use crate::client::{Client, ns_query, urlencode};
use crate::table;

fn duration_of(run: &Value) -> String {
    let (Some(start), Some(end)) = (run["started_at"].as_str(), run["finished_at"].as_str()) else {
        return "-".into();
    };
    match (
        start.parse::<jiff::Timestamp>(),
        end.parse::<jiff::Timestamp>(),
    ) {
        (Ok(s), Ok(e)) => {
            let ms = e.duration_since(s).as_millis();
            if ms < 1000 {
                format!("{ms}ms")
            } else {
                format!("{:.1}s", ms as f64 / 1000.0)
            }
        }
        _ => "-".into(),
    }
}

pub async fn run(client: &Client, namespace: &str, json: bool, cmd: RunCmd) -> anyhow::Result<()> {
    match cmd {
        RunCmd::Ls { job, state, limit } => {
            let mut query = format!("limit={limit}&{}", ns_query(namespace));
            if let Some(s) = &state {
                query.push_str(&format!("&state={}", urlencode(s)));
            }
            let path = match &job {
                Some(name) => format!("/api/v1/jobs/{}/runs?{query}", urlencode(name)),
                None => format!("/api/v1/runs?{query}"),
            };
            let runs: Vec<Value> = client.json(Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    vec![
                        r["id"].to_string(),
                        r["job"].as_str().unwrap_or_default().to_owned(),
                        r["state"].as_str().unwrap_or_default().to_owned(),
                        super::short_time(&r["scheduled_for"]),
                        r["attempt"].to_string(),
                        duration_of(r),
                        r["reason"].as_str().unwrap_or_default().to_owned(),
                    ]
                })
                .collect();
            table::print(
                &[
                    "ID",
                    "JOB",
                    "STATE",
                    "SCHEDULED (UTC)",
                    "ATTEMPT",
                    "DURATION",
                    "REASON",
                ],
                &rows,
            );
        }
        RunCmd::Get { id } => {
            let run: Value = client
                .json(Method::GET, &format!("/api/v1/runs/{id}"), None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
                return Ok(());
            }
            println!(
                "run {id} of job {} ({}): {}",
                run["job"].as_str().unwrap_or_default(),
                run["namespace"].as_str().unwrap_or_default(),
                run["state"].as_str().unwrap_or_default()
            );
            println!(
                "  scheduled for {}  started {}  finished {}",
                super::short_time(&run["scheduled_for"]),
                super::short_time(&run["started_at"]),
                super::short_time(&run["finished_at"])
            );
            if let Some(reason) = run["reason"].as_str() {
                println!("  reason: {reason}");
            }
            if let Some(report) = run["report"].as_object() {
                let progress = report["progress"]
                    .as_f64()
                    .map_or_else(|| "-".to_owned(), |p| format!("{:.0}%", p * 100.0));
                let checkpoint = if report["has_checkpoint"] == true {
                    ", checkpoint kept"
                } else {
                    ""
                };
                println!(
                    "  progress: {progress}{}  (reported {}{checkpoint})",
                    report["message"]
                        .as_str()
                        .map(|m| format!("  {m}"))
                        .unwrap_or_default(),
                    super::short_time(&report["at"])
                );
            }
            let attempts = run["attempts"].as_array().cloned().unwrap_or_default();
            if !attempts.is_empty() {
                let rows: Vec<Vec<String>> = attempts
                    .iter()
                    .map(|a| {
                        vec![
                            a["attempt"].to_string(),
                            a["status"].as_str().unwrap_or_default().to_owned(),
                            a["node"].as_str().unwrap_or_default().to_owned(),
                            super::short_time(&a["started_at"]),
                            duration_of(a),
                            a["error"].as_str().unwrap_or_default().to_owned(),
                        ]
                    })
                    .collect();
                println!();
                table::print(
                    &[
                        "ATTEMPT",
                        "STATUS",
                        "NODE",
                        "STARTED (UTC)",
                        "DURATION",
                        "ERROR",
                    ],
                    &rows,
                );
            }
            if let Some(steps) = run["steps"].as_array() {
                println!();
                print_steps(steps);
            }
        }
        RunCmd::Logs { id, step, follow } => {
            let id = match step {
                None => id,
                Some(step) => {
                    let run: Value = client
                        .json(Method::GET, &format!("/api/v1/runs/{id}"), None)
                        .await?;
                    step_run_id(&run, &step)?
                }
            };
            let path = format!(
                "/api/v1/runs/{id}/output{}",
                if follow { "?follow=true" } else { "" }
            );
            let resp = client.send(Method::GET, &path, None).await?;
            let mut stream = resp.bytes_stream();
            let mut stdout = std::io::stdout();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| anyhow::anyhow!("the output stream broke: {e}"))?;
                stdout.write_all(&chunk)?;
                stdout.flush()?;
            }
        }
        RunCmd::Cancel { id } => {
            let run: Value = client
                .json(Method::POST, &format!("/api/v1/runs/{id}/cancel"), None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else if run["state"] == "cancelled" {
                println!("run {id} cancelled");
            } else {
                println!(
                    "run {id} is {}; asked its worker to stop it",
                    run["state"].as_str().unwrap_or_default()
                );
            }
        }
        RunCmd::Skip { id, step } => {
            let path = format!("/api/v1/runs/{id}/steps/{}/skip", urlencode(&step));
            control(client, json, &path).await?;
        }
        RunCmd::MarkSucceeded { id, step } => {
            let path = format!(
                "/api/v1/runs/{id}/steps/{}/mark-succeeded",
                urlencode(&step)
            );
            control(client, json, &path).await?;
        }
        RunCmd::Rerun { id, step } => {
            let path = format!("/api/v1/runs/{id}/steps/{}/rerun", urlencode(&step));
            control(client, json, &path).await?;
        }
        RunCmd::RerunFailed { id } => {
            control(client, json, &format!("/api/v1/runs/{id}/rerun-failed")).await?;
        }
    }
    Ok(())
}

/// Sends a step action and prints the workflow run's steps as they are after it.
async fn control(client: &Client, json: bool, path: &str) -> anyhow::Result<()> {
    let run: Value = client.json(Method::POST, path, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
        return Ok(());
    }
    println!(
        "run {} is {}",
        run["id"],
        run["state"].as_str().unwrap_or_default()
    );
    if let Some(steps) = run["steps"].as_array() {
        print_steps(steps);
    }
    Ok(())
}

/// The run id of step `name` of a workflow run.
fn step_run_id(run: &Value, name: &str) -> anyhow::Result<i64> {
    let steps = run["steps"].as_array().ok_or_else(|| {
        anyhow::anyhow!("run {} is not a workflow run: it has no steps", run["id"])
    })?;
    steps
        .iter()
        .find(|s| s["step"] == name)
        .and_then(|s| s["run_id"].as_i64())
        .ok_or_else(|| {
            let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
            anyhow::anyhow!(
                "run {} has no step `{name}`; its steps: {}",
                run["id"],
                names.join(", ")
            )
        })
}

/// A workflow run's steps as a tree: each step indented by its depth (the longest chain of
/// steps before it), in step order within a depth, with what it waits for.
fn print_steps(steps: &[Value]) {
    let names: Vec<&str> = steps
        .iter()
        .map(|s| s["step"].as_str().unwrap_or_default())
        .collect();
    let deps = |s: &Value| -> Vec<String> {
        s["depends_on"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Depths by relaxation: the document is acyclic, so this settles within `steps.len()` rounds.
    let mut depth = vec![0usize; steps.len()];
    for _ in 0..steps.len() {
        let mut changed = false;
        for (i, s) in steps.iter().enumerate() {
            for d in deps(s) {
                if let Some(j) = names.iter().position(|n| *n == d)
                    && depth[i] < depth[j] + 1
                {
                    depth[i] = depth[j] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut order: Vec<usize> = (0..steps.len()).collect();
    order.sort_by_key(|&i| (depth[i], i));
    let rows: Vec<Vec<String>> = order
        .iter()
        .map(|&i| {
            let s = &steps[i];
            let after = deps(s);
            let rule = s["trigger_rule"].as_str().unwrap_or("all_success");
            vec![
                format!("{}{}", "  ".repeat(depth[i]), names[i]),
                s["state"].as_str().unwrap_or_default().to_owned(),
                format!("{}/{}", s["attempt"], s["max_attempts"]),
                duration_of(s),
                s["run_id"].to_string(),
                if after.is_empty() {
                    String::new()
                } else if rule == "all_success" {
                    after.join(", ")
                } else {
                    format!("{} ({rule})", after.join(", "))
                },
                s["reason"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    table::print(
        &[
            "STEP", "STATE", "ATTEMPT", "DURATION", "RUN", "AFTER", "REASON",
        ],
        &rows,
    );
}
