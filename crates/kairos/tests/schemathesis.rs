//! schemathesis against the OpenAPI document of the real binary: no request gets a 5xx and every
//! response matches the document, with authentication off and on (where it also checks that
//! every secured route refuses a request without a token).
//!
//! schemathesis comes from `KAIROS_SCHEMATHESIS` (a path; `.ci/run` installs it in a venv) or
//! `PATH`. Without it the test is skipped, unless `KAIROS_REQUIRE_SERVICES=1`. The examples are
//! bounded (`-n 5` per operation, with the coverage phase's boundary values) and the seed fixed,
//! so a run takes seconds and a failure reproduces; `KAIROS_SCHEMATHESIS_SEED` picks another.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Server;
use reqwest::Method;
use serde_json::json;

fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KAIROS_SCHEMATHESIS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let found = Command::new("schemathesis").arg("--version").output();
    if found.is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from("schemathesis"));
    }
    if std::env::var("KAIROS_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("schemathesis is required (KAIROS_REQUIRE_SERVICES=1): set KAIROS_SCHEMATHESIS");
    }
    eprintln!("schemathesis not found: skipped (set KAIROS_SCHEMATHESIS)");
    None
}

/// Jobs, a run and a token, so that reads find something.
async fn seed(server: &Server, token: Option<&str>) {
    let http = common::http_client();
    let send = |method: Method, path: &str, body: Option<serde_json::Value>| {
        let mut req = http.request(method, format!("{}{path}", server.url));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    for (name, ns) in [("seed", "default"), ("other", "team-a")] {
        let job = json!({"name": name, "namespace": ns, "triggers": [{"cron": "0 3 * * *"}],
            "task": {"kind": "shell", "script": "echo seeded"}});
        let r = send(Method::POST, "/api/v1/jobs", Some(job)).await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = send(Method::POST, "/api/v1/jobs/seed/trigger", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body = json!({"name": "seeded", "role": "viewer"});
    let r = send(Method::POST, "/api/v1/tokens", Some(body))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn run(st: &PathBuf, server: &Server, checks: &str, token: Option<&str>) {
    let seed = std::env::var("KAIROS_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let report = server.data_dir.with_extension("schemathesis");
    let mut cmd = tokio::process::Command::new(st);
    cmd.args(["run", &format!("{}/api/v1/openapi.json", server.url)])
        .args(["--checks", checks])
        .args(["--max-examples", "5", "--seed", &seed, "--workers", "1"])
        .args([
            "--phases",
            "coverage,fuzzing",
            "--generation-database",
            "none",
        ])
        .args(["--request-timeout", "10", "--no-color"])
        // The event stream never ends by design.
        .args(["--exclude-path", "/api/v1/events"])
        .arg("--report-dir")
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(server.data_dir.parent().unwrap());
    if let Some(token) = token {
        cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.output().await.expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_openapi_document_without_authentication() {
    let Some(st) = schemathesis() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    seed(&server, None).await;
    run(
        &st,
        &server,
        "not_a_server_error,response_schema_conformance",
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_openapi_document_with_authentication() {
    let Some(st) = schemathesis() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args([
            "token",
            "create",
            "--name",
            "admin",
            "--role",
            "admin",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let admin = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let server = Server::start(&data, &["--auth", "required"]).await;
    seed(&server, Some(&admin)).await;
    run(
        &st,
        &server,
        "not_a_server_error,response_schema_conformance,ignored_auth",
        Some(&admin),
    )
    .await;
}
