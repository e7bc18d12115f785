//! API tokens: created with a fresh random secret that is shown once, stored as its SHA-256,
//! looked up by that hash on every request.
//!
//! A secret is `kairos_` and 64 hex digits (256 random bits). Such a secret cannot be guessed, so
//! a plain SHA-256 (not a slow password hash) is the right way to store it, and the lookup by
//! hash leaks nothing useful. The prefix lets secret scanners find leaked tokens.
//!
//! Who may create or revoke which token is decided by [`may_grant`]: only admins, and only
//! within their own role and scope, so a token never begets a stronger one.

use std::sync::Arc;

use jiff::SignedDuration;
use kairos_core::ValidationErrors;
use kairos_core::auth::{Principal, Role, Scope, may_grant, validate_token_name};
use kairos_store::{
    SessionCreateParams, SessionParams, Store, StoreError, Token, TokenAuthenticateParams,
    TokenCreateParams, TokenListParams, TokenRevokeParams,
};
use sha2::{Digest, Sha256};

use crate::clock::Clock;

/// Prefix of every secret.
pub const SECRET_PREFIX: &str = "kairos_";

/// A new token and its secret (the only time the secret is seen).
#[derive(Clone)]
pub struct NewToken {
    pub token: Token,
    pub secret: String,
}

/// Shows no secret.
impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("token", &self.token)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// What a token to create looks like.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub name: String,
    pub role: Role,
    /// Namespaces, or `["*"]` for all.
    pub namespaces: Vec<String>,
    pub expires_in: Option<SignedDuration>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token request: {0}")]
    Invalid(ValidationErrors),
    /// The caller may not do this (its role or scope is too small).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SHA-256 of a secret, lowercase hex: what the store keeps.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash of `secret` if it has the form of a secret (`kairos_` and 64 hex digits); anything
/// else is no token, found without a store read.
pub fn hash_of_well_formed(secret: &str) -> Option<String> {
    let well_formed = secret.len() == SECRET_PREFIX.len() + 64
        && secret.starts_with(SECRET_PREFIX)
        && secret[SECRET_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| hash_secret(secret))
}

fn new_secret() -> String {
    format!("{SECRET_PREFIX}{}", random_hex())
}

/// Token operations (API, CLI and the offline `kairos token create`).
#[derive(Clone)]
pub struct TokenService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl TokenService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Creates a token for `by`, who must be allowed to grant its role and scope.
    pub async fn create(&self, by: &Principal, req: TokenRequest) -> Result<NewToken, TokenError> {
        let mut errs = ValidationErrors::default();
        if let Err(e) = validate_token_name(&req.name) {
            errs.push("name", e);
        }
        let scope = Scope::parse(&req.namespaces)
            .map_err(|e| errs.push("namespaces", e))
            .ok();
        let (Some(scope), true) = (scope, errs.is_empty()) else {
            return Err(TokenError::Invalid(errs));
        };
        may_grant(by.role, &by.scope, req.role, &scope).map_err(TokenError::Forbidden)?;
        let expires_at = req
            .expires_in
            .and_then(|d| self.clock.now().checked_add(d).ok());
        // A token that expires cannot make one that outlives it.
        if let Some(limit) = by.expires_at
            && expires_at.is_none_or(|at| at > limit)
        {
            return Err(TokenError::Forbidden(format!(
                "token `{}` expires at {limit}; a token it creates must expire by then too",
                by.name
            )));
        }
        let secret = new_secret();
        let token = self
            .store
            .token_create(TokenCreateParams {
                name: req.name,
                role: req.role,
                scope,
                hash: hash_secret(&secret),
                expires_at,
                actor: by.name.clone(),
                now: self.clock.store_now(),
            })
            .await?;
        Ok(NewToken { token, secret })
    }

    /// Tokens `by` could have created (within its scope), not revoked.
    pub async fn list(&self, by: &Principal) -> Result<Vec<Token>, TokenError> {
        if by.role < Role::Admin {
            return Err(TokenError::Forbidden(
                "only an admin token manages tokens".into(),
            ));
        }
        let tokens = self.store.token_list(TokenListParams::default()).await?;
        Ok(tokens
            .into_iter()
            .filter(|t| by.scope.covers(&t.scope))
            .collect())
    }

    /// Revokes the token `name` (it stops working at once); `by` must be allowed to grant what
    /// the token has. A token out of `by`'s sight is `TokenNotFound`.
    pub async fn revoke(&self, by: &Principal, name: &str) -> Result<Token, TokenError> {
        let token = self
            .list(by)
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| StoreError::TokenNotFound(name.to_owned()))?;
        may_grant(by.role, &by.scope, token.role, &token.scope).map_err(TokenError::Forbidden)?;
        // By id: the token checked above, not one that took its name meanwhile.
        self.store
            .token_revoke(TokenRevokeParams {
                id: token.id,
                actor: by.name.clone(),
                now: self.clock.store_now(),
            })
            .await
            .map_err(|e| match e {
                StoreError::TokenNotFound(_) => StoreError::TokenNotFound(name.to_owned()).into(),
                e => e.into(),
            })
    }

    /// The principal of a presented secret, if it is a live token.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>, StoreError> {
        match hash_of_well_formed(secret) {
            Some(hash) => self.authenticate_hash(&hash).await,
            None => Ok(None),
        }
    }

    /// The principal of a token by the hash of its secret, if it is still live (long requests
    /// such as event streams check again while they run).
    pub async fn authenticate_hash(&self, hash: &str) -> Result<Option<Principal>, StoreError> {
        let token = self
            .store
            .token_authenticate(TokenAuthenticateParams {
                hash: hash.to_owned(),
                now: self.clock.store_now(),
            })
            .await?;
        Ok(token.map(principal))
    }

    /// Signs in to a web UI session with a token's secret: a new session id (returned once, for
    /// the cookie; the store keeps its hash) that stands for the token for [`SESSION_LIFETIME`],
    /// until signed out, or until the token is revoked or expires. `None`: not a live token.
    pub async fn sign_in(&self, secret: &str) -> Result<Option<(Principal, String)>, StoreError> {
        let Some(token_hash) = hash_of_well_formed(secret) else {
            return Ok(None);
        };
        let Some(principal) = self.authenticate_hash(&token_hash).await? else {
            return Ok(None);
        };
        let id = random_hex();
        let created = self
            .store
            .session_create(SessionCreateParams {
                id_hash: hash_secret(&id),
                token_hash,
                expires_at: self.clock.now() + SESSION_LIFETIME,
                now: self.clock.store_now(),
            })
            .await?;
        Ok(created.then_some((principal, id)))
    }

    /// The principal of a session by the hash of its id ([`session_hash`]), if the session and
    /// its token are still live.
    pub async fn authenticate_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<Principal>, StoreError> {
        let token = self
            .store
            .session_authenticate(SessionParams {
                id_hash: id_hash.to_owned(),
                now: self.clock.store_now(),
            })
            .await?;
        Ok(token.map(principal))
    }

    /// Ends a session (signing out).
    pub async fn sign_out(&self, id_hash: &str) -> Result<(), StoreError> {
        self.store
            .session_delete(SessionParams {
                id_hash: id_hash.to_owned(),
                now: self.clock.store_now(),
            })
            .await?;
        Ok(())
    }
}

/// How long a web UI session lasts at most (its token's expiry or revocation ends it sooner).
pub const SESSION_LIFETIME: SignedDuration = SignedDuration::from_hours(12);

fn principal(t: kairos_store::Token) -> Principal {
    Principal {
        name: t.name,
        role: t.role,
        scope: t.scope,
        expires_at: t.expires_at,
    }
}

/// The hash of a session id if it has the form of one (64 hex digits); anything else is no
/// session, found without a store read.
pub fn session_hash(id: &str) -> Option<String> {
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hash_secret(id))
}

/// 256 random bits as 64 lowercase hex digits.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_hashed() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == 71);
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
