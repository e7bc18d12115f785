//! A node: the worker on every node, and the leader's services (scheduler, rescuer, and the
//! alert evaluator and sender when channels are configured) behind the elector's gate, over one
//! store; started together and stopped together.

use std::sync::Arc;
use std::time::Duration;

use kairos_exec::Executor;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityRecorder;
use crate::alerts::AlertsConfig;
use crate::alerts::evaluator::Evaluator;
use crate::alerts::sender::Sender;
use crate::context::NodeContext;
use crate::elector::{Elector, ElectorConfig, LeaderGate};
use crate::jobs::JobService;
use crate::rescuer::Rescuer;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::worker::{Worker, WorkerConfig};

/// Node settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub scheduler: SchedulerConfig,
    pub worker: WorkerConfig,
    /// Time between rescuer passes. Default 5s.
    pub rescue_interval: Duration,
    /// Time running attempts get to finish on shutdown before they are stopped. Default 30s.
    pub shutdown_grace: Duration,
    pub elector: ElectorConfig,
    /// At start, recover every run held under this node's name before the worker claims
    /// anything: right for a store only this node uses (SQLite, whose data directory is
    /// locked), wrong for a shared one, where another process may use the same name (there,
    /// a dead node's runs are rescued when their lease expires). Default true.
    pub recover_on_start: bool,
    /// How long the activity log (the event stream's history) keeps entries. Default 1 h.
    pub activity_retention: Duration,
    /// Alert channels and global rules. Without channels, nothing is evaluated or sent.
    pub alerts: Arc<AlertsConfig>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerConfig::default(),
            worker: WorkerConfig::default(),
            rescue_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            elector: ElectorConfig::default(),
            recover_on_start: true,
            activity_retention: Duration::from_secs(3600),
            alerts: Arc::new(AlertsConfig::default()),
        }
    }
}

/// Ends the term of a leader that is not this process, on a store only this process uses.
async fn take_over_stale_leadership(ctx: &NodeContext) {
    let stale = match ctx.store.leader_get().await {
        Ok(Some(leader)) if leader.node_id != ctx.node_id => leader,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "reading the leader failed");
            return;
        }
    };
    let resigned = ctx
        .store
        .leader_resign(kairos_store::LeaderResignParams {
            node_id: stale.node_id,
            term: stale.term,
            now: ctx.clock.store_now(),
        })
        .await;
    if let Err(e) = resigned {
        tracing::warn!(error = %e, "ending the previous process's leadership failed");
    }
}

/// A running node.
pub struct Node {
    pub ctx: NodeContext,
    pub jobs: JobService,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The activity recorder, stopped after the others (it writes what they did last).
    recorder: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Node {
    /// Starts the node's services on the current tokio runtime.
    ///
    /// Runs this node held before a restart are recovered first, before the worker claims
    /// anything: otherwise the recovery pass could mistake a run the new worker just claimed
    /// (under the same node name) for an orphan.
    pub async fn start(ctx: NodeContext, executor: Arc<dyn Executor>, config: NodeConfig) -> Self {
        let shutdown = CancellationToken::new();
        // First, so that what the others do from the start is recorded.
        let recorder = ActivityRecorder::new(ctx.clone(), config.activity_retention).map(|r| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(r.run(stop.clone()));
            (stop, task)
        });
        let scheduler = Scheduler::with_config(ctx.clone(), config.scheduler.clone());
        let worker = Worker::new(ctx.clone(), executor.clone(), config.worker.clone());
        let rescuer = Rescuer::new(ctx.clone(), config.rescue_interval);
        if config.recover_on_start {
            if let Err(e) = rescuer.run_once(true).await {
                tracing::error!(error = %e, "recovering the runs of the previous start failed");
            }
            // Only this process uses the store: a leader row of an earlier process is stale
            // (it crashed), so its term ends now instead of after its lease.
            take_over_stale_leadership(&ctx).await;
        }
        let mut gate = LeaderGate::new(Arc::new(scheduler), Arc::new(rescuer));
        if !config.alerts.is_empty() {
            let sender = Sender::new(ctx.clone(), config.alerts.clone(), executor.clone());
            let evaluator = Evaluator::new(ctx.clone(), config.alerts.clone(), sender.waker());
            gate = gate.with(Arc::new(evaluator)).with(Arc::new(sender));
        }
        let elector = Elector::new(ctx.clone(), config.elector.clone(), gate);
        let tasks = vec![
            tokio::spawn(ctx.clone().follow_changes(shutdown.clone())),
            tokio::spawn(elector.run(shutdown.clone())),
            tokio::spawn(worker.run(shutdown.clone(), config.shutdown_grace)),
        ];
        tracing::info!(node = %ctx.node, "node started");
        Self {
            jobs: JobService::new(ctx.clone()),
            ctx,
            shutdown,
            tasks,
            recorder,
        }
    }

    /// A token cancelled when the node begins to shut down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops claiming, lets running attempts finish within the grace period, then stops the
    /// rest and releases their runs.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a node service ended abnormally");
            }
        }
        if let Some((stop, task)) = self.recorder {
            stop.cancel();
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the activity recorder ended abnormally");
            }
        }
        tracing::info!(node = %self.ctx.node, "node stopped");
    }
}

#[async_trait::async_trait]
impl crate::elector::LeaderService for Evaluator {
    async fn run(&self, stop: CancellationToken) {
        Evaluator::run(self, stop).await;
    }
}

#[async_trait::async_trait]
impl crate::elector::LeaderService for Sender {
    async fn run(&self, stop: CancellationToken) {
        Sender::run(self, stop).await;
    }
}
