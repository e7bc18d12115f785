//! What the manual-clock runtime tests share: a node's services on a real SQLite file, driven
//! through their `run_once`/`claim_once` methods under a [`ManualClock`].

use std::sync::Arc;

use jiff::Timestamp;
use kairos_core::JobSpec;
use kairos_exec::{FunctionRegistry, TaskExecutor};
use kairos_runtime::scheduler::Scheduler;
use kairos_runtime::worker::Worker;
use kairos_runtime::*;
use kairos_store::{Run, RunListParams, Store};
use kairos_store_sqlite::SqliteStore;
use tokio::task::JoinSet;

pub struct Setup {
    pub clock: ManualClock,
    pub ctx: NodeContext,
    pub jobs: JobService,
    pub scheduler: Scheduler,
    pub worker: Worker,
    pub _dir: tempfile::TempDir,
}

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A node context on a fresh SQLite file, under a manual clock at 2026-03-01T00:00:00Z.
async fn context() -> (tempfile::TempDir, ManualClock, NodeContext) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_file(&dir.path().join("k.db"))
            .await
            .unwrap(),
    );
    let clock = ManualClock::new(t("2026-03-01T00:00:00Z"));
    let ctx = NodeContext::new("node-a", store, Arc::new(clock.clone()));
    (dir, clock, ctx)
}

pub async fn setup() -> Setup {
    let (dir, clock, ctx) = context().await;
    let executor = Arc::new(TaskExecutor::new(FunctionRegistry::new()));
    Setup {
        jobs: JobService::new(ctx.clone()),
        scheduler: Scheduler::new(ctx.clone()),
        worker: Worker::new(ctx.clone(), executor, WorkerConfig::default()),
        clock,
        ctx,
        _dir: dir,
    }
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
    pub _dir: tempfile::TempDir,
}

pub async fn start_node(config: NodeConfig) -> Running {
    let (dir, clock, ctx) = context().await;
    let events = ctx.telemetry.subscribe();
    let node = Node::start(
        ctx.clone(),
        Arc::new(TaskExecutor::new(FunctionRegistry::new())),
        config,
    )
    .await;
    Running {
        clock,
        ctx,
        node,
        events,
        _dir: dir,
    }
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
