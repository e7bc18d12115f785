//! `/api/v1/tokens`: create (the secret is in the answer, once), list and revoke API tokens;
//! `/api/v1/audit`: the log of changes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use jiff::Timestamp;
use kairos_core::ValidationErrors;
use kairos_core::auth::{AuditAction, Role, Scope, parse_lifetime};
use kairos_runtime::{TokenError, TokenRequest};
use kairos_store::{AuditEntry, AuditListParams, Token};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::{NoQuery, checked_namespace};

/// A token to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateBody {
    /// 1 to 63 characters: lowercase letters, digits, `_`, `.`, `-`.
    pub name: String,
    pub role: Role,
    /// Namespaces the token sees; `["*"]` (the default) for all.
    #[serde(default = "all_namespaces")]
    pub namespaces: Vec<String>,
    /// Lifetime, e.g. `90d` or `12h` (at most `3650d`). Default: no expiry.
    pub expires_in: Option<String>,
}

fn all_namespaces() -> Vec<String> {
    vec!["*".to_owned()]
}

/// A token, without its secret.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenDto {
    pub name: String,
    pub role: Role,
    /// `["*"]` for all namespaces.
    pub namespaces: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    pub created_by: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

impl From<Token> for TokenDto {
    fn from(t: Token) -> Self {
        Self {
            name: t.name,
            role: t.role,
            namespaces: t.scope.to_list(),
            created_at: t.created_at,
            created_by: t.created_by,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A new token with its secret: the only time the secret is shown.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewTokenDto {
    #[serde(flatten)]
    pub token: TokenDto,
    /// Send as `Authorization: Bearer <secret>`. Shown once; Kairos keeps only its hash.
    pub secret: String,
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid(errors) => ApiError::invalid(errors),
            TokenError::Forbidden(detail) => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "The token's role or scope does not allow this",
                detail,
            ),
            TokenError::Store(e) => e.into(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    request_body(content = TokenCreateBody),
    responses(
        (status = 201, description = "Created; the secret is in the answer, once", body = NewTokenDto),
        (status = 403, description = "Only admins create tokens, within their own role and namespaces", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A token with this name exists", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Query(NoQuery {}): Query<NoQuery>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Admin)?;
    let body: TokenCreateBody = crate::error::parse_body(&body)?;
    let expires_in = match body.expires_in.as_deref().map(parse_lifetime).transpose() {
        Ok(d) => d,
        Err(e) => return Err(ApiError::invalid(ValidationErrors::single("expires_in", e))),
    };
    let created = app
        .tokens
        .create(
            &caller.0,
            TokenRequest {
                name: body.name,
                role: body.role,
                namespaces: body.namespaces,
                expires_in,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewTokenDto {
            token: created.token.into(),
            secret: created.secret,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, description = "Tokens within the caller's namespaces, by name", body = Vec<TokenDto>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<Vec<TokenDto>>, ApiError> {
    let tokens = app.tokens.list(&caller.0).await?;
    Ok(Json(tokens.into_iter().map(TokenDto::from).collect()))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "Token name")),
    responses((status = 200, description = "Revoked: it stops working at once", body = TokenDto), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<TokenDto>, ApiError> {
    Ok(Json(app.tokens.revoke(&caller.0, &name).await?.into()))
}

/// One change in the audit log.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntryDto {
    pub id: i64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The token that made the change (`anonymous` without authentication, `system` for the
    /// library, `offline` for the CLI on the store).
    pub actor: String,
    pub action: AuditAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_before: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_after: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<AuditEntry> for AuditEntryDto {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            namespace: e.namespace,
            job: e.job,
            run_id: e.run_id,
            version_before: e.version_before,
            version_after: e.version_after,
            detail: e.detail,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only changes in this namespace.
    pub namespace: Option<String>,
    /// Most entries, newest first. Default 50, at most 1000.
    pub limit: Option<u32>,
    /// Only entries with a smaller id (paging).
    pub before: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "Changes, newest first: those in the caller's namespaces, and token changes for admins of every namespace", body = Vec<AuditEntryDto>)))]
pub async fn audit(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntryDto>>, ApiError> {
    caller.require(Role::Viewer)?;
    let namespace = checked_namespace(q.namespace.as_deref())?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit", "must be between 1 and 1000"));
    }
    // Token changes have no namespace; only admins of every namespace see them.
    let include_global =
        namespace.is_none() && caller.0.role == Role::Admin && caller.0.scope == Scope::All;
    let entries = app
        .ctx
        .store
        .audit_list(AuditListParams {
            namespaces: caller.0.scope.filter(namespace),
            include_global,
            limit,
            before_id: q.before,
        })
        .await?;
    Ok(Json(entries.into_iter().map(AuditEntryDto::from).collect()))
}
