//! `/api/v1/runs/{id}/steps/{step}/…` and `/api/v1/runs/{id}/rerun-failed`: a user's hand on a
//! workflow run's steps. Each is refused with 409 (`workflow-conflict`) when the run's state
//! does not allow it, and changes nothing then.

use axum::Json;
use axum::extract::{Path, Query, State};
use kairos_core::auth::Role;
use kairos_store::{StepControl, WorkflowControlParams};

use crate::AppState;
use crate::auth::Caller;
use crate::dto::RunDto;
use crate::error::ApiError;
use crate::query::NoQuery;

async fn control(
    app: &AppState,
    caller: &Caller,
    id: i64,
    action: StepControl,
) -> Result<Json<RunDto>, ApiError> {
    crate::runs::load_run(app, caller, Role::Operator, id).await?;
    let change = action.audit_action().as_str();
    let run = app
        .ctx
        .store
        .workflow_control(WorkflowControlParams {
            run_id: id,
            action,
            actor: caller.name().to_owned(),
            now: app.ctx.clock.store_now(),
        })
        .await?;
    // Steps may be queued: this node's worker looks at once (other nodes hear the store).
    app.ctx.worker_wake.notify_one();
    app.ctx.telemetry.emit(kairos_runtime::Event::RunChanged {
        run_id: run.id,
        namespace: run.namespace.clone(),
        job: run.job_name.clone(),
        change,
        state: run.state,
    });
    Ok(Json(crate::runs::with_steps(app, run).await?))
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/steps/{step}/skip", tag = "runs",
    params(("id" = i64, Path, description = "Workflow run id"), ("step" = String, Path, description = "Step name")),
    responses(
        (status = 200, description = "The step ended `skipped`; the workflow run with its steps", body = RunDto),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The step has started or ended, or the run is not a started workflow run", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn skip(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, step)): Path<(i64, String)>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<RunDto>, ApiError> {
    control(&app, &caller, id, StepControl::Skip(step)).await
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/steps/{step}/mark-succeeded", tag = "runs",
    params(("id" = i64, Path, description = "Workflow run id"), ("step" = String, Path, description = "Step name")),
    responses(
        (status = 200, description = "The step ended `succeeded`; the steps below it that did not run because of it decide again", body = RunDto),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The step is running or succeeded, or the run is not a started workflow run", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn mark_succeeded(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, step)): Path<(i64, String)>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<RunDto>, ApiError> {
    control(&app, &caller, id, StepControl::MarkSucceeded(step)).await
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/steps/{step}/rerun", tag = "runs",
    params(("id" = i64, Path, description = "Workflow run id"), ("step" = String, Path, description = "Step name")),
    responses(
        (status = 200, description = "The step and everything downstream of it run again (a run that had ended runs again)", body = RunDto),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The step or one below it is queued or running, or the run is being cancelled", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn rerun(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, step)): Path<(i64, String)>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<RunDto>, ApiError> {
    control(&app, &caller, id, StepControl::Rerun(step)).await
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/rerun-failed", tag = "runs",
    params(("id" = i64, Path, description = "Workflow run id")),
    responses(
        (status = 200, description = "The failed and upstream failed steps (and the skipped ones below them) run again", body = RunDto),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "No step failed, or the run is not a started workflow run or is being cancelled", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn rerun_failed(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<RunDto>, ApiError> {
    control(&app, &caller, id, StepControl::RerunFailed).await
}
