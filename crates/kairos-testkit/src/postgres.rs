//! PostgreSQL stores for tests, isolated by schema: each test gets a schema of its own
//! (`kt_<random hex>`) on the database at `KAIROS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped when its guard drops.
//!
//! Without a reachable server the factories return `None` and print why to stderr, so that
//! `cargo test` passes on a machine without PostgreSQL; with `KAIROS_REQUIRE_SERVICES=1` (CI)
//! they panic instead, so that a missing service fails the run rather than skipping it.
//!
//! Cleanup: the guard's `Drop` ends the test's own connections (they carry the schema name, or
//! the schema name and a suffix, as their `application_name`; a transaction a test left open
//! would otherwise block the drop)
//! and drops the schema, on a thread with its own runtime, since `Drop` cannot await. A test
//! process killed before its guards drop leaves `kt_*` schemas behind; they hold only test
//! data, and `DROP SCHEMA kt_… CASCADE` removes one.

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::Duration;

use kairos_store::Store;
use kairos_store_postgres::{PostgresConfig, PostgresStore, redact};
use tokio_postgres::NoTls;

/// The variable naming the test database.
pub const URL_ENV: &str = "KAIROS_TEST_POSTGRES_URL";
/// The test database when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Set to `1` to fail, not skip, when a service is unreachable.
pub const REQUIRE_ENV: &str = "KAIROS_REQUIRE_SERVICES";

/// Connections of a test store's pool.
const POOL_SIZE: usize = 8;

/// How long reaching the server, or cleaning up, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh schema name on the test database, dropped (with everything in it) on `Drop`.
#[derive(Debug)]
pub struct TempSchema {
    /// The schema's name, `kt_` and 32 hex digits.
    pub name: String,
    /// The test database's URL, as configured.
    pub base_url: String,
}

impl TempSchema {
    /// A store configuration for this schema: its connections are named after it (so that the
    /// cleanup can end them), with a small pool.
    pub fn config(&self) -> PostgresConfig {
        self.config_with_name(&self.name)
    }

    /// [`Self::config`] for another store on the same schema (another "node") whose connections
    /// a test tells apart: their `application_name` is `<schema>_<node>`.
    pub fn config_as(&self, node: &str) -> PostgresConfig {
        self.config_with_name(&format!("{}_{node}", self.name))
    }

    /// The test server's address (its first host, a TCP one), for a [`crate::proxy::TcpProxy`]
    /// in front of it.
    pub fn server_addr(&self) -> std::net::SocketAddr {
        let config: tokio_postgres::Config = self.base_url.parse().expect("the test URL parses");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let host = if host == "localhost" {
            "127.0.0.1".to_owned()
        } else {
            host
        };
        format!("{host}:{port}").parse().expect("a TCP address")
    }

    /// [`Self::config`] through `addr` (a proxy in front of the server) instead of the server.
    pub fn config_via(&self, addr: std::net::SocketAddr) -> PostgresConfig {
        let config: tokio_postgres::Config = self.base_url.parse().expect("the test URL parses");
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut url = format!(
            "host={} port={} application_name={}",
            addr.ip(),
            addr.port(),
            quote(&self.name)
        );
        if let Some(user) = config.get_user() {
            url.push_str(&format!(" user={}", quote(user)));
        }
        if let Some(db) = config.get_dbname() {
            url.push_str(&format!(" dbname={}", quote(db)));
        }
        if let Some(password) = config.get_password() {
            url.push_str(&format!(
                " password={}",
                quote(&String::from_utf8_lossy(password))
            ));
        }
        PostgresConfig {
            url,
            schema: self.name.clone(),
            pool_size: POOL_SIZE,
        }
    }

    fn config_with_name(&self, application_name: &str) -> PostgresConfig {
        let sep = if !self.base_url.contains("://") {
            " "
        } else if self.base_url.contains('?') {
            "&"
        } else {
            "?"
        };
        PostgresConfig {
            url: format!("{}{sep}application_name={application_name}", self.base_url),
            schema: self.name.clone(),
            pool_size: POOL_SIZE,
        }
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        let dropped = kairos_store_postgres::admin::drop_schema_blocking(
            &self.base_url,
            &self.name,
            TIMEOUT * 3,
        );
        if let Err(e) = dropped {
            eprintln!(
                "could not drop test schema {} (drop it by hand): {e}",
                self.name
            );
        }
    }
}

/// A connection whose driver task runs on the current runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio::time::timeout(TIMEOUT, tokio_postgres::connect(url, NoTls))
        .await
        .map_err(|_| "timed out connecting".to_owned())?
        .map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })?;
    tokio::spawn(connection);
    Ok(client)
}

/// A fresh schema name on the test database, or `None` (after saying why on stderr) when the
/// server cannot be reached and [`REQUIRE_ENV`] is not `1`.
pub async fn temp_schema() -> Option<TempSchema> {
    let url = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let probe = async {
        connect(&url)
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = probe.await {
        let msg = format!("PostgreSQL at {} is unreachable: {e}", redact(&url));
        if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!("{msg} ({REQUIRE_ENV}=1: services are required)");
        }
        eprintln!("skipped: {msg}; set {URL_ENV} to a test database to run this test");
        return None;
    }
    Some(TempSchema {
        name: format!("kt_{}", uuid::Uuid::new_v4().simple()),
        base_url: url,
    })
}

/// A migrated PostgreSQL store in a schema of its own; the schema is dropped with the guard.
pub struct TempPostgres {
    pub store: Arc<dyn Store>,
    /// The same store, for PostgreSQL-specific calls.
    pub postgres: PostgresStore,
    /// Declared last: dropped after the store's handles.
    pub schema: TempSchema,
}

impl Borrow<Arc<dyn Store>> for TempPostgres {
    fn borrow(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// A migrated store in a fresh schema, or `None` (see [`temp_schema`]) without a server.
/// Panics if the server is reachable but the store cannot be set up (that is a bug to see).
pub async fn temp_postgres() -> Option<TempPostgres> {
    let schema = temp_schema().await?;
    let postgres = PostgresStore::connect(schema.config())
        .await
        .unwrap_or_else(|e| panic!("cannot set up test schema {}: {e}", schema.name));
    Some(TempPostgres {
        store: Arc::new(postgres.clone()),
        postgres,
        schema,
    })
}

/// [`temp_postgres`] with every connection of the store through a [`crate::proxy::TcpProxy`],
/// which a test cuts or refuses (a partition, a database restarting). Declared first in the
/// pair: drop the store before the proxy.
pub async fn temp_postgres_behind_proxy() -> Option<(TempPostgres, crate::proxy::TcpProxy)> {
    let schema = temp_schema().await?;
    let proxy = crate::proxy::TcpProxy::start(schema.server_addr())
        .await
        .expect("a proxy on a free port");
    let postgres = PostgresStore::connect(schema.config_via(proxy.addr))
        .await
        .unwrap_or_else(|e| panic!("cannot set up test schema {}: {e}", schema.name));
    Some((
        TempPostgres {
            store: Arc::new(postgres.clone()),
            postgres,
            schema,
        },
        proxy,
    ))
}
