//! `kairos event emit` and `kairos event listen`.

use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::Value;

use crate::cli::EventCmd;
use crate::client::{ApiFailure, Client, ns_query, urlencode};

/// Waits between attempts to reach the database or the server again, doubling up to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub async fn run(client: &Client, json: bool, cmd: EventCmd) -> anyhow::Result<()> {
    match cmd {
        EventCmd::Emit {
            topic,
            id,
            file,
            data,
            namespace,
        } => {
            let payload = match (file, data) {
                (Some(path), _) => super::read_document(&path)?,
                (None, Some(text)) => kairos_core::document::parse_json(text.as_bytes())
                    .map_err(|e| anyhow::anyhow!("--data: {e}"))?,
                (None, None) => Value::Object(Default::default()),
            };
            let done = post(client, &topic, namespace.as_deref(), id, &payload).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                print_result(&done);
            }
            Ok(())
        }
        EventCmd::Listen {
            postgres,
            channel,
            topic,
            namespace,
        } => {
            kairos_store_postgres::relay::validate_channel(&channel)
                .map_err(|e| anyhow::anyhow!("--channel: {e}"))?;
            let topic = topic.unwrap_or_else(|| channel.clone());
            kairos_core::event::validate_topic(&topic)
                .map_err(|e| anyhow::anyhow!("--topic: {e}"))?;
            listen(
                client,
                json,
                &postgres,
                &channel,
                &topic,
                namespace.as_deref(),
            )
            .await
        }
    }
}

/// Posts one event; the server's answer.
async fn post(
    client: &Client,
    topic: &str,
    namespace: Option<&str>,
    id: Option<String>,
    payload: &Value,
) -> anyhow::Result<Value> {
    let mut path = format!("/api/v1/events/{}", urlencode(topic));
    if let Some(ns) = namespace {
        path = format!("{path}?{}", ns_query(ns));
    }
    let headers: Vec<(&str, String)> = id.into_iter().map(|id| ("Idempotency-Key", id)).collect();
    client
        .send_with(Method::POST, &path, Some(payload), &headers)
        .await?
        .json()
        .await
        .context("the server's answer is not the expected JSON")
}

fn print_result(done: &Value) {
    let runs = done["runs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    println!(
        "event {} on {}: {} run(s)",
        done["id"].as_str().unwrap_or("?"),
        done["topic"].as_str().unwrap_or("?"),
        runs.len()
    );
    for r in runs {
        let how = if r["created"].as_bool() == Some(false) {
            " (posted before)"
        } else {
            ""
        };
        println!(
            "  run {} of {}/{}: {}{how}",
            r["run_id"],
            r["namespace"].as_str().unwrap_or("?"),
            r["job"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
        );
    }
}

/// A notification's payload as an event's: its JSON, or the text as `{"payload": text}`.
fn notification_payload(text: &str) -> Value {
    kairos_core::document::parse_json(text.as_bytes())
        .unwrap_or_else(|_| serde_json::json!({ "payload": text }))
}

/// Relays notifications for ever: reconnects (with a warning that notifications sent
/// meanwhile are lost) and retries a post the server could not take until it does; a post the
/// server refuses (4xx: an invalid payload) is reported and dropped.
async fn listen(
    client: &Client,
    json: bool,
    url: &str,
    channel: &str,
    topic: &str,
    namespace: Option<&str>,
) -> anyhow::Result<()> {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut listener =
            match kairos_store_postgres::relay::ChannelListener::connect(url, channel).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("kairos event listen: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
        backoff = BACKOFF_MIN;
        eprintln!("kairos event listen: listening on `{channel}`, posting to topic `{topic}`");
        loop {
            let text = match listener.next().await {
                Ok(text) => text,
                Err(e) => {
                    eprintln!(
                        "kairos event listen: {e}; listening again (notifications sent until then are not delivered)"
                    );
                    break;
                }
            };
            let payload = notification_payload(&text);
            let mut retry = BACKOFF_MIN;
            loop {
                match post(client, topic, namespace, None, &payload).await {
                    Ok(done) => {
                        if json {
                            println!("{}", serde_json::to_string(&done)?);
                        } else {
                            print_result(&done);
                        }
                        break;
                    }
                    Err(e)
                        if e.downcast_ref::<ApiFailure>()
                            .is_some_and(|f| f.status.is_client_error()) =>
                    {
                        eprintln!("kairos event listen: the server refused a notification: {e}");
                        break;
                    }
                    Err(e) => {
                        eprintln!("kairos event listen: {e}; retrying in {retry:?}");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payloads() {
        assert_eq!(
            notification_payload(r#"{"id": 7, "op": "INSERT"}"#),
            serde_json::json!({"id": 7, "op": "INSERT"})
        );
        assert_eq!(
            notification_payload("row 7 changed"),
            serde_json::json!({"payload": "row 7 changed"})
        );
    }
}
