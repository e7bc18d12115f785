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

/// The definition of the index of waiting exclusive runs, and whether it is valid.
async fn exclusive_index(client: &tokio_postgres::Client, schema: &str) -> Vec<(String, bool)> {
    client
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
        .collect()
}

/// Upgrading a schema that other nodes write: migration 14 rebuilds an index of `runs`
/// concurrently, so while the build waits for a transaction that writes `runs`, other writes
/// to `runs` go through (a plain `CREATE INDEX` would queue its lock behind that transaction,
/// and every later write behind its lock). A build interrupted half-way is finished by the
/// next node to start, and a node starting at the same time waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_rebuilds_an_index_does_not_hold_writes_to_runs() {
    let Some(schema) = temp_schema().await else {
        return;
    };
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
        .unwrap();
    let in_schema = || async {
        let client = kairos_testkit::postgres::connect(&schema.base_url)
            .await
            .unwrap();
        client
            .batch_execute(&format!("SET search_path = {}", schema.name))
            .await
            .unwrap();
        client
    };
    let admin = in_schema().await;
    // The schema as version 13 left it (the index in run_at order), with a build of the new
    // index that was interrupted (left invalid) and an old node's transaction writing `runs`.
    admin
        .batch_execute(
            "DELETE FROM schema_migrations WHERE version = 14; \
             DROP INDEX runs_queued_exclusive; \
             CREATE INDEX runs_queued_exclusive ON runs (job_id, run_at, id) \
               WHERE state = 'queued' AND exclusive; \
             CREATE INDEX runs_queued_exclusive_by_due ON runs (job_id, scheduled_for, id) \
               WHERE state = 'queued' AND exclusive; \
             UPDATE pg_index SET indisvalid = false WHERE indexrelid = \
               'runs_queued_exclusive_by_due'::regclass",
        )
        .await
        .unwrap();
    let insert = format!(
        "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
         execution, created_at) VALUES ({}, now() + $1 * interval '1 second', now(), 'queued', \
         'manual', 1, 'at_least_once', now())",
        job.id
    );
    let old_node = in_schema().await;
    old_node.batch_execute("BEGIN").await.unwrap();
    old_node.execute(&insert, &[&1.0f64]).await.unwrap();

    let upgrade = tokio::spawn(PostgresStore::connect(schema.config()));
    // A second node of the new version starts at the same time: it waits for the first one's
    // migration without holding a snapshot that the build would wait for.
    let other = tokio::spawn(PostgresStore::connect(schema.config_as("other")));
    // Wait until the new node's build waits for the old node's transaction.
    let started = std::time::Instant::now();
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%INDEX %runs_queued_exclusive_by_due%' \
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
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Another node writes `runs` meanwhile, and is not held.
    let writer = in_schema().await;
    writer
        .batch_execute("SET statement_timeout = '5s'")
        .await
        .unwrap();
    writer.execute(&insert, &[&2.0f64]).await.unwrap();
    writer
        .execute(
            "UPDATE runs SET run_at = run_at WHERE job_id = $1",
            &[&job.id],
        )
        .await
        .unwrap();
    old_node.batch_execute("COMMIT").await.unwrap();
    let within = |task: tokio::task::JoinHandle<Result<PostgresStore, StoreError>>| async move {
        tokio::time::timeout(std::time::Duration::from_secs(30), task)
            .await
            .expect("no deadlock between the two starting nodes")
            .unwrap()
    };
    let upgraded = within(upgrade).await.expect("the upgrade finishes");
    let other = within(other).await.expect("the other node starts too");
    assert_eq!(
        exclusive_index(&admin, &schema.name).await,
        [(
            format!(
                "CREATE INDEX runs_queued_exclusive ON {}.runs USING btree (job_id, scheduled_for, id) \
                 WHERE ((state = 'queued'::text) AND exclusive)",
                schema.name
            ),
            true
        )]
    );
    let recorded: i64 = admin
        .query_one(
            "SELECT count(*) FROM schema_migrations WHERE version = 14",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 1);
    upgraded.close();
    other.close();
    store.close();
}
