//! Alerts end to end: the real binary with channels in its configuration file, and a local
//! webhook receiver (axum) that records what it gets. Checks the body and its HMAC signature,
//! the retry after a 500 (same delivery id), a recovery, a dead-man switch, deliveries in the
//! API, a job naming an unknown channel, and that a channel that hangs delays neither runs nor
//! the other channels.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::Server;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn all(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// `/flaky` answers 500 to the first request, then 200; `/hook` always 200; `/hang` never.
async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    async fn record(r: &Receiver, path: &'static str, headers: HeaderMap, body: Bytes) -> usize {
        let mut got = r.got.lock().unwrap();
        got.push(Received {
            path,
            headers,
            body,
        });
        got.iter().filter(|g| g.path == path).count()
    }
    let app = Router::new()
        .route(
            "/flaky",
            post(
                |State(r): State<Receiver>, headers: HeaderMap, body: Bytes| async move {
                    if record(&r, "/flaky", headers, body).await == 1 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .route(
            "/hook",
            post(
                |State(r): State<Receiver>, headers: HeaderMap, body: Bytes| async move {
                    record(&r, "/hook", headers, body).await;
                    StatusCode::OK
                },
            ),
        )
        .route(
            "/hang",
            post(
                |State(r): State<Receiver>, headers: HeaderMap, body: Bytes| async move {
                    record(&r, "/hang", headers, body).await;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    StatusCode::OK
                },
            ),
        )
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

/// Waits until `check` finds something, or panics after `secs`.
async fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::disallowed_methods,
    reason = "the signature's timestamp is checked against the wall clock, as a receiver does"
)]
async fn alerts_reach_their_channels_signed_retried_and_recorded() {
    let (receiver_url, receiver) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("webhook.key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let config = dir.path().join("kairos.toml");
    std::fs::write(
        &config,
        format!(
            r#"
ui_url = "https://kairos.example"

[[channels]]
name = "flaky"
kind = "webhook"
url = "{receiver_url}/flaky"
secret_file = "{key}"

[[channels]]
name = "hook"
kind = "webhook"
url = "{receiver_url}/hook"

[[channels]]
name = "hang"
kind = "webhook"
url = "{receiver_url}/hang"
timeout = "1s"
"#,
            key = key.display()
        ),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .await;

    // A job naming a channel the server does not have is refused, with the field path.
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(
                json!({"name": "nowhere", "task": {"kind": "shell", "script": "true"},
                        "notify": [{"on": "failure", "channels": ["hook", "pagerduty"]}]}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"][0]["field"], "notify[0].channels[1]",
        "{body}"
    );

    // A channel that hangs: every run of this job fails and raises an alert to it.
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "ticker", "triggers": [{"interval": "1s"}],
                        "task": {"kind": "shell", "script": "exit 1"},
                        "overlap": "allow", "max_concurrent": 5,
                        "notify": [{"on": "failure", "channels": ["hang"]}]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "fails",
                        "task": {"kind": "shell", "script": "if grep -q fail \"$KAIROS_PARAMS\" 2>/dev/null; then echo boom >&2; exit 3; fi"},
                        "notify": [{"on": "failure", "channels": ["flaky"]},
                                   {"on": "recovery", "channels": ["hook"]}]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // A dead-man switch on a job that never runs.
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(
                json!({"name": "quiet", "task": {"kind": "shell", "script": "true"},
                        "notify": [{"on": "no_success", "within": "10s", "channels": ["hook"]}]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // A failure: the first POST gets a 500, the retry (same delivery) a 200.
    let (status, _, run) = server
        .call(
            Method::POST,
            "/api/v1/jobs/fails/trigger",
            Some(json!({"params": {"fail": true}})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_i64().unwrap();
    server.wait_for_run_state(30, run_id, "failed").await;
    let flaky = eventually(30, "the retried failure alert", || {
        let got = receiver.all("/flaky");
        (got.len() >= 2).then_some(got)
    })
    .await;
    assert_eq!(flaky.len(), 2, "delivered once, after one retry: {flaky:?}");
    let (first, second) = (&flaky[0], &flaky[1]);
    assert_eq!(
        first.header("kairos-delivery"),
        second.header("kairos-delivery")
    );
    assert_eq!(first.body, second.body, "the same document both times");
    let body = second.json();
    assert_eq!(body["alert"], "failure");
    assert_eq!(body["job"], "fails");
    assert_eq!(body["namespace"], "default");
    assert_eq!(body["rule"], "notify[0]");
    assert_eq!(body["run"]["id"], run_id);
    assert_eq!(body["run"]["state"], "failed");
    assert_eq!(body["run"]["exit_code"], 3);
    assert_eq!(
        body["links"]["run"],
        format!("https://kairos.example/runs/{run_id}")
    );
    assert_eq!(
        body["links"]["job"],
        "https://kairos.example/jobs/default/fails"
    );
    assert!(
        body["summary"].as_str().unwrap().contains("failed"),
        "{body}"
    );
    assert_eq!(
        body["delivery"].to_string(),
        second.header("kairos-delivery")
    );
    assert_eq!(second.header("kairos-alert"), "failure");
    assert_eq!(second.header("content-type"), "application/json");
    // The signature, checked as a receiver would: HMAC-SHA256 over "<t>.<body>".
    let signature = second.header("kairos-signature");
    let (t, v1) = signature
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature `{signature}`"));
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret-key").unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&second.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "the signature verifies with the shared key");
    let age = jiff::Timestamp::now().as_second() - t.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "a fresh timestamp: {t}");
    // The hook channel got no failure (it is not in that rule).
    assert!(
        receiver
            .all("/hook")
            .iter()
            .all(|r| r.json()["job"] != "fails")
    );

    // A success after it: a recovery.
    let ok = server.trigger("fails").await;
    server.wait_for_run_state(30, ok, "succeeded").await;
    let recovery = eventually(30, "the recovery alert", || {
        receiver
            .all("/hook")
            .into_iter()
            .find(|r| r.json()["alert"] == "recovery")
    })
    .await;
    assert_eq!(recovery.json()["run"]["id"], ok);
    assert!(
        recovery.header("kairos-signature").is_empty(),
        "no key, no signature"
    );

    // The dead-man switch: `quiet` has not succeeded for 10 s.
    let silent = eventually(40, "the dead-man alert", || {
        receiver
            .all("/hook")
            .into_iter()
            .find(|r| r.json()["alert"] == "no_success")
    })
    .await;
    let body = silent.json();
    assert_eq!(body["job"], "quiet");
    assert!(body["silent_since"].is_string(), "{body}");
    assert!(body.get("run").is_none(), "{body}");

    // Deliveries in the API.
    let (status, _, deliveries) = server
        .call(Method::GET, "/api/v1/alerts?job=fails", None)
        .await;
    assert_eq!(status, 200, "{deliveries}");
    let failure = deliveries
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["alert"] == "failure")
        .unwrap_or_else(|| panic!("{deliveries}"));
    assert_eq!(failure["channel"], "flaky");
    assert_eq!(failure["state"], "delivered");
    assert_eq!(failure["attempts"], 2);
    assert_eq!(failure["last_status"], 200);
    assert_eq!(failure["run_id"], run_id);
    assert_eq!(failure["document"]["run"]["id"], run_id);
    assert!(failure["ended_at"].is_string());

    // And in the metrics: one attempt to retry, one delivered, on that channel.
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for outcome in ["retry", "delivered"] {
        let series = metrics
            .lines()
            .find(|l| {
                l.starts_with("kairos_alert_attempts_total{")
                    && l.contains("channel=\"flaky\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .unwrap_or_else(|| panic!("no {outcome} series in\n{metrics}"));
        assert!(series.ends_with(" 1"), "{series}");
    }

    // The same from the CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["alert", "ls", "--job", "fails", "--server", &server.url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.lines().any(|l| l.contains("failure")
            && l.contains("flaky")
            && l.contains("delivered")
            && l.contains("HTTP 200")),
        "{table}"
    );

    // Meanwhile the hanging channel held up nothing: `ticker` kept its schedule, and its
    // alerts wait for their retries.
    let runs = server.runs("ticker").await;
    assert!(runs.len() >= 10, "{} runs", runs.len());
    for r in runs.iter().filter(|r| r["started_at"].is_string()) {
        let due: jiff::Timestamp = r["scheduled_for"].as_str().unwrap().parse().unwrap();
        let started: jiff::Timestamp = r["started_at"].as_str().unwrap().parse().unwrap();
        assert!(
            started.duration_since(due) < jiff::SignedDuration::from_secs(2),
            "run {} started {} after its due time",
            r["id"],
            started.duration_since(due)
        );
    }
    assert!(
        !receiver.all("/hang").is_empty(),
        "the hanging channel was tried"
    );
    let (_, _, hanging) = server
        .call(Method::GET, "/api/v1/alerts?job=ticker&limit=1000", None)
        .await;
    let hanging = hanging.as_array().unwrap();
    assert!(!hanging.is_empty());
    assert!(
        hanging.iter().all(|d| d["state"] != "delivered"),
        "{hanging:?}"
    );
    assert!(
        hanging
            .iter()
            .any(|d| d["attempts"].as_u64() >= Some(1) && d["last_error"].is_string()),
        "{hanging:?}"
    );
    for (query, status) in [
        ("?state=lost", 400),
        ("?limit=0", 400),
        ("?namespace=Bad!", 400),
    ] {
        let (got, _, body) = server
            .call(Method::GET, &format!("/api/v1/alerts{query}"), None)
            .await;
        assert_eq!(got, status, "{query}: {body}");
    }
}

/// Bad channel and rule settings stop the server at start, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_alert_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (text, field) in [
        (
            "[[channels]]\nname = \"a\"\nkind = \"email\"\n",
            "channels[0].kind",
        ),
        (
            "[[channels]]\nname = \"a\"\nkind = \"webhook\"\n",
            "channels[0].url",
        ),
        (
            "[[channels]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"ftp://x/?token=SECRET123\"\n",
            "channels[0].url",
        ),
        (
            "[[channels]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://x\"\n",
            "channels[0].url",
        ),
        (
            "[[channels]]\nname = \"a\"\nkind = \"command\"\nargv = []\n",
            "channels[0].argv",
        ),
        (
            "[[channels]]\nname = \"a\"\nkind = \"command\"\nargv = [\"true\"]\n\n[[channels]]\nname = \"a\"\nkind = \"command\"\nargv = [\"true\"]\n",
            "channels[1].name",
        ),
        (
            "[[channels]]\nname = \"a\"\nkind = \"command\"\nargv = [\"true\"]\n\n[[alerts]]\non = \"failure\"\nchannels = [\"b\"]\n",
            "alerts[0].channels[0]",
        ),
        (
            "[[channels]]\nname = \"a\"\nkind = \"command\"\nargv = [\"true\"]\n\n[[alerts]]\non = \"failures\"\nchannels = [\"a\"]\n",
            "alerts[0].count",
        ),
        (
            "event_retention = \"0s\"\n[[channels]]\nname = \"a\"\nkind = \"command\"\nargv = [\"true\"]\n",
            "event_retention",
        ),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        // A server that accepted the file would run for ever: it gets 20 s.
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["server", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("the server started with {text}"))
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(field), "{text}: {err}");
        assert!(!err.contains("SECRET123"), "a URL is not echoed: {err}");
    }
}
