//! `kairos node ls`: the nodes of the cluster and which one leads.

use reqwest::Method;
use serde_json::Value;

use crate::cli::NodeCmd;
use crate::client::Client;
use crate::table;

pub async fn run(client: &Client, json: bool, cmd: NodeCmd) -> anyhow::Result<()> {
    let NodeCmd::Ls = cmd;
    let nodes: Vec<Value> = client.json(Method::GET, "/api/v1/nodes", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let mut name = text(&n["name"]);
            if n["this_node"] == true {
                name.push_str(" (this)");
            }
            let leader = match n["term"].as_i64() {
                Some(term) if n["leader"] == true => format!("leader (term {term})"),
                _ => "-".to_owned(),
            };
            vec![
                name,
                text(&n["id"]).chars().take(8).collect(),
                text(&n["address"]),
                leader,
                n["running_attempts"].to_string(),
                super::short_time(&n["started_at"]),
                super::short_time(&n["last_heartbeat"]),
                text(&n["version"]),
            ]
        })
        .collect();
    table::print(
        &[
            "NAME", "ID", "ADDRESS", "ROLE", "RUNNING", "STARTED", "SEEN", "VERSION",
        ],
        &rows,
    );
    Ok(())
}
