//! Progress and checkpoints end to end: a task reports through its checkpoint file while it
//! runs; killed with its node (`kill -9`), its run is rescued and the next attempt resumes
//! from the checkpoint.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use common::Server;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_task_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pid_file = dir.path().join("task.pid");
    let token_file = dir.path().join("task.token");
    // The first attempt reports twice, then works "for a long time"; a later one says what it
    // resumes from.
    let script = format!(
        r#"if [ -n "$KAIROS_CHECKPOINT" ]; then
             echo "attempt $KAIROS_ATTEMPT resumes from $(cat "$KAIROS_CHECKPOINT")"; exit 0
           fi
           echo $$ > '{pid}'
           echo "$KAIROS_RUN_TOKEN $KAIROS_API_URL" > '{token}'
           echo '{{"progress": 0.2, "message": "started", "checkpoint": {{"offset": 1}}}}' >> "$KAIROS_CHECKPOINT_FILE"
           echo 'not a report' >> "$KAIROS_CHECKPOINT_FILE"
           echo '{{"progress": 0.5, "message": "halfway", "checkpoint": {{"offset": 42}}}}' >> "$KAIROS_CHECKPOINT_FILE"
           exec sleep 60"#,
        pid = pid_file.display(),
        token = token_file.display()
    );
    let mut server = Server::start(&data, &[]).await;
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "long", "task": {"kind": "shell", "script": script}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = server.trigger("long").await;

    // The report arrives while the task runs.
    let run = server
        .wait_for(20, "the task's report", || async {
            let (_, _, run) = server
                .call(Method::GET, &format!("/api/v1/runs/{id}"), None)
                .await;
            (run["report"]["progress"] == 0.5).then_some(run)
        })
        .await;
    assert_eq!(run["state"], "running");
    assert_eq!(run["report"]["message"], "halfway");
    assert_eq!(run["report"]["checkpoint"], json!({"offset": 42}));
    let (_, _, out) = server
        .call(Method::GET, "/api/v1/runs?limit=10", None)
        .await;
    assert_eq!(out[0]["report"]["has_checkpoint"], true);
    assert_eq!(
        out[0]["report"]["checkpoint"],
        serde_json::Value::Null,
        "not in lists"
    );

    // The task may report over the API too, with its attempt's own token.
    let line = std::fs::read_to_string(&token_file).unwrap();
    let (token, api) = line.trim().split_once(' ').unwrap();
    assert_eq!(api, server.url);
    let report = |id: i64, token: &str, body: &str| {
        server
            .http
            .post(format!("{api}/api/v1/runs/{id}/checkpoint"))
            .header("content-type", "application/json")
            .header("kairos-run-token", token)
            .body(body.to_owned())
    };
    let sent = report(id, token, r#"{"progress": 0.75, "message": "via the API"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 204);
    for (run, token, body, status) in [
        (id, "not-the-token", "{}", 403),
        (id + 1000, token, "{}", 403),
        (id, token, r#"{"progress": 2}"#, 422),
    ] {
        let sent = report(run, token, body).send().await.unwrap();
        assert_eq!(sent.status(), status, "{run} {token} {body}");
    }
    let (_, _, run) = server
        .call(Method::GET, &format!("/api/v1/runs/{id}"), None)
        .await;
    assert_eq!(run["report"]["progress"], 0.75);
    assert_eq!(run["report"]["message"], "via the API");
    assert_eq!(run["report"]["checkpoint"], json!({"offset": 42}), "kept");

    // The node dies with the task; the task's process is killed too (it would run on).
    server.kill9();
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status();
    }
    let server = Server::start(&data, &[]).await;
    let run = server.wait_for_run_state(30, id, "succeeded").await;
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(attempts[0]["status"], "lost", "{run}");
    let output = server.output(id).await;
    assert!(
        output.contains(r#"attempt 2 resumes from {"offset":42}"#),
        "{output}"
    );
    assert_eq!(run["report"]["checkpoint"], json!({"offset": 42}));
}
