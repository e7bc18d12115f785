//! Records finished attempts in batches: whatever has finished while the previous write was
//! running goes into the next transaction together.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kairos_store::{RunFinishParams, RunNext, Store, StoreError};
use tokio::sync::{Notify, mpsc, oneshot};

use super::starts::Starts;
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
    /// `retry_for`: how long a write is retried while the store is unavailable (the run's
    /// lease: the node holds the run at least that long, and the finish is fenced by its token
    /// whenever it lands).
    pub(super) fn spawn(
        store: Arc<dyn Store>,
        wake: Arc<Notify>,
        starts: Arc<Starts>,
        clock: Arc<dyn Clock>,
        retry_for: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(complete_loop(store, rx, wake, starts, clock, retry_for));
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
    retry_for: Duration,
) {
    let mut params = Vec::with_capacity(COMPLETION_BATCH);
    let mut waiters = Vec::with_capacity(COMPLETION_BATCH);
    while let Some((p, w)) = rx.recv().await {
        params.push(p);
        waiters.push(w);
        hold(&mut rx, &mut params, &mut waiters, &starts, || clock.now()).await;
        while params.len() < COMPLETION_BATCH {
            match rx.try_recv() {
                Ok((p, w)) => {
                    params.push(p);
                    waiters.push(w);
                }
                Err(_) => break,
            }
        }
        let results = write_with_retries(store.as_ref(), &params, retry_for).await;
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

/// Holds the write of `params` while a herd starts (see [`super::starts`]), gathering what ends
/// meanwhile. A workflow step's end is not held (the next steps wait for its record): one in
/// the batch, or arriving during the hold, ends it.
async fn hold(
    rx: &mut mpsc::UnboundedReceiver<Completion>,
    params: &mut Vec<RunFinishParams>,
    waiters: &mut Vec<oneshot::Sender<bool>>,
    starts: &Starts,
    now: impl Fn() -> Timestamp,
) {
    if params.iter().any(|p| p.parent_id.is_some()) {
        return;
    }
    let settled = starts.settle(now);
    tokio::pin!(settled);
    loop {
        tokio::select! {
            biased;
            () = &mut settled => return,
            got = rx.recv(), if params.len() < COMPLETION_BATCH => {
                let Some((p, w)) = got else { return };
                let step = p.parent_id.is_some();
                params.push(p);
                waiters.push(w);
                if step {
                    return;
                }
            }
        }
    }
}

/// First wait before writing a batch again while the store is unavailable; it doubles up to
/// [`UNAVAILABLE_BACKOFF_MAX`].
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(200);
const UNAVAILABLE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Writes a batch. While the store is unavailable (a database restarting or failing over), the
/// batch is written again with backoff for up to `retry_for`: the attempts have ended, and a
/// result given up here would run its task again after the lease. When the store fails
/// otherwise, each attempt is written on its own (one that the store refuses must not take
/// the others with it), each retried a few times. Results that still cannot be written are
/// dropped: their runs' leases expire and the rescuer requeues them (at-least-once).
async fn write_with_retries(
    store: &dyn Store,
    params: &[RunFinishParams],
    retry_for: Duration,
) -> Vec<bool> {
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut backoff = UNAVAILABLE_BACKOFF;
    loop {
        match store.run_finish_many(params).await {
            Ok(results) => return results,
            Err(e @ StoreError::Unavailable(_))
                if tokio::time::Instant::now() + backoff < deadline =>
            {
                tracing::error!(error = %e, batch = params.len(), retry_in_ms = backoff.as_millis() as u64, "recording attempts failed: the store is unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(UNAVAILABLE_BACKOFF_MAX);
            }
            Err(e) => {
                tracing::error!(error = %e, batch = params.len(), "recording attempts failed; recording them one by one");
                break;
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use jiff::{SignedDuration, Timestamp};
    use kairos_core::run::{AttemptOutcome, AttemptStatus, RunState};
    use kairos_store::{RunFinishParams, RunNext};
    use tokio::sync::{mpsc, oneshot};
    use tokio::time::Instant;

    use super::{Completion, hold};
    use crate::worker::starts::{HOLD_AT_MOST, Starts};

    fn t(ms: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_millis(ms)
    }

    fn ended(run_id: i64, parent_id: Option<i64>) -> Completion {
        let params = RunFinishParams {
            run_id,
            parent_id,
            lease_token: "token".into(),
            attempt: 1,
            node: "n".into(),
            started_at: t(1_000),
            outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
            next: RunNext::Finish(RunState::Succeeded),
            now: None,
        };
        (params, oneshot::channel().0)
    }

    /// A herd is starting (one attempt due at 1 s has not begun) and a plain run ended.
    fn starting() -> (Arc<Starts>, super::super::starts::Waiting) {
        let starts = Arc::new(Starts::default());
        let herd = starts.waiting(t(1_000));
        (starts, herd)
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_held_while_a_herd_starts_and_gathers_what_ends_meanwhile() {
        let (starts, _herd) = starting();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (first, w) = ended(1, None);
        let (mut params, mut waiters) = (vec![first], vec![w]);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(ended(2, None)).unwrap();
            // Kept open: the hold ends by its bound.
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let start = Instant::now();
        hold(&mut rx, &mut params, &mut waiters, &starts, || t(1_001)).await;
        assert_eq!(start.elapsed(), HOLD_AT_MOST);
        assert_eq!(params.len(), 2);
        assert_eq!(waiters.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_workflow_steps_end_is_not_held() {
        let (starts, _herd) = starting();
        let (_tx, mut rx) = mpsc::unbounded_channel::<Completion>();
        let (step, w) = ended(1, Some(7));
        let (mut params, mut waiters) = (vec![step], vec![w]);
        let start = Instant::now();
        hold(&mut rx, &mut params, &mut waiters, &starts, || t(1_001)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_ending_during_a_hold_ends_it() {
        let (starts, _herd) = starting();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (first, w) = ended(1, None);
        let (mut params, mut waiters) = (vec![first], vec![w]);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            tx.send(ended(2, Some(7))).unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let start = Instant::now();
        hold(&mut rx, &mut params, &mut waiters, &starts, || t(1_001)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(3));
        assert_eq!(params.len(), 2);
    }
}
