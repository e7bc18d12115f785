//! Event triggers end to end: the real `kairos` binary, events posted over HTTP, with the
//! CLI, and relayed from PostgreSQL notifications by `kairos event listen`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};

/// A job subscribed to `topic` (with `filter` when not null) that prints what it got; `overlap:
/// queue`, so that every event's run runs.
fn subscriber(name: &str, topic: &str, filter: Value) -> Value {
    let mut trigger = json!({"event": topic});
    if !filter.is_null() {
        trigger["filter"] = filter;
    }
    json!({"name": name, "triggers": [trigger], "overlap": "queue",
           "task": {"kind": "shell",
                    "script": "echo \"got $KAIROS_EVENT_ID $KAIROS_EVENT_TOPIC $(cat \"$KAIROS_EVENT\")\""}})
}

async fn create(server: &Server, job: Value) {
    let (status, _, body) = server.call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{body}");
}

/// Posts an event; status, content type and body.
async fn post(server: &Server, topic: &str, key: Option<&str>, body: &str) -> (u16, String, Value) {
    let mut req = server
        .http
        .post(format!("{}/api/v1/events/{topic}", server.url))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    (
        status,
        ct,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// `(job, created)` of each run an event's answer lists.
fn listed(answer: &Value) -> Vec<(String, bool)> {
    answer["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["job"].as_str().unwrap().to_owned(),
                r["created"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_runs_each_subscribed_job_once_per_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    create(&server, subscriber("all", "user.signup", Value::Null)).await;
    create(
        &server,
        subscriber("pro", "user.signup", json!({"plan": "pro"})),
    )
    .await;
    let mut paused = subscriber("paused", "user.signup", Value::Null);
    paused["paused"] = json!(true);
    create(&server, paused).await;
    create(&server, subscriber("elsewhere", "order.paid", Value::Null)).await;

    // Posted with an id, then again with the same id in the payload, then without an id.
    let (status, ct, first) = post(
        &server,
        "user.signup",
        Some("evt-1"),
        r#"{"plan": "pro", "user": "ann"}"#,
    )
    .await;
    assert_eq!(status, 202, "{first}");
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(first["id"], "evt-1");
    assert_eq!(
        listed(&first),
        [("all".to_owned(), true), ("pro".to_owned(), true)]
    );
    let (status, _, again) = post(
        &server,
        "user.signup",
        None,
        r#"{"id": "evt-1", "plan": "pro", "user": "ann"}"#,
    )
    .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(
        listed(&again),
        [("all".to_owned(), false), ("pro".to_owned(), false)]
    );
    assert_eq!(again["runs"][0]["run_id"], first["runs"][0]["run_id"]);
    let (status, _, fresh) = post(&server, "user.signup", None, r#"{"plan": "free"}"#).await;
    assert_eq!(status, 202, "{fresh}");
    assert_eq!(listed(&fresh), [("all".to_owned(), true)], "the filter");
    let fresh_id = fresh["id"].as_str().unwrap().to_owned();
    assert_ne!(fresh_id, "evt-1");

    // Two runs for the job without a filter, one for the filtered job, none for the others.
    let all = server.ended_runs(30, "all", 2).await;
    let pro = server.ended_runs(30, "pro", 1).await;
    assert!(
        server.runs("paused").await.is_empty(),
        "a paused job gets none"
    );
    assert!(server.runs("elsewhere").await.is_empty());
    for run in all.iter().chain(&pro) {
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_eq!(run["origin"], "event");
    }
    // The task read the event's id, topic and payload.
    let out = server.output(&first["runs"][1]["run_id"]).await;
    assert!(
        out.contains(r#"got evt-1 user.signup {"plan":"pro","user":"ann"}"#),
        "{out}"
    );
    let out = server.output(&fresh["runs"][0]["run_id"]).await;
    assert!(
        out.contains(&format!(r#"got {fresh_id} user.signup {{"plan":"free"}}"#)),
        "{out}"
    );
    // The run shows its event, with the payload on its own page.
    let id = &first["runs"][0]["run_id"];
    let (_, _, run) = server
        .call(Method::GET, &format!("/api/v1/runs/{id}"), None)
        .await;
    assert_eq!(run["event"]["id"], "evt-1");
    assert_eq!(run["event"]["topic"], "user.signup");
    assert_eq!(
        run["event"]["payload"],
        json!({"plan": "pro", "user": "ann"})
    );
    assert_eq!(all[0]["event"]["payload"], Value::Null, "not in lists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_and_subscriptions_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    create(&server, subscriber("all", "user.signup", Value::Null)).await;

    let problem = |answer: &(u16, String, Value), status: u16, field: Option<&str>| {
        let (got, ct, body) = answer;
        assert_eq!(*got, status, "{body}");
        assert_eq!(ct, "application/problem+json", "{body}");
        if let Some(field) = field {
            assert_eq!(body["errors"][0]["field"], field, "{body}");
        }
    };
    problem(
        &post(&server, "user%20signup", None, "{}").await,
        422,
        Some("topic"),
    );
    problem(&post(&server, "ü", None, "{}").await, 422, Some("topic"));
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(300 * 1024));
    problem(&post(&server, "user.signup", None, &big).await, 413, None);
    problem(
        &post(&server, "user.signup", None, "{not json").await,
        422,
        None,
    );
    problem(
        &post(&server, "user.signup", None, r#"{"a": 1, "a": 2}"#).await,
        422,
        Some("a"),
    );
    problem(
        &post(&server, "user.signup", None, r#"{"id": {"nested": 1}}"#).await,
        422,
        Some("id"),
    );
    problem(
        &post(&server, "user.signup", Some("k1"), r#"{"id": "k2"}"#).await,
        422,
        Some("id"),
    );
    let long_key = "k".repeat(300);
    problem(
        &post(&server, "user.signup", Some(&long_key), "{}").await,
        422,
        Some("id"),
    );
    assert!(server.runs("all").await.is_empty(), "nothing was written");

    // Subscriptions are checked like every field of a job.
    for (job, field) in [
        (
            json!({"name": "f", "triggers": [{"event": "t", "filter": {"plan": ["pro"]}}],
                   "task": {"kind": "shell", "script": "true"}}),
            "triggers[0].filter.plan",
        ),
        (
            json!({"name": "f", "triggers": [{"event": "bad topic!"}],
                   "task": {"kind": "shell", "script": "true"}}),
            "triggers[0].event",
        ),
        (
            json!({"name": "f", "triggers": [{"cron": "@daily", "filter": {"a": 1}}],
                   "task": {"kind": "shell", "script": "true"}}),
            "triggers[0].filter",
        ),
    ] {
        let (status, ct, body) = server.call(Method::POST, "/api/v1/jobs", Some(job)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(ct, "application/problem+json");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let (status, _, _) = server.call(Method::GET, "/api/v1/jobs/f", None).await;
    assert_eq!(status, 404, "no job was created");
}

fn kairos(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(args)
        .env("KAIROS_SERVER", &server.url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kairos_event_emit_posts_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    create(&server, subscriber("all", "orders", Value::Null)).await;
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, r#"{"order": 7}"#).unwrap();
    let file = payload.to_str().unwrap();

    let (ok, out, err) = kairos(
        &server,
        &["event", "emit", "orders", "--id", "o-7", "-f", file],
    );
    assert!(ok, "{err}");
    assert!(out.contains("event o-7 on orders: 1 run(s)"), "{out}");
    assert!(out.contains("default/all: queued"), "{out}");
    let (ok, out, err) = kairos(
        &server,
        &[
            "event", "emit", "orders", "--id", "o-7", "--json", "--data", "{}",
        ],
    );
    assert!(ok, "{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["runs"][0]["created"], false, "{again}");
    let (ok, _, err) = kairos(&server, &["event", "emit", "orders", "--data", "{oops"]);
    assert!(!ok);
    assert!(err.contains("--data"), "{err}");
    let (ok, _, err) = kairos(&server, &["event", "emit", "bad topic"]);
    assert!(!ok);
    assert!(err.contains("topic"), "{err}");
    let runs = server.ended_runs(30, "all", 1).await;
    let out = server.output(&runs[0]["id"]).await;
    assert!(out.contains(r#"got o-7 orders {"order":7}"#), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kairos_event_listen_relays_postgres_notifications() {
    let Some(schema) = kairos_testkit::postgres::temp_schema().await else {
        return;
    };
    // The schema's random name is the channel: nothing else on the database notifies it.
    let channel = schema.name.clone();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    create(&server, subscriber("rows", "orders.changed", Value::Null)).await;
    let log = dir.path().join("listen.log");
    let mut listener = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["event", "listen", "--postgres", &schema.base_url])
        .args(["--channel", &channel, "--topic", "orders.changed"])
        .env("KAIROS_SERVER", &server.url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("listen.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("listening on")
    {
        assert!(
            Instant::now() < deadline,
            "the listener did not listen: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = kairos_testkit::postgres::connect(&schema.base_url)
        .await
        .unwrap();
    // What a trigger function would send: a row as JSON, with its id as the event's id; the
    // same row notified twice (a retried transaction) is one run. Plain text is wrapped.
    for payload in [
        r#"{"id": "order-1", "op": "INSERT"}"#,
        r#"{"id": "order-1", "op": "INSERT"}"#,
        "not json",
    ] {
        db.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .unwrap();
    }
    let runs = server.ended_runs(30, "rows", 2).await;
    listener.kill().unwrap();
    listener.wait().unwrap();
    let outputs = [
        server.output(&runs[1]["id"]).await,
        server.output(&runs[0]["id"]).await,
    ];
    assert!(
        outputs[0].contains(r#"got order-1 orders.changed {"id":"order-1","op":"INSERT"}"#),
        "{outputs:?}"
    );
    assert!(
        outputs[1].contains(r#"orders.changed {"payload":"not json"}"#),
        "{outputs:?}"
    );
}
