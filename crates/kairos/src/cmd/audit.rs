//! `kairos audit ls`: who changed what, newest first.

use reqwest::Method;
use serde_json::Value;

use crate::cli::AuditCmd;
use crate::client::{Client, ns_query};
use crate::table;

pub async fn run(
    client: &Client,
    namespace: &str,
    json: bool,
    cmd: AuditCmd,
) -> anyhow::Result<()> {
    let AuditCmd::Ls {
        all_namespaces,
        limit,
        before,
    } = cmd;
    let mut query = format!("limit={limit}");
    if !all_namespaces {
        query.push('&');
        query.push_str(&ns_query(namespace));
    }
    if let Some(before) = before {
        query.push_str(&format!("&before={before}"));
    }
    let entries: Vec<Value> = client
        .json(Method::GET, &format!("/api/v1/audit?{query}"), None)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let version = |e: &Value| match (e["version_before"].as_i64(), e["version_after"].as_i64()) {
        (None, None) => "-".to_owned(),
        (before, after) => format!(
            "{} -> {}",
            before.map_or("-".into(), |v| v.to_string()),
            after.map_or("-".into(), |v| v.to_string())
        ),
    };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let what = match (e["job"].as_str(), e["run_id"].as_i64()) {
                (Some(job), Some(run)) => format!("{job} (run {run})"),
                (Some(job), None) => job.to_owned(),
                _ => text(&e["detail"]),
            };
            vec![
                e["id"].to_string(),
                super::short_time(&e["at"]),
                text(&e["actor"]),
                text(&e["action"]),
                text(&e["namespace"]),
                what,
                version(e),
            ]
        })
        .collect();
    table::print(
        &["ID", "AT", "WHO", "ACTION", "NAMESPACE", "WHAT", "VERSION"],
        &rows,
    );
    Ok(())
}
