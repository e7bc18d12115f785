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
//! The web UI sends a session cookie instead ([`SESSION_COOKIE`], set by `POST /api/v1/session`):
//! a session id that acts as the token it was signed in with, while both live. A request with
//! both uses the `Authorization` header; one with several session cookies uses none of them.
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

/// The web UI's session cookie ([`crate::ui`]) on plain HTTP.
pub const SESSION_COOKIE: &str = "kairos_session";
/// The same over HTTPS: a `__Host-` cookie, which browsers accept only with `Secure`,
/// `Path=/` and no `Domain`, so that no other port or subdomain can set one.
pub const SECURE_SESSION_COOKIE: &str = "__Host-kairos_session";

/// What a request's session cookie holds.
enum SessionCookie<'a> {
    None,
    One(&'a str),
    /// More than one: another site on the host (another port) may have set one to sign the
    /// browser in as someone else, so none is used.
    Several,
}

fn session_cookie(headers: &HeaderMap) -> SessionCookie<'_> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE || *name == SECURE_SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty());
    match (found.next(), found.next()) {
        (None, _) => SessionCookie::None,
        (Some(one), None) => SessionCookie::One(one),
        (Some(_), Some(_)) => SessionCookie::Several,
    }
}

/// The request's session cookie alone, as a `Cookie` header for a request passed on to another
/// node of the cluster (sessions are in the shared store).
pub(crate) fn session_cookie_to_forward(headers: &HeaderMap) -> Option<String> {
    match session_cookie(headers) {
        SessionCookie::One(id) => Some(format!("{SESSION_COOKIE}={id}")),
        SessionCookie::None | SessionCookie::Several => None,
    }
}

/// The hash of the session id a request's cookie holds (`None`: no usable session cookie).
pub(crate) fn session_of(headers: &HeaderMap) -> Option<String> {
    match session_cookie(headers) {
        SessionCookie::One(id) => kairos_runtime::tokens::session_hash(id),
        SessionCookie::None | SessionCookie::Several => None,
    }
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
            // A bearer token wins over a session cookie.
            let presented = match bearer(req.headers()) {
                Some(secret) => Some(hash_of_well_formed(secret).map(Credential::Token)),
                None => match session_cookie(req.headers()) {
                    SessionCookie::None => None,
                    SessionCookie::One(id) => {
                        Some(kairos_runtime::tokens::session_hash(id).map(Credential::Session))
                    }
                    SessionCookie::Several => Some(None),
                },
            };
            match presented {
                Some(credential) => {
                    let found = match &credential {
                        Some(credential) => credential.principal(&app).await,
                        None => Ok(None),
                    };
                    match (found, credential) {
                        (Ok(Some(principal)), Some(credential)) => {
                            req.extensions_mut().insert(credential);
                            Some(principal)
                        }
                        (Err(e), _) => return ApiError::from(e).into_response(),
                        _ if open => None,
                        _ => {
                            return unauthorized(
                                "the token (or the session) is unknown, expired or revoked",
                            );
                        }
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

/// What a request authenticated with: the hash of its token's secret or of its session id,
/// to check it again during long requests.
#[derive(Debug, Clone)]
enum Credential {
    Token(String),
    Session(String),
}

impl Credential {
    async fn principal(
        &self,
        app: &AppState,
    ) -> Result<Option<Principal>, kairos_store::StoreError> {
        match self {
            Credential::Token(hash) => app.tokens.authenticate_hash(hash).await,
            Credential::Session(hash) => app.tokens.authenticate_session(hash).await,
        }
    }
}

/// The principal of a request, for handlers (and what it authenticated with, if anything).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal, Option<Arc<Credential>>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let credential = parts.extensions.get::<Credential>().cloned().map(Arc::new);
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(|principal| Caller(principal, credential))
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
        if let Some(credential) = self.1.clone() {
            let every = app.access.stream_recheck.unwrap_or(RECHECK_EVERY);
            let (app, revoked, ended) = (app.clone(), revoked.clone(), ended.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = ended.cancelled() => return,
                        () = tokio::time::sleep(every) => {}
                    }
                    if let Ok(None) = credential.principal(&app).await {
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
