//! Dependency triggers end to end: jobs that run after other jobs' runs, on one node (SQLite)
//! and on two nodes sharing PostgreSQL; and the checks on the jobs that name each other.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::process::Command;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};

/// `a` writes a result (and fails when triggered with `{"fail": true}`); `b` runs after each
/// success of `a` and prints what it got; `c` after each success of `b`; `f` after each
/// failure of `a`.
fn chain() -> Vec<Value> {
    let script = |s: &str| json!({"kind": "shell", "script": s});
    vec![
        json!({"name": "a", "task": script(
            "grep -q fail \"$KAIROS_PARAMS\" 2>/dev/null && exit 3; echo '{\"rows\": 3}' > \"$KAIROS_RESULT\"")}),
        json!({"name": "b", "triggers": [{"after": {"job": "a", "on": "success"}}],
               "task": script("echo \"after $KAIROS_UPSTREAM_RUN_ID: $(cat \"$KAIROS_UPSTREAM_RESULT\")\"")}),
        json!({"name": "c", "triggers": [{"after": {"job": "b"}}],
               "task": script("echo \"after $KAIROS_UPSTREAM_RUN_ID\"")}),
        json!({"name": "f", "triggers": [{"after": {"job": "a", "on": "failure"}}],
               "task": script("echo \"a failed: $KAIROS_UPSTREAM_RUN_ID\"")}),
    ]
}

async fn create(server: &Server, job: Value) {
    let (status, _, body) = server.call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{body}");
}

async fn trigger(server: &Server, job: &str, params: Value) -> i64 {
    let (status, _, run) = server
        .call(
            Method::POST,
            &format!("/api/v1/jobs/{job}/trigger"),
            Some(json!({ "params": params })),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    run["id"].as_i64().unwrap()
}

/// Waits until `job` has `count` runs, all ended; returns them oldest first.
async fn ended_runs(server: &Server, job: &str, count: usize) -> Vec<Value> {
    let mut runs = server.ended_runs(60, job, count).await;
    runs.reverse();
    runs
}

/// Runs the chain: three successes and a failure of `a`; checks that `b` and `c` ran once per
/// success, `f` once for the failure, and what each task got.
async fn run_the_chain(post_to: &Server, read_from: &Server) {
    let mut successes = Vec::new();
    for _ in 0..3 {
        successes.push(trigger(post_to, "a", json!({})).await);
    }
    let failure = trigger(post_to, "a", json!({"fail": true})).await;
    let a = ended_runs(read_from, "a", 4).await;
    let b = ended_runs(read_from, "b", 3).await;
    let c = ended_runs(read_from, "c", 3).await;
    let f = ended_runs(read_from, "f", 1).await;
    let ids = |runs: &[Value]| -> Vec<i64> {
        runs.iter()
            .map(|r| r["upstream_run_id"].as_i64().unwrap())
            .collect()
    };
    let mut after_a = ids(&b);
    after_a.sort_unstable();
    assert_eq!(after_a, successes, "b once per success of a");
    let mut after_b = ids(&c);
    after_b.sort_unstable();
    let mut b_ids: Vec<i64> = b.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    b_ids.sort_unstable();
    assert_eq!(after_b, b_ids, "c once per run of b");
    assert_eq!(ids(&f), [failure], "f for the failure only");
    assert!(a.iter().filter(|r| r["state"] == "failed").count() == 1);
    for run in b.iter().chain(&c).chain(&f) {
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_eq!(run["origin"], "dependency", "{run}");
    }
    // The tasks got the upstream run's id, and b its result.
    let out = read_from.output(&b[0]["id"]).await;
    let upstream = b[0]["upstream_run_id"].as_i64().unwrap();
    assert!(
        out.contains(&format!(r#"after {upstream}: {{"rows":3}}"#)),
        "{out}"
    );
    let out = read_from.output(&f[0]["id"]).await;
    assert!(out.contains(&format!("a failed: {failure}")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_jobs_runs_once_per_upstream_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    for job in chain() {
        create(&server, job).await;
    }
    run_the_chain(&server, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_jobs_runs_once_per_upstream_run_on_two_nodes() {
    let Some(schema) = kairos_testkit::postgres::temp_schema().await else {
        return;
    };
    let sep = if schema.base_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let store = format!("{}{sep}schema={}", schema.base_url, schema.name);
    let dir = tempfile::tempdir().unwrap();
    let mut one = Server::start(&dir.path().join("one"), &["--store", &store]).await;
    let mut two = Server::start(&dir.path().join("two"), &["--store", &store]).await;
    for job in chain() {
        create(&one, job).await;
    }
    // Triggered on one node, read on the other; both nodes' workers take the runs.
    run_the_chain(&two, &one).await;
    one.kill9();
    two.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_name_each_other_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let after = |name: &str, up: &str| {
        json!({"name": name, "triggers": [{"after": {"job": up}}],
               "task": {"kind": "shell", "script": "true"}})
    };
    // An upstream that does not exist, or a bad `on`: 422 at the field, nothing written.
    let (status, ct, body) = server
        .call(Method::POST, "/api/v1/jobs", Some(after("b", "a")))
        .await;
    assert_eq!(
        (status, ct.as_str()),
        (422, "application/problem+json"),
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["field"], "triggers[0].after.job",
        "{body}"
    );
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(
                json!({"name": "b", "triggers": [{"after": {"job": "a", "on": "sometimes"}}],
                        "task": {"kind": "shell", "script": "true"}}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "triggers[0].after.on", "{body}");
    let (status, _, _) = server.call(Method::GET, "/api/v1/jobs/b", None).await;
    assert_eq!(status, 404);

    // A jobs file may list a job before the job it runs after.
    let file = dir.path().join("jobs.json");
    std::fs::write(
        &file,
        serde_json::to_string(&json!([after("b", "a"), after("c", "b"),
            {"name": "a", "task": {"kind": "shell", "script": "true"}}]))
        .unwrap(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["apply", "-f"])
        .arg(&file)
        .env("KAIROS_SERVER", &server.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A cycle is named.
    let (_, _, a) = server.call(Method::GET, "/api/v1/jobs/a", None).await;
    let mut cyclic = after("a", "c");
    cyclic["version"] = a["version"].clone();
    let (status, _, body) = server
        .call(Method::PUT, "/api/v1/jobs/a", Some(cyclic))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"][0]["field"], "triggers[0].after.job",
        "{body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("a → c → b → a"), "{message}");

    // Deleting a job others run after: 409 naming them, unless forced.
    let (status, ct, body) = server.call(Method::DELETE, "/api/v1/jobs/a", None).await;
    assert_eq!(
        (status, ct.as_str()),
        (409, "application/problem+json"),
        "{body}"
    );
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("job-has-dependents"),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains('b'), "{body}");
    let (status, _, _) = server
        .call(Method::DELETE, "/api/v1/jobs/a?force=true", None)
        .await;
    assert_eq!(status, 204);
    // Pruning the rest deletes them dependents first (b is listed first, but c runs after it).
    std::fs::write(
        &file,
        r#"[{"name": "x", "task": {"kind": "shell", "script": "true"}}]"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["apply", "--prune", "-f"])
        .arg(&file)
        .env("KAIROS_SERVER", &server.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, _, jobs) = server.call(Method::GET, "/api/v1/jobs", None).await;
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["x"], "{jobs}");
}
