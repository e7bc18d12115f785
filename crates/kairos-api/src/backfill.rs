//! `POST /api/v1/jobs/{name}/backfill`: runs for the due times of a past (or future) range.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use jiff::Timestamp;
use kairos_core::ValidationErrors;
use kairos_core::auth::Role;
use kairos_core::job::parse_instant;
use kairos_store::RunBackfillResult;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::NamespaceQuery;

/// A range of due times to backfill.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    /// First instant of the range (RFC 3339), included.
    pub from: String,
    /// Last instant of the range (RFC 3339), included.
    pub to: String,
    /// Only list the due times that would get a run; create nothing. Default false.
    #[serde(default)]
    pub dry_run: bool,
}

/// One due time of a backfill.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillRunDto {
    #[schema(value_type = String, format = DateTime)]
    pub scheduled_for: Timestamp,
    /// The run created (absent on a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
}

/// What a backfill created (or, on a dry run, would create).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillDto {
    pub dry_run: bool,
    /// Due times that got a run, earliest first. The runs wait in the `scheduled` state and
    /// join the queue as the job's overlap policy allows.
    pub created: Vec<BackfillRunDto>,
    /// Due times of the range that had a run already.
    #[schema(value_type = Vec<String>)]
    pub existing: Vec<Timestamp>,
}

impl BackfillDto {
    fn new(dry_run: bool, r: RunBackfillResult) -> Self {
        Self {
            dry_run,
            created: r
                .created
                .into_iter()
                .map(|c| BackfillRunDto {
                    scheduled_for: c.scheduled_for,
                    run_id: c.run_id,
                })
                .collect(),
            existing: r.existing,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/jobs/{name}/backfill", tag = "jobs",
    params(("name" = String, Path, description = "Job name"), NamespaceQuery),
    request_body(content = BackfillBody),
    responses(
        (status = 200, description = "A dry run: what would be created", body = BackfillDto),
        (status = 202, description = "Runs were created (held, queued as the overlap policy allows)", body = BackfillDto),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job kept changing while the runs were being created; try again", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad range (more than 10 000 due times, `to` before `from`) or a job without triggers", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn backfill(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let namespace = q.get()?;
    caller.may(Role::Operator, namespace)?;
    let body: BackfillBody = crate::error::parse_body(&body)?;
    let mut errs = ValidationErrors::default();
    let from = parse_instant(&body.from).map_err(|e| errs.push("from", e));
    let to = parse_instant(&body.to).map_err(|e| errs.push("to", e));
    let (Ok(from), Ok(to)) = (from, to) else {
        return Err(ApiError::invalid(errs));
    };
    let result = app
        .jobs
        .acting_as(caller.name())
        .backfill(namespace, &name, from, to, body.dry_run)
        .await?;
    let status = if body.dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(BackfillDto::new(body.dry_run, result))))
}
