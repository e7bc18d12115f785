//! Tokens and the audit log. Audit entries are written by the same transaction as the change
//! they describe ([`audit`]).

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use kairos_core::auth::{AuditAction, Role, Scope};
use kairos_store::*;
use tokio_postgres::Row;

use crate::connect::PostgresStore;
use crate::rows::{col, execute, pg_error, query, query_opt, query_opt_unique};

/// One change to record (the same for every store).
pub(crate) type Change<'a> = AuditRecord<'a>;

/// Appends `change` to the audit log, inside the caller's transaction; `now: None` is the
/// transaction's time on the database clock.
pub(crate) async fn audit(
    c: &impl GenericClient,
    change: Change<'_>,
    now: &Option<Timestamp>,
) -> StoreResult<()> {
    execute(
        c,
        "INSERT INTO audit (at, actor, action, namespace, job, run_id, version_before, \
         version_after, detail) \
         VALUES (coalesce($1::timestamptz, now()), $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            now,
            &change.actor,
            &change.action.as_str(),
            &change.namespace,
            &change.job,
            &change.run_id,
            &change.version_before,
            &change.version_after,
            &change.detail,
        ],
    )
    .await?;
    Ok(())
}

const TOKEN_COLUMNS: &str =
    "id, name, role, namespaces, created_at, created_by, expires_at, revoked_at";

fn token(row: &Row) -> StoreResult<Token> {
    let namespaces: Vec<String> = col(row, 3)?;
    Ok(Token {
        id: col(row, 0)?,
        name: col(row, 1)?,
        role: col::<&str>(row, 2)?
            .parse::<Role>()
            .map_err(StoreError::Internal)?,
        scope: Scope::parse(&namespaces).map_err(StoreError::Internal)?,
        created_at: col(row, 4)?,
        created_by: col(row, 5)?,
        expires_at: col(row, 6)?,
        revoked_at: col(row, 7)?,
    })
}

impl PostgresStore {
    pub(crate) async fn token_create_tx(&self, p: TokenCreateParams) -> StoreResult<Token> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let inserted = query_opt_unique(
            &tx,
            &format!(
                "INSERT INTO tokens (name, role, namespaces, hash, created_at, created_by, \
                 expires_at) VALUES ($1, $2, $3, $4, coalesce($5::timestamptz, now()), $6, $7) \
                 RETURNING {TOKEN_COLUMNS}"
            ),
            &[
                &p.name,
                &p.role.as_str(),
                &p.scope.to_list(),
                &p.hash,
                &p.now,
                &p.actor,
                &p.expires_at,
            ],
        )
        .await?;
        // Like the SQLite store: a taken name (or, astronomically unlikely, a taken hash) is
        // reported as the name being taken.
        let row = inserted
            .map_err(|_| StoreError::TokenExists(p.name.clone()))?
            .ok_or_else(|| StoreError::Internal("created token vanished".into()))?;
        let created = token(&row)?;
        audit(
            &tx,
            Change::token(&p.actor, AuditAction::TokenCreate, &created),
            &p.now,
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(created)
    }

    pub(crate) async fn token_revoke_tx(&self, p: TokenRevokeParams) -> StoreResult<Token> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Fenced: only a token not revoked yet is revoked, and only once.
        let row = query_opt(
            &tx,
            &format!(
                "UPDATE tokens SET revoked_at = coalesce($1::timestamptz, now()) \
                 WHERE id = $2 AND revoked_at IS NULL RETURNING {TOKEN_COLUMNS}"
            ),
            &[&p.now, &p.id],
        )
        .await?
        .ok_or_else(|| StoreError::TokenNotFound(format!("#{}", p.id)))?;
        let revoked = token(&row)?;
        audit(
            &tx,
            Change::token(&p.actor, AuditAction::TokenRevoke, &revoked),
            &p.now,
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(revoked)
    }

    pub(crate) async fn token_list_read(&self, p: TokenListParams) -> StoreResult<Vec<Token>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE $1 OR revoked_at IS NULL \
                 ORDER BY name, id"
            ),
            &[&p.include_revoked],
        )
        .await?
        .iter()
        .map(token)
        .collect()
    }

    pub(crate) async fn token_authenticate_read(
        &self,
        p: TokenAuthenticateParams,
    ) -> StoreResult<Option<Token>> {
        let client = self.client().await?;
        query_opt(
            &client,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > coalesce($2::timestamptz, now()))"
            ),
            &[&p.hash, &p.now],
        )
        .await?
        .as_ref()
        .map(token)
        .transpose()
    }

    pub(crate) async fn session_create_tx(&self, p: SessionCreateParams) -> StoreResult<bool> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM sessions WHERE expires_at <= coalesce($1::timestamptz, now())",
            &[&p.now],
        )
        .await?;
        // Fenced on the token working now: a token revoked meanwhile gets no session.
        let created = execute(
            &client,
            "INSERT INTO sessions (id_hash, token_id, created_at, expires_at) \
             SELECT $1, id, coalesce($3::timestamptz, now()), $4 FROM tokens \
             WHERE hash = $2 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > coalesce($3::timestamptz, now()))",
            &[&p.id_hash, &p.token_hash, &p.now, &p.expires_at],
        )
        .await?;
        Ok(created == 1)
    }

    pub(crate) async fn session_authenticate_read(
        &self,
        p: SessionParams,
    ) -> StoreResult<Option<Token>> {
        let client = self.client().await?;
        query_opt(
            &client,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = (SELECT token_id FROM sessions \
                 WHERE id_hash = $1 AND expires_at > coalesce($2::timestamptz, now())) \
                 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > coalesce($2::timestamptz, now()))"
            ),
            &[&p.id_hash, &p.now],
        )
        .await?
        .as_ref()
        .map(token)
        .transpose()
    }

    pub(crate) async fn session_delete_tx(&self, p: SessionParams) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(execute(
            &client,
            "DELETE FROM sessions WHERE id_hash = $1",
            &[&p.id_hash],
        )
        .await?
            == 1)
    }

    pub(crate) async fn audit_list_read(&self, p: AuditListParams) -> StoreResult<Vec<AuditEntry>> {
        let limit = if p.limit == 0 {
            100
        } else {
            i64::from(p.limit)
        };
        let client = self.client().await?;
        query(
            &client,
            "SELECT id, at, actor, action, namespace, job, run_id, version_before, \
             version_after, detail FROM audit \
             WHERE ((namespace IS NULL AND $1) OR (namespace IS NOT NULL \
               AND ($2::text[] IS NULL OR namespace = ANY($2)))) \
             AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
            &[&p.include_global, &p.namespaces, &p.before_id, &limit],
        )
        .await?
        .iter()
        .map(entry)
        .collect()
    }
}

fn entry(row: &Row) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: col(row, 0)?,
        at: col(row, 1)?,
        actor: col(row, 2)?,
        action: col::<&str>(row, 3)?.parse().map_err(StoreError::Internal)?,
        namespace: col(row, 4)?,
        job: col(row, 5)?,
        run_id: col(row, 6)?,
        version_before: col(row, 7)?,
        version_after: col(row, 8)?,
        detail: col(row, 9)?,
    })
}
