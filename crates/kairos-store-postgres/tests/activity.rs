//! The activity log's order on PostgreSQL: an entry whose transaction took its id first but
//! commits last is still read by a reader that has already read past a later id.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

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
async fn an_entry_committed_late_is_not_skipped() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    // A writer takes its transaction id and the first id, and has not committed yet.
    let mut slow = connect(&pg.schema.config().url).await.unwrap();
    slow.batch_execute(&format!("SET search_path TO {}", pg.schema.name))
        .await
        .unwrap();
    let tx = slow.transaction().await.unwrap();
    tx.execute(
        r#"INSERT INTO activity_batches (at, node, entries) VALUES (now(), 'n1', '[[0,"run.queued",null,null,1,{}]]')"#,
        &[],
    )
    .await
    .unwrap();
    // Another commits the second.
    store.activity_append(vec![record(2)]).await.unwrap();
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
    // While the first is uncommitted, a reader may not pass it.
    follow(&mut cursor, &mut seen).await;
    assert!(seen.is_empty(), "read past a running transaction: {seen:?}");
    tx.commit().await.unwrap();
    follow(&mut cursor, &mut seen).await;
    assert_eq!(seen, [1, 2]);
}
