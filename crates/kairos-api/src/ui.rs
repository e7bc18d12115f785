//! The web UI: one HTML shell and a few ES modules, embedded in the binary, plus the session
//! routes that turn a token into a cookie.
//!
//! The UI is a small hand-written module tree (no build step, no framework, no CDN): every
//! page is drawn in the browser from the same JSON API and event stream that other clients
//! use, so the UI can never do or see more than its token may. Pages live at real paths (`/`,
//! `/jobs/{namespace}/{name}`, `/runs/{id}`, `/nodes`, `/login`); each answers the same shell,
//! which holds no data, so a link can be shared and opened after signing in.
//!
//! Sessions: `POST /api/v1/session` with a token creates a session in the store (a random id;
//! the store keeps its hash) and sets its id in a cookie that scripts cannot read (`HttpOnly`),
//! that browsers send only with requests from pages of the same site (`SameSite=Strict`; a
//! site is a host, whatever the port) and, over HTTPS, only over TLS (`Secure`, and the
//! `__Host-` name that no other origin can set). The token itself never leaves the sign-in
//! request. A session lasts [`kairos_runtime::tokens::SESSION_LIFETIME`] at most, ends when
//! signed out, and with its token. Requests with the cookie act as the token ([`crate::auth`]),
//! and the guard's checks of `Origin`, `Sec-Fetch-Site` and `Content-Type` still refuse any
//! state-changing request another site could make a browser send ([`crate::guard`]).

use std::sync::OnceLock;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kairos_core::auth::{Principal, Role};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::{AuthMode, Caller, SECURE_SESSION_COOKIE, SESSION_COOKIE};
use crate::error::ApiError;

/// What the pages may load: their own scripts, styles and API, nothing inline, no frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The shell every page path answers.
const SHELL: &[u8] = include_bytes!("../ui/index.html");

/// The embedded files under `/assets/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/app.css"),
    ),
    ("app.js", JS, include_bytes!("../ui/app.js")),
    ("api.js", JS, include_bytes!("../ui/api.js")),
    ("charts.js", JS, include_bytes!("../ui/charts.js")),
    ("pages.js", JS, include_bytes!("../ui/pages.js")),
    ("toml.js", JS, include_bytes!("../ui/toml.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Whether `path` is one of the UI's pages or assets (answered without a token: they hold no
/// data).
pub(crate) fn is_ui_path(path: &str) -> bool {
    matches!(path, "/" | "/login" | "/nodes" | "/alerts")
        || path.starts_with("/assets/")
        || path.starts_with("/jobs/")
        || path.starts_with("/runs/")
}

/// The strong validator of an embedded file, computed once per file.
fn etag(index: usize, body: &[u8]) -> &'static str {
    static TAGS: OnceLock<Vec<OnceLock<String>>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| (0..=ASSETS.len()).map(|_| OnceLock::new()).collect());
    tags[index].get_or_init(|| {
        let digest = Sha256::digest(body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    })
}

/// An embedded file, revalidated on every load (`no-cache` with an `ETag`), so a new binary's
/// UI is picked up at once.
fn embedded(
    headers: &HeaderMap,
    tag: &'static str,
    content_type: &'static str,
    body: &'static [u8],
) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            Body::from(body),
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /`, `/jobs/{namespace}/{name}`, `/runs/{id}`, `/nodes`, `/alerts`, `/login`: the shell.
pub async fn shell(headers: HeaderMap) -> Response {
    embedded(
        &headers,
        etag(ASSETS.len(), SHELL),
        "text/html; charset=utf-8",
        SHELL,
    )
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|(name, _, _)| *name == file) {
        Some(i) => {
            let (_, content_type, body) = ASSETS[i];
            embedded(&headers, etag(i, body), content_type, body)
        }
        None => ApiError::not_found(format!("no asset `{file}`")).into_response(),
    }
}

/// Who the session is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionDto {
    /// `required`: requests need a token (the UI signs in); `off`: everyone is an admin.
    pub auth: String,
    /// The token's name (`anonymous` without authentication).
    pub name: String,
    pub role: Role,
    /// `["*"]` for all namespaces.
    pub namespaces: Vec<String>,
}

impl SessionDto {
    fn new(mode: AuthMode, principal: &Principal) -> Self {
        Self {
            auth: match mode {
                AuthMode::Off => "off",
                AuthMode::Required => "required",
            }
            .into(),
            name: principal.name.clone(),
            role: principal.role,
            namespaces: principal.scope.to_list(),
        }
    }
}

/// A token to sign in with.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    /// The token's secret (`kairos_` and 64 hex digits).
    pub token: String,
}

#[utoipa::path(get, path = "/api/v1/session", tag = "session",
    responses(
        (status = 200, description = "The caller: its token's name, role and namespaces", body = SessionDto),
        (status = 401, description = "Not signed in", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get(State(app): State<AppState>, caller: Caller) -> Json<SessionDto> {
    Json(SessionDto::new(app.access.auth, &caller.0))
}

#[utoipa::path(post, path = "/api/v1/session", tag = "session",
    request_body(content = SessionBody, description = "The token to sign in with"),
    responses(
        (status = 200, description = "Signed in: the session cookie is set (HttpOnly, SameSite=Strict)", body = SessionDto),
        (status = 401, description = "The token is unknown, expired or revoked", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a sign-in body", body = crate::error::Problem, content_type = "application/problem+json")),
    security(()))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: SessionBody = crate::error::parse_body(&body)?;
    if app.access.auth == AuthMode::Off {
        return Ok(Json(SessionDto::new(AuthMode::Off, &Principal::anonymous())).into_response());
    }
    let Some((principal, session)) = app.tokens.sign_in(body.token.trim()).await? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication is required",
            "the token is unknown, expired or revoked",
        ));
    };
    tracing::info!(token = %principal.name, "signed in to the web UI");
    let secure = secure_context(&app, &headers);
    let mut response = Json(SessionDto::new(AuthMode::Required, &principal)).into_response();
    let h = response.headers_mut();
    // The other name's cookie, if any, is cleared, so that the browser holds one session.
    for cookie in [
        clear_cookie(false, secure),
        Some(format!(
            "{}={session}; Path=/; HttpOnly; SameSite=Strict{}",
            cookie_name(secure),
            if secure { "; Secure" } else { "" }
        )),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, value);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(delete, path = "/api/v1/session", tag = "session",
    responses((status = 204, description = "Signed out: the session ends and its cookie is cleared")),
    security(()))]
pub async fn delete(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(hash) = crate::auth::session_of(&headers) {
        app.tokens.sign_out(&hash).await?;
    }
    let secure = secure_context(&app, &headers);
    let mut response = StatusCode::NO_CONTENT.into_response();
    for cookie in [clear_cookie(false, true), clear_cookie(true, secure)]
        .into_iter()
        .flatten()
    {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// Whether the browser reached the node over HTTPS: the node serves TLS itself, or the page's
/// own origin (which the browser sets) is `https://`, as behind a TLS-terminating proxy.
fn secure_context(app: &AppState, headers: &HeaderMap) -> bool {
    app.access.tls
        || headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|origin| origin.starts_with("https://"))
}

/// The session cookie's name: `__Host-` prefixed over HTTPS.
fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// A `Set-Cookie` value that deletes the session cookie of that name (`secure`: the `__Host-`
/// one, which a browser accepts only over HTTPS), if `wanted`.
fn clear_cookie(secure: bool, wanted: bool) -> Option<String> {
    wanted.then(|| {
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            cookie_name(secure),
            if secure { "; Secure" } else { "" }
        )
    })
}
