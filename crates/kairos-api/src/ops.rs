//! Health, readiness, metrics, the event stream and the OpenAPI document.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use kairos_core::auth::{Role, Scope};
use serde::Serialize;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::NoQuery;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub node: String,
}

#[utoipa::path(get, path = "/health", tag = "ops", security(()), responses((status = 200, body = Health)))]
pub async fn health(State(app): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        node: app.ctx.node.clone(),
    })
}

#[utoipa::path(get, path = "/ready", tag = "ops", security(()),
    responses((status = 200, description = "The store is reachable", body = Health), (status = 503, description = "The store is not reachable")))]
pub async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    match app.ctx.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ready",
                node: app.ctx.node.clone(),
            }),
        )
            .into_response(),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let telemetry = &app.ctx.telemetry;
    match app.ctx.store.run_totals().await {
        Ok(totals) => {
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            telemetry.metrics.tasks_pending.set(gauge(totals.queued));
            telemetry.metrics.tasks_running.set(gauge(totals.running));
        }
        Err(e) => tracing::warn!(error = %e, "counting queued runs for metrics failed"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        telemetry.encode(),
    )
}

#[utoipa::path(get, path = "/api/v1/events", tag = "ops", responses((status = 200, description = "Server-sent events: job changes, runs queued, started, finished, skipped", content_type = "text/event-stream")))]
pub async fn events(
    State(app): State<AppState>,
    caller: Caller,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    caller.require(Role::Viewer)?;
    // Events of namespaces out of the token's scope are left out; events without a namespace
    // (runs released or rescued, by id) only go to tokens that see every namespace.
    // The stream ends when the token is revoked or expires.
    let (revoked, watching) = caller.watch_revocation(&app);
    let scope = caller.0.scope;
    let stopping = app.shutdown.clone();
    let ended = async move {
        tokio::select! {
            _ = revoked.cancelled() => {}
            _ = stopping.cancelled() => {}
        }
    };
    let events =
        futures::StreamExt::take_until(BroadcastStream::new(app.ctx.telemetry.subscribe()), ended);
    let stream = events.filter_map(move |event| {
        let _watching = &watching;
        let event = event.ok()?;
        let visible = match event.namespace() {
            Some(ns) => scope.allows(ns),
            None => scope == Scope::All,
        };
        if !visible {
            return None;
        }
        SseEvent::default().json_data(&event).ok().map(Ok)
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn openapi(Query(NoQuery {}): Query<NoQuery>) -> impl IntoResponse {
    use utoipa::OpenApi;
    Json(crate::ApiDoc::openapi())
}
