//! `kairos job …`.

use reqwest::Method;
use serde_json::Value;

use crate::cli::JobCmd;
use crate::client::{Client, ns_query, urlencode};
use crate::table;

fn schedule_of(job: &Value) -> String {
    let triggers = job["triggers"].as_array().cloned().unwrap_or_default();
    if triggers.is_empty() {
        return "manual".into();
    }
    triggers
        .iter()
        .map(|t| {
            if let Some(c) = t["cron"].as_str() {
                match t["timezone"].as_str() {
                    Some(tz) => format!("cron {c} ({tz})"),
                    None => format!("cron {c}"),
                }
            } else if let Some(i) = t["interval"].as_str() {
                format!("every {i}")
            } else if let Some(topic) = t["event"].as_str() {
                match t["filter"].as_object() {
                    Some(f) if !f.is_empty() => format!("event {topic} (filtered)"),
                    _ => format!("event {topic}"),
                }
            } else if let Some(job) = t["after"]["job"].as_str() {
                format!(
                    "after {job} ({})",
                    t["after"]["on"].as_str().unwrap_or("success")
                )
            } else {
                format!("at {}", t["at"].as_str().unwrap_or("?"))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line of `kairos job next`: the time with the trigger's offset, then why it is skipped
/// or how daylight saving time moved it.
fn next_line(t: &Value) -> String {
    let at = t["local"]
        .as_str()
        .or_else(|| t["at"].as_str())
        .unwrap_or("?");
    match (t["skipped"].as_str(), t["note"].as_str()) {
        (Some(why), _) => format!("{at} skipped: {why}"),
        (None, Some(note)) => format!("{at} {note}"),
        (None, None) => at.to_owned(),
    }
}

pub async fn run(client: &Client, namespace: &str, json: bool, cmd: JobCmd) -> anyhow::Result<()> {
    let path = |name: &str, suffix: &str| {
        format!(
            "/api/v1/jobs/{}{suffix}?{}",
            urlencode(name),
            ns_query(namespace)
        )
    };
    let job: Value = match cmd {
        JobCmd::Create { file } => {
            let mut doc = super::read_document(&file)?;
            if let Some(obj) = doc.as_object_mut() {
                obj.entry("namespace")
                    .or_insert_with(|| Value::String(namespace.into()));
            }
            client
                .json(Method::POST, "/api/v1/jobs", Some(&doc))
                .await?
        }
        JobCmd::Ls => {
            let jobs: Vec<Value> = client
                .json(
                    Method::GET,
                    &format!("/api/v1/jobs?{}", ns_query(namespace)),
                    None,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|j| {
                    vec![
                        j["name"].as_str().unwrap_or_default().to_owned(),
                        schedule_of(j),
                        if j["paused"].as_bool() == Some(true) {
                            "paused".into()
                        } else {
                            super::short_time(&j["next_fire_at"])
                        },
                        j["version"].to_string(),
                    ]
                })
                .collect();
            table::print(&["NAME", "SCHEDULE", "NEXT (UTC)", "VERSION"], &rows);
            return Ok(());
        }
        JobCmd::Get { name } => client.json(Method::GET, &path(&name, ""), None).await?,
        JobCmd::Pause { name } => {
            client
                .json(Method::POST, &path(&name, "/pause"), None)
                .await?
        }
        JobCmd::Resume { name } => {
            client
                .json(Method::POST, &path(&name, "/resume"), None)
                .await?
        }
        JobCmd::Trigger { name, params } => {
            let body = match params {
                None => None,
                Some(text) => {
                    let params: Value = serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("--params is not JSON: {e}"))?;
                    if !params.is_object() {
                        anyhow::bail!("--params must be a JSON object, such as '{{\"day\": 1}}'");
                    }
                    Some(serde_json::json!({ "params": params }))
                }
            };
            let run: Value = client
                .json(Method::POST, &path(&name, "/trigger"), body.as_ref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                println!("run {} queued for job {name}", run["id"]);
            }
            return Ok(());
        }
        JobCmd::Backfill {
            name,
            from,
            to,
            dry_run,
        } => {
            let body = serde_json::json!({"from": from, "to": to, "dry_run": dry_run});
            let done: Value = client
                .json(Method::POST, &path(&name, "/backfill"), Some(&body))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
                return Ok(());
            }
            let created = done["created"].as_array().cloned().unwrap_or_default();
            let existing = done["existing"].as_array().map_or(0, Vec::len);
            let rows: Vec<Vec<String>> = created
                .iter()
                .map(|r| {
                    vec![
                        r["scheduled_for"].as_str().unwrap_or_default().to_owned(),
                        r["run_id"]
                            .as_i64()
                            .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                table::print(&["DUE", "RUN"], &rows);
            }
            let verb = if dry_run { "would create" } else { "created" };
            println!(
                "{verb} {} runs for job {name}; {existing} due times of the range had a run already",
                created.len()
            );
            return Ok(());
        }
        JobCmd::Next { name, count } => {
            let mut path = path(&name, "/next");
            path.push_str(&format!("&count={count}"));
            let answer: Value = client.json(Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let times = answer["times"].as_array().cloned().unwrap_or_default();
            if times.is_empty() {
                eprintln!(
                    "note: job {name} has no due times ahead (no time triggers, or none left)"
                );
            }
            for t in &times {
                println!("{}", next_line(t));
            }
            return Ok(());
        }
        JobCmd::Rm { name, force } => {
            let mut path = path(&name, "");
            if force {
                path.push_str("&force=true");
            }
            client.send(Method::DELETE, &path, None).await?;
            if !json {
                println!("job {name} deleted");
            }
            return Ok(());
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        let name = job["name"].as_str().unwrap_or_default();
        let state = if job["paused"].as_bool() == Some(true) {
            "paused"
        } else {
            "active"
        };
        println!(
            "job {name}: version {}, {state}, next {}",
            job["version"],
            super::short_time(&job["next_fire_at"])
        );
        println!("{}", serde_json::to_string_pretty(&job)?);
    }
    Ok(())
}
