//! Connecting and migrating: bad input is an error, never a panic; nodes that start together
//! migrate a schema once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use kairos_store::{Store, StoreError};
use kairos_store_postgres::{PostgresConfig, PostgresStore};
use kairos_testkit::postgres::temp_schema;

async fn unavailable(config: PostgresConfig) -> String {
    match PostgresStore::connect(config).await {
        Err(StoreError::Unavailable(msg)) => msg,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_urls_and_schemas_are_errors() {
    let msg = unavailable(PostgresConfig::new("postgres://u:secret@host:notaport/db")).await;
    assert!(msg.contains("invalid PostgreSQL URL"), "{msg}");
    assert!(!msg.contains("secret"), "no password in errors: {msg}");
    let msg = unavailable(PostgresConfig::new("not a url at all")).await;
    assert!(msg.contains("invalid PostgreSQL URL"), "{msg}");
    let mut bad_schema = PostgresConfig::new("postgres://postgres@127.0.0.1/test");
    bad_schema.schema = "Robert'); DROP TABLE jobs;--".into();
    let msg = unavailable(bad_schema).await;
    assert!(msg.contains("invalid PostgreSQL schema name"), "{msg}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_with_the_reason() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let msg = unavailable(PostgresConfig::new(
        "postgres://postgres@127.0.0.1:1/test?connect_timeout=5",
    ))
    .await;
    assert!(msg.contains("error connecting"), "{msg}");
    assert!(msg.contains("refused"), "the underlying error: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_safe_to_run_concurrently_and_again() {
    let Some(schema) = temp_schema().await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..4 {
        let config = schema.config();
        nodes.push(tokio::spawn(PostgresStore::connect(config)));
    }
    let mut stores = Vec::new();
    for node in nodes {
        stores.push(
            node.await
                .unwrap()
                .expect("a node starting with others connects"),
        );
    }
    // And again on a migrated schema.
    let again = PostgresStore::connect(schema.config()).await.unwrap();
    again.ping().await.unwrap();
    assert_eq!(again.schema(), schema.name);
    let (client, connection) = tokio_postgres::connect(&schema.config().url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let versions: Vec<i32> = client
        .query(
            &format!(
                "SELECT version FROM {}.schema_migrations ORDER BY version",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        "each migration applied once"
    );
    drop(client);
    for store in stores.iter().chain([&again]) {
        store.close();
    }
}

/// A migrated schema with a job, and a connection to the schema that can undo migration 14.
struct Upgrade {
    store: PostgresStore,
    admin: tokio_postgres::Client,
    job: i64,
}

async fn in_schema(schema: &kairos_testkit::postgres::TempSchema) -> tokio_postgres::Client {
    let client = kairos_testkit::postgres::connect(&schema.base_url)
        .await
        .unwrap();
    client
        .batch_execute(&format!("SET search_path = {}", schema.name))
        .await
        .unwrap();
    client
}

impl Upgrade {
    /// The schema as version 13 left it (the index of waiting exclusive runs in `run_at`
    /// order), plus `extra` (what an interrupted migration 14 left).
    async fn at_13(schema: &kairos_testkit::postgres::TempSchema, extra: &str) -> Self {
        let store = PostgresStore::connect(schema.config()).await.unwrap();
        let job = store
            .job_create(kairos_store::JobCreateParams {
                spec: kairos_store::conformance::spec("upgrade"),
                next_fire_at: None,
                actor: "test".into(),
                now: None,
                calendars: vec![],
            })
            .await
            .unwrap()
            .id;
        let admin = in_schema(schema).await;
        admin
            .batch_execute(&format!(
                "DELETE FROM schema_migrations WHERE version = 14; \
                 DROP INDEX runs_queued_exclusive; \
                 CREATE INDEX runs_queued_exclusive ON runs (job_id, run_at, id) \
                   WHERE state = 'queued' AND exclusive; {extra}"
            ))
            .await
            .unwrap();
        Self { store, admin, job }
    }

    /// An insert into `runs` of a run of the job, due `$1` seconds from now.
    fn insert(&self) -> String {
        format!(
            "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
             execution, created_at) VALUES ({}, now() + $1 * interval '1 second', now(), \
             'queued', 'manual', 1, 'at_least_once', now())",
            self.job
        )
    }

    /// Migration 14 is applied (once), and the index is the new one, valid, alone.
    async fn assert_applied(&self, schema: &str) {
        let indexes: Vec<(String, bool)> = self
            .admin
            .query(
                "SELECT pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname LIKE 'runs_queued_exclusive%' \
                   AND c.relname <> 'runs_queued_exclusive_due'",
                &[&schema],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            indexes,
            [(
                format!(
                    "CREATE INDEX runs_queued_exclusive ON {schema}.runs USING btree \
                     (job_id, scheduled_for, id) WHERE ((state = 'queued'::text) AND exclusive)"
                ),
                true
            )]
        );
        let recorded: i64 = self
            .admin
            .query_one(
                "SELECT count(*) FROM schema_migrations WHERE version = 14",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(recorded, 1);
    }
}

/// Waits for `task` (a node starting), at most 30 s.
async fn started(
    task: tokio::task::JoinHandle<Result<PostgresStore, StoreError>>,
    what: &str,
) -> PostgresStore {
    tokio::time::timeout(std::time::Duration::from_secs(30), task)
        .await
        .unwrap_or_else(|_| panic!("{what}: no deadlock, no endless wait"))
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Upgrading a schema that other nodes write: migration 14 rebuilds an index of `runs`
/// concurrently, so while the build waits for a transaction that writes `runs`, other writes
/// to `runs` go through (a plain `CREATE INDEX` would queue its lock behind that transaction,
/// and every later write behind its lock). A node of the new version starting at the same
/// time waits for the migration without blocking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_rebuilds_an_index_does_not_hold_writes_to_runs() {
    let Some(schema) = temp_schema().await else {
        return;
    };
    let up = Upgrade::at_13(&schema, "").await;
    // A node of the old version is in the middle of a transaction that writes `runs`.
    let old_node = in_schema(&schema).await;
    old_node.batch_execute("BEGIN").await.unwrap();
    old_node.execute(&up.insert(), &[&1.0f64]).await.unwrap();

    let upgrade = tokio::spawn(PostgresStore::connect(schema.config()));
    // A second node of the new version starts at the same time: it waits for the first one's
    // migration without holding a snapshot that the build would wait for.
    let other = tokio::spawn(PostgresStore::connect(schema.config_as("other")));
    // Wait until a node's build waits for the old node's transaction.
    let started_at = std::time::Instant::now();
    loop {
        let waiting: i64 = up
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND query LIKE 'CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_queued_exclusive_by_due%' \
                 AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            !upgrade.is_finished(),
            "the build waits for the open transaction"
        );
        assert!(started_at.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Another node writes `runs` meanwhile, and is not held.
    let writer = in_schema(&schema).await;
    writer
        .batch_execute("SET statement_timeout = '5s'")
        .await
        .unwrap();
    writer.execute(&up.insert(), &[&2.0f64]).await.unwrap();
    writer
        .execute(
            "UPDATE runs SET run_at = run_at WHERE job_id = $1",
            &[&up.job],
        )
        .await
        .unwrap();
    old_node.batch_execute("COMMIT").await.unwrap();
    let upgraded = started(upgrade, "the upgrading node").await;
    let other = started(other, "the other node").await;
    up.assert_applied(&schema.name).await;
    // Neither node holds the migration lock any more.
    let held: i64 = up
        .admin
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND pid IN (SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1)",
            &[&format!("{}%", schema.name)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "advisory locks held by the nodes after starting");
    upgraded.close();
    other.close();
    up.store.close();
}

/// A migration 14 that a dead node left half-done is finished by the next node to start,
/// whatever statement it stopped at: a build interrupted (an invalid index left), or the old
/// index dropped before the new one was renamed (the new one is kept, not built again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_index_migration_is_finished_by_the_next_node() {
    let Some(schema) = temp_schema().await else {
        return;
    };
    let up = Upgrade::at_13(
        &schema,
        "CREATE INDEX runs_queued_exclusive_by_due ON runs (job_id, scheduled_for, id) \
           WHERE state = 'queued' AND exclusive; \
         UPDATE pg_index SET indisvalid = false WHERE indexrelid = \
           'runs_queued_exclusive_by_due'::regclass",
    )
    .await;
    let node = started(
        tokio::spawn(PostgresStore::connect(schema.config())),
        "after an interrupted build",
    )
    .await;
    up.assert_applied(&schema.name).await;
    node.close();

    // Stopped after the old index was dropped: the valid new index is renamed, not rebuilt.
    up.admin
        .batch_execute(
            "DELETE FROM schema_migrations WHERE version = 14; \
             ALTER INDEX runs_queued_exclusive RENAME TO runs_queued_exclusive_by_due",
        )
        .await
        .unwrap();
    let before = oid(&up.admin).await;
    let node = started(
        tokio::spawn(PostgresStore::connect(schema.config())),
        "after the old index was dropped",
    )
    .await;
    up.assert_applied(&schema.name).await;
    assert_eq!(oid(&up.admin).await, before, "the same index, renamed");
    node.close();
    up.store.close();
}

/// The object id of the index of waiting exclusive runs, under either of its names.
async fn oid(admin: &tokio_postgres::Client) -> u32 {
    admin
        .query_one(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() \
               AND c.relname IN ('runs_queued_exclusive', 'runs_queued_exclusive_by_due')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}
