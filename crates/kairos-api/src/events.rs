//! `POST /api/v1/events/{topic}`: an event for the jobs subscribed to a topic.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use kairos_core::ValidationErrors;
use kairos_core::auth::Role;
use kairos_core::event::{MAX_EVENT_BYTES, payload_event_id};
use kairos_core::run::RunState;
use kairos_runtime::{Emitted, EventRequest};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::checked_namespace;

/// The header that carries an event's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only jobs of this namespace. Default: every namespace the token may run jobs in.
    pub namespace: Option<String>,
}

/// What an event did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventDto {
    /// The event's id: its idempotency key, or one the server made up.
    pub id: String,
    pub topic: String,
    /// One run per subscribed job whose filter matched, in job order: created by this post,
    /// or (`created: false`) by an earlier post of the same event id.
    pub runs: Vec<EventRunDto>,
}

/// A job's run for an event.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventRunDto {
    pub run_id: i64,
    pub namespace: String,
    pub job: String,
    /// `queued`, or `skipped` when the job's overlap policy skipped it; for an earlier run,
    /// its state now.
    pub state: RunState,
    /// False: the run an earlier post of this event id created (nothing new was made).
    pub created: bool,
}

impl From<Emitted> for EventDto {
    fn from(e: Emitted) -> Self {
        Self {
            id: e.id,
            topic: e.topic,
            runs: e
                .runs
                .into_iter()
                .map(|r| EventRunDto {
                    run_id: r.run_id,
                    namespace: r.namespace,
                    job: r.job,
                    state: r.state,
                    created: r.created,
                })
                .collect(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/events/{topic}", tag = "events",
    params(
        ("topic" = String, Path, description = "The topic: ASCII letters, digits, `_.-:`, at most 128 characters"),
        ("Idempotency-Key" = Option<String>, Header, description = "The event's id: at most one run per subscribed job and id. Else the payload's top-level `id` field, else a new id"),
        EventQuery
    ),
    request_body(content = Object, description = "The event's payload: any JSON value of at most 256 KiB (empty: `{}`). Jobs read it from the file named by `KAIROS_EVENT`.", content_type = "application/json"),
    responses(
        (status = 202, description = "The runs created (or found, for an id posted before)", body = EventDto),
        (status = 413, description = "The payload is larger than 256 KiB", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid topic, id or payload; nothing written", body = crate::error::Problem, content_type = "application/problem+json")
    ))]
pub async fn emit(
    State(app): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    Query(q): Query<EventQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let namespaces = match checked_namespace(q.namespace.as_deref())? {
        Some(ns) => {
            caller.may(Role::Operator, ns)?;
            Some(vec![ns.to_owned()])
        }
        None => {
            caller.require(Role::Operator)?;
            caller.0.scope.filter(None)
        }
    };
    if body.len() > MAX_EVENT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "The request body is too large",
            format!(
                "the payload is {} bytes; an event's is at most {MAX_EVENT_BYTES}",
                body.len()
            ),
        ));
    }
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        kairos_core::document::parse_json(&body).map_err(|e| ApiError::invalid(e.into()))?
    };
    let header = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::bad_request("Idempotency-Key", "must be printable ASCII text")
                })?
                .to_owned(),
        ),
    };
    let field = payload_event_id(&payload).map_err(|e| ApiError::invalid(single("id", e)))?;
    let id = match (header, field) {
        (Some(h), Some(f)) if h != f => {
            return Err(ApiError::invalid(single(
                "id",
                format!("`{f}` differs from the Idempotency-Key header `{h}`; give one id"),
            )));
        }
        (Some(h), _) => Some(h),
        (None, f) => f,
    };
    let emitted = app
        .jobs
        .acting_as(caller.name())
        .emit(EventRequest {
            topic,
            id,
            payload,
            namespaces,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(EventDto::from(emitted))))
}

fn single(field: &str, message: impl Into<String>) -> ValidationErrors {
    ValidationErrors::single(field, message)
}
