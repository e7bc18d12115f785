//! `GET /api/v1/alerts`: alert deliveries (what was raised, to which channel, and how sending
//! it went), newest first.

use axum::Json;
use axum::extract::{Query, State};
use jiff::Timestamp;
use kairos_core::auth::Role;
use kairos_store::{AlertDelivery, AlertListParams, DeliveryState};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::checked_namespace;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// Only alerts of jobs of this namespace.
    pub namespace: Option<String>,
    /// Only alerts of this job (in `namespace`, default `default`).
    pub job: Option<String>,
    /// `pending`, `sending`, `delivered` or `failed`.
    pub state: Option<String>,
    /// Most returned: default 50, at most 1000.
    pub limit: Option<u32>,
    /// Only deliveries with an id below this (paging).
    pub before: Option<i64>,
}

/// An alert and its delivery to one channel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryDto {
    pub id: i64,
    /// What raised it: `failure`, `failures`, `timeout`, `lost`, `recovery`, `skipped`,
    /// `no_success`, `sla_start`, `sla_finish`.
    pub alert: String,
    pub channel: String,
    pub namespace: String,
    pub job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    /// `pending` (waiting for its next attempt), `sending`, `delivered` or `failed` (given up).
    pub state: String,
    /// Attempts made so far.
    pub attempts: u32,
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last attempt's HTTP status (webhook and Slack channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it was delivered, or given up.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    /// The alert's document, as channels receive it (`summary`, `run`, `links`, ...).
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

impl From<AlertDelivery> for DeliveryDto {
    fn from(d: AlertDelivery) -> Self {
        Self {
            id: d.id,
            alert: d.alert,
            channel: d.channel,
            namespace: d.namespace,
            job: d.job,
            run_id: d.run_id,
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            last_status: d.last_status,
            created_at: d.created_at,
            ended_at: d.delivered_at,
            document: serde_json::from_str(&d.payload).unwrap_or_default(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    params(AlertsQuery),
    responses(
        (status = 200, description = "Alert deliveries, newest first", body = Vec<DeliveryDto>),
        (status = 400, description = "A bad query", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<Vec<DeliveryDto>>, ApiError> {
    caller.require(Role::Viewer)?;
    let namespace = checked_namespace(q.namespace.as_deref())?;
    let job = match &q.job {
        Some(name) => {
            let ns = namespace.unwrap_or(kairos_core::spec::DEFAULT_NAMESPACE);
            caller.sees(ns)?;
            Some((ns.to_owned(), name.clone()))
        }
        None => None,
    };
    let state = q
        .state
        .as_deref()
        .map(str::parse::<DeliveryState>)
        .transpose()
        .map_err(|e| ApiError::bad_request("state", e))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit", "must be between 1 and 1000"));
    }
    let deliveries = app
        .ctx
        .store
        .alert_list(AlertListParams {
            namespaces: caller.0.scope.filter(namespace),
            job,
            state,
            limit,
            before_id: q.before,
        })
        .await?;
    Ok(Json(
        deliveries.into_iter().map(DeliveryDto::from).collect(),
    ))
}
