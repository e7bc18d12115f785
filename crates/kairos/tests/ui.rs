//! The web UI in a real browser: starts the real `kairos` binary with authentication required
//! and runs `tests/ui/ui-test.mjs` (Playwright's `playwright-core` driving headless Chromium)
//! against it. The script signs in, watches a job appear live, triggers it from the page and
//! watches its run and output, pauses it, opens a failed run, checks a workflow's step graph,
//! deletes a job, and checks that a viewer sees no buttons that change anything; it writes a
//! screenshot of every page to `target/tmp/ui-screenshots/`.
//!
//! Needs `node`, Chromium (`CHROMIUM`, default `/usr/bin/chromium`) and `npm ci` done in
//! `tests/ui` (`.ci/run` installs all three). Without them the test is skipped, unless
//! `KAIROS_REQUIRE_SERVICES=1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Server;
use reqwest::Method;
use serde_json::json;

/// `node`, the Chromium binary and the script's directory, or why they are missing.
fn browser_setup() -> Result<(PathBuf, PathBuf), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Err("node is not installed".into());
    }
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.exists() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            dir.display()
        ));
    }
    Ok((dir, chromium))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_in_a_browser() {
    let (script_dir, chromium) = match browser_setup() {
        Ok(found) => found,
        Err(why) if std::env::var("KAIROS_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("the browser test needs its tools (KAIROS_REQUIRE_SERVICES=1): {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["token", "create", "--data-dir"])
        .arg(&data)
        .args(["--name", "admin", "--role", "admin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {admin}").parse().unwrap());
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    // An alert channel to a local receiver that takes everything.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}", receiver.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { axum::http::StatusCode::OK }),
    );
    tokio::spawn(async move { axum::serve(receiver, app).await });
    let config = dir.path().join("kairos.toml");
    std::fs::write(
        &config,
        format!(
            "[[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{receiver_url}/hook\"\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &data,
        &["--auth", "required", "--config", config.to_str().unwrap()],
        "http",
        http,
    )
    .await;
    let (status, _, viewer) = server
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "viewer", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{viewer}");
    let viewer = viewer["secret"].as_str().unwrap().to_owned();

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).unwrap();
    let mut child = tokio::process::Command::new("node")
        .arg("ui-test.mjs")
        .current_dir(&script_dir)
        .env("KAIROS_URL", &server.url)
        .env("KAIROS_ADMIN_TOKEN", &admin)
        .env("KAIROS_VIEWER_TOKEN", &viewer)
        .env("KAIROS_SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .env("KAIROS_ALERT_CHANNEL", "hook")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut text).await;
            text
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let status = tokio::time::timeout(Duration::from_secs(240), child.wait()).await;
    let finished = matches!(&status, Ok(Ok(s)) if s.success());
    if !finished {
        let _ = child.kill().await;
    }
    let (out, err) = (out.await.unwrap(), err.await.unwrap());
    assert!(
        finished,
        "the browser test failed ({status:?}); screenshots in {}\n--- stdout\n{out}\n--- stderr\n{err}\n--- server log (tail)\n{}",
        screenshots.display(),
        tail(&server.log, 60)
    );
    for page in [
        "login",
        "jobs",
        "job",
        "run",
        "failed-run",
        "workflow",
        "nodes",
        "jobs-phone",
        "alerts",
        "job-toml",
    ] {
        let png = screenshots.join(format!("{page}.png"));
        assert!(png.exists(), "no screenshot {}", png.display());
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
