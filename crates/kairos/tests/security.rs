//! Hostile input against the real `kairos` binary: cross-site and rebinding requests, files
//! that would block, races a user can cause.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use common::Server;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` (request line and headers, without the blank line) and `body` over a fresh
/// connection, exactly as written; returns the status code and the response text.
async fn raw(server: &Server, head: &str, body: &str) -> (u16, String) {
    let addr = server.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// The requests of a page on another site (or a rebound name) are refused and change nothing,
/// with authentication off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_and_rebinding_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let proof = dir.path().join("proof.txt");
    let job = json!({"name": "csrf", "triggers": [],
        "task": {"kind": "shell", "script": format!("id > {}", proof.display())}})
    .to_string();
    let host = server.url.trim_start_matches("http://").to_owned();

    // DNS rebinding: the page's own name, resolving to the loopback address.
    let (status, text) = raw(
        &server,
        "POST /api/v1/jobs HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\nContent-Type: text/plain;charset=UTF-8",
        &job,
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("host-not-allowed"), "{text}");
    // A simple cross-site request: right host, foreign origin, a content type forms can send.
    let (status, text) = raw(
        &server,
        &format!("POST /api/v1/jobs HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain;charset=UTF-8"),
        &job,
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("cross-site-request"), "{text}");
    // Without Origin (a tool, not a browser), the content type is still refused.
    let (status, text) = raw(
        &server,
        &format!(
            "POST /api/v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain;charset=UTF-8"
        ),
        &job,
    )
    .await;
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    // A JSON job from the server's own origin is fine.
    server.create_shell_job("own", "true").await;
    let (status, text) = raw(
        &server,
        &format!("POST /api/v1/jobs/own/trigger HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded"),
        "",
    )
    .await;
    assert_eq!(status, 415, "a form post must not trigger: {text}");
    let (status, text) = raw(
        &server,
        &format!(
            "POST /api/v1/jobs/own/pause HTTP/1.1\r\nHost: {host}\r\nOrigin: http://localhost:1"
        ),
        "",
    )
    .await;
    assert_eq!(status, 403, "another port is another origin: {text}");
    let (status, text) = raw(
        &server,
        &format!("POST /api/v1/jobs/own/pause HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}"),
        "",
    )
    .await;
    assert_eq!(status, 200, "the server's own origin: {text}");
    // Reads under a rebound name are refused too (they would leak job definitions).
    let (status, _) = raw(
        &server,
        "GET /api/v1/jobs HTTP/1.1\r\nHost: evil.example",
        "",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = raw(&server, "GET /health HTTP/1.1\r\nHost: evil.example", "").await;
    assert_eq!(status, 200, "probes answer under any name");

    let (_, _, jobs) = server.call(Method::GET, "/api/v1/jobs", None).await;
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["own"], "nothing was created");
    assert!(server.runs("own").await.is_empty(), "nothing was triggered");
    assert!(!proof.exists());
}
