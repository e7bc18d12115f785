//! Authentication and authorisation of API requests.
//!
//! With `auth = "required"` every request but `/health`, `/ready`, `/api/v1/openapi.json` (and
//! `/metrics` with `metrics_public`) carries `Authorization: Bearer <token>`; the token's
//! [`Principal`] goes with the request to the handlers. With `auth = "off"` (loopback only, or
//! `--insecure-no-auth`) every request is [`Principal::anonymous`], an admin of everything.
//!
//! Handlers take a [`Caller`] and ask it:
//! - [`Caller::require`] for the role a route needs: `403` otherwise;
//! - [`Caller::sees`] for the namespace a request addresses: a namespace out of the token's
//!   scope answers `404`, exactly like one without the job, so a token learns nothing about
//!   namespaces it does not see.
//!
//! The web UI sends the token in its session cookie instead ([`SESSION_COOKIE`], set by
//! `POST /api/v1/session`); a request with both uses the `Authorization` header.
//!
//! No token, or an unknown, expired or revoked one, is `401` with `WWW-Authenticate: Bearer`.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use kairos_core::auth::{Principal, Role};
use kairos_runtime::tokens::hash_of_well_formed;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::AppState;
use crate::error::ApiError;

/// Whether requests must carry a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request acts as an admin of every namespace (a loopback node by default).
    #[default]
    Off,
    /// Every request but the open routes carries a live token.
    Required,
}

/// The bearer secret of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

/// The cookie the web UI's session keeps its token in ([`crate::ui`]).
pub const SESSION_COOKIE: &str = "kairos_session";

/// The token of the web UI's session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

fn unauthorized(detail: &str) -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authentication is required",
        detail,
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"kairos\""),
    );
    response
}

/// Routes that answer without a token: probes, the OpenAPI document, the web UI's pages and
/// assets (which hold no data), and signing in and out. A task's report is authorised by its
/// attempt's own token instead (`Kairos-Run-Token`, checked by the handler).
fn is_open(app: &AppState, method: &Method, path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/api/v1/openapi.json")
        || (path == "/metrics" && app.access.metrics_public)
        || is_report(path)
        || (path == "/api/v1/session" && (method == Method::POST || method == Method::DELETE))
        || ((method == Method::GET || method == Method::HEAD) && crate::ui::is_ui_path(path))
}

/// `/api/v1/runs/{id}/checkpoint`.
fn is_report(path: &str) -> bool {
    path.strip_prefix("/api/v1/runs/")
        .and_then(|rest| rest.strip_suffix("/checkpoint"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// The middleware: finds the request's principal (see the module docs).
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let principal = match app.access.auth {
        AuthMode::Off => Some(Principal::anonymous()),
        AuthMode::Required => {
            let open = is_open(&app, req.method(), req.uri().path());
            let presented = bearer(req.headers())
                .or_else(|| session_cookie(req.headers()))
                .map(hash_of_well_formed);
            match presented {
                Some(hash) => {
                    let found = match &hash {
                        Some(hash) => app.tokens.authenticate_hash(hash).await,
                        None => Ok(None),
                    };
                    match (found, hash) {
                        (Ok(Some(principal)), Some(hash)) => {
                            req.extensions_mut().insert(TokenHash(Arc::from(hash)));
                            Some(principal)
                        }
                        (Err(e), _) => return ApiError::from(e).into_response(),
                        _ if open => None,
                        _ => return unauthorized("the token is unknown, expired or revoked"),
                    }
                }
                None if open => None,
                None => {
                    return unauthorized(
                        "this node requires a token: send `Authorization: Bearer <token>`",
                    );
                }
            }
        }
    };
    if let Some(principal) = principal {
        req.extensions_mut().insert(principal);
    }
    next.run(req).await
}

/// The hash of the token a request came with, to check it again during long requests.
#[derive(Debug, Clone)]
struct TokenHash(Arc<str>);

/// The principal of a request, for handlers (and the hash of its token, if it had one).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal, Option<Arc<str>>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let hash = parts.extensions.get::<TokenHash>().map(|h| h.0.clone());
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(|principal| Caller(principal, hash))
            .ok_or_else(|| unauthorized("this route requires a token"))
    }
}

impl Caller {
    /// `403` unless the token's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role >= role {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The token's role does not allow this",
            format!(
                "token `{}` has the {} role; this needs {role}",
                self.0.name, self.0.role
            ),
        ))
    }

    /// `404` (as for a namespace without jobs) unless the token sees `namespace`.
    pub fn sees(&self, namespace: &str) -> Result<(), ApiError> {
        if self.0.scope.allows(namespace) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!(
                "namespace `{namespace}` not found"
            )))
        }
    }

    /// [`Caller::require`] and [`Caller::sees`] together.
    pub fn may(&self, role: Role, namespace: &str) -> Result<(), ApiError> {
        self.sees(namespace)?;
        self.require(role)
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// A token cancelled once the caller's token stops working (revoked or expired), checked
    /// every [`RECHECK_EVERY`] while the returned guard lives: streams that outlast a request
    /// (events, followed output) end with it. Never cancelled without authentication.
    pub fn watch_revocation(&self, app: &AppState) -> (CancellationToken, DropGuard) {
        let revoked = CancellationToken::new();
        let ended = CancellationToken::new();
        if let Some(hash) = self.1.clone() {
            let every = app.access.stream_recheck.unwrap_or(RECHECK_EVERY);
            let (app, revoked, ended) = (app.clone(), revoked.clone(), ended.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = ended.cancelled() => return,
                        () = tokio::time::sleep(every) => {}
                    }
                    if let Ok(None) = app.tokens.authenticate_hash(&hash).await {
                        revoked.cancel();
                        return;
                    }
                }
            });
        }
        (revoked, ended.drop_guard())
    }
}

/// How often a stream checks that its token still works.
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
