//! What the router tests share: a node context on a temp SQLite file under a manual clock, and
//! one way to send a request through the router (`oneshot`, no socket) and read the answer.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use kairos_runtime::{ManualClock, NodeContext};
use kairos_store::Store;
use kairos_store_sqlite::SqliteStore;
use serde_json::Value;
use tower::ServiceExt;

/// A node context on a fresh SQLite file, at 2026-03-01T00:00:00Z on a manual clock.
pub async fn context() -> (NodeContext, ManualClock, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_file(&dir.path().join("k.db"))
            .await
            .unwrap(),
    );
    let clock = ManualClock::new("2026-03-01T00:00:00Z".parse().unwrap());
    let ctx = NodeContext::new("node-a", store, Arc::new(clock.clone()));
    (ctx, clock, dir)
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub www_authenticate: Option<String>,
    pub body: Value,
    pub text: String,
}

/// Sends one request: a JSON `body` if given, and `headers`.
pub async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let text_header = |name| {
        resp.headers()
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let content_type = text_header(header::CONTENT_TYPE).unwrap_or_default();
    let www_authenticate = text_header(header::WWW_AUTHENTICATE);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Reply {
        status,
        content_type,
        www_authenticate,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}
