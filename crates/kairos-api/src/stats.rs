//! `GET /api/v1/stats/jobs`: per job, its schedule in words and its last ended runs (the web
//! UI's last outcome and success rate), in one request for a whole list.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use jiff::Timestamp;
use kairos_core::auth::Role;
use kairos_core::run::RunState;
use kairos_store::RunRecentParams;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::checked_namespace;

/// Most runs per job.
const MAX_RUNS: u32 = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Only jobs of this namespace.
    pub namespace: Option<String>,
    /// Only this job (needs `namespace`).
    pub job: Option<String>,
    /// Ended runs per job, newest first: default 20, at most 100.
    pub runs: Option<u32>,
}

/// One job's summary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobStatsDto {
    pub namespace: String,
    pub name: String,
    /// Each trigger in words, in the order of `triggers`.
    pub schedule: Vec<String>,
    /// Its last ended runs (a workflow's steps are not counted), newest first.
    pub recent: Vec<RecentRunDto>,
}

/// An ended run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentRunDto {
    pub run_id: i64,
    pub state: RunState,
    #[schema(value_type = String, format = DateTime)]
    pub scheduled_for: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: Timestamp,
}

#[utoipa::path(get, path = "/api/v1/stats/jobs", tag = "jobs",
    params(StatsQuery),
    responses(
        (status = 200, description = "Per job (by namespace and name): its schedule in words and its last ended runs", body = Vec<JobStatsDto>),
        (status = 400, description = "A bad query", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn jobs(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Vec<JobStatsDto>>, ApiError> {
    caller.require(Role::Viewer)?;
    let namespace = checked_namespace(q.namespace.as_deref())?;
    let per_job = q.runs.unwrap_or(20);
    if per_job > MAX_RUNS {
        return Err(ApiError::bad_request(
            "runs",
            format!("must be at most {MAX_RUNS}"),
        ));
    }
    let (jobs, job_id) = match (&q.job, namespace) {
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "job",
                "a job is named within a namespace: give `namespace` too",
            ));
        }
        (Some(name), Some(namespace)) => {
            caller.sees(namespace)?;
            let job = app.jobs.get(namespace, name).await?;
            let id = job.id;
            (vec![job], Some(id))
        }
        (None, namespace) => (app.jobs.list(caller.0.scope.filter(namespace)).await?, None),
    };
    let recent = if per_job == 0 || jobs.is_empty() {
        Vec::new()
    } else {
        app.ctx
            .store
            .run_recent(RunRecentParams {
                namespaces: caller.0.scope.filter(namespace),
                job_id,
                per_job,
            })
            .await?
    };
    let mut by_job: HashMap<i64, Vec<RecentRunDto>> = HashMap::new();
    for r in recent {
        by_job.entry(r.job_id).or_default().push(RecentRunDto {
            run_id: r.run_id,
            state: r.state,
            scheduled_for: r.scheduled_for,
            started_at: r.started_at,
            finished_at: r.finished_at,
        });
    }
    Ok(Json(
        jobs.into_iter()
            .map(|job| JobStatsDto {
                schedule: job.spec.triggers.iter().map(|t| t.describe()).collect(),
                recent: by_job.remove(&job.id).unwrap_or_default(),
                namespace: job.spec.namespace,
                name: job.spec.name,
            })
            .collect(),
    ))
}
