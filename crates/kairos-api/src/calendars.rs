//! `/api/v1/calendars`: holidays and blackout windows that triggers exclude (or are limited
//! to); and `/api/v1/jobs/{name}/next`, a job's next due times with the times its calendars
//! rule out.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use jiff::Timestamp;
use kairos_core::auth::Role;
use kairos_core::calendar::CalendarSpec;
use kairos_core::trigger::TriggerKind;
use kairos_runtime::CalendarWrite;
use kairos_store::StoredCalendar;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::{IfMatch, if_match};
use crate::query::{NamespaceQuery, NoQuery, checked_namespace};

/// A stored calendar: the document as written, plus bookkeeping.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CalendarDto {
    #[serde(flatten)]
    pub spec: CalendarSpec,
    /// Increments on every change; send it back with PUT (or as `If-Match`) to fence it.
    pub version: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The jobs that use it (on a GET of one calendar), or that a PUT re-planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<String>>,
}

impl CalendarDto {
    fn new(c: StoredCalendar, jobs: Option<Vec<String>>) -> Self {
        Self {
            spec: c.spec,
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
            jobs,
        }
    }
}

/// Fields of a calendar the server owns; ignored in a PUT body (but `version` fences it), so
/// that a GET can be edited and sent back.
const READ_ONLY_FIELDS: [&str; 4] = ["version", "created_at", "updated_at", "jobs"];

/// Parses a calendar document, naming every problem's field; the body's `version`, if any.
fn parse(body: &[u8]) -> Result<(CalendarSpec, Option<i64>), ApiError> {
    crate::jobs::parse_document(
        body,
        "a calendar",
        &READ_ONLY_FIELDS,
        CalendarSpec::from_value,
    )
}

#[utoipa::path(get, path = "/api/v1/calendars", tag = "calendars",
    params(NamespaceQuery),
    responses((status = 200, description = "Calendars, by namespace and name", body = Vec<CalendarDto>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<Vec<CalendarDto>>, ApiError> {
    caller.require(Role::Viewer)?;
    let namespace = checked_namespace(q.namespace.as_deref())?;
    let calendars = app
        .jobs
        .calendar_list(caller.0.scope.filter(namespace))
        .await?;
    Ok(Json(
        calendars
            .into_iter()
            .map(|c| CalendarDto::new(c, None))
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/calendars", tag = "calendars",
    request_body(content = CalendarSpec, description = "The calendar"),
    responses(
        (status = 201, description = "Created", body = CalendarDto),
        (status = 409, description = "A calendar with this name exists (`calendar-exists`)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid calendar; every problem with its field path", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Query(NoQuery {}): Query<NoQuery>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Operator)?;
    let (spec, _) = crate::jobs::parse_apart(body, parse).await?;
    caller.sees(&spec.namespace)?;
    let change = app
        .jobs
        .acting_as(caller.name())
        .calendar_put(spec, CalendarWrite::Create)
        .await?;
    let c = &change.calendar.spec;
    let location = format!("/api/v1/calendars/{}?namespace={}", c.name, c.namespace);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CalendarDto::new(change.calendar, Some(change.replanned))),
    ))
}

#[utoipa::path(get, path = "/api/v1/calendars/{name}", tag = "calendars",
    params(("name" = String, Path, description = "Calendar name"), NamespaceQuery),
    responses((status = 200, description = "The calendar, with the jobs that use it", body = CalendarDto), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let namespace = q.get()?;
    caller.may(Role::Viewer, namespace)?;
    let calendar = app.jobs.calendar_get(namespace, &name).await?;
    let jobs = app.jobs.calendar_jobs(namespace, &name).await?;
    let etag = format!("\"{}\"", calendar.version);
    let jobs = jobs.into_iter().map(|j| j.spec.name).collect();
    Ok((
        [(header::ETAG, etag)],
        Json(CalendarDto::new(calendar, Some(jobs))),
    ))
}

#[utoipa::path(put, path = "/api/v1/calendars/{name}", tag = "calendars",
    params(("name" = String, Path, description = "Calendar name"), NamespaceQuery),
    request_body(content = CalendarSpec, description = "The whole calendar. With `version` (or an `If-Match` header) it replaces that version only; without, it creates the calendar or replaces whatever is stored"),
    responses(
        (status = 200, description = "Replaced; `jobs` are the jobs re-planned with it", body = CalendarDto),
        (status = 201, description = "Created", body = CalendarDto),
        (status = 409, description = "Stale version (`version-conflict`), or the jobs using it kept changing (`calendar-contended`): nothing was written", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
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
    let (spec, body_version) = crate::jobs::parse_apart(body, parse).await?;
    let mut errs = kairos_core::ValidationErrors::default();
    if spec.namespace != namespace {
        errs.push(
            "namespace",
            format!("must be `{namespace}`, the namespace in the URL"),
        );
    }
    if spec.name != name {
        errs.push(
            "name",
            format!("must be `{name}`, the name in the URL; to rename, create and delete"),
        );
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(errs));
    }
    let write = match (body_version, if_match(&headers)?) {
        (Some(b), IfMatch::Version(h)) if b != h => {
            return Err(ApiError::bad_request(
                "version",
                format!("the body says {b} but If-Match says {h}"),
            ));
        }
        (Some(v), _) | (None, IfMatch::Version(v)) => CalendarWrite::Replace(v),
        (None, IfMatch::Any) => {
            CalendarWrite::Replace(app.jobs.calendar_get(namespace, &name).await?.version)
        }
        (None, IfMatch::Absent) => CalendarWrite::Upsert,
    };
    let change = app
        .jobs
        .acting_as(caller.name())
        .calendar_put(spec, write)
        .await?;
    let status = if change.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(CalendarDto::new(change.calendar, Some(change.replanned))),
    ))
}

#[utoipa::path(delete, path = "/api/v1/calendars/{name}", tag = "calendars",
    params(("name" = String, Path, description = "Calendar name"), NamespaceQuery),
    responses((status = 204, description = "Deleted"), (status = 404, body = crate::error::Problem, content_type = "application/problem+json"), (status = 409, description = "Jobs use it (`calendar-in-use`, naming them), or it changed (If-Match)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let namespace = q.get()?;
    caller.may(Role::Operator, namespace)?;
    let expected_version = match if_match(&headers)? {
        IfMatch::Version(v) => Some(v),
        IfMatch::Any | IfMatch::Absent => None,
    };
    app.jobs
        .acting_as(caller.name())
        .calendar_delete(namespace, &name, expected_version)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?namespace=&count=` of a job's next due times.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NextQuery {
    /// Namespace of the job. Default `default`.
    pub namespace: Option<String>,
    /// How many due times (1 to 1000). Default 10.
    pub count: Option<usize>,
}

/// A job's next due times.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NextDto {
    /// Due times, and the times the job's calendars rule out between them, in time order.
    pub times: Vec<NextTimeDto>,
}

/// A due time, or a time the job's calendars rule out.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NextTimeDto {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The same instant with the offset of its trigger's time zone (UTC for intervals).
    pub local: String,
    /// The trigger (index into the job's triggers).
    pub trigger: usize,
    /// Why it is not a due time (`null`: it is one): the calendar and the day or window.
    pub skipped: Option<String>,
    /// A daylight saving time note for a cron trigger's due time (a skipped or repeated hour).
    pub note: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/jobs/{name}/next", tag = "jobs",
    params(("name" = String, Path, description = "Job name"), NextQuery),
    responses((status = 200, description = "The next due times after now", body = NextDto), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn next(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NextQuery>,
) -> Result<Json<NextDto>, ApiError> {
    let namespace = NamespaceQuery {
        namespace: q.namespace.clone(),
    };
    let namespace = namespace.get()?;
    caller.may(Role::Viewer, namespace)?;
    let count = q.count.unwrap_or(10);
    if !(1..=1000).contains(&count) {
        return Err(ApiError::bad_request("count", "must be between 1 and 1000"));
    }
    let (_, plan, upcoming) = app.jobs.upcoming(namespace, &name, count).await?;
    let times = upcoming
        .into_iter()
        .map(|u| {
            let (zone, note) = match plan.schedule.triggers.get(u.trigger).map(|t| &t.kind) {
                Some(TriggerKind::Cron(cron)) => (
                    cron.time_zone().clone(),
                    cron.dst_note(u.at).map(|n| n.to_string()),
                ),
                _ => (jiff::tz::TimeZone::UTC, None),
            };
            NextTimeDto {
                at: u.at,
                local: u
                    .at
                    .to_zoned(zone)
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
                trigger: u.trigger,
                skipped: u.skipped,
                note,
            }
        })
        .collect();
    Ok(Json(NextDto { times }))
}
