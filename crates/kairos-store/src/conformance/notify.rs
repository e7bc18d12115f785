//! The change feed: a store that several nodes share announces every change of note; one that
//! only one node uses has no feed (the node wakes its own services).

use std::sync::Arc;
use std::time::Duration;

use super::{T0, create, insert, t};
use crate::*;

/// Waits for `want` on the feed (other changes may come first), failing after a while.
async fn expect(feed: &mut tokio::sync::broadcast::Receiver<Change>, want: Change, what: &str) {
    let wait = async {
        loop {
            match feed.recv().await {
                Ok(change) if change == want => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{what}: the feed closed: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: no {want:?} on the feed"));
}

/// Job changes, queued runs and cancels of running runs are announced on the feed, if the
/// store has one.
pub async fn changes_are_announced_on_the_feed(store: Arc<dyn Store>) {
    let Some(mut feed) = store.changes() else {
        return;
    };
    let job = create(&store, "noted", Some(t(T0))).await;
    expect(&mut feed, Change::Jobs, "a job created").await;
    let run = store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id: job.id,
            run: insert(t(T0)),
            params: None,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    expect(&mut feed, Change::Runs, "a run queued").await;
    let claimed = super::claim(&store, "n", 1, t(T0)).await;
    assert_eq!(claimed.len(), 1);
    store
        .run_cancel(RunCancelParams {
            run_id: run.id,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    expect(&mut feed, Change::Cancel, "a running run cancelled").await;
}
