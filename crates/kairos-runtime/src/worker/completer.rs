//! Records finished attempts in batches: whatever has finished while the previous write was
//! running goes into the next transaction together.

use std::sync::Arc;
use std::time::Duration;

use kairos_store::{RunFinishParams, RunNext, Store};
use tokio::sync::{Notify, mpsc, oneshot};

use super::starts::{HOLD_AT_MOST, Starts};
use crate::clock::Clock;

/// Most attempts recorded in one transaction.
const COMPLETION_BATCH: usize = 512;

type Completion = (RunFinishParams, oneshot::Sender<bool>);

/// Records finished attempts: whatever has finished while the previous write was running goes
/// into the next transaction together (one commit for many attempts under load, one per attempt
/// when idle).
#[derive(Clone)]
pub(super) struct Completer {
    tx: mpsc::UnboundedSender<Completion>,
}

impl Completer {
    /// `wake` is the worker's: a run that ends may have queued the runs of jobs that run after
    /// its job (in the same transaction).
    /// `starts` and `clock`: a write waits while attempts due by now have not begun (see
    /// [`super::starts`]).
    pub(super) fn spawn(
        store: Arc<dyn Store>,
        wake: Arc<Notify>,
        starts: Arc<Starts>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(complete_loop(store, rx, wake, starts, clock));
        Self { tx }
    }

    /// Records one attempt; false when its lease was lost (nothing was written).
    pub(super) async fn finish(&self, params: RunFinishParams) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send((params, done)).is_err() {
            return false;
        }
        wait.await.unwrap_or(false)
    }
}

async fn complete_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
    wake: Arc<Notify>,
    starts: Arc<Starts>,
    clock: Arc<dyn Clock>,
) {
    let mut params = Vec::with_capacity(COMPLETION_BATCH);
    let mut waiters = Vec::with_capacity(COMPLETION_BATCH);
    while let Some((p, w)) = rx.recv().await {
        params.push(p);
        waiters.push(w);
        starts.settle(|| clock.now(), HOLD_AT_MOST).await;
        while params.len() < COMPLETION_BATCH {
            match rx.try_recv() {
                Ok((p, w)) => {
                    params.push(p);
                    waiters.push(w);
                }
                Err(_) => break,
            }
        }
        let results = write_with_retries(store.as_ref(), &params).await;
        let ended = params.iter().zip(&results).any(|(p, applied)| {
            *applied && p.parent_id.is_none() && matches!(p.next, RunNext::Finish(_))
        });
        if ended {
            wake.notify_one();
        }
        for (i, waiter) in waiters.drain(..).enumerate() {
            let applied = results.get(i).copied().unwrap_or(false);
            if !applied {
                tracing::warn!(
                    run_id = params[i].run_id,
                    "lease lost before the result was recorded; the result is dropped"
                );
            }
            let _ = waiter.send(applied);
        }
        params.clear();
    }
}

/// Writes a batch. When it fails, each attempt is written on its own (one that the store
/// refuses must not take the others with it), each retried a few times on transient errors.
/// Results that still cannot be written are dropped: their runs' leases expire and the rescuer
/// requeues them (at-least-once).
async fn write_with_retries(store: &dyn Store, params: &[RunFinishParams]) -> Vec<bool> {
    match store.run_finish_many(params).await {
        Ok(results) => return results,
        Err(e) => {
            tracing::error!(error = %e, batch = params.len(), "recording attempts failed; recording them one by one")
        }
    }
    let mut results = Vec::with_capacity(params.len());
    for p in params {
        results.push(write_one(store, p).await);
    }
    results
}

async fn write_one(store: &dyn Store, p: &RunFinishParams) -> bool {
    for attempt in 0..5u32 {
        match store.run_finish_many(std::slice::from_ref(p)).await {
            Ok(results) => return results.first().copied().unwrap_or(false),
            Err(e) => {
                tracing::error!(error = %e, attempt, run_id = p.run_id, "recording an attempt failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
    false
}
