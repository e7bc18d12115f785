//! What the workloads share: the no-op function, node settings, bulk enqueue, and counting
//! finished runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use kairos_core::JobSpec;
use kairos_core::run::{JobId, RunOrigin, RunState};
use kairos_core::spec::ExecutionMode;
use kairos_exec::{FunctionRegistry, TaskExecutor};
use kairos_runtime::{Event, NodeConfig, NodeContext, SystemClock};
use kairos_store::{Job, JobCreateParams, RunInsert, RunInsertManyParams, Store};
use tokio::sync::{Notify, broadcast};

use crate::error::{BenchError, BenchResult};

/// Name of the function every `function` workload runs: it returns `Ok(())` at once.
pub const NOOP: &str = "noop";

/// Runs inserted per `run_insert_many` call (one transaction each).
pub const ENQUEUE_BATCH: usize = 1000;

/// A registry with [`NOOP`].
pub fn noop_functions() -> FunctionRegistry {
    let functions = FunctionRegistry::new();
    functions.register(NOOP, |_call| async { Ok(()) });
    functions
}

/// The production executor with [`NOOP`] registered.
pub fn executor() -> Arc<TaskExecutor> {
    Arc::new(TaskExecutor::new(noop_functions()))
}

/// Node settings of the benchmarks: the defaults, with the given worker concurrency.
/// `exclusive`: only this node uses the store (SQLite), so it recovers the runs held under
/// its name at start, as `kairos server` does; on a shared store it does not.
pub fn node_config(concurrency: usize, exclusive: bool) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.worker.concurrency = concurrency.max(1);
    config.recover_on_start = exclusive;
    config
}

/// A node context named `bench` on `store` with the wall clock.
pub fn context(store: Arc<dyn Store>) -> NodeContext {
    context_named("bench", store)
}

/// A node context named `node` on `store` with the wall clock (nodes sharing a store need
/// names of their own: leases and attempts carry them).
pub fn context_named(node: &str, store: Arc<dyn Store>) -> NodeContext {
    NodeContext::new(node, store, Arc::new(SystemClock))
}

/// A job document from JSON (the same documents as the API takes).
pub fn spec(doc: serde_json::Value) -> BenchResult<JobSpec> {
    serde_json::from_value(doc).map_err(|e| BenchError::InvalidParameter {
        name: "job",
        reason: e.to_string(),
    })
}

/// Creates a job without triggers whose task is the [`NOOP`] function.
pub async fn noop_job(store: &dyn Store, name: &str) -> BenchResult<Job> {
    Ok(store
        .job_create(JobCreateParams {
            actor: "bench".into(),
            spec: spec(serde_json::json!({
                "name": name,
                "task": {"kind": "function", "name": NOOP},
            }))?,
            next_fire_at: None,
            now: None,
            calendars: vec![],
        })
        .await?)
}

/// Queues runs `range` of `job_id` (due time `base + i µs`, unique per run), due at `run_at`,
/// in transactions of [`ENQUEUE_BATCH`], waking the worker after each, as an enqueue API
/// would. Returns the number of runs created.
pub async fn enqueue(
    ctx: &NodeContext,
    job_id: JobId,
    base: Timestamp,
    range: std::ops::Range<u64>,
    run_at: Timestamp,
) -> BenchResult<u64> {
    let mut created = 0u64;
    let mut start = range.start;
    while start < range.end {
        let end = range.end.min(start + ENQUEUE_BATCH as u64);
        let runs = (start..end)
            .map(|i| {
                let scheduled_for = base
                    .checked_add(SignedDuration::from_micros(i as i64))
                    .unwrap_or(base);
                RunInsert {
                    scheduled_for,
                    run_at,
                    origin: RunOrigin::Manual,
                    skip: None,
                    exclusive: false,
                    max_attempts: 1,
                    execution: ExecutionMode::AtLeastOnce,
                    event: None,
                }
            })
            .collect();
        let ids = ctx
            .store
            .run_insert_many(RunInsertManyParams {
                job_id,
                runs,
                now: None,
            })
            .await?;
        created += ids.len() as u64;
        ctx.worker_wake.notify_one();
        start = end;
    }
    Ok(created)
}

/// Counts finished runs from the node's events.
///
/// The event channel is bounded (4096 events); a receiver that falls behind loses events. The
/// counter then switches to counting finished runs in the store (every [`STORE_POLL`]), which
/// is exact but costs queries and gives the end time to within the polling period.
pub struct FinishCounter {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// Polling period once events were lost.
pub const STORE_POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Shared {
    finished: AtomicU64,
    failed: AtomicU64,
    lagged: AtomicBool,
    /// Waiters are notified when `finished` reaches this (not on every event).
    target: AtomicU64,
    last_finish: Mutex<Option<Instant>>,
    notify: Notify,
}

impl FinishCounter {
    /// Starts counting; subscribe before the runs can finish.
    pub fn start(mut events: broadcast::Receiver<Event>) -> Self {
        let shared = Arc::new(Shared {
            target: AtomicU64::new(u64::MAX),
            ..Shared::default()
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::RunFinished { state, .. }) => {
                        let at = Instant::now();
                        let finished = s.finished.fetch_add(1, Ordering::Relaxed) + 1;
                        if state != RunState::Succeeded {
                            s.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        *s.last_finish.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
                        if finished >= s.target.load(Ordering::Relaxed) {
                            s.notify.notify_waiters();
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        s.lagged.store(true, Ordering::Relaxed);
                        s.notify.notify_waiters();
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Self { shared, task }
    }

    /// True once events were lost (counting goes through the store from then on).
    pub fn lagged(&self) -> bool {
        self.shared.lagged.load(Ordering::Relaxed)
    }

    /// Finished runs so far, and how many of them did not succeed.
    pub async fn finished(&self, store: &dyn Store) -> BenchResult<(u64, u64)> {
        if !self.lagged() {
            return Ok((
                self.shared.finished.load(Ordering::Relaxed),
                self.shared.failed.load(Ordering::Relaxed),
            ));
        }
        let (mut finished, mut failed) = (0, 0);
        for (state, n) in store.run_count_by_state().await? {
            if state.is_terminal() {
                finished += n;
                if state != RunState::Succeeded {
                    failed += n;
                }
            }
        }
        Ok((finished, failed))
    }

    /// Waits until `n` runs finished; returns when the last of them finished (the event's
    /// arrival, or the poll that saw it) and how many failed. Fails after `limit`.
    pub async fn wait_for(
        &self,
        store: &dyn Store,
        n: u64,
        limit: Duration,
    ) -> BenchResult<(Instant, u64)> {
        let deadline = Instant::now() + limit;
        self.shared.target.store(n, Ordering::Relaxed);
        loop {
            let notified = self.shared.notify.notified();
            let (finished, failed) = self.finished(store).await?;
            if finished >= n {
                let at = if self.lagged() {
                    Instant::now()
                } else {
                    self.shared
                        .last_finish
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .unwrap_or_else(Instant::now)
                };
                return Ok((at, failed));
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Incomplete(format!(
                    "only {finished} of {n} runs finished within {} s",
                    limit.as_secs()
                )));
            }
            let wait = if self.lagged() {
                STORE_POLL
            } else {
                Duration::from_millis(200)
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl Drop for FinishCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Time limit for draining `n` runs: generous, it only stops a stuck benchmark.
pub fn drain_limit(n: u64) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(n.saturating_mul(20))
}
