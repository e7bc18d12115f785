//! One mapping from every error to `application/problem+json` (RFC 9457).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kairos_core::{FieldError, ValidationErrors};
use kairos_runtime::JobError;
use kairos_store::StoreError;
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Every invalid field, with its path (`triggers[0].cron`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldErrorDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldErrorDto {
    pub field: String,
    pub message: String,
}

impl From<&FieldError> for FieldErrorDto {
    fn from(e: &FieldError) -> Self {
        Self {
            field: e.field.clone(),
            message: e.message.clone(),
        }
    }
}

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldErrorDto>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: vec![],
        }
    }

    pub fn invalid(errors: ValidationErrors) -> Self {
        let detail = errors.to_string();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "invalid-input",
            title: "The input is invalid",
            detail,
            errors: errors.errors.iter().map(FieldErrorDto::from).collect(),
        }
    }

    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::invalid(ValidationErrors::single(field, message));
        e.status = StatusCode::BAD_REQUEST;
        e
    }

    /// A 500 that says nothing of its cause (the caller logs it).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an internal error occurred; the server's log has the details",
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let detail = e.to_string();
        match e {
            StoreError::JobExists { .. } => Self::new(
                StatusCode::CONFLICT,
                "job-exists",
                "The job exists already",
                detail,
            ),
            StoreError::JobNotFound { .. }
            | StoreError::RunNotFound(_)
            | StoreError::StepNotFound { .. }
            | StoreError::JobGone(_)
            | StoreError::TokenNotFound(_) => Self::not_found(detail),
            StoreError::TokenExists(_) => Self::new(
                StatusCode::CONFLICT,
                "token-exists",
                "A token with this name exists already",
                detail,
            ),
            StoreError::VersionConflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "version-conflict",
                "The job changed since it was read",
                detail,
            ),
            StoreError::WorkflowConflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "workflow-conflict",
                "The workflow run's state does not allow that",
                detail,
            ),
            StoreError::Invalid(errors) => Self::invalid(errors),
            StoreError::EventContended { .. } => Self::new(
                StatusCode::CONFLICT,
                "event-contended",
                "The event's jobs kept changing",
                detail,
            ),
            StoreError::HasDependents { .. } => Self::new(
                StatusCode::CONFLICT,
                "job-has-dependents",
                "Other jobs run after this job",
                detail,
            ),
            StoreError::CalendarNotFound { .. } => Self::not_found(detail),
            StoreError::CalendarExists { .. } => Self::new(
                StatusCode::CONFLICT,
                "calendar-exists",
                "The calendar exists already",
                detail,
            ),
            StoreError::CalendarVersionConflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "version-conflict",
                "The calendar changed since it was read",
                detail,
            ),
            StoreError::CalendarInUse { .. } => Self::new(
                StatusCode::CONFLICT,
                "calendar-in-use",
                "Jobs use this calendar",
                detail,
            ),
            // The runtime retries these; one that is left means writes kept racing.
            StoreError::CalendarChanged { .. } => Self::new(
                StatusCode::CONFLICT,
                "calendar-contended",
                "The calendar or its jobs kept changing",
                detail,
            ),
            StoreError::InvalidRunState { .. } => Self::new(
                StatusCode::CONFLICT,
                "invalid-run-state",
                "The run cannot do that in its state",
                detail,
            ),
            // The details (file paths, SQL errors) go to the log, never to the client.
            StoreError::Locked(_) | StoreError::Unavailable(_) => {
                tracing::warn!(error = %detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "The store is unavailable",
                    "the store cannot be reached; the server's log says why",
                )
            }
            StoreError::Internal(_) => {
                tracing::error!(error = %detail, "store error");
                Self::internal()
            }
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Invalid(errors) => Self::invalid(errors),
            JobError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("urn:kairos:problem:{}", self.kind),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        (self.status, [(header::CONTENT_TYPE, PROBLEM_JSON)], json).into_response()
    }
}

/// Rewrites plain-text rejections of axum's extractors (bad path, bad query, body too large)
/// as problem documents, so that every error of the API has one shape.
pub async fn problem_for_rejections(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).into_owned();
    let (kind, title) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("body-too-large", "The request body is too large"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        _ => ("bad-request", "The request is invalid"),
    };
    // A server error's text is not for clients (it may hold internal detail).
    let detail = if detail.is_empty() || status.is_server_error() {
        title.to_owned()
    } else {
        detail
    };
    ApiError::new(status, kind, title, detail).into_response()
}

/// A small JSON request body (a sign-in, a token to create, a trigger's params, a backfill's
/// range) read into `T`: every unknown field and type error with its path, as `422`.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut value =
        kairos_core::document::parse_json(body).map_err(|e| ApiError::invalid(e.into()))?;
    let mut errs = ValidationErrors::default();
    let parsed =
        kairos_core::document::collect::<T>(&mut value, "", &mut errs, &mut Default::default());
    match parsed {
        Some(parsed) if errs.is_empty() => Ok(parsed),
        _ => Err(ApiError::invalid(errs)),
    }
}
