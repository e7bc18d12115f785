//! The worker: claims queued runs with a lease, executes them, heartbeats, and records the
//! outcome — a retry with backoff, or the final state.
//!
//! Every write about a claimed run is fenced by its lease token. If a heartbeat finds the lease
//! gone (the rescuer requeued it after this node stalled), the attempt is stopped and its late
//! result is refused by the store. On shutdown the worker stops claiming, lets running attempts
//! finish within the grace period, then stops the rest (killing their process groups) and
//! releases their runs back to `queued`, so they run again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::SignedDuration;
use kairos_core::policy::RetryDecision;
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunId, RunState};
use kairos_core::spec::ExecutionMode;
use kairos_exec::{DEFAULT_OUTPUT_LIMIT, ExecRequest, Executor, OutputBuffer, RunContext};
use kairos_store::{
    ClaimedRun, RunClaimParams, RunFinishParams, RunHeartbeatParams, RunNext, RunNextAtParams,
    Store, StoreError,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::context::NodeContext;
use crate::telemetry::{Event, millis_between};

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Attempts run at once on this node. Default 16.
    pub concurrency: usize,
    /// Lease length; a run whose lease is not renewed within it is rescued. Default 30s.
    pub lease: SignedDuration,
    /// Time between heartbeats. Default 10s.
    pub heartbeat: Duration,
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
            lease: SignedDuration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            output_limit: DEFAULT_OUTPUT_LIMIT,
            lookahead: SignedDuration::from_millis(250),
        }
    }
}

/// Why an attempt was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopCause {
    /// A user or `overlap: replace` cancelled the run.
    Cancelled,
    /// The node is shutting down: release the run so it runs again.
    Shutdown,
    /// The lease was lost; the run belongs to someone else now.
    LeaseLost,
}

struct Held {
    token: String,
    cancel: CancellationToken,
    cause: Arc<Mutex<Option<StopCause>>>,
    /// The attempt has begun (a run claimed ahead waits for its due time until then).
    started: Arc<AtomicBool>,
}

impl Held {
    fn stop(&self, cause: StopCause) {
        let mut slot = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(cause);
        self.cancel.cancel();
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
    held: Arc<Mutex<HashMap<RunId, Held>>>,
    /// Woken when a slot frees or an attempt's result is recorded. The worker listens to it
    /// only while runs may be waiting for exactly that (see [`Worker::next_wake`]); new runs
    /// come with `NodeContext::worker_wake`.
    slot_wake: Arc<tokio::sync::Notify>,
}

impl Worker {
    /// A worker for this node. Starts its completer task, so it must be called on a tokio
    /// runtime.
    pub fn new(ctx: NodeContext, executor: Arc<dyn Executor>, config: WorkerConfig) -> Self {
        Self {
            completer: Completer::spawn(ctx.store.clone()),
            executing: Arc::default(),
            ctx,
            executor,
            config,
            held: Arc::default(),
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
        let free = self.free_slots();
        if free == 0 {
            return Ok(0);
        }
        let claimed = self
            .ctx
            .store
            .run_claim(RunClaimParams {
                node: self.ctx.node.clone(),
                limit: free as u32,
                lease: self.config.lease,
                ahead: self.config.lookahead,
                now: self.ctx.clock.store_now(),
            })
            .await?;
        let n = claimed.len();
        for c in claimed {
            let held = Held {
                token: c.lease_token.clone(),
                cancel: CancellationToken::new(),
                cause: Arc::default(),
                started: Arc::default(),
            };
            let cancel = held.cancel.clone();
            let cause = held.cause.clone();
            let started = held.started.clone();
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(c.run.id, held);
            self.executing.fetch_add(1, Ordering::AcqRel);
            let attempt = Attempt {
                ctx: self.ctx.clone(),
                completer: self.completer.clone(),
                executing: self.executing.clone(),
                executor: self.executor.clone(),
                output_limit: self.config.output_limit,
                held: self.held.clone(),
                slot_wake: self.slot_wake.clone(),
            };
            tasks.spawn(async move { attempt.run(c, cancel, cause, started).await });
        }
        Ok(n)
    }

    /// Renews the leases of running attempts; stops attempts that were cancelled or lost.
    pub async fn heartbeat_once(&self) -> Result<(), StoreError> {
        let leases: Vec<(RunId, String)> = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, h)| (*id, h.token.clone()))
            .collect();
        if leases.is_empty() {
            return Ok(());
        }
        let results = self
            .ctx
            .store
            .run_heartbeat(RunHeartbeatParams {
                leases,
                lease: self.config.lease,
                now: self.ctx.clock.store_now(),
            })
            .await?;
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for r in results {
            if let Some(h) = held.get(&r.run_id) {
                if !r.held {
                    tracing::warn!(run_id = r.run_id, "lease lost; stopping the attempt");
                    h.stop(StopCause::LeaseLost);
                } else if r.cancel_requested {
                    h.stop(StopCause::Cancelled);
                }
            }
        }
        Ok(())
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

    /// Runs until `shutdown`, then drains: attempts get `grace` to finish before they are
    /// stopped and their runs released.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let mut tasks = JoinSet::new();
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Reap every finished attempt task (each holds its run and job until joined).
            while tasks.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                break;
            }
            let free = self.free_slots();
            // What this claim can take (the store's own clock may be a little later: then it
            // took a little more).
            let now = self.ctx.clock.now();
            let claimed_through = now.checked_add(self.config.lookahead).unwrap_or(now);
            let claimed = match self.claim_once(&mut tasks).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "claiming runs failed");
                    0
                }
            };
            if free > 0 && claimed == free {
                // A full batch: more may be waiting; claim again.
                continue;
            }
            let (wake, backlog) = self.next_wake(claimed_through).await;
            // Wait for a reason to claim again. Finished attempt tasks are reaped at the top of
            // the loop; their ends wake it only through `slot_wake` (with a backlog).
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // A cancel or `overlap: replace` on this node: act now, not at the next beat.
                _ = self.ctx.heartbeat_wake.notified() => {
                    if let Err(e) = self.heartbeat_once().await {
                        tracing::error!(error = %e, "heartbeat failed");
                    }
                }
                _ = self.ctx.worker_wake.notified() => {}
                _ = self.slot_wake.notified(), if backlog => {}
                _ = self.ctx.clock.sleep_until(wake) => {}
                _ = heartbeat.tick() => {
                    if let Err(e) = self.heartbeat_once().await {
                        tracing::error!(error = %e, "heartbeat failed");
                    }
                }
            }
        }
        // Runs claimed ahead that have not begun are released at once: a due time that comes
        // during the shutdown is not started by a stopping node.
        for h in self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|h| !h.started.load(Ordering::SeqCst))
        {
            h.stop(StopCause::Shutdown);
        }
        if !tasks.is_empty() {
            tracing::info!(
                running = tasks.len(),
                grace_ms = grace.as_millis() as u64,
                "shutting down: waiting for running attempts"
            );
            let drain = async {
                loop {
                    tokio::select! {
                        next = tasks.join_next() => if next.is_none() { break },
                        _ = heartbeat.tick() => { let _ = self.heartbeat_once().await; }
                    }
                }
            };
            if tokio::time::timeout(grace, drain).await.is_err() {
                let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                tracing::warn!(
                    running = held.len(),
                    "grace period over: stopping attempts and releasing their runs"
                );
                for h in held.values() {
                    h.stop(StopCause::Shutdown);
                }
            }
            while tasks.join_next().await.is_some() {}
        }
    }
}

/// One attempt of one claimed run.
/// An execution slot; dropping it frees the slot and wakes the worker to claim again.
struct Slot {
    executing: Arc<AtomicUsize>,
    wake: Arc<tokio::sync::Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.executing.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
    }
}

struct Attempt {
    ctx: NodeContext,
    completer: Completer,
    executing: Arc<AtomicUsize>,
    executor: Arc<dyn Executor>,
    output_limit: usize,
    held: Arc<Mutex<HashMap<RunId, Held>>>,
    slot_wake: Arc<tokio::sync::Notify>,
}

impl Attempt {
    async fn run(
        self,
        c: ClaimedRun,
        cancel: CancellationToken,
        cause: Arc<Mutex<Option<StopCause>>>,
        began: Arc<AtomicBool>,
    ) {
        let slot = Slot {
            executing: self.executing.clone(),
            wake: self.slot_wake.clone(),
        };
        let run = &c.run;
        // Claimed ahead of its due time: wait for it (a cancel, lease loss or shutdown meanwhile
        // ends the attempt before it starts).
        if run.run_at > self.ctx.clock.now() {
            tokio::select! {
                _ = self.ctx.clock.sleep_until(run.run_at) => {}
                _ = cancel.cancelled() => {}
            }
        }
        // Stopped before it began: nothing of the task ran.
        began.store(true, Ordering::SeqCst);
        let never_started = cancel.is_cancelled();
        let started = self.ctx.clock.now();
        let (ns, job) = (run.namespace.clone(), run.job_name.clone());
        self.ctx.telemetry.emit(Event::RunStarted {
            run_id: run.id,
            namespace: ns.clone(),
            job: job.clone(),
            attempt: run.attempt,
            lag_ms: millis_between(run.run_at.max(run.scheduled_for), started),
        });
        let output = Arc::new(OutputBuffer::new(self.output_limit));
        self.ctx.live.insert(run.id, output.clone());
        let (outcome, plan) = match self.ctx.plans.get(&c.job) {
            // Stopped while waiting for its due time: it never starts.
            Ok(plan) if never_started => (
                AttemptOutcome::from_status(AttemptStatus::Cancelled),
                Some(plan),
            ),
            Ok(plan) => {
                let req = ExecRequest {
                    task: c.job.spec.task.clone(),
                    hooks: c.job.spec.hooks.clone(),
                    timeout: plan.timeout,
                    kill_grace: plan.kill_grace,
                    expected_exit_codes: c.job.spec.expected_exit_codes.clone(),
                    context: RunContext {
                        job: job.clone(),
                        namespace: ns.clone(),
                        run_id: run.id,
                        attempt: run.attempt,
                        scheduled_for: run.scheduled_for,
                    },
                    output: output.clone(),
                    cancel,
                };
                (self.executor.execute(req).await, Some(plan))
            }
            Err(e) => (
                AttemptOutcome::error(format!("job no longer validates: {e}")),
                None,
            ),
        };
        output.close();
        // The slot is free for the next claim while the result is being recorded.
        drop(slot);
        let stop = *cause.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.ctx.clock.now();
        let next = match (&outcome.status, stop) {
            (_, Some(StopCause::LeaseLost)) => None,
            // Stopped by shutdown while it waited for its due time: it never ran, so it goes
            // back to the queue whatever its execution mode.
            (_, Some(StopCause::Shutdown)) if never_started => Some(RunNext::Release),
            // Stopped by shutdown: run it again later, unless the job must never run twice.
            (AttemptStatus::Cancelled, Some(StopCause::Shutdown)) => {
                match plan.as_ref().map(|p| p.execution) {
                    Some(ExecutionMode::AtMostOnce) => Some(RunNext::Finish(RunState::Cancelled)),
                    _ => Some(RunNext::Release),
                }
            }
            (AttemptStatus::Cancelled, _) => Some(RunNext::Finish(RunState::Cancelled)),
            (status, _) if status.is_success() => Some(RunNext::Finish(RunState::Succeeded)),
            (status, _) => {
                let decision = plan
                    .as_ref()
                    .map(|p| p.retry.decide(run.attempt, status, rand::random::<f64>()))
                    .unwrap_or(RetryDecision::Finish);
                Some(match decision {
                    RetryDecision::Retry { delay } => RunNext::Retry {
                        run_at: now.checked_add(delay).unwrap_or(now),
                    },
                    RetryDecision::Finish => RunNext::Finish(status.final_state()),
                })
            }
        };
        let requeued = matches!(next, Some(RunNext::Retry { .. } | RunNext::Release));
        if let Some(next) = next {
            let applied = self
                .completer
                .finish(RunFinishParams {
                    run_id: run.id,
                    lease_token: c.lease_token.clone(),
                    attempt: run.attempt,
                    node: self.ctx.node.clone(),
                    started_at: started,
                    outcome: outcome.clone(),
                    next: next.clone(),
                    now: self.ctx.clock.store_now(),
                })
                .await;
            if applied {
                self.report(&c, &outcome, &next, started, now);
            }
        }
        self.ctx.live.remove(run.id);
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run.id);
        if requeued {
            // The run is queued again: a new run as far as the worker is concerned.
            self.ctx.worker_wake.notify_one();
        } else {
            // A run behind this one (an exclusive run) may be claimable now.
            self.slot_wake.notify_one();
        }
    }

    fn report(
        &self,
        c: &ClaimedRun,
        outcome: &AttemptOutcome,
        next: &RunNext,
        started: jiff::Timestamp,
        now: jiff::Timestamp,
    ) {
        let run = &c.run;
        let (namespace, job) = (run.namespace.clone(), run.job_name.clone());
        match next {
            RunNext::Finish(state) => self.ctx.telemetry.emit(Event::RunFinished {
                run_id: run.id,
                namespace,
                job,
                attempt: run.attempt,
                state: *state,
                outcome: outcome.status.label(),
                duration_ms: millis_between(started, now),
            }),
            RunNext::Retry { run_at } => self.ctx.telemetry.emit(Event::RunRetrying {
                run_id: run.id,
                namespace,
                job,
                attempt: run.attempt,
                run_at: *run_at,
            }),
            RunNext::Release => self
                .ctx
                .telemetry
                .emit(Event::RunReleased { run_id: run.id }),
        }
    }
}

/// Most attempts recorded in one transaction.
const COMPLETION_BATCH: usize = 512;

type Completion = (RunFinishParams, oneshot::Sender<bool>);

/// Records finished attempts: whatever has finished while the previous write was running goes
/// into the next transaction together (one commit for many attempts under load, one per attempt
/// when idle).
#[derive(Clone)]
struct Completer {
    tx: mpsc::UnboundedSender<Completion>,
}

impl Completer {
    fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(complete_loop(store, rx));
        Self { tx }
    }

    /// Records one attempt; false when its lease was lost (nothing was written).
    async fn finish(&self, params: RunFinishParams) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send((params, done)).is_err() {
            return false;
        }
        wait.await.unwrap_or(false)
    }
}

async fn complete_loop(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Completion>) {
    let mut params = Vec::with_capacity(COMPLETION_BATCH);
    let mut waiters = Vec::with_capacity(COMPLETION_BATCH);
    while let Some((p, w)) = rx.recv().await {
        params.push(p);
        waiters.push(w);
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

/// Writes a batch, retrying transient store errors a few times. After that the results are
/// dropped (the runs' leases expire and the rescuer requeues them: at-least-once).
async fn write_with_retries(store: &dyn Store, params: &[RunFinishParams]) -> Vec<bool> {
    for attempt in 0..5u32 {
        match store.run_finish_many(params).await {
            Ok(results) => return results,
            Err(e) => {
                tracing::error!(error = %e, attempt, batch = params.len(), "recording attempts failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
    vec![false; params.len()]
}
