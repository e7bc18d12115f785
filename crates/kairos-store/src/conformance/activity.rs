//! The activity log: entries read in order after a position, the head, pruning; and, under
//! concurrent appends on separate connections, a reader that follows the log sees every entry
//! once, never one committed behind a position it has passed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{T0, t};
use crate::*;

fn record(kind: &str, n: i64) -> ActivityRecord {
    ActivityRecord {
        at: t(T0) + jiff::SignedDuration::from_secs(n),
        node: "n1".into(),
        kind: kind.into(),
        namespace: Some("default".into()),
        job: Some("j".into()),
        run_id: Some(n),
        data: format!(r#"{{"n":{n}}}"#),
    }
}

/// The entries after `after`, once there are `n` (or after 10 s): on PostgreSQL an entry is
/// read only once every older transaction of the database has ended, and other tests' may
/// still run.
async fn read_n(store: &Arc<dyn Store>, after: ActivityCursor, n: usize) -> Vec<ActivityEntry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let entries = store
            .activity_read(ActivityReadParams { after, limit: 1000 })
            .await
            .unwrap();
        if entries.len() >= n || tokio::time::Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn activity_is_read_in_order_after_a_position(store: Arc<dyn Store>) {
    assert!(
        read_n(&store, ActivityCursor::default(), 0)
            .await
            .is_empty()
    );
    store
        .activity_append(vec![record("run.queued", 1), record("run.started", 2)])
        .await
        .unwrap();
    store
        .activity_append(vec![record("run.finished", 3)])
        .await
        .unwrap();
    let all = read_n(&store, ActivityCursor::default(), 3).await;
    let kinds: Vec<&str> = all.iter().map(|e| e.record.kind.as_str()).collect();
    assert_eq!(kinds, ["run.queued", "run.started", "run.finished"]);
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert_eq!(all[2].record, record("run.finished", 3));
    let after_first = read_n(&store, all[0].cursor, 2).await;
    assert_eq!(after_first.len(), 2);
    let limited = store
        .activity_read(ActivityReadParams {
            after: ActivityCursor::default(),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);

    // From the head on: only what comes after.
    let head = store.activity_head().await.unwrap();
    store
        .activity_append(vec![record("job.changed", 4)])
        .await
        .unwrap();
    let new = read_n(&store, head, 1).await;
    let kinds: Vec<&str> = new.iter().map(|e| e.record.kind.as_str()).collect();
    assert_eq!(kinds, ["job.changed"]);

    assert!(store.activity_contains(all[0].cursor).await.unwrap());
    // Pruned by time, a batch at a time: the first batch (two entries) goes.
    let pruned = store
        .activity_prune(ActivityPruneParams {
            before: t(T0) + jiff::SignedDuration::from_secs(3),
            keep_at_most: 100,
            keep_from: None,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert!(!store.activity_contains(all[0].cursor).await.unwrap());
    assert_eq!(read_n(&store, ActivityCursor::default(), 2).await.len(), 2);
    // And beyond a count of batches: the oldest go.
    let pruned = store
        .activity_prune(ActivityPruneParams {
            before: t(T0),
            keep_at_most: 1,
            keep_from: None,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let left = read_n(&store, ActivityCursor::default(), 1).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].record.kind, "job.changed");
    // A log quiet for longer than the retention keeps its newest batch: a reader at its end
    // still holds a known position.
    let pruned = store
        .activity_prune(ActivityPruneParams {
            before: t(T0) + jiff::SignedDuration::from_hours(24),
            keep_at_most: 100,
            keep_from: None,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 0);
    assert!(store.activity_contains(left[0].cursor).await.unwrap());
    // A reader's position to keep (the alert evaluator's): it and what follows stay, however
    // old; the batches before it go.
    store
        .activity_append(vec![record("run.queued", 10)])
        .await
        .unwrap();
    store
        .activity_append(vec![record("run.finished", 11)])
        .await
        .unwrap();
    let three = read_n(&store, ActivityCursor::default(), 3).await;
    assert_eq!(three.len(), 3);
    let far = t(T0) + jiff::SignedDuration::from_hours(24);
    let pruned = store
        .activity_prune(ActivityPruneParams {
            before: far,
            keep_at_most: 100,
            keep_from: Some(left[0].cursor.id),
        })
        .await
        .unwrap();
    assert_eq!(pruned, 0, "everything from the kept position on stays");
    let pruned = store
        .activity_prune(ActivityPruneParams {
            before: far,
            keep_at_most: 100,
            keep_from: Some(three[1].cursor.id),
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert!(!store.activity_contains(three[0].cursor).await.unwrap());
    assert!(store.activity_contains(three[1].cursor).await.unwrap());
    // The size limit still applies.
    let pruned = store
        .activity_prune(ActivityPruneParams {
            before: far,
            keep_at_most: 1,
            keep_from: Some(three[1].cursor.id),
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert!(store.activity_contains(three[2].cursor).await.unwrap());
}

pub async fn activity_concurrent_appends_are_each_read_once(store: Arc<dyn Store>) {
    const WRITERS: i64 = 4;
    const BATCHES: i64 = 20;
    const PER_BATCH: i64 = 3;
    let total = (WRITERS * BATCHES * PER_BATCH) as usize;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let batch = (0..PER_BATCH)
                    .map(|i| record("run.queued", (w * BATCHES + b) * PER_BATCH + i))
                    .collect();
                store.activity_append(batch).await.unwrap();
                if b % 3 == w % 3 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // A reader following the log as it grows.
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut cursor = ActivityCursor::default();
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while seen.len() < total && tokio::time::Instant::now() < deadline {
                let entries = store
                    .activity_read(ActivityReadParams {
                        after: cursor,
                        limit: 7,
                    })
                    .await
                    .unwrap();
                for e in entries {
                    assert!(e.cursor > cursor, "read out of order");
                    cursor = e.cursor;
                    seen.push(e.record.run_id.unwrap());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    assert_eq!(seen.len(), total, "every entry read");
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), total, "each entry once");
}
