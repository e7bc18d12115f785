//! The live output of an attempt running on another node of the cluster, asked of that node.
//!
//! Live output is kept in the memory of the node running the attempt (the store gets it when
//! the attempt ends). A request to any other node for the output of a running run is passed on
//! to the node that claimed it, found in the node registry by the name the run records, with
//! the caller's credentials; its answer (a snapshot, or a followed stream) is passed back. A
//! passed-on request is marked, so it is never passed on again.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kairos_store::Run;

use crate::AppState;

/// Marks a request passed on by another node.
pub(crate) const FORWARDED: &str = "x-kairos-forwarded";

fn client() -> Option<&'static reqwest::Client> {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // reqwest is built with rustls and no default provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .user_agent(concat!("kairos/", env!("CARGO_PKG_VERSION")))
                .build()
                .ok()
        })
        .as_ref()
}

/// The API addresses of the other live nodes named as the run's node, most recently started
/// first (a name shared by two processes is tried in that order).
async fn addresses(app: &AppState, run: &Run) -> Vec<String> {
    let Some(name) = run.node.as_deref() else {
        return Vec::new();
    };
    let Ok(mut nodes) = app.ctx.store.node_list().await else {
        return Vec::new();
    };
    nodes.sort_by_key(|n| std::cmp::Reverse(n.started_at));
    nodes
        .into_iter()
        .filter(|n| n.name == name && n.id != app.ctx.node_id)
        .filter_map(|n| n.address)
        .collect()
}

/// The run's output as the node running it answers `/api/v1/runs/{id}/output?{query}`, or
/// `None` when the request was passed on already, no other node runs it, or none answers.
pub(crate) async fn output(
    app: &AppState,
    run: &Run,
    query: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    if headers.contains_key(FORWARDED) {
        return None;
    }
    let client = client()?;
    for address in addresses(app, run).await {
        let url = format!("{address}/api/v1/runs/{}/output?{query}", run.id);
        let mut request = client.get(&url).header(FORWARDED, "1");
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            request = request.header(header::AUTHORIZATION, auth.clone());
        } else if let Some(cookie) = crate::auth::session_cookie_to_forward(headers) {
            request = request.header(header::COOKIE, cookie);
        }
        match request.send().await {
            Ok(answer) if answer.status().is_success() => {
                let content_type = answer
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
                return Some(
                    (
                        [
                            (header::CONTENT_TYPE, content_type),
                            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                        ],
                        Body::from_stream(answer.bytes_stream()),
                    )
                        .into_response(),
                );
            }
            Ok(answer) => {
                tracing::debug!(%url, status = %answer.status(), "the node running the run did not give its output");
            }
            Err(e) => tracing::debug!(%url, error = %e, "the node running the run is unreachable"),
        }
    }
    None
}
