//! A fresh PostgreSQL schema per run: `kb_<label>_<32 hex digits>` on the `--store` database,
//! dropped (with everything in it) when the run ends, unless `--keep`.
//!
//! Every connection a run opens carries the schema's name as its `application_name` (nodes
//! and servers add `_<node>`), so that the cleanup can end them first: a connection left open
//! (a killed server's, a transaction a crashed node left behind) would otherwise block the
//! `DROP SCHEMA`. The cleanup runs in `Drop`, on a thread with a runtime of its own, since
//! `Drop` cannot await. A benchmark killed before it drops its places leaves `kb_*` schemas
//! behind; they hold only benchmark data, and `DROP SCHEMA kb_… CASCADE` removes one.

use std::time::Duration;

use kairos_store_postgres::{DEFAULT_POOL_SIZE, PostgresConfig, redact};
use tokio_postgres::NoTls;

use crate::error::{BenchError, BenchResult};

/// How long connecting, or cleaning up, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One run's schema on the database at `url`.
#[derive(Debug)]
pub struct PgSchema {
    /// The database's URL as given (no `schema=`), password included.
    url: String,
    /// `kb_<label>_<hex>`.
    pub name: String,
    keep: bool,
}

/// `url` with `key=value` appended to its query.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

impl PgSchema {
    /// A new schema name for a run labelled `label` (e.g. `w1-bulk`); nothing is created
    /// until a store connects to it.
    pub fn new(url: &str, label: &str, keep: bool) -> Self {
        let label: String = label
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '_',
            })
            .take(20)
            .collect();
        Self {
            url: url.to_owned(),
            name: format!("kb_{label}_{}", uuid::Uuid::new_v4().simple()),
            keep,
        }
    }

    /// The `application_name` of connections of `node` (or of the benchmark itself).
    fn application_name(&self, node: Option<&str>) -> String {
        match node {
            Some(node) => format!("{}_{node}", self.name),
            None => self.name.clone(),
        }
    }

    /// A store configuration on this schema for `node` (or the benchmark itself).
    pub fn config(&self, node: Option<&str>) -> PostgresConfig {
        PostgresConfig {
            url: with_param(&self.url, "application_name", &self.application_name(node)),
            schema: self.name.clone(),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }

    /// The `--store` URL of a `kairos server` node on this schema.
    pub fn server_url(&self, node: &str) -> String {
        with_param(
            &with_param(&self.url, "schema", &self.name),
            "application_name",
            &self.application_name(Some(node)),
        )
    }

    /// A plain connection with the schema on its search path.
    pub async fn client(&self) -> BenchResult<tokio_postgres::Client> {
        let client = connect(&with_param(
            &self.url,
            "application_name",
            &self.application_name(Some("sql")),
        ))
        .await?;
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.name))
            .await
            .map_err(|e| pg("cannot set the search path", e))?;
        Ok(client)
    }

    /// Bytes the schema's tables take, indexes and TOAST included (not the server's WAL,
    /// which all databases of the server share).
    pub async fn size_bytes(&self) -> BenchResult<u64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
                &[&self.name],
            )
            .await
            .map_err(|e| pg("cannot read the schema's size", e))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "kept PostgreSQL schema {} on {}",
                self.name,
                redact(&self.url)
            );
            return;
        }
        let dropped =
            kairos_store_postgres::admin::drop_schema_blocking(&self.url, &self.name, TIMEOUT * 3);
        if let Err(e) = dropped {
            eprintln!(
                "kairos-bench: could not drop schema {} (drop it by hand): {e}",
                self.name
            );
        }
    }
}

/// A connection whose driver task runs on the current runtime.
async fn connect(url: &str) -> BenchResult<tokio_postgres::Client> {
    let (client, connection) = tokio::time::timeout(TIMEOUT, tokio_postgres::connect(url, NoTls))
        .await
        .map_err(|_| BenchError::Postgres {
            context: format!("connecting to {}", redact(url)),
            message: "timed out".into(),
        })?
        .map_err(|e| pg(&format!("cannot connect to {}", redact(url)), e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A driver error with what was being done.
pub(crate) fn pg(context: &str, e: tokio_postgres::Error) -> BenchError {
    let message = match (e.as_db_error(), std::error::Error::source(&e)) {
        (Some(db), _) => db.message().to_owned(),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    };
    BenchError::Postgres {
        context: context.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_valid_and_connections_named_after_them() {
        let s = PgSchema::new("postgres://u:pw@h/db", "w1-Bulk", true);
        assert!(s.name.starts_with("kb_w1_bulk_"), "{}", s.name);
        assert!(s.name.len() <= 63);
        assert!(
            s.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        let c = s.config(Some("n1"));
        assert_eq!(c.schema, s.name);
        assert!(c.url.ends_with(&format!("?application_name={}_n1", s.name)));
        let server = s.server_url("n2");
        assert_eq!(
            server,
            format!(
                "postgres://u:pw@h/db?schema={0}&application_name={0}_n2",
                s.name
            )
        );
        let s2 = PgSchema::new("postgres://h/db?connect_timeout=5", "w2", true);
        assert!(
            s2.config(None)
                .url
                .starts_with("postgres://h/db?connect_timeout=5&application_name=kb_w2_")
        );
        // Kept: no cleanup on drop (nothing was created anyway).
        drop((s, s2));
    }
}
