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
