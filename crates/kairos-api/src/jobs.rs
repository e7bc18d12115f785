//! `/api/v1/jobs`: create, read, replace, delete, pause, resume, trigger, list runs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use kairos_core::auth::Role;
use kairos_core::document::JsonError;
use kairos_core::run::RunState;
use kairos_core::spec::{DEFAULT_NAMESPACE, JobSpec};
use kairos_store::RunListParams;
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::dto::{JobDto, READ_ONLY_FIELDS, RunDto};
use crate::error::ApiError;
use crate::query::{NamespaceQuery, NoQuery, checked_namespace};

/// [`parse_spec`] on a blocking thread.
async fn parse_spec_apart(body: Bytes) -> Result<(JobSpec, Option<i64>), ApiError> {
    parse_apart(body, parse_spec).await
}

/// A document read from a body, with the `version` it carries (if any).
pub(crate) type Parsed<T> = Result<(T, Option<i64>), ApiError>;

/// A body's parser run on a blocking thread: a body of up to 1 MiB may take several passes to
/// report every problem (a calendar of 10 000 dates takes a while to check), which must not
/// hold an async thread.
pub(crate) async fn parse_apart<T: Send + 'static>(
    body: Bytes,
    parse: fn(&[u8]) -> Parsed<T>,
) -> Parsed<T> {
    tokio::task::spawn_blocking(move || parse(&body))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "parsing a request body failed");
            ApiError::internal()
        })?
}

/// Parses a JSON body into a job document, naming the field of a type error.
fn parse_spec(body: &[u8]) -> Result<(JobSpec, Option<i64>), ApiError> {
    parse_document(
        body,
        "a job document",
        &READ_ONLY_FIELDS,
        JobSpec::from_value,
    )
}

/// Parses a JSON body into a document (`what`, for the error), every problem with its field
/// path: the fields the server owns (`read_only`) are ignored but for `version`, which is
/// returned (the write's fence, if given).
pub(crate) fn parse_document<T>(
    body: &[u8],
    what: &str,
    read_only: &[&str],
    from_value: impl FnOnce(serde_json::Value) -> Result<T, kairos_core::ValidationErrors>,
) -> Result<(T, Option<i64>), ApiError> {
    let mut value = kairos_core::document::parse_json(body).map_err(|e| match e {
        JsonError::Malformed(e) => {
            ApiError::bad_request("", format!("the body is not valid JSON: {e}"))
        }
        duplicate => ApiError::invalid(duplicate.into()),
    })?;
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::bad_request(
            "",
            format!("the body must be a JSON object ({what})"),
        ));
    };
    let version = match object.get("version") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| ApiError::bad_request("version", "must be an integer"))?,
        ),
    };
    for field in read_only {
        object.remove(*field);
    }
    let document = from_value(value).map_err(ApiError::invalid)?;
    Ok((document, version))
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    params(NamespaceQuery),
    responses((status = 200, description = "Jobs, by namespace and name", body = Vec<JobDto>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<Vec<JobDto>>, ApiError> {
    caller.require(Role::Viewer)?;
    let namespace = checked_namespace(q.namespace.as_deref())?;
    let jobs = app.jobs.list(caller.0.scope.filter(namespace)).await?;
    Ok(Json(jobs.into_iter().map(JobDto::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs",
    request_body(content = JobSpec, description = "The job document"),
    responses(
        (status = 201, description = "Created", body = JobDto),
        (status = 409, description = "A job with this name exists", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid job; every problem with its field path", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Query(NoQuery {}): Query<NoQuery>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Operator)?;
    let (spec, _) = parse_spec_apart(body).await?;
    caller.sees(&spec.namespace)?;
    let job = app.jobs.acting_as(caller.name()).create(spec).await?;
    let location = format!("/api/v1/jobs/{}?namespace={}", job.name(), job.namespace());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(JobDto::from(job)),
    ))
}

#[utoipa::path(get, path = "/api/v1/jobs/{name}", tag = "jobs",
    params(("name" = String, Path, description = "Job name"), NamespaceQuery),
    responses((status = 200, body = JobDto), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let namespace = q.get()?;
    caller.may(Role::Viewer, namespace)?;
    let job = app.jobs.get(namespace, &name).await?;
    let etag = format!("\"{}\"", job.version);
    Ok(([(header::ETAG, etag)], Json(JobDto::from(job))))
}

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// No header.
    Absent,
    /// `*`: whatever the version is (the job must exist).
    Any,
    /// `"3"`, `3` or `W/"3"`.
    Version(i64),
}

pub(crate) fn if_match(headers: &HeaderMap) -> Result<IfMatch, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(IfMatch::Absent);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(IfMatch::Any);
    }
    let version = text.trim_start_matches("W/").trim_matches('"');
    version.parse::<i64>().map(IfMatch::Version).map_err(|_| {
        ApiError::bad_request(
            "If-Match",
            format!("`{text}` is not a version (`\"3\"`) or `*`"),
        )
    })
}

#[utoipa::path(put, path = "/api/v1/jobs/{name}", tag = "jobs",
    params(("name" = String, Path, description = "Job name"), NamespaceQuery),
    request_body(content = JobSpec, description = "The whole job document, with `version` (or an `If-Match` header) set to the version it was read at"),
    responses(
        (status = 200, body = JobDto),
        (status = 409, description = "Stale version: nothing was written", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 428, description = "No version given", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn replace(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let namespace = q.get()?;
    caller.may(Role::Operator, namespace)?;
    let (spec, body_version) = parse_spec_apart(body).await?;
    let version = match (body_version, if_match(&headers)?) {
        (Some(b), IfMatch::Version(h)) if b != h => {
            return Err(ApiError::bad_request(
                "version",
                format!("the body says {b} but If-Match says {h}"),
            ));
        }
        (Some(v), _) | (None, IfMatch::Version(v)) => v,
        // An unconditional replace: fenced by the version read now, so a write that comes in
        // between is a conflict rather than lost.
        (None, IfMatch::Any) => app.jobs.get(namespace, &name).await?.version,
        (None, IfMatch::Absent) => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_REQUIRED,
                "version-required",
                "A version is required",
                "send the version the job was read at as `version` in the body or as an If-Match header",
            ));
        }
    };
    let job = app
        .jobs
        .acting_as(caller.name())
        .update(namespace, &name, version, spec)
        .await?;
    Ok(Json(JobDto::from(job)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Namespace of the job. Default `default`.
    pub namespace: Option<String>,
    /// Delete it even if other jobs run after it (`after` triggers). Default false: 409.
    pub force: Option<bool>,
}

#[utoipa::path(delete, path = "/api/v1/jobs/{name}", tag = "jobs",
    params(("name" = String, Path, description = "Job name"), DeleteQuery),
    responses((status = 204, description = "Deleted with its runs"), (status = 404, body = crate::error::Problem, content_type = "application/problem+json"), (status = 409, description = "The job changed (If-Match), or other jobs run after it (`job-has-dependents`; `?force=true` deletes it anyway)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let namespace = NamespaceQuery {
        namespace: q.namespace.clone(),
    };
    let namespace = namespace.get()?;
    caller.may(Role::Operator, namespace)?;
    let expected_version = match if_match(&headers)? {
        IfMatch::Version(v) => Some(v),
        IfMatch::Any | IfMatch::Absent => None,
    };
    app.jobs
        .acting_as(caller.name())
        .delete(namespace, &name, expected_version, q.force.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/jobs/{name}/pause", tag = "jobs",
    params(("name" = String, Path, description = "Job name"), NamespaceQuery),
    responses((status = 200, body = JobDto)))]
pub async fn pause(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<JobDto>, ApiError> {
    let namespace = q.get()?;
    caller.may(Role::Operator, namespace)?;
    let jobs = app.jobs.acting_as(caller.name());
    Ok(Json(jobs.set_paused(namespace, &name, true).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/jobs/{name}/resume", tag = "jobs",
    params(("name" = String, Path, description = "Job name"), NamespaceQuery),
    responses((status = 200, body = JobDto)))]
pub async fn resume(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<JobDto>, ApiError> {
    let namespace = q.get()?;
    caller.may(Role::Operator, namespace)?;
    let jobs = app.jobs.acting_as(caller.name());
    Ok(Json(jobs.set_paused(namespace, &name, false).await?.into()))
}

/// What a manual trigger may carry (the body is optional).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// A JSON object for the run's tasks, which find it in the file named by `KAIROS_PARAMS`
    /// (at most 64 KiB as JSON).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
}

#[utoipa::path(post, path = "/api/v1/jobs/{name}/trigger", tag = "jobs",
    params(("name" = String, Path, description = "Job name"), NamespaceQuery),
    request_body(content = Option<TriggerBody>, description = "Optional: parameters for the run"),
    responses(
        (status = 202, description = "A run was queued", body = RunDto),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job kept changing while the run was being created; try again", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn trigger(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let namespace = q.get()?;
    caller.may(Role::Operator, namespace)?;
    let params = if body.is_empty() {
        None
    } else {
        crate::error::parse_body::<TriggerBody>(&body)?.params
    };
    let run = app
        .jobs
        .acting_as(caller.name())
        .trigger_with(namespace, &name, params)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(RunDto::from(run))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    pub namespace: Option<String>,
    /// Only runs in this state (`queued`, `running`, `succeeded`, `failed`, `timed_out`, ...).
    pub state: Option<String>,
    /// Most runs returned, newest first. Default 50, at most 1000.
    pub limit: Option<u32>,
    /// Only runs with a smaller id (paging).
    pub before: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/jobs/{name}/runs", tag = "runs",
    params(("name" = String, Path, description = "Job name"), RunsQuery),
    responses((status = 200, description = "Runs, newest first", body = Vec<RunDto>)))]
pub async fn runs(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Vec<RunDto>>, ApiError> {
    let namespace = checked_namespace(q.namespace.as_deref())?.unwrap_or(DEFAULT_NAMESPACE);
    caller.may(Role::Viewer, namespace)?;
    let job = app.jobs.get(namespace, &name).await?;
    list_runs(&app, Some(job.id), None, q).await
}

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs",
    params(RunsQuery),
    responses((status = 200, description = "Runs of all jobs (or of one namespace), newest first", body = Vec<RunDto>)))]
pub async fn all_runs(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Vec<RunDto>>, ApiError> {
    caller.require(Role::Viewer)?;
    let namespace = checked_namespace(q.namespace.as_deref())?;
    let namespaces = caller.0.scope.filter(namespace);
    list_runs(&app, None, namespaces, q).await
}

/// Runs of one job, or of these namespaces (`None`: all), newest first.
async fn list_runs(
    app: &AppState,
    job_id: Option<i64>,
    namespaces: Option<Vec<String>>,
    q: RunsQuery,
) -> Result<Json<Vec<RunDto>>, ApiError> {
    let state = q
        .state
        .as_deref()
        .map(str::parse::<RunState>)
        .transpose()
        .map_err(|e| ApiError::bad_request("state", e))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit", "must be between 1 and 1000"));
    }
    let runs = app
        .ctx
        .store
        .run_list(RunListParams {
            job_id,
            namespaces,
            state,
            limit,
            before_id: q.before,
        })
        .await?;
    Ok(Json(runs.into_iter().map(RunDto::from).collect()))
}
