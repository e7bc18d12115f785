//! What the manual-clock runtime tests share: a node's services on a real store of each backend
//! (a SQLite file, a PostgreSQL schema; see [`kairos_testkit::backend`]), driven through their
//! `run_once`/`claim_once` methods under a [`ManualClock`].

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kairos_core::JobSpec;
use kairos_exec::{FunctionRegistry, TaskExecutor};
use kairos_runtime::scheduler::Scheduler;
use kairos_runtime::worker::Worker;
use kairos_runtime::*;
use kairos_store::{Run, RunListParams};
use kairos_testkit::{Backend, TestStore, store_for};
use tokio::task::JoinSet;

pub struct Setup {
    pub clock: ManualClock,
    pub ctx: NodeContext,
    pub jobs: JobService,
    pub scheduler: Scheduler,
    pub worker: Worker,
    /// The store's guard, and a temp directory for files the test's tasks write.
    pub temp: TestStore,
}

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A node context (node `node-a`) on a fresh store of `backend`, under a manual clock at
/// 2026-03-01T00:00:00Z; `None` when the backend is unreachable (the test returns early).
async fn context(backend: Backend) -> Option<(TestStore, ManualClock, NodeContext)> {
    let temp = store_for(backend).await?;
    let clock = ManualClock::new(t("2026-03-01T00:00:00Z"));
    let ctx = NodeContext::new("node-a", temp.store.clone(), Arc::new(clock.clone()));
    Some((temp, clock, ctx))
}

pub async fn setup(backend: Backend) -> Option<Setup> {
    let (temp, clock, ctx) = context(backend).await?;
    let executor = Arc::new(TaskExecutor::new(FunctionRegistry::new()));
    Some(Setup {
        jobs: JobService::new(ctx.clone()),
        scheduler: Scheduler::new(ctx.clone()),
        worker: Worker::new(ctx.clone(), executor, WorkerConfig::default()),
        clock,
        ctx,
        temp,
    })
}

pub fn spec(json: &str) -> JobSpec {
    JobSpec::from_json(json).unwrap()
}

pub fn every_minute(name: &str, extra: &str) -> JobSpec {
    spec(&format!(
        r#"{{"name":"{name}","triggers":[{{"cron":"* * * * *"}}],"task":{{"kind":"shell","script":"echo hi"}}{extra}}}"#
    ))
}

impl Setup {
    pub async fn runs(&self, job: &str) -> Vec<Run> {
        let job = self.jobs.get("default", job).await.unwrap();
        let mut runs = self
            .ctx
            .store
            .run_list(RunListParams {
                job_id: Some(job.id),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        runs.sort_by_key(|r| (r.scheduled_for, r.id));
        runs
    }

    /// Claims what is due and waits until each claimed attempt has begun. An attempt task runs
    /// only when the test yields: a test that moves the clock past the lease's safe point right
    /// after claiming would have the worker give the run back unstarted instead.
    pub async fn claim_and_begin(&self, tasks: &mut JoinSet<()>) -> usize {
        let mut events = self.ctx.telemetry.subscribe();
        let n = self.worker.claim_once(tasks).await.unwrap();
        for _ in 0..n {
            kairos_testkit::wait_for_event(&mut events, Duration::from_secs(10), |e| {
                matches!(e, Event::RunStarted { .. })
            })
            .await;
        }
        n
    }

    /// Claims and runs everything due, waiting for the attempts to finish.
    pub async fn work(&self) -> usize {
        let mut tasks = JoinSet::new();
        let n = self.worker.claim_once(&mut tasks).await.unwrap();
        while tasks.join_next().await.is_some() {}
        n
    }
}

/// A node running its own loops (scheduler, worker, rescuer) under a manual clock; `events` was
/// subscribed before it started.
pub struct Running {
    pub clock: ManualClock,
    pub ctx: NodeContext,
    pub node: Node,
    pub events: tokio::sync::broadcast::Receiver<Event>,
    pub temp: TestStore,
}

pub async fn start_node(backend: Backend, config: NodeConfig) -> Option<Running> {
    let (temp, clock, ctx) = context(backend).await?;
    let events = ctx.telemetry.subscribe();
    let node = Node::start(
        ctx.clone(),
        Arc::new(TaskExecutor::new(FunctionRegistry::new())),
        config,
    )
    .await;
    Some(Running {
        clock,
        ctx,
        node,
        events,
        temp,
    })
}

impl Running {
    /// The next run that finishes (the caller bounds the wait).
    pub async fn run_finished(&mut self) -> (kairos_core::run::RunId, kairos_core::run::RunState) {
        loop {
            if let Ok(Event::RunFinished { run_id, state, .. }) = self.events.recv().await {
                return (run_id, state);
            }
        }
    }
}
