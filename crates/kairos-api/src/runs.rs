//! `/api/v1/runs/{id}`: a run with its attempts, its output (optionally followed live), cancel.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kairos_core::auth::Role;
use kairos_core::run::RunState;
use kairos_exec::OutputBuffer;
use kairos_store::RunCancelParams;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::AppState;
use crate::auth::Caller;
use crate::dto::{AttemptDto, RunDto, StepDto};
use crate::error::ApiError;
use crate::query::NoQuery;

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, description = "The run with its attempts", body = RunDto), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<RunDto>, ApiError> {
    let run = load_run(&app, &caller, Role::Viewer, id).await?;
    let attempts = app
        .ctx
        .store
        .attempt_list(kairos_store::AttemptListParams { run_id: id })
        .await?;
    let payload = run.event.as_ref().map(|e| e.payload.clone());
    let checkpoint = run.report.as_ref().and_then(|r| r.checkpoint.clone());
    let mut dto = with_steps(&app, run).await?;
    dto.attempts = Some(attempts.into_iter().map(AttemptDto::from).collect());
    if let (Some(event), Some(payload)) = (dto.event.as_mut(), payload) {
        event.payload = serde_json::from_str(&payload).ok();
    }
    if let (Some(report), Some(checkpoint)) = (dto.report.as_mut(), checkpoint) {
        report.checkpoint = serde_json::from_str(&checkpoint).ok();
    }
    Ok(Json(dto))
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, description = "Cancelled (queued) or asked to stop (running)", body = RunDto), (status = 409, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<RunDto>, ApiError> {
    load_run(&app, &caller, Role::Operator, id).await?;
    let run = app
        .ctx
        .store
        .run_cancel(RunCancelParams {
            actor: caller.name().to_owned(),
            run_id: id,
            now: app.ctx.clock.store_now(),
        })
        .await?;
    app.ctx.heartbeat_wake.notify_one();
    // A run cancelled before it started may have queued the runs of jobs that run after it.
    app.ctx.worker_wake.notify_one();
    app.ctx.telemetry.emit(kairos_runtime::Event::RunChanged {
        run_id: run.id,
        namespace: run.namespace.clone(),
        job: run.job_name.clone(),
        change: kairos_core::auth::AuditAction::RunCancel.as_str(),
        state: run.state,
    });
    Ok(Json(RunDto::from(run)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    /// Stream the output while the run is active, ending when it finishes.
    #[serde(default)]
    pub follow: bool,
    /// Which attempt (default: the latest).
    pub attempt: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/runs/{id}/output", tag = "runs",
    params(("id" = i64, Path, description = "Run id"), OutputQuery),
    responses((status = 200, description = "Captured output: timestamped lines of stdout and stderr", content_type = "text/plain")))]
pub async fn output(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<OutputQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = load_run(&app, &caller, Role::Viewer, id).await?;
    // Running on another node: its live output is there.
    if run.state == RunState::Running
        && app.ctx.live.get(id).is_none()
        && run.node.as_deref() != Some(app.ctx.node.as_str())
    {
        let mut query = format!("follow={}", q.follow);
        if let Some(attempt) = q.attempt {
            query.push_str(&format!("&attempt={attempt}"));
        }
        if let Some(answer) = crate::remote::output(&app, &run, &query, &headers).await {
            return Ok(answer);
        }
    }
    if !q.follow || run.state.is_terminal() {
        let text = match (q.attempt, app.ctx.live.get(id)) {
            (None, Some(live)) => live.snapshot(),
            _ => stored_output(&app, id, q.attempt).await?,
        };
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let (tx, rx) = mpsc::channel::<Result<String, Infallible>>(16);
    // Following ends when the token is revoked or expires.
    let (revoked, watching) = caller.watch_revocation(&app);
    tokio::spawn(async move {
        tokio::select! {
            () = follow(app, id, tx) => {}
            () = revoked.cancelled() => {}
        }
        drop(watching);
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn stored_output(app: &AppState, id: i64, attempt: Option<u32>) -> Result<String, ApiError> {
    let attempts = app
        .ctx
        .store
        .attempt_list(kairos_store::AttemptListParams { run_id: id })
        .await?;
    let chosen = match attempt {
        Some(n) => attempts.into_iter().find(|a| a.attempt == n),
        None => attempts.into_iter().next_back(),
    };
    Ok(chosen.map(|a| a.output).unwrap_or_default())
}

/// Streams the output of each attempt as it is written, until the run finishes or the client
/// goes away. Positions are counted in lines, so a follower keeps its place when the output cap
/// drops the middle of a long output (it is told how many lines it missed).
async fn follow(app: AppState, id: i64, tx: mpsc::Sender<Result<String, Infallible>>) {
    let mut followed: Option<Arc<OutputBuffer>> = None;
    loop {
        if let Some(live) = app.ctx.live.get(id)
            && !followed
                .as_ref()
                .is_some_and(|done| Arc::ptr_eq(done, &live))
        {
            let mut cursor = 0u64;
            loop {
                let version = live.version();
                let closed = live.is_closed();
                let (text, next, skipped) = live.lines_since(cursor);
                cursor = next;
                if skipped > 0
                    && tx
                        .send(Ok(format!(
                            "... [{skipped} lines dropped by the output cap while following] ...\n"
                        )))
                        .await
                        .is_err()
                {
                    return;
                }
                if !text.is_empty() && tx.send(Ok(text)).await.is_err() {
                    return;
                }
                if closed {
                    break;
                }
                tokio::select! {
                    _ = live.changed_since(version) => {}
                    _ = tx.closed() => return,
                }
            }
            followed = Some(live);
        }
        let Ok(Some(run)) = app
            .ctx
            .store
            .run_get(kairos_store::RunGetParams { id })
            .await
        else {
            return;
        };
        if run.state.is_terminal() {
            // Attempts that ran on another node (or finished before we looked) from the store.
            if followed.is_none()
                && let Ok(text) = stored_output(&app, id, None).await
            {
                let _ = tx.send(Ok(text)).await;
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tx.closed() => return,
        }
    }
}

/// The run if the caller sees its namespace and has `role`; 404 (also for a run out of the
/// caller's scope) or 403.
pub(crate) async fn load_run(
    app: &AppState,
    caller: &Caller,
    role: Role,
    id: i64,
) -> Result<kairos_store::Run, ApiError> {
    let not_found = || ApiError::not_found(format!("run {id} not found"));
    let run = app
        .ctx
        .store
        .run_get(kairos_store::RunGetParams { id })
        .await?
        .ok_or_else(not_found)?;
    caller.sees(&run.namespace).map_err(|_| not_found())?;
    caller.require(role)?;
    Ok(run)
}

/// The run as the API shows it, with its steps when it is a workflow run.
pub(crate) async fn with_steps(app: &AppState, run: kairos_store::Run) -> Result<RunDto, ApiError> {
    let (id, workflow) = (run.id, run.parent_id.is_none());
    let mut dto = RunDto::from(run);
    if workflow {
        let steps = app
            .ctx
            .store
            .run_steps(kairos_store::RunStepsParams { run_id: id })
            .await?;
        if !steps.is_empty() {
            let document = app
                .ctx
                .store
                .run_document(kairos_store::RunStepsParams { run_id: id })
                .await?;
            dto.steps = Some(
                steps
                    .into_iter()
                    .map(|s| StepDto::new(s, document.as_ref()))
                    .collect(),
            );
        }
    }
    Ok(dto)
}

/// The header a task reports with: its attempt's own token (`KAIROS_RUN_TOKEN`).
pub const RUN_TOKEN_HEADER: &str = "kairos-run-token";

/// What a task reports over the API: the fields of a checkpoint file's line.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "the schema of the body, which the handler reads as JSON text"
)]
pub struct ReportBody {
    /// 0 to 1.
    pub progress: Option<f64>,
    pub message: Option<String>,
    /// Any JSON document of at most 64 KiB: what a later attempt resumes from.
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<serde_json::Value>,
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/checkpoint", tag = "runs",
    params(
        ("id" = i64, Path, description = "Run id"),
        ("Kairos-Run-Token" = String, Header, description = "The attempt's own token, as its task got it in KAIROS_RUN_TOKEN (no API token needed)")
    ),
    request_body(content = ReportBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Recorded with the run"),
        (status = 403, description = "Not the token of an attempt of the run running on this node", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The attempt no longer holds the run (it was rescued or stopped)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a report", body = crate::error::Problem, content_type = "application/problem+json")
    ),
    security(()))]
pub async fn checkpoint(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    Query(NoQuery {}): Query<NoQuery>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let token = headers
        .get(RUN_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // One answer whether the run has no attempt here or the token is not its: without a
    // credential nobody learns which runs run on the node.
    let lease_token = app.ctx.run_tokens.lease_for(id, token).map_err(|_| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not the token of a running attempt",
            format!(
                "the `Kairos-Run-Token` is not the token of an attempt of run {id} running on this node (a task reports to the node that runs it, at KAIROS_API_URL, while it runs)"
            ),
        )
    })?;
    let report = kairos_exec::parse_report(&body)
        .map_err(|e| ApiError::invalid(kairos_core::ValidationErrors::single("", e)))?;
    let written = app
        .ctx
        .store
        .run_report(kairos_store::RunReportParams {
            run_id: id,
            lease_token,
            progress: report.progress,
            message: report.message,
            checkpoint: report.checkpoint,
            now: app.ctx.clock.store_now(),
        })
        .await?;
    if !written {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "lease-lost",
            "The attempt no longer holds the run",
            format!("run {id}'s attempt lost its lease (rescued or stopped); nothing was recorded"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
