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
        }
        RunCmd::Logs { id, follow } => {
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
    }
    Ok(())
}
