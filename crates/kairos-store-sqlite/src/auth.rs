//! Tokens and the audit log. Audit entries are written by the same transaction as the change
//! they describe ([`audit`]).

use jiff::Timestamp;
use kairos_core::auth::{AuditAction, Role, Scope};
use kairos_store::*;
use rusqlite::{Connection, Row, params};

use crate::rows::{all, col, exec, first, instant, internal, micros};

/// One change to record (the same for every store).
pub(crate) type Change<'a> = AuditRecord<'a>;

/// Appends `change` to the audit log (inside the caller's transaction).
pub(crate) fn audit(conn: &Connection, change: Change<'_>, now: Timestamp) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO audit (at, actor, action, namespace, job, run_id, version_before, \
         version_after, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            micros(now),
            change.actor,
            change.action.as_str(),
            change.namespace,
            change.job,
            change.run_id,
            change.version_before,
            change.version_after,
            change.detail,
        ],
    )?;
    Ok(())
}

pub(crate) const TOKEN_COLUMNS: &str =
    "id, name, role, namespaces, created_at, created_by, expires_at, revoked_at";

pub(crate) fn token(row: &Row<'_>) -> StoreResult<Token> {
    let role: String = col(row, 2)?;
    let namespaces: String = col(row, 3)?;
    let namespaces: Vec<String> = serde_json::from_str(&namespaces)
        .map_err(|e| StoreError::Internal(format!("stored token scope does not parse: {e}")))?;
    Ok(Token {
        id: col(row, 0)?,
        name: col(row, 1)?,
        role: role.parse::<Role>().map_err(StoreError::Internal)?,
        scope: Scope::parse(&namespaces).map_err(StoreError::Internal)?,
        created_at: instant(col(row, 4)?)?,
        created_by: col(row, 5)?,
        expires_at: col::<Option<i64>>(row, 6)?.map(instant).transpose()?,
        revoked_at: col::<Option<i64>>(row, 7)?.map(instant).transpose()?,
    })
}

pub(crate) fn token_create(
    conn: &Connection,
    p: &TokenCreateParams,
    now: Timestamp,
) -> StoreResult<Token> {
    let namespaces = serde_json::to_string(&p.scope.to_list())
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO tokens (name, role, namespaces, hash, created_at, created_by, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                p.name,
                p.role.as_str(),
                namespaces,
                p.hash,
                micros(now),
                p.actor,
                p.expires_at.map(micros),
            ])
        });
    match inserted {
        Err(e) if crate::rows::is_unique_violation(&e) => {
            return Err(StoreError::TokenExists(p.name.clone()));
        }
        Err(e) => return Err(internal(e)),
        Ok(_) => {}
    }
    let token = first(
        conn,
        &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
        [conn.last_insert_rowid()],
        token,
    )?
    .ok_or_else(|| StoreError::Internal("created token vanished".into()))?;
    audit(
        conn,
        Change::token(&p.actor, AuditAction::TokenCreate, &token),
        now,
    )?;
    Ok(token)
}

pub(crate) fn token_revoke(
    conn: &Connection,
    p: &TokenRevokeParams,
    now: Timestamp,
) -> StoreResult<Token> {
    // Fenced: only a token not revoked yet is revoked, and only once.
    let revoked = first(
        conn,
        &format!(
            "UPDATE tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL \
             RETURNING {TOKEN_COLUMNS}"
        ),
        params![micros(now), p.id],
        token,
    )?
    .ok_or_else(|| StoreError::TokenNotFound(format!("#{}", p.id)))?;
    audit(
        conn,
        Change::token(&p.actor, AuditAction::TokenRevoke, &revoked),
        now,
    )?;
    Ok(revoked)
}

pub(crate) fn token_list(conn: &Connection, p: &TokenListParams) -> StoreResult<Vec<Token>> {
    all(
        conn,
        &format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ?1 OR revoked_at IS NULL ORDER BY name, id"
        ),
        [p.include_revoked],
        token,
    )
}

pub(crate) fn token_authenticate(
    conn: &Connection,
    p: &TokenAuthenticateParams,
    now: Timestamp,
) -> StoreResult<Option<Token>> {
    first(
        conn,
        &format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?2)"
        ),
        params![p.hash, micros(now)],
        token,
    )
}

fn entry(row: &Row<'_>) -> StoreResult<AuditEntry> {
    let action: String = col(row, 3)?;
    Ok(AuditEntry {
        id: col(row, 0)?,
        at: instant(col(row, 1)?)?,
        actor: col(row, 2)?,
        action: action.parse().map_err(StoreError::Internal)?,
        namespace: col(row, 4)?,
        job: col(row, 5)?,
        run_id: col(row, 6)?,
        version_before: col(row, 7)?,
        version_after: col(row, 8)?,
        detail: col(row, 9)?,
    })
}

pub(crate) fn audit_list(conn: &Connection, p: &AuditListParams) -> StoreResult<Vec<AuditEntry>> {
    let limit = if p.limit == 0 {
        100
    } else {
        i64::from(p.limit)
    };
    let namespaces = p
        .namespaces
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    all(
        conn,
        "SELECT id, at, actor, action, namespace, job, run_id, version_before, version_after, \
         detail FROM audit \
         WHERE ((namespace IS NULL AND ?1) OR (namespace IS NOT NULL AND (?2 IS NULL \
           OR namespace IN (SELECT value FROM json_each(?2))))) \
         AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4",
        params![p.include_global, namespaces, p.before_id, limit],
        entry,
    )
}

pub(crate) fn session_create(
    tx: &Connection,
    p: &SessionCreateParams,
    now: Timestamp,
) -> StoreResult<bool> {
    exec(
        tx,
        "DELETE FROM sessions WHERE expires_at <= ?1",
        [micros(now)],
    )?;
    // Fenced on the token working now: a token revoked meanwhile gets no session.
    let created = exec(
        tx,
        "INSERT INTO sessions (id_hash, token_id, created_at, expires_at) \
         SELECT ?1, id, ?3, ?4 FROM tokens WHERE hash = ?2 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > ?3)",
        params![p.id_hash, p.token_hash, micros(now), micros(p.expires_at)],
    )?;
    Ok(created == 1)
}

pub(crate) fn session_authenticate(
    conn: &Connection,
    p: &SessionParams,
    now: Timestamp,
) -> StoreResult<Option<Token>> {
    first(
        conn,
        &format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = (SELECT token_id FROM sessions \
             WHERE id_hash = ?1 AND expires_at > ?2) AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?2)"
        ),
        params![p.id_hash, micros(now)],
        token,
    )
}
