//! The worker: claims queued runs with a lease, executes them, heartbeats, and records the
//! outcome — a retry with backoff, or the final state.
//!
//! Every write about a claimed run is fenced by its lease token. The lease keeper
//! ([`leases`]) renews leases every third of the lease and kills an attempt whose lease could
//! not be renewed in time, before the store can let another node rescue it; if a heartbeat
//! finds the lease gone, the attempt is killed too, and its late result is refused by the
//! store. On shutdown the worker stops claiming, lets running attempts finish within the grace
//! period, then stops the rest (killing their process groups) and releases their runs back to
//! `queued`, so they run again.

mod attempt;
mod completer;
mod leases;
mod starts;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jiff::SignedDuration;
use kairos_core::lease::LeaseTiming;
use kairos_exec::{DEFAULT_OUTPUT_LIMIT, Executor};
use kairos_store::{RunClaimParams, RunNextAtParams, StoreError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::attempt::{Attempt, Slot};
use self::completer::Completer;
use self::leases::{Lease, Leases, StopAt, StopCause};
use self::starts::Starts;
use crate::context::NodeContext;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Attempts run at once on this node. Default 16.
    pub concurrency: usize,
    /// Lease length, and the heartbeat and give-up points derived from it; a run whose lease
    /// is not renewed within it is rescued. Default 30s (heartbeat every 10s).
    pub lease: LeaseTiming,
    /// Longest wait for queued runs without a wake-up. Default 1s.
    pub poll: Duration,
    /// Output kept per attempt. Default 1 MiB.
    pub output_limit: usize,
    /// Claim runs up to this long before their `run_at` and start each at its `run_at`, so that
    /// claiming is off the critical path (runs created ahead by the scheduler's look-ahead start
    /// on time). A run claimed early holds a slot while it waits. Zero: claim only due runs.
    /// Default 250 ms.
    pub lookahead: SignedDuration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: LeaseTiming::default(),
            poll: Duration::from_secs(1),
            output_limit: DEFAULT_OUTPUT_LIMIT,
            lookahead: SignedDuration::from_millis(250),
        }
    }
}

/// What one claim asked the store for (the free slots) and got.
#[derive(Default)]
struct Batch {
    asked: usize,
    claimed: usize,
}

/// Longest wait for slots to free before the claim that follows a full batch (see
/// [`gather_slots`]). tokio's timer rounds up to its next millisecond tick, so the wait can
/// last up to about 2 ms.
const CLAIM_GATHER: Duration = Duration::from_millis(1);

/// Waits until `free()` reaches `want`, woken by `wake` as slots free, for at most `within`.
///
/// After a full batch the worker claims again at once, and the attempts it has just started
/// are still running: a claim then takes only the slots free so far. A claim costs about the
/// same whatever its size (on PostgreSQL a few round trips and a commit: milliseconds under
/// load), so with short attempts the claims shrank to half the slots on average (W1 on
/// PostgreSQL, no-op tasks: 33 runs per claim at a concurrency of 64) and the node claimed
/// twice as often as it needed to. Waiting up to a millisecond lets short attempts free their
/// slots first; long ones cost the next claim that millisecond, a small part of one claim.
async fn gather_slots(
    free: impl Fn() -> usize,
    want: usize,
    wake: &tokio::sync::Notify,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    while free() < want {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

pub struct Worker {
    ctx: NodeContext,
    completer: Completer,
    /// Attempts executing now. A slot frees when execution ends, before the result is recorded;
    /// the lease stays held (and heartbeated) until it is, so recording never blocks claiming.
    executing: Arc<AtomicUsize>,
    executor: Arc<dyn Executor>,
    config: WorkerConfig,
    leases: Arc<Leases>,
    /// Woken when a slot frees or an attempt's result is recorded. The worker listens to it
    /// only while runs may be waiting for exactly that (see [`Worker::next_wake`]); new runs
    /// come with `NodeContext::worker_wake`.
    slot_wake: Arc<tokio::sync::Notify>,
    /// Attempts claimed ahead that have not begun (the completer holds its writes while some
    /// are due).
    starts: Arc<Starts>,
}

impl Worker {
    /// A worker for this node. Starts its completer task, so it must be called on a tokio
    /// runtime.
    pub fn new(ctx: NodeContext, executor: Arc<dyn Executor>, config: WorkerConfig) -> Self {
        let starts = if ctx.clock.is_wall() {
            Starts::process()
        } else {
            Arc::default()
        };
        Self {
            completer: Completer::spawn(
                ctx.store.clone(),
                ctx.worker_wake.clone(),
                starts.clone(),
                ctx.clock.clone(),
                config.lease.lease().unsigned_abs(),
            ),
            starts,
            executing: Arc::default(),
            ctx,
            executor,
            leases: Arc::new(Leases::new(config.lease)),
            config,
            slot_wake: Arc::default(),
        }
    }

    /// Slots not taken by an executing attempt.
    fn free_slots(&self) -> usize {
        self.config
            .concurrency
            .saturating_sub(self.executing.load(Ordering::Acquire))
    }

    /// Claims what fits and starts it. Returns the number of runs started.
    pub async fn claim_once(&self, tasks: &mut JoinSet<()>) -> Result<usize, StoreError> {
        Ok(self.claim_batch(tasks).await?.claimed)
    }

    /// [`Worker::claim_once`], also saying how many it asked for.
    async fn claim_batch(&self, tasks: &mut JoinSet<()>) -> Result<Batch, StoreError> {
        let free = self.free_slots();
        if free == 0 {
            return Ok(Batch::default());
        }
        // The store dates the lease no earlier than this.
        let (sent, sent_by) = (self.ctx.clock.now(), tokio::time::Instant::now());
        let claimed = self
            .ctx
            .store
            .run_claim(RunClaimParams {
                node: self.ctx.node.clone(),
                limit: free as u32,
                lease: self.config.lease.lease(),
                ahead: self.config.lookahead,
                now: self.ctx.clock.store_now(),
            })
            .await?;
        let n = claimed.len();
        let stop_at = StopAt::after(&self.config.lease, sent, sent_by);
        let now = self.ctx.clock.now();
        for c in claimed {
            // Claimed ahead: counted until it begins.
            let waiting = (c.run.run_at > now).then(|| self.starts.waiting(c.run.run_at));
            let lease = Arc::new(Lease::new(c.run.id, c.lease_token.clone(), stop_at));
            self.leases.insert(lease.clone());
            self.executing.fetch_add(1, Ordering::AcqRel);
            let slot = Slot {
                executing: self.executing.clone(),
                wake: self.slot_wake.clone(),
            };
            let attempt = Attempt {
                ctx: self.ctx.clone(),
                completer: self.completer.clone(),
                executor: self.executor.clone(),
                output_limit: self.config.output_limit,
                leases: self.leases.clone(),
                slot_wake: self.slot_wake.clone(),
            };
            // Boxed: the attempt's future is several kilobytes (the claimed run and its job, the
            // execution's state), and a task's future is moved whole when it is spawned, when its
            // result is stored and when it is read back; a box makes each of those a pointer.
            tasks.spawn(Box::pin(attempt.run(c, lease, slot, waiting)));
        }
        Ok(Batch {
            asked: free,
            claimed: n,
        })
    }

    /// Renews the leases of running attempts; stops attempts that were cancelled or lost.
    pub async fn heartbeat_once(&self) -> Result<(), StoreError> {
        self.leases.heartbeat_once(&self.ctx).await
    }

    /// Stops attempts whose lease was not renewed in time (see [`kairos_core::lease`]).
    pub fn expire_once(&self) {
        self.leases.expire_once(self.ctx.clock.now());
    }

    /// When to look for runs next without a wake-up, and whether runs may be waiting for a
    /// slot or for a running attempt to end (a *backlog*: then a freed slot or a recorded result
    /// wakes the worker; otherwise only new runs do, and a steady trickle of attempts ending
    /// costs no store round trips). `claimed_through` is the horizon of the claim just made:
    /// every queued run due by then was claimable by time.
    ///
    /// A queued run due by `claimed_through` that the claim left is waiting for something else
    /// (an `overlap: queue` run behind the one running): a backlog. The time is half the
    /// look-ahead before the earliest `run_at` beyond `claimed_through` (a retry, a jittered
    /// start, a run created ahead), at the latest after `poll`: a claim takes every run within
    /// the whole look-ahead, so one claim covers half a window of start times (as the
    /// scheduler's passes). With every slot taken nothing could be claimed anyway: the store is
    /// not asked, and the backlog is assumed.
    async fn next_wake(&self, claimed_through: jiff::Timestamp) -> (jiff::Timestamp, bool) {
        let now = self.ctx.clock.now();
        let poll =
            SignedDuration::try_from(self.config.poll).unwrap_or(SignedDuration::from_secs(1));
        let fallback = now.checked_add(poll).unwrap_or(now);
        if self.free_slots() == 0 {
            return (fallback, true);
        }
        let ahead = |t: jiff::Timestamp| t.checked_sub(self.config.lookahead / 2).unwrap_or(t);
        match self
            .ctx
            .store
            .run_next_at(RunNextAtParams {
                after: claimed_through,
            })
            .await
        {
            Ok(next) => {
                let backlog = next.earliest.is_some_and(|t| t <= claimed_through);
                // A run beyond the claim already within half a window (the read came late)
                // puts the wake-up in the past: the loop claims again at once.
                let wake = next
                    .earliest_after
                    .map_or(fallback, |t| ahead(t).min(fallback));
                (wake, backlog)
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the next queued run failed");
                (fallback, true)
            }
        }
    }

    /// Waits a little for the slots to free before claiming again after a full batch (see
    /// [`gather_slots`]).
    async fn gather_slots(&self) {
        gather_slots(
            || self.free_slots(),
            self.config.concurrency,
            &self.slot_wake,
            CLAIM_GATHER,
        )
        .await;
    }

    /// Runs until `shutdown`, then drains: attempts get `grace` to finish before they are
    /// stopped and their runs released.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let mut tasks = JoinSet::new();
        // The keeper outlives the claim loop: leases are renewed until the last attempt ends.
        let keeper_stop = CancellationToken::new();
        let keeper = tokio::spawn(leases::keep(
            self.leases.clone(),
            self.ctx.clone(),
            keeper_stop.clone(),
        ));
        loop {
            // Reap every finished attempt task (each holds its run and job until joined).
            while tasks.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                break;
            }
            // What this claim can take (the store's own clock may be a little later: then it
            // took a little more).
            let now = self.ctx.clock.now();
            let claimed_through = now.checked_add(self.config.lookahead).unwrap_or(now);
            let batch = match self.claim_batch(&mut tasks).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "claiming runs failed");
                    Batch::default()
                }
            };
            if batch.asked > 0 && batch.claimed == batch.asked {
                // A full batch: more may be waiting; claim again.
                self.gather_slots().await;
                continue;
            }
            let (wake, backlog) = self.next_wake(claimed_through).await;
            // Wait for a reason to claim again. Finished attempt tasks are reaped at the top of
            // the loop; their ends wake it only through `slot_wake` (with a backlog).
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.ctx.worker_wake.notified() => {}
                _ = self.slot_wake.notified(), if backlog => {}
                _ = self.ctx.clock.sleep_until(wake) => {}
            }
        }
        // Runs claimed ahead that have not begun are released at once: a due time that comes
        // during the shutdown is not started by a stopping node.
        for lease in self.leases.all() {
            lease.stop_unstarted(StopCause::Shutdown);
        }
        if !tasks.is_empty() {
            tracing::info!(
                running = tasks.len(),
                grace_ms = grace.as_millis() as u64,
                "shutting down: waiting for running attempts"
            );
            let drain = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(grace, drain).await.is_err() {
                tracing::warn!(
                    running = self.leases.len(),
                    "grace period over: stopping attempts and releasing their runs"
                );
                for lease in self.leases.all() {
                    lease.stop(StopCause::Shutdown);
                }
            }
            while tasks.join_next().await.is_some() {}
        }
        keeper_stop.cancel();
        let _ = keeper.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;
    use tokio::time::Instant;

    use super::gather_slots;

    // tokio's timers have a resolution of a millisecond: the test scales the wait up.
    const WITHIN: Duration = Duration::from_millis(10);

    /// Frees `n` slots after `after`, one wake-up each (as each attempt's slot does).
    fn free_later(free: &Arc<AtomicUsize>, wake: &Arc<Notify>, after: Duration, n: usize) {
        let (free, wake) = (free.clone(), wake.clone());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            for _ in 0..n {
                free.fetch_add(1, Ordering::AcqRel);
                wake.notify_one();
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn gathering_ends_at_once_when_every_slot_is_free() {
        let wake = Notify::new();
        let start = Instant::now();
        gather_slots(|| 8, 8, &wake, WITHIN).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn gathering_ends_when_the_last_slot_frees() {
        let (free, wake) = (Arc::new(AtomicUsize::new(3)), Arc::new(Notify::new()));
        free_later(&free, &wake, Duration::from_millis(2), 2);
        free_later(&free, &wake, Duration::from_millis(4), 3);
        let start = Instant::now();
        gather_slots(|| free.load(Ordering::Acquire), 8, &wake, WITHIN).await;
        assert_eq!(start.elapsed(), Duration::from_millis(4));
        assert_eq!(free.load(Ordering::Acquire), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn gathering_gives_up_after_its_time_with_slots_still_taken() {
        let (free, wake) = (Arc::new(AtomicUsize::new(1)), Arc::new(Notify::new()));
        // Some slots free in time, the rest much later (long attempts).
        free_later(&free, &wake, Duration::from_millis(3), 4);
        free_later(&free, &wake, Duration::from_secs(10), 3);
        let start = Instant::now();
        gather_slots(|| free.load(Ordering::Acquire), 8, &wake, WITHIN).await;
        assert_eq!(start.elapsed(), WITHIN);
        assert_eq!(free.load(Ordering::Acquire), 5);
    }
}
