//! Connecting: configuration, the connection pool, the schema and its migrations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use kairos_store::{Change, StoreError, StoreResult};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::changes;
use crate::leader_lock::LeaderLock;
use crate::rows::{describe, pg_error, pool_error};

/// The schema the store's tables live in unless configured otherwise.
pub const DEFAULT_SCHEMA: &str = "kairos";
/// Connections in the pool unless configured otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The schema, one migration per entry; `schema_migrations` records the versions applied.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_cluster.sql")),
    (3, include_str!("../migrations/0003_leader_lock.sql")),
    (
        4,
        include_str!("../migrations/0004_exclusive_due_index.sql"),
    ),
    (5, include_str!("../migrations/0005_held_runs_index.sql")),
    (6, include_str!("../migrations/0006_workflows.sql")),
    (7, include_str!("../migrations/0007_events.sql")),
    (8, include_str!("../migrations/0008_dependencies.sql")),
    (9, include_str!("../migrations/0009_progress.sql")),
    (10, include_str!("../migrations/0010_calendars.sql")),
    (11, include_str!("../migrations/0011_activity.sql")),
    (12, include_str!("../migrations/0012_sessions.sql")),
    (13, include_str!("../migrations/0013_alerts.sql")),
    (
        14,
        include_str!("../migrations/0014_exclusive_due_time_order.sql"),
    ),
    (15, include_str!("../migrations/0015_begun.sql")),
];

/// How long a new connection may take before the attempt fails (unless the URL says).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a free pooled connection before `Unavailable`.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// TCP keepalive of the dedicated connections (change feed, leader lock), unless the URL asks
/// for less: they are idle for long stretches, and a peer that vanished without closing the
/// connection (a host powered off, a network cut) is noticed within about a minute instead of
/// the system's default of two hours.
const DEDICATED_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const DEDICATED_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const DEDICATED_KEEPALIVE_RETRIES: u32 = 3;

/// Where the store lives.
#[derive(Clone)]
pub struct PostgresConfig {
    /// A libpq-style connection string: `postgres://user:password@host:port/db?…` or
    /// `host=… user=… dbname=…`. TLS is not supported yet (`sslmode=disable` or `prefer`).
    pub url: String,
    /// The schema holding the store's tables, created if missing: `[a-z_][a-z0-9_]{0,62}`, not
    /// starting with `pg_`. Several Kairos clusters can share a database, one schema each.
    /// Default: `kairos`.
    pub schema: String,
    /// Most connections open at once (per node). Default: 16.
    pub pool_size: usize,
}

impl PostgresConfig {
    /// The default schema and pool size on the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

/// Shows no password.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// `url` without its password (URL form: `user:secret@` becomes `user:***@`; key-value form:
/// `password=secret` becomes `password=***`).
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // The user information ends at the last `@` (a password may hold `/`, `?` or `#`
        // unescaped; an `@` further on, in a parameter, only hides more than needed).
        let (mut out, tail) = match rest.rsplit_once('@') {
            Some((userinfo, tail)) => match userinfo.split_once(':') {
                Some((user, _)) => (format!("{scheme}://{user}:***@"), tail),
                None => (format!("{scheme}://{userinfo}@"), tail),
            },
            None => (format!("{scheme}://"), rest),
        };
        // `?password=…` among the parameters.
        match tail.split_once('?') {
            Some((path, params)) => {
                let params: Vec<String> = params
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => kv.to_owned(),
                    })
                    .collect();
                out.push_str(path);
                out.push('?');
                out.push_str(&params.join("&"));
            }
            None => out.push_str(tail),
        }
        return out;
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            ("postgres://u:secret@h/db", "postgres://u:***@h/db"),
            ("postgres://u:ab/cd@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:a?b#c@h/db", "postgres://u:***@h/db"),
            (
                "postgres://h/db?password=secret&x=1",
                "postgres://h/db?password=***&x=1",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("host=h password=secret", "host=h password=***"),
        ] {
            assert_eq!(redact(url), shown);
        }
    }
}

/// The PostgreSQL store. Cheap to clone (the pool, the change feed and the leader lock are
/// shared by the clones). Its background connections end when it is closed or its last clone is
/// dropped.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    schema: Arc<str>,
    /// First key of the advisory locks a claim takes on jobs (`pg_advisory_xact_lock(class,
    /// job)`), derived from the schema so that clusters in other schemas do not contend.
    pub(crate) claim_lock_class: i32,
    /// Where this node's next claim may start its walk of the queue, and since when (see
    /// `PostgresStore::run_claim`).
    pub(crate) claim_start: Arc<std::sync::Mutex<Option<(crate::batch::ClaimStart, Instant)>>>,
    /// Whether this node's last claim saw exclusive runs waiting (see
    /// `PostgresStore::run_claim`); true until a claim saw none.
    pub(crate) claim_exclusive: Arc<std::sync::atomic::AtomicBool>,
    /// The `LISTEN/NOTIFY` channel of the schema, shared by every node on it.
    pub(crate) channel: Arc<str>,
    /// The change feed; the listener task holds the only strong sender, so that receivers see
    /// the feed end when the task does.
    feed: broadcast::WeakSender<Change>,
    /// The session advisory lock on leadership and the node ids this instance elected.
    pub(crate) leader_lock: Arc<LeaderLock>,
    /// Cancelled by [`Self::close`], or when the last clone drops: ends the listener and the
    /// leader lock's session.
    stop: CancellationToken,
    _stop_on_drop: Arc<DropGuard>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PostgresStore {
    /// Connects, creates the schema if missing and applies the migrations not applied yet.
    ///
    /// Several nodes may start at once: the migrations run under an advisory lock derived from
    /// the schema name, so they apply once and the others wait and find them applied (see
    /// `migrate`). A bad URL or schema name, or a database that cannot be reached,
    /// is `Unavailable` with the reason.
    pub async fn connect(config: PostgresConfig) -> StoreResult<Self> {
        validate_schema(&config.schema)?;
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| {
            StoreError::Unavailable(format!(
                "invalid PostgreSQL URL {}: {}",
                redact(&config.url),
                describe(&e)
            ))
        })?;
        // The session default, set at connection start: it survives `RESET ALL` and
        // `DISCARD ALL`, unlike a `SET` after connecting.
        let search_path = format!("-csearch_path={}", quote(&config.schema));
        let options = match pg.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {search_path}"),
            _ => search_path,
        };
        pg.options(options);
        if pg.get_application_name().is_none() {
            pg.application_name("kairos");
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        let dedicated = dedicated_config(&pg);
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL connection pool: {e}")))?;
        let stop = CancellationToken::new();
        let schema = config.schema;
        let channel = changes::channel_name(&schema);
        let (feed, listening) =
            changes::spawn_listener(dedicated.clone(), channel.clone(), stop.clone());
        let leader_lock = LeaderLock::new(
            dedicated,
            fnv1a(&format!("kairos.leader.{schema}")) as i64,
            stop.clone(),
            feed.clone(),
        );
        let store = Self {
            pool,
            claim_lock_class: fnv1a(&format!("kairos.claim.{schema}")) as i32,
            claim_start: Arc::default(),
            claim_exclusive: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            schema: schema.into(),
            channel: channel.into(),
            feed,
            leader_lock: Arc::new(leader_lock),
            _stop_on_drop: Arc::new(stop.clone().drop_guard()),
            stop,
        };
        store.migrate().await?;
        // Writes made once `connect` returns reach this store's feed: wait for its LISTEN. A
        // feed that cannot listen yet only delays wake-ups (every service also polls); it keeps
        // trying, and reports `Resync` once it listens.
        match tokio::time::timeout(CONNECT_TIMEOUT, listening).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(reason))) => tracing::warn!(
                schema = %store.schema, %reason,
                "the change feed cannot listen yet; retrying in the background"
            ),
            Ok(Err(_)) | Err(_) => tracing::warn!(
                schema = %store.schema,
                "the change feed is not listening yet; retrying in the background"
            ),
        }
        Ok(store)
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes the store: idle pooled connections are dropped and later calls fail as
    /// `Unavailable`; the change feed ends (its receivers see `Closed`) and the leader lock's
    /// session closes, which releases the lock (a leader that closes without resigning is
    /// succeeded at once, not after its lease). Every clone is closed.
    pub fn close(&self) {
        self.pool.close();
        self.stop.cancel();
    }

    /// A receiver of the change feed; one that ends at once if the store is closed.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        match self.feed.upgrade() {
            Some(sender) => sender.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// A pooled connection for a transaction that its first statements begin (see [`Begun`]).
    pub(crate) async fn begun(&self) -> StoreResult<Begun> {
        Ok(Begun {
            client: Some(self.client().await?),
        })
    }

    /// Applies the migrations not applied yet, each in a transaction of its own with its
    /// version.
    ///
    /// On a schema already in use (migrations applied before), other nodes keep writing
    /// meanwhile, so no migration may hold their writes for long:
    /// - a migration marked [`NO_TRANSACTION`] runs its statements one by one outside any
    ///   transaction (`CREATE INDEX CONCURRENTLY`, so that building an index of `runs` does not
    ///   hold every other node's writes for the time of a scan of the history), then records
    ///   its version. It must be safe to run again from any statement: a node that dies in the
    ///   middle leaves the rest to the next node to start. Indexes left invalid by an
    ///   interrupted concurrent build are dropped before it runs (only migrations build
    ///   indexes, and they take turns), and one that PostgreSQL ends as a deadlock gives the
    ///   lock up for a moment and runs again;
    /// - a transactional migration waits at most [`MIGRATION_LOCK_TIMEOUT`] for each table
    ///   lock (an `ALTER TABLE` queues behind a long transaction on its table, and every write
    ///   queues behind it), then rolls back and tries again.
    ///
    /// On a new schema the tables are empty: every migration runs in its transaction, marked
    /// ones without `CONCURRENTLY` (a concurrent build waits for every older snapshot in the
    /// database, other applications' included).
    ///
    /// Nodes starting together take turns through a session advisory lock derived from the
    /// schema name. The lock is asked for with `pg_try_advisory_lock`, a short statement at a
    /// time: a session blocked in `pg_advisory_lock` would hold a snapshot, which a concurrent
    /// index build of the node holding the lock waits for (a deadlock). It is released at the
    /// end, and the connection is taken out of the pool and closed, which releases it on every
    /// other way out.
    async fn migrate(&self) -> StoreResult<()> {
        let schema = &*self.schema;
        let mut client = Object::take(self.client().await?);
        let key = fnv1a(&format!("kairos.migrate.{schema}")) as i64;
        Migration {
            schema,
            key,
            client: &mut client,
        }
        .run()
        .await
        .map_err(|e| match e {
            StoreError::Internal(msg) => StoreError::Unavailable(format!(
                "cannot set up schema `{schema}` in PostgreSQL: {msg}"
            )),
            other => other,
        })
    }
}

/// The first line of a migration that runs outside a transaction on a schema in use (see
/// [`PostgresStore::migrate`]). Its statements are separated by `;`, which must not appear
/// anywhere else in it (comments included), and only its `INDEX CONCURRENTLY` may say
/// `CONCURRENTLY`.
const NO_TRANSACTION: &str = "-- kairos: no transaction";

/// How often a node starting while another migrates asks for the migration lock again.
const MIGRATION_LOCK_POLL: Duration = Duration::from_millis(50);
/// After how long a node waiting for another's migration says so (and again as often).
const MIGRATION_WAIT_REPORT: Duration = Duration::from_secs(10);
/// How long a transactional migration on a schema in use waits for a table lock before it
/// rolls back and tries again.
const MIGRATION_LOCK_TIMEOUT: &str = "2s";
/// How long a migration waits before it tries again after a lock timeout or a deadlock.
const MIGRATION_RETRY: Duration = Duration::from_millis(500);

/// One node's pass over the migrations, on a connection of its own.
struct Migration<'a> {
    schema: &'a str,
    key: i64,
    client: &'a mut deadpool_postgres::ClientWrapper,
}

impl Migration<'_> {
    async fn run(&mut self) -> StoreResult<()> {
        let schema = self.schema;
        self.lock().await?;
        let q = quote(schema);
        // A URL's `statement_timeout` does not apply to building an index.
        self.client
            .batch_execute(&format!(
                "SET statement_timeout = 0; CREATE SCHEMA IF NOT EXISTS {q}; \
                 SET search_path TO {q}; \
                 CREATE TABLE IF NOT EXISTS schema_migrations ( \
                   version integer PRIMARY KEY, \
                   applied_at timestamptz NOT NULL DEFAULT now())"
            ))
            .await
            .map_err(pg_error)?;
        let applied: Vec<i32> = self
            .client
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        if let Some(newer) = applied.iter().copied().find(|v| *v > known) {
            return Err(StoreError::Unavailable(format!(
                "schema `{schema}` is at version {newer}, newer than this Kairos knows \
                 ({known}); run a newer Kairos on it"
            )));
        }
        let in_use = !applied.is_empty();
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            loop {
                let done = match (in_use, no_transaction(sql)) {
                    (true, Some(statements)) => {
                        self.outside_transaction(*version, &statements).await
                    }
                    (_, Some(statements)) => {
                        let sql = statements
                            .join(";\n")
                            .replace("INDEX CONCURRENTLY", "INDEX");
                        self.in_transaction(*version, &sql, false).await
                    }
                    (_, None) => self.in_transaction(*version, sql, in_use).await,
                };
                match done {
                    Ok(()) => break,
                    Err(e) if retryable(&e) => {
                        tracing::warn!(
                            schema, version, error = %describe(&e),
                            "a migration gave way to other sessions; trying again"
                        );
                        // Others (a node of an older version waiting for the lock, a long
                        // transaction) get their turn first.
                        self.unlock().await?;
                        tokio::time::sleep(MIGRATION_RETRY).await;
                        self.lock().await?;
                    }
                    Err(e) => return Err(pg_error(e)),
                }
            }
            tracing::info!(schema, version, "applied PostgreSQL store migration");
        }
        self.unlock().await
    }

    async fn lock(&mut self) -> StoreResult<()> {
        let started = Instant::now();
        let mut report = started + MIGRATION_WAIT_REPORT;
        loop {
            let locked: bool = self
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
                .await
                .map_err(pg_error)?
                .get(0);
            if locked {
                return Ok(());
            }
            if Instant::now() >= report {
                tracing::info!(
                    schema = self.schema,
                    waited_s = started.elapsed().as_secs(),
                    "waiting for another node's migration of the schema"
                );
                report += MIGRATION_WAIT_REPORT;
            }
            tokio::time::sleep(MIGRATION_LOCK_POLL).await;
        }
    }

    async fn unlock(&mut self) -> StoreResult<()> {
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn in_transaction(
        &mut self,
        version: i32,
        sql: &str,
        bounded: bool,
    ) -> Result<(), tokio_postgres::Error> {
        let tx = self.client.transaction().await?;
        if bounded {
            tx.batch_execute(&format!(
                "SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'"
            ))
            .await?;
        }
        tx.batch_execute(sql).await?;
        tx.execute(RECORD_MIGRATION, &[&version]).await?;
        tx.commit().await
    }

    async fn outside_transaction(
        &mut self,
        version: i32,
        statements: &[String],
    ) -> Result<(), tokio_postgres::Error> {
        tracing::info!(
            schema = self.schema,
            version,
            "applying a PostgreSQL store migration that builds indexes concurrently: it waits \
             for the transactions older than it in this database to end, and other nodes keep \
             working meanwhile"
        );
        let invalid = self
            .client
            .query(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND NOT i.indisvalid",
                &[&self.schema],
            )
            .await?;
        for row in invalid {
            let index: String = row.get(0);
            self.client
                .batch_execute(&format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS {}",
                    quote(&index)
                ))
                .await?;
        }
        for statement in statements {
            self.client.batch_execute(statement).await?;
        }
        self.client
            .execute(RECORD_MIGRATION, &[&version])
            .await
            .map(drop)
    }
}

const RECORD_MIGRATION: &str = "INSERT INTO schema_migrations (version) VALUES ($1)";

/// Whether a migration that failed this way runs again: it waited too long for a lock, or
/// PostgreSQL chose it to end a deadlock.
fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// The statements of a migration marked [`NO_TRANSACTION`] (split at `;`, without their
/// comment lines, blank ones dropped), or `None` for a migration that runs in a transaction.
fn no_transaction(sql: &str) -> Option<Vec<String>> {
    let rest = sql.strip_prefix(NO_TRANSACTION)?;
    Some(
        rest.split(';')
            .map(|piece| {
                piece
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim()
                    .to_owned()
            })
            .filter(|statement| !statement.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod migration_tests {
    use super::*;

    /// Only the marked migrations say `CONCURRENTLY`, only in `INDEX CONCURRENTLY`, so that a
    /// new schema can run them in a transaction.
    #[test]
    fn only_marked_migrations_build_concurrently() {
        let mut marked = 0;
        for (version, sql) in MIGRATIONS {
            let upper = sql.to_uppercase();
            match no_transaction(sql) {
                Some(statements) => {
                    marked += 1;
                    assert!(!statements.is_empty(), "migration {version}");
                    let plain = statements.join(";").replace("INDEX CONCURRENTLY", "INDEX");
                    assert!(
                        !plain.to_uppercase().contains("CONCURRENTLY"),
                        "migration {version}: only `INDEX CONCURRENTLY`"
                    );
                }
                None => assert!(!upper.contains("CONCURRENTLY"), "migration {version}"),
            }
        }
        assert_eq!(marked, 1, "migration 14");
        let statements = no_transaction(MIGRATIONS[13].1).unwrap();
        assert_eq!(statements.len(), 3, "{statements:?}");
        assert!(statements[0].starts_with("CREATE INDEX CONCURRENTLY IF NOT EXISTS"));
    }
}

/// The configuration of a dedicated (unpooled) connection: the pool's, with keepalives short
/// enough to notice a vanished peer (unless the URL asks for shorter ones).
fn dedicated_config(pg: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut dedicated = pg.clone();
    dedicated.keepalives(true);
    dedicated.keepalives_idle(pg.get_keepalives_idle().min(DEDICATED_KEEPALIVE_IDLE));
    if pg.get_keepalives_interval().is_none() {
        dedicated.keepalives_interval(DEDICATED_KEEPALIVE_INTERVAL);
    }
    if pg.get_keepalives_retries().is_none() {
        dedicated.keepalives_retries(DEDICATED_KEEPALIVE_RETRIES);
    }
    dedicated
}

/// Accepts `[a-z_][a-z0-9_]{0,62}` not starting with `pg_` (reserved by PostgreSQL).
pub(crate) fn validate_schema(schema: &str) -> StoreResult<()> {
    let mut chars = schema.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63
        && !schema.starts_with("pg_");
    if valid {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "invalid PostgreSQL schema name `{schema}`: use 1 to 63 lowercase letters, digits \
             and `_`, not starting with a digit or `pg_`"
        )))
    }
}

/// A validated schema name as a quoted identifier.
fn quote(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// 64-bit FNV-1a: a lock key every node derives alike from the same name (std's hasher makes no
/// promise of stability across Rust versions).
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A connection whose transaction begins with its first statements, not with a round trip of
/// its own: the first statement sent is a simple query `BEGIN; ...`, and the statements after
/// it go in the same pipeline (a transaction from `transaction()` waits for its `BEGIN` to
/// return before anything else is sent). On a hot path that saves a round trip per
/// transaction.
///
/// Whoever sends statements on it sends the `BEGIN` first and calls [`Begun::commit`] when they
/// all succeeded. Dropped without that (an error, a future that was cancelled), the connection
/// is closed instead of going back to the pool, so the server rolls the transaction back and
/// no other caller ever finds itself inside it.
pub(crate) struct Begun {
    client: Option<Object>,
}

impl Begun {
    pub(crate) fn client(&self) -> &Object {
        // Only `commit` and `drop` take it, and both consume the guard.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// Commits, or fails if a statement failed inside the transaction: PostgreSQL answers the
    /// `COMMIT` of an aborted transaction with a rollback, not an error, so a statement that
    /// fails there in an aborted transaction goes first (and the `COMMIT` is then skipped:
    /// the statements of one message stop at the first error).
    pub(crate) async fn commit(self) -> StoreResult<()> {
        self.send_commit().await?;
        self.committed();
        Ok(())
    }

    /// The `COMMIT` of [`Begun::commit`] alone, to send in the pipeline of the transaction's
    /// last statements (polled after them, so that it is sent after them); then
    /// [`Begun::committed`] once it succeeded. Dropped without that, the guard closes the
    /// connection, as when a statement fails; but a `COMMIT` already sent is carried out
    /// first (the connection sends what was queued before it closes), so a caller that
    /// pipelines it must accept a commit it did not see.
    pub(crate) async fn send_commit(&self) -> StoreResult<()> {
        self.client()
            .batch_execute("SELECT 1; COMMIT")
            .await
            .map_err(pg_error)
    }

    /// Gives the connection of a committed transaction back to the pool.
    pub(crate) fn committed(mut self) {
        self.client = None;
    }
}

impl Drop for Begun {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Detached from the pool; dropping it closes the connection.
            drop(Object::take(client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for ok in ["kairos", "_k", "kt_0123abcd", &"a".repeat(63)] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Kairos",
            "1k",
            "k-t",
            "k t",
            "pg_x",
            "a\"b",
            &"a".repeat(64),
        ] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
    }

    #[test]
    fn lock_keys_are_stable() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// A store on a fresh schema with one pooled connection (`None` without PostgreSQL).
    async fn one_connection() -> Option<(kairos_testkit::postgres::TempSchema, PostgresStore)> {
        let schema = kairos_testkit::postgres::temp_schema().await?;
        let given = schema.config();
        let mut config = PostgresConfig::new(given.url);
        config.schema = given.schema;
        config.pool_size = 1;
        let store = PostgresStore::connect(config).await.expect("connects");
        Some((schema, store))
    }

    /// This session's backend and its transaction id, if it is inside one that has one.
    async fn session(c: &Object) -> (i32, Option<i64>) {
        let row = c
            .query_one(
                "SELECT pg_backend_pid(), txid_current_if_assigned()::text::bigint",
                &[],
            )
            .await
            .expect("reads");
        (row.get(0), row.get(1))
    }

    async fn status(c: &Object, xid: i64) -> String {
        c.query_one("SELECT txid_status($1)", &[&xid])
            .await
            .expect("reads")
            .get(0)
    }

    /// Begins the transaction the way a claim does and gives it a transaction id.
    async fn begin(tx: &Begun) -> (i32, i64) {
        let ((), row) = futures::future::try_join(
            tx.client()
                .batch_execute("BEGIN; SET LOCAL enable_sort = off"),
            tx.client()
                .query_one("SELECT pg_backend_pid(), txid_current()", &[]),
        )
        .await
        .expect("begins");
        (row.get(0), row.get(1))
    }

    #[tokio::test]
    async fn a_begun_transaction_commits_and_its_connection_is_pooled_again() {
        let Some((_schema, store)) = one_connection().await else {
            return;
        };
        let tx = store.begun().await.unwrap();
        let (pid, xid) = begin(&tx).await;
        tx.commit().await.unwrap();
        let c = store.client().await.unwrap();
        assert_eq!(
            session(&c).await,
            (pid, None),
            "the same connection, outside it"
        );
        assert_eq!(status(&c, xid).await, "committed");
    }

    #[tokio::test]
    async fn a_begun_transaction_that_failed_does_not_commit() {
        let Some((_schema, store)) = one_connection().await else {
            return;
        };
        let tx = store.begun().await.unwrap();
        let (pid, xid) = begin(&tx).await;
        // A statement fails and its error is not passed on: the transaction is aborted.
        assert!(tx.client().batch_execute("SELECT 1 / 0").await.is_err());
        assert!(
            tx.commit().await.is_err(),
            "an aborted transaction is not committed"
        );
        let c = store.client().await.unwrap();
        assert_ne!(
            session(&c).await.0,
            pid,
            "its connection was not pooled again"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(&c, xid).await == "in progress" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status(&c, xid).await, "aborted");
    }

    #[tokio::test]
    async fn a_begun_transaction_dropped_uncommitted_never_goes_back_to_the_pool() {
        let Some((_schema, store)) = one_connection().await else {
            return;
        };
        let tx = store.begun().await.unwrap();
        let (pid, xid) = begin(&tx).await;
        // An error or a cancelled claim drops it without a commit.
        drop(tx);
        let c = store.client().await.unwrap();
        let (now_pid, now_xid) = session(&c).await;
        assert_ne!(
            now_pid, pid,
            "a new connection, not the one inside the transaction"
        );
        assert_eq!(now_xid, None);
        // The server rolls it back once it sees the connection closed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(&c, xid).await == "in progress" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status(&c, xid).await, "aborted");
    }
}
