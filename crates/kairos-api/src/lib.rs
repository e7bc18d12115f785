//! Kairos REST API (axum).
//!
//! Routes under `/api/v1` (jobs, runs, output, events), plus `/health`, `/ready` and
//! `/metrics`. Requests a browser could be tricked into sending are refused first ([`guard`]).
//! Every error is `application/problem+json` with the field paths of invalid input
//! ([`error::ApiError`] is the one mapping). Request bodies are limited to [`BODY_LIMIT`]. The
//! OpenAPI document is generated from the handlers and served at `/api/v1/openapi.json`.

mod alerts;
pub mod auth;
mod backfill;
pub mod calendars;
pub mod dto;
pub mod error;
pub mod events;
pub mod guard;
mod jobs;
mod nodes;
mod ops;
pub mod query;
mod remote;
mod runs;
mod stats;
mod steps;
pub mod stream;
pub mod tokens;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use kairos_runtime::{JobService, NodeContext, TokenService};
use utoipa::OpenApi;

/// Largest request body accepted (1 MiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub ctx: NodeContext,
    pub jobs: JobService,
    pub tokens: TokenService,
    /// Who may call and from where (see [`guard`] and [`auth`]).
    pub access: Arc<guard::Access>,
    /// Cancelled when the node stops: open event streams end, so that the HTTP server's
    /// graceful shutdown does not wait for them (clients resume elsewhere or after the
    /// restart with `Last-Event-ID`).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The activity log's tail, followed once for every event stream of this node (started by
    /// the first one).
    pub(crate) stream_tail: Arc<tokio::sync::OnceCell<Arc<stream::Tail>>>,
}

impl AppState {
    /// A state with the default [`guard::Access`]: loopback names and IP addresses only, no
    /// authentication.
    pub fn new(ctx: NodeContext, jobs: JobService) -> Self {
        Self::with_access(ctx, jobs, guard::Access::default())
    }

    pub fn with_access(ctx: NodeContext, jobs: JobService, access: guard::Access) -> Self {
        Self {
            tokens: TokenService::new(ctx.store.clone(), ctx.clock.clone()),
            ctx,
            jobs,
            access: Arc::new(access),
            shutdown: tokio_util::sync::CancellationToken::new(),
            stream_tail: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// The same state, its event streams ending when `shutdown` is cancelled.
    pub fn with_shutdown(mut self, shutdown: tokio_util::sync::CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kairos API",
        description = "Jobs, runs and their output on a Kairos node."
    ),
    paths(
        jobs::list,
        jobs::create,
        jobs::get,
        jobs::replace,
        jobs::delete,
        jobs::pause,
        jobs::resume,
        jobs::trigger,
        calendars::next,
        calendars::list,
        calendars::create,
        calendars::get,
        calendars::replace,
        calendars::delete,
        backfill::backfill,
        jobs::runs,
        jobs::all_runs,
        runs::get,
        runs::cancel,
        runs::checkpoint,
        runs::output,
        steps::skip,
        steps::mark_succeeded,
        steps::rerun,
        steps::rerun_failed,
        ops::health,
        ops::ready,
        ops::metrics,
        ops::events,
        stream::stream,
        events::emit,
        tokens::create,
        tokens::list,
        tokens::revoke,
        tokens::audit,
        nodes::list,
        stats::jobs,
        alerts::list,
        ui::get,
        ui::create,
        ui::delete
    ),
    components(schemas(
        dto::JobDto,
        calendars::CalendarDto,
        calendars::NextDto,
        calendars::NextTimeDto,
        dto::RunDto,
        dto::AttemptDto,
        dto::StepDto,
        dto::RunEventDto,
        dto::RunReportDto,
        runs::ReportBody,
        jobs::TriggerBody,
        error::Problem,
        error::FieldErrorDto,
        tokens::TokenDto,
        tokens::NewTokenDto,
        tokens::AuditEntryDto,
        nodes::NodeDto,
        events::EventDto,
        events::EventRunDto,
        stats::JobStatsDto,
        alerts::DeliveryDto,
        stats::RecentRunDto,
        ui::SessionDto,
        ui::SessionBody
    )),
    modifiers(&BearerAuth, &JobDtoSchema),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Writes the `JobDto` schema out as one object: the job document's properties and the
/// server's. The generated form (`allOf` of `JobSpec` and the extra fields) is unsatisfiable,
/// because `JobSpec` forbids additional properties (unknown fields in a document are errors).
struct JobDtoSchema;

impl utoipa::Modify for JobDtoSchema {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (document, dto, description) in [
            (
                "JobSpec",
                "JobDto",
                "A stored job: the job document with its defaults written out, and the server's bookkeeping.",
            ),
            (
                "CalendarSpec",
                "CalendarDto",
                "A stored calendar: the calendar as written, and the server's bookkeeping.",
            ),
        ] {
            let Some(RefOr::T(Schema::Object(spec))) = components.schemas.get(document).cloned()
            else {
                continue;
            };
            let Some(RefOr::T(Schema::AllOf(all_of))) = components.schemas.get(dto) else {
                continue;
            };
            let mut merged = spec;
            merged.additional_properties = None;
            merged.description = Some(description.into());
            for item in &all_of.items {
                if let RefOr::T(Schema::Object(extra)) = item {
                    merged.properties.extend(extra.properties.clone());
                    merged.required.extend(extra.required.clone());
                }
            }
            components
                .schemas
                .insert(dto.into(), RefOr::T(Schema::Object(merged)));
        }
    }
}

/// Declares the bearer token scheme that every route but the open ones requires when the
/// node's `auth` is `required`.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The whole HTTP surface of a node.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/jobs", get(jobs::list).post(jobs::create))
        .route(
            "/jobs/{name}",
            get(jobs::get).put(jobs::replace).delete(jobs::delete),
        )
        .route("/jobs/{name}/next", get(calendars::next))
        .route("/jobs/{name}/pause", post(jobs::pause))
        .route("/jobs/{name}/resume", post(jobs::resume))
        .route("/jobs/{name}/trigger", post(jobs::trigger))
        .route("/jobs/{name}/backfill", post(backfill::backfill))
        .route("/jobs/{name}/runs", get(jobs::runs))
        .route("/runs", get(jobs::all_runs))
        .route("/runs/{id}", get(runs::get))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/checkpoint", post(runs::checkpoint))
        .route("/runs/{id}/rerun-failed", post(steps::rerun_failed))
        .route("/runs/{id}/steps/{step}/skip", post(steps::skip))
        .route(
            "/runs/{id}/steps/{step}/mark-succeeded",
            post(steps::mark_succeeded),
        )
        .route("/runs/{id}/steps/{step}/rerun", post(steps::rerun))
        .route("/runs/{id}/output", get(runs::output))
        .route("/calendars", get(calendars::list).post(calendars::create))
        .route(
            "/calendars/{name}",
            get(calendars::get)
                .put(calendars::replace)
                .delete(calendars::delete),
        )
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}", axum::routing::delete(tokens::revoke))
        .route("/audit", get(tokens::audit))
        .route("/nodes", get(nodes::list))
        .route("/stats/jobs", get(stats::jobs))
        .route("/alerts", get(alerts::list))
        .route("/session", get(ui::get).post(ui::create).delete(ui::delete))
        .route("/events", get(ops::events))
        .route("/events/stream", get(stream::stream))
        .route("/events/{topic}", post(events::emit))
        .route("/openapi.json", get(ops::openapi));
    Router::new()
        .nest("/api/v1", api)
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/", get(ui::shell))
        .route("/login", get(ui::shell))
        .route("/nodes", get(ui::shell))
        .route("/alerts", get(ui::shell))
        .route("/jobs/{namespace}/{name}", get(ui::shell))
        .route("/runs/{id}", get(ui::shell))
        .route("/assets/{file}", get(ui::asset))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.access.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::map_response(
            error::problem_for_rejections,
        ))
        .layer(axum::middleware::map_response(no_store))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Every answer but the web UI's shell and assets (which say otherwise) is for one request: no
/// cache keeps it (a browser's included, now that a session cookie authenticates requests), and
/// no browser guesses its type.
async fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = response.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if !h.contains_key(header::X_CONTENT_TYPE_OPTIONS) {
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}
