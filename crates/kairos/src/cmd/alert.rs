//! `kairos alert ls`: alert deliveries, newest first.

use reqwest::Method;
use serde_json::Value;

use crate::cli::AlertCmd;
use crate::client::{Client, ns_query, urlencode};
use crate::table;

pub async fn run(
    client: &Client,
    namespace: &str,
    json: bool,
    cmd: AlertCmd,
) -> anyhow::Result<()> {
    let AlertCmd::Ls {
        all_namespaces,
        job,
        state,
        limit,
        before,
    } = cmd;
    let mut query = format!("limit={limit}");
    if !all_namespaces || job.is_some() {
        query.push('&');
        query.push_str(&ns_query(namespace));
    }
    if let Some(job) = job {
        query.push_str(&format!("&job={}", urlencode(&job)));
    }
    if let Some(state) = state {
        query.push_str(&format!("&state={}", urlencode(&state)));
    }
    if let Some(before) = before {
        query.push_str(&format!("&before={before}"));
    }
    let deliveries: Vec<Value> = client
        .json(Method::GET, &format!("/api/v1/alerts?{query}"), None)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&deliveries)?);
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            let result = match (d["last_status"].as_u64(), d["last_error"].as_str()) {
                (_, Some(error)) => error.chars().take(60).collect(),
                (Some(status), None) => format!("HTTP {status}"),
                (None, None) => "-".to_owned(),
            };
            vec![
                d["id"].to_string(),
                super::short_time(&d["created_at"]),
                text(&d["alert"]),
                format!("{}/{}", text(&d["namespace"]), text(&d["job"])),
                d["run_id"].as_i64().map_or("-".into(), |r| r.to_string()),
                text(&d["channel"]),
                text(&d["state"]),
                d["attempts"].to_string(),
                result,
            ]
        })
        .collect();
    table::print(
        &[
            "ID", "AT", "ALERT", "JOB", "RUN", "CHANNEL", "STATE", "TRIES", "LAST",
        ],
        &rows,
    );
    Ok(())
}
