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

/// A job whose secret file is a FIFO (nobody ever writes to it) froze the whole node: the read
/// blocked both runtime threads. Now the attempt fails on its own, `/health` answers all along
/// and another job keeps firing every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_secret_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("s.fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(
                json!({"name": "tick", "triggers": [{"cron": "* * * * * *"}],
                "task": {"kind": "command", "argv": ["true"]}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "fifo", "timeout": "2s",
                "task": {"kind": "shell", "script": "echo $S", "secret_files": {"S": fifo}}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(server.trigger("fifo").await);
    }
    // The node answers throughout: each probe must come back within its own short timeout.
    let probe = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    for _ in 0..30 {
        let health = probe.get(format!("{}/health", server.url)).send().await;
        assert!(
            health.is_ok_and(|r| r.status() == 200),
            "/health did not answer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for id in ids {
        let run = server.wait_for_run_state(20, id, "failed").await;
        let error = run["attempts"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains("a FIFO, not a regular file"), "{run}");
    }
    // The other job fired every second meanwhile (a frozen scheduler leaves gaps).
    let mut due: Vec<jiff::Timestamp> = server
        .runs("tick")
        .await
        .iter()
        .map(|r| r["scheduled_for"].as_str().unwrap().parse().unwrap())
        .collect();
    due.sort();
    assert!(due.len() >= 3, "{due:?}");
    for pair in due.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]),
            jiff::SignedDuration::from_secs(1),
            "{due:?}"
        );
    }
}

/// A delete racing nine trigger-nows: every answer is a success or a clear 404, never a 5xx
/// with a store error inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_racing_delete_is_never_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..5 {
        server.create_shell_job("racy", "sleep 5").await;
        let delete = server.call(Method::DELETE, "/api/v1/jobs/racy", None);
        let triggers = (0..9).map(|_| server.call(Method::POST, "/api/v1/jobs/racy/trigger", None));
        let (deleted, triggered) = tokio::join!(delete, futures::future::join_all(triggers));
        assert_eq!(deleted.0, 204, "round {round}: {:?}", deleted.2);
        for (status, content_type, body) in triggered {
            assert!(
                status == 202 || status == 404,
                "round {round}: {status} {body}"
            );
            if status == 404 {
                assert_eq!(content_type, "application/problem+json");
                let detail = body["detail"].as_str().unwrap();
                assert!(!detail.contains("store error"), "{detail}");
            }
            *statuses.entry(status).or_default() += 1;
        }
    }
    assert!(statuses.keys().all(|s| *s < 500), "{statuses:?}");
}

/// Runs the CLI with `env` set; returns (success, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"));
    cmd.args(args).env_remove("KAIROS_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Beyond loopback a node refuses to start without authentication, unless told it is
/// insecure, and then warns at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_listens_beyond_loopback_without_auth_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port().to_string();
    let listen = format!("0.0.0.0:{port}");
    let data_arg = data.to_str().unwrap();
    let (ok, _, err) = cli(
        &[
            "server",
            "--data-dir",
            data_arg,
            "--listen",
            &listen,
            "--auth",
            "off",
        ],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("refusing to listen on 0.0.0.0"), "{err}");
    assert!(!data.exists(), "nothing was created: {err}");

    // Required by default beyond loopback: a request without a token is 401.
    let mut server = Server::start(&data, &["--listen", &listen]).await;
    let (status, _, _) = server.call(Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(status, 401);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("no token exists yet"), "{log}");
    server.terminate(std::time::Duration::from_secs(10)).await;

    let server = Server::start(
        &data,
        &["--listen", &listen, "--auth", "off", "--insecure-no-auth"],
    )
    .await;
    let (status, _, _) = server.call(Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("authentication is OFF"), "{log}");
}

/// The first admin token is made offline against the data directory; the CLI then works with
/// it (from `KAIROS_TOKEN` or `--token-file`), and every change lands in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_token_offline_then_the_cli_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let (ok, admin, err) = cli(
        &[
            "token",
            "create",
            "--data-dir",
            data_arg,
            "--name",
            "admin",
            "--role",
            "admin",
        ],
        &[],
    );
    assert!(ok, "{err}");
    let admin = admin.trim().to_owned();
    assert!(admin.starts_with("kairos_"), "{admin}");
    assert!(err.contains("shown only now"), "{err}");
    let server = Server::start(&data, &["--auth", "required"]).await;
    let url = server.url.clone();
    // Offline creation refuses a data directory in use.
    let (ok, _, err) = cli(
        &[
            "token",
            "create",
            "--data-dir",
            data_arg,
            "--name",
            "x",
            "--role",
            "viewer",
        ],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("stop the server"), "{err}");

    let as_admin = [
        ("KAIROS_TOKEN", admin.as_str()),
        ("KAIROS_SERVER", url.as_str()),
    ];
    let (ok, viewer, err) = cli(
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "viewer",
            "--namespace",
            "team-a",
            "--expires",
            "30d",
        ],
        &as_admin,
    );
    assert!(ok, "{err}");
    let token_file = dir.path().join("ci.token");
    std::fs::write(&token_file, viewer.trim()).unwrap();
    let job_file = dir.path().join("job.json");
    std::fs::write(
        &job_file,
        r#"{"name": "hello", "namespace": "team-a", "task": {"kind": "shell", "script": "true"}}"#,
    )
    .unwrap();
    let job_arg = job_file.to_str().unwrap();
    let (ok, _, err) = cli(&["job", "create", "-f", job_arg], &as_admin);
    assert!(ok, "{err}");
    let as_viewer = [("KAIROS_SERVER", url.as_str())];
    let file_arg = token_file.to_str().unwrap();
    let (ok, out, err) = cli(
        &["job", "ls", "-N", "team-a", "--token-file", file_arg],
        &as_viewer,
    );
    assert!(ok, "{err}");
    assert!(out.contains("hello"), "{out}");
    let (ok, _, err) = cli(
        &[
            "job",
            "trigger",
            "hello",
            "-N",
            "team-a",
            "--token-file",
            file_arg,
        ],
        &as_viewer,
    );
    assert!(!ok);
    assert!(err.contains("403"), "{err}");
    let (ok, _, err) = cli(&["job", "ls"], &as_viewer);
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    let (ok, out, err) = cli(&["token", "ls"], &as_admin);
    assert!(ok, "{err}");
    assert!(out.contains("ci") && out.contains("team-a"), "{out}");
    assert!(!out.contains("kairos_"), "no secret in a listing: {out}");
    let (ok, out, err) = cli(&["audit", "ls", "-A"], &as_admin);
    assert!(ok, "{err}");
    for expected in ["token.create", "job.create", "offline", "admin", "hello"] {
        assert!(out.contains(expected), "{expected} missing:\n{out}");
    }
    let (ok, _, err) = cli(&["token", "revoke", "ci"], &as_admin);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        &["job", "ls", "-N", "team-a", "--token-file", file_arg],
        &as_viewer,
    );
    assert!(!ok, "a revoked token stops working at once");
    assert!(err.contains("401"), "{err}");
}

/// HTTPS: the node serves TLS with the given certificate; the CLI trusts it through
/// `--ca-cert`; plain HTTP on the same port gets nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ca.cert.pem()).unwrap();
    std::fs::write(&key, ca.key_pair.serialize_pem()).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--tls-cert", cert_arg, "--tls-key", key_arg],
        "https",
        https,
    )
    .await;
    server.create_shell_job("tls", "true").await;
    let (ok, out, err) = cli(
        &["job", "ls", "--server", &server.url, "--ca-cert", cert_arg],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("tls"), "{out}");
    let (ok, _, err) = cli(&["job", "ls", "--server", &server.url], &[]);
    assert!(!ok, "an unknown CA is refused");
    assert!(err.contains("cannot reach"), "{err}");
    let plain = server.url.replacen("https://", "http://", 1);
    let r = common::http_client()
        .get(format!("{plain}/health"))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());

    // A key that does not fit, or a missing file: a clear error before anything starts.
    let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    let other_key = dir.path().join("other.pem");
    std::fs::write(&other_key, other.key_pair.serialize_pem()).unwrap();
    for (c, k, expected) in [
        (cert_arg, other_key.to_str().unwrap(), "does not fit"),
        ("/nonexistent.pem", key_arg, "tls_cert"),
    ] {
        let data = dir.path().join("data2");
        let (ok, _, err) = cli(
            &[
                "server",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                c,
                "--tls-key",
                k,
            ],
            &[],
        );
        assert!(!ok);
        assert!(err.contains(expected), "{err}");
    }
}
