//! The web UI's server side, over real HTTP against the real binary: the embedded pages and
//! assets (no token needed, strict headers), signing in to a session cookie and what the
//! cookie may do, and the per-job summary the jobs page reads (`/api/v1/stats/jobs`). The
//! pages themselves are driven in a browser by `ui.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::process::Command;

use common::Server;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// A client that sends `token` as a bearer token on every request.
fn bearer_client(token: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An admin token made offline in `data`.
fn offline_admin(data: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["token", "create", "--data-dir"])
        .arg(data)
        .args(["--name", "admin", "--role", "admin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn new_token(server: &Server, name: &str, role: &str, namespaces: &[&str]) -> String {
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": name, "role": role, "namespaces": namespaces})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["secret"].as_str().unwrap().to_owned()
}

/// A plain client (no token, no cookie store): every cookie is sent by hand.
fn plain() -> reqwest::Client {
    common::http_client()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_assets_are_served_without_a_token_with_strict_headers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = offline_admin(&data);
    let server = Server::start_with(
        &data,
        &["--auth", "required"],
        "http",
        bearer_client(&admin),
    )
    .await;
    let http = plain();
    for path in [
        "/",
        "/login",
        "/nodes",
        "/alerts",
        "/jobs/default/backup",
        "/runs/42",
    ] {
        let r = http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = r.text().await.unwrap();
        assert!(body.contains("/assets/app.js"), "{body}");
    }
    let r = http
        .get(format!("{}/assets/app.js", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let etag = r.headers()["etag"].clone();
    let again = http
        .get(format!("{}/assets/app.js", server.url))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag);
    let css = http
        .get(format!("{}/assets/app.css", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    // Data still needs a token; an unknown asset or page is a 404 problem.
    for (path, status) in [
        ("/api/v1/jobs", 401),
        ("/api/v1/session", 401),
        ("/assets/nope.js", 404),
        ("/assets/..%2fCargo.toml", 404),
        ("/jobs/default", 404),
        ("/elsewhere", 401),
    ] {
        let r = http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    // Only reads are open: a POST to a page path is not.
    let r = http
        .post(format!("{}/", server.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

fn cookies_of(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Signs in with `token` from the node's own page (or as `origin`); the `Set-Cookie` values.
async fn sign_in(server: &Server, token: &str, origin: Option<&str>) -> Vec<String> {
    let mut req = plain()
        .post(format!("{}/api/v1/session", server.url))
        .json(&json!({"token": token}));
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    cookies_of(&r)
}

/// The `name=value` of the one session cookie set among `set`.
fn session_cookie(set: &[String]) -> String {
    let sets: Vec<&String> = set.iter().filter(|c| !c.contains("Max-Age=0")).collect();
    assert_eq!(sets.len(), 1, "{set:?}");
    sets[0].split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_acts_as_its_token_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = offline_admin(&data);
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let proxied = format!("https://127.0.0.1:{port}");
    // As a TLS-terminating proxy in front of the node would need.
    let config = dir.path().join("kairos.toml");
    std::fs::write(&config, format!("allowed_origins = [\"{proxied}\"]\n")).unwrap();
    let server = Server::start_with(
        &data,
        &[
            "--listen",
            &listen,
            "--auth",
            "required",
            "--config",
            config.to_str().unwrap(),
        ],
        "http",
        bearer_client(&admin),
    )
    .await;
    let viewer = new_token(&server, "viewer", "viewer", &["team-a"]).await;
    server.create_shell_job("hello", "echo hi").await;
    let http = plain();
    let url = |path: &str| format!("{}{path}", server.url);

    // Bad sign-ins: not a token, an unknown one, not a sign-in body, not JSON.
    for (body, status) in [
        (json!({"token": "nope"}), 401),
        (json!({"token": format!("kairos_{}", "0".repeat(64))}), 401),
        (json!({"token": admin, "remember": true}), 422),
        (json!({}), 422),
    ] {
        let r = http
            .post(url("/api/v1/session"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    let r = http
        .post(url("/api/v1/session"))
        .header("content-type", "text/plain")
        .body(format!("{{\"token\": \"{viewer}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "a form or text body cannot sign in");
    let r = http
        .post(url("/api/v1/session"))
        .header("origin", "https://evil.example")
        .json(&json!({"token": viewer}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another site cannot sign a browser in");

    // The viewer signs in: the cookie holds a session id, never the token, out of scripts' reach.
    let set = sign_in(&server, &viewer, None).await;
    let cookie = session_cookie(&set);
    let (name, id) = cookie.split_once('=').unwrap();
    assert_eq!(name, "kairos_session");
    assert_eq!(id.len(), 64, "{cookie}");
    assert!(!set.iter().any(|c| c.contains(&viewer[7..])), "{set:?}");
    let attributes = set.iter().find(|c| !c.contains("Max-Age=0")).unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert!(!attributes.contains("Secure"), "plain HTTP: {attributes}");
    let with_cookie = |method: Method, path: &str| {
        http.request(method, url(path))
            .header("cookie", format!("theme=dark; {cookie}"))
    };
    let r = with_cookie(Method::GET, "/api/v1/session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"auth": "required", "name": "viewer", "role": "viewer", "namespaces": ["team-a"]})
    );
    // What the token sees, and no more: its namespace only, and no changes.
    let r = with_cookie(Method::GET, "/api/v1/jobs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    let r = with_cookie(Method::GET, "/api/v1/jobs/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = with_cookie(Method::GET, "/api/v1/stats/jobs?namespace=default")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([]),
        "stats keep to the scope"
    );
    let r = with_cookie(Method::POST, "/api/v1/jobs/hello/trigger?namespace=team-a")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The token itself is no session id, and a made-up id is no session.
    for bad in [
        format!("kairos_session={viewer}"),
        format!("kairos_session={}", "ab".repeat(32)),
    ] {
        let r = http
            .get(url("/api/v1/session"))
            .header("cookie", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }

    // An operator's session changes things only from the node's own pages.
    let operator = new_token(&server, "ops", "operator", &["*"]).await;
    let ops_cookie = session_cookie(&sign_in(&server, &operator, None).await);
    let ops = |method: Method, path: &str| {
        http.request(method, url(path))
            .header("cookie", ops_cookie.clone())
    };
    let r = ops(Method::POST, "/api/v1/jobs/hello/trigger")
        .header("origin", "https://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cross-site");
    let r = ops(Method::POST, "/api/v1/jobs/hello/trigger")
        .header("sec-fetch-site", "cross-site")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cross-site by fetch metadata");
    let r = ops(Method::POST, "/api/v1/jobs/hello/trigger")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "a form post");
    let r = ops(Method::POST, "/api/v1/jobs/hello/trigger")
        .header("origin", server.url.clone())
        .header("sec-fetch-site", "same-origin")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "from the node's own page");
    // A bearer token wins over the cookie; two session cookies (another port of the host may
    // have set one) count as none.
    let r = http
        .get(url("/api/v1/session"))
        .header("cookie", ops_cookie.clone())
        .header("authorization", format!("Bearer {viewer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "viewer");
    let r = http
        .get(url("/api/v1/session"))
        .header("cookie", format!("{cookie}; {ops_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Behind a TLS proxy (the page's origin is https), the cookie is `__Host-` and `Secure`.
    let secure = sign_in(&server, &operator, Some(&proxied)).await;
    let secure_cookie = session_cookie(&secure);
    assert!(
        secure_cookie.starts_with("__Host-kairos_session="),
        "{secure:?}"
    );
    assert!(
        secure
            .iter()
            .any(|c| c.starts_with("__Host-kairos_session=") && c.contains("; Secure")),
        "{secure:?}"
    );
    assert!(
        secure
            .iter()
            .any(|c| c.starts_with("kairos_session=;") && c.contains("Max-Age=0")),
        "the plain cookie is cleared: {secure:?}"
    );
    let r = http
        .get(url("/api/v1/session"))
        .header("cookie", secure_cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "ops");

    // Signing out ends the session on the server, not only in the browser.
    let r = http
        .delete(url("/api/v1/session"))
        .header("cookie", ops_cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let cleared = cookies_of(&r);
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("kairos_session=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    let r = ops(Method::GET, "/api/v1/session").send().await.unwrap();
    assert_eq!(r.status(), 401, "the old cookie no longer works");
    let r = http
        .get(url("/api/v1/session"))
        .header("cookie", secure_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "another session of the same token lives on"
    );

    // Revoking the token ends its sessions.
    let (status, _, _) = server
        .call(Method::DELETE, "/api/v1/tokens/viewer", None)
        .await;
    assert_eq!(status, 200);
    let r = with_cookie(Method::GET, "/api/v1/session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = with_cookie(Method::GET, "/").send().await.unwrap();
    assert_eq!(r.status(), 200, "the pages open still, to sign in again");
}

/// Without authentication the session is the anonymous admin, and signing in sets no cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_the_session_is_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let (status, _, me) = server.call(Method::GET, "/api/v1/session", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        me,
        json!({"auth": "off", "name": "anonymous", "role": "admin", "namespaces": ["*"]})
    );
    let r = server
        .http
        .post(format!("{}/api/v1/session", server.url))
        .json(&json!({"token": "anything"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_stats_give_each_jobs_schedule_in_words_and_last_ended_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let job = json!({
        "name": "nightly",
        "triggers": [{"cron": "0 3 * * *", "timezone": "Europe/Paris"}, {"interval": "15m"}],
        "task": {"kind": "shell", "script": "if grep -q fail \"$KAIROS_PARAMS\" 2>/dev/null; then exit 1; fi"}
    });
    let (status, _, body) = server.call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{body}");
    server.create_shell_job("idle", "true").await;
    let ok = server.trigger("nightly").await;
    server.wait_for_run_state(30, ok, "succeeded").await;
    let (status, _, failing) = server
        .call(
            Method::POST,
            "/api/v1/jobs/nightly/trigger",
            Some(json!({"params": {"fail": true}})),
        )
        .await;
    assert_eq!(status, 202, "{failing}");
    let failed = failing["id"].as_i64().unwrap();
    let failed_run = server.wait_for_run_state(30, failed, "failed").await;

    let (status, _, stats) = server.call(Method::GET, "/api/v1/stats/jobs", None).await;
    assert_eq!(status, 200, "{stats}");
    let stats = stats.as_array().unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0]["name"], "idle");
    assert_eq!(stats[0]["recent"], json!([]));
    assert_eq!(stats[1]["name"], "nightly");
    assert_eq!(
        stats[1]["schedule"],
        json!(["At 03:00 (Europe/Paris)", "every 15m"])
    );
    let recent = stats[1]["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 2, "{recent:?}");
    assert_eq!(recent[0]["run_id"], failed);
    assert_eq!(recent[0]["state"], "failed");
    assert_eq!(recent[0]["finished_at"], failed_run["finished_at"]);
    assert_eq!(recent[1]["run_id"], ok);
    assert_eq!(recent[1]["state"], "succeeded");

    let (_, _, one) = server
        .call(
            Method::GET,
            "/api/v1/stats/jobs?namespace=default&job=nightly&runs=1",
            None,
        )
        .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["recent"].as_array().unwrap().len(), 1);
    for (query, status) in [
        ("?job=nightly", 400),
        ("?namespace=default&job=nope", 404),
        ("?runs=101", 400),
        ("?namespace=Bad!", 400),
        ("?limit=3", 400),
    ] {
        let (got, _, body) = server
            .call(Method::GET, &format!("/api/v1/stats/jobs{query}"), None)
            .await;
        assert_eq!(got, status, "{query}: {body}");
    }
    let (_, _, none) = server
        .call(Method::GET, "/api/v1/stats/jobs?namespace=other", None)
        .await;
    assert_eq!(none, json!([]));
}
