//! `--store URL`: which store a node (or `kairos store copy`) uses.
//!
//! - `sqlite:///path/to/dir`: the embedded store in that data directory (the default is the
//!   data directory's, see `data_dir`).
//! - `postgres://user:password@host:port/db` (or `postgresql://`): a cluster store; an
//!   optional `schema=NAME` query parameter picks the schema (default `kairos`), so several
//!   clusters can share one database. Every other parameter goes to the driver.

use std::path::PathBuf;

use anyhow::bail;

/// A parsed store URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite { dir: PathBuf },
    Postgres { url: String, schema: Option<String> },
}

/// Shows no password.
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl StoreUrl {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let Some((scheme, rest)) = url.split_once("://") else {
            // Not echoed: a malformed URL may still hold a password.
            bail!(
                "store: not a store URL; expected one such as `sqlite:///var/lib/kairos` or `postgres://user@host/db`"
            );
        };
        match scheme {
            "sqlite" => {
                if rest.is_empty() || !rest.starts_with('/') {
                    bail!(
                        "store: a SQLite store URL names a data directory by its absolute path, as in `sqlite:///var/lib/kairos`"
                    );
                }
                Ok(StoreUrl::Sqlite {
                    dir: PathBuf::from(rest),
                })
            }
            "postgres" | "postgresql" => {
                let (base, query) = match url.split_once('?') {
                    Some((base, query)) => (base, query),
                    None => (url, ""),
                };
                let mut schema = None;
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    match pair.split_once('=') {
                        Some(("schema", value)) => schema = Some(value.to_owned()),
                        _ => kept.push(pair),
                    }
                }
                let url = if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                };
                Ok(StoreUrl::Postgres { url, schema })
            }
            other => bail!("store: unknown scheme `{other}`; expected `sqlite` or `postgres`"),
        }
    }

    /// The URL without its password, for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sqlite { dir } => format!("sqlite://{}", dir.display()),
            StoreUrl::Postgres { url, schema } => {
                let url = kairos_store_postgres::redact(url);
                match schema {
                    Some(s) => format!("{url} (schema {s})"),
                    None => url,
                }
            }
        }
    }

    /// Opens the store. SQLite: the data directory is created if missing and locked against a
    /// second node. PostgreSQL: connects and migrates.
    pub async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn kairos_store::Store>> {
        Ok(match self {
            StoreUrl::Sqlite { dir } => std::sync::Arc::new(
                kairos_store_sqlite::SqliteStore::open_dir(dir)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            StoreUrl::Postgres { url, schema } => {
                let mut config = kairos_store_postgres::PostgresConfig::new(url.clone());
                if let Some(schema) = schema {
                    config.schema.clone_from(schema);
                }
                std::sync::Arc::new(
                    kairos_store_postgres::PostgresStore::connect(config)
                        .await
                        .map_err(|e| anyhow::anyhow!("store {}: {e}", self.redacted()))?,
                )
            }
        })
    }

    /// Whether only this node uses the store (an embedded file), so that a node may recover
    /// every run held under its name when it starts.
    pub fn exclusive(&self) -> bool {
        matches!(self, StoreUrl::Sqlite { .. })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/kairos").unwrap(),
            StoreUrl::Sqlite {
                dir: "/var/lib/kairos".into()
            }
        );
        assert!(StoreUrl::parse("sqlite://relative").is_err());
        assert_eq!(
            StoreUrl::parse("postgres://u:secret@h/db?schema=team_a&sslmode=disable").unwrap(),
            StoreUrl::Postgres {
                url: "postgres://u:secret@h/db?sslmode=disable".into(),
                schema: Some("team_a".into())
            }
        );
        let e = StoreUrl::parse("mysql://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown scheme `mysql`"), "{e}");
        let e = StoreUrl::parse("u:secret@h").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
        let shown = format!(
            "{:?}",
            StoreUrl::parse("postgresql://u:secret@h/db").unwrap()
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
