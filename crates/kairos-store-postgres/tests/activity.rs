//! The activity log's order on PostgreSQL: a batch is appended under the log's advisory lock,
//! taken before its id, so a batch that took its id first and commits last holds the next
//! append back, and a reader never reads past it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::time::Duration;

use kairos_store::*;
use kairos_testkit::postgres::{connect, temp_postgres};

fn record(n: i64) -> ActivityRecord {
    ActivityRecord {
        at: "2026-03-01T00:00:00Z".parse().unwrap(),
        node: "n1".into(),
        kind: "run.queued".into(),
        namespace: None,
        job: None,
        run_id: Some(n),
        data: "{}".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_late_is_not_skipped() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    // A writer takes the lock and the first id, and has not committed yet.
    let mut slow = connect(&pg.schema.config().url).await.unwrap();
    slow.batch_execute(&format!("SET search_path TO {}", pg.schema.name))
        .await
        .unwrap();
    let tx = slow.transaction().await.unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&pg.postgres.activity_lock_key()],
    )
    .await
    .unwrap();
    tx.execute(
        r#"INSERT INTO activity_batches (at, node, entries) VALUES (now(), 'n1', '[[0,"run.queued",null,null,1,{}]]')"#,
        &[],
    )
    .await
    .unwrap();
    // Another append waits for it.
    let append = {
        let store = store.clone();
        tokio::spawn(async move { store.activity_append(vec![record(2)]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cursor = ActivityCursor::default();
    let mut seen = Vec::new();
    let follow = async |cursor: &mut ActivityCursor, seen: &mut Vec<i64>| {
        for e in store
            .activity_read(ActivityReadParams {
                after: *cursor,
                limit: 100,
            })
            .await
            .unwrap()
        {
            *cursor = e.cursor;
            seen.push(e.record.run_id.unwrap());
        }
    };
    follow(&mut cursor, &mut seen).await;
    assert!(seen.is_empty(), "read past an uncommitted batch: {seen:?}");
    tx.commit().await.unwrap();
    append.await.unwrap().unwrap();
    follow(&mut cursor, &mut seen).await;
    assert_eq!(seen, [1, 2]);
}
