//! Leadership: which node fires triggers and runs maintenance, and the gate that starts and
//! stops that work for each term.
//!
//! Every node runs an elector. A follower asks the store to elect it every
//! [`ElectorConfig::attempt`] (and at once when another node resigns); the store grants a new
//! term when the row is free, expired, or (PostgreSQL) its holder's connection is gone. The
//! leader renews every `ttl / 5`. The leader's services (the scheduler, the rescuer, which
//! also expires dead nodes, and the alert evaluator and sender) run under the [`LeaderGate`]: started when a term begins, stopped
//! when it ends, started again for the next one.
//!
//! A leader that cannot renew (the store is unreachable, the node is cut off) stops its
//! services once `ttl − ttl/5` has passed since the last renewal it sent (measured on the
//! monotonic clock; every store call a leader makes is cut short at that instant, and its
//! services get `ttl/10` to end before they are aborted), before the row can expire and
//! another node take over: two schedulers rarely overlap, and when they do (a
//! paused process), exactly-once still holds through the unique run key and the fenced fire.
//! On shutdown the leader resigns, so another node takes over at once.
//!
//! Each node also refreshes its row in the node registry every [`ElectorConfig::attempt`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use jiff::{SignedDuration, Timestamp};
use kairos_store::{
    Leader, LeaderElectParams, LeaderResignParams, NodeHeartbeatParams, NodeLeaveParams,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::context::NodeContext;
use crate::rescuer::Rescuer;
use crate::scheduler::Scheduler;
use crate::telemetry::Event;

/// Election settings.
#[derive(Debug, Clone)]
pub struct ElectorConfig {
    /// Lease of the leadership. Default 10s.
    pub ttl: SignedDuration,
    /// Time between a follower's election attempts and every node's registry heartbeat.
    /// Default 500ms.
    pub attempt: Duration,
    /// Where this node's API listens, for the registry. Default none.
    pub address: Option<String>,
}

impl Default for ElectorConfig {
    fn default() -> Self {
        Self {
            ttl: SignedDuration::from_secs(10),
            attempt: Duration::from_millis(500),
            address: None,
        }
    }
}

/// A service that runs on the leader only, for one term at a time: `run` returns once `stop`
/// is cancelled, and is called again for the next term.
#[async_trait::async_trait]
pub trait LeaderService: Send + Sync + 'static {
    async fn run(&self, stop: CancellationToken);
}

#[async_trait::async_trait]
impl LeaderService for Scheduler {
    async fn run(&self, stop: CancellationToken) {
        Scheduler::run(self, stop).await;
    }
}

#[async_trait::async_trait]
impl LeaderService for Rescuer {
    async fn run(&self, stop: CancellationToken) {
        Rescuer::run(self, stop).await;
    }
}

/// The leader-only services, started for a term and stopped at its end.
pub struct LeaderGate {
    services: Vec<Arc<dyn LeaderService>>,
    running: Option<(i64, CancellationToken, Vec<JoinHandle<()>>)>,
}

impl LeaderGate {
    pub fn new(scheduler: Arc<Scheduler>, rescuer: Arc<Rescuer>) -> Self {
        Self {
            services: vec![scheduler, rescuer],
            running: None,
        }
    }

    /// The gate with one more service (the alert evaluator and sender).
    pub fn with(mut self, service: Arc<dyn LeaderService>) -> Self {
        self.services.push(service);
        self
    }

    /// The term whose services run, if any.
    pub fn term(&self) -> Option<i64> {
        self.running.as_ref().map(|(term, _, _)| *term)
    }

    fn start(&mut self, ctx: &NodeContext, term: i64) {
        let stop = CancellationToken::new();
        let tasks = self
            .services
            .iter()
            .map(|service| {
                let (service, stop) = (service.clone(), stop.clone());
                tokio::spawn(async move { service.run(stop).await })
            })
            .collect();
        self.running = Some((term, stop, tasks));
        ctx.telemetry.emit(Event::Leadership {
            term,
            leading: true,
        });
    }

    /// Starts again, for the same term, a service that ended while its term runs (a panic: a
    /// leader whose scheduler is gone must not go on renewing a term in which nothing fires).
    fn restart_ended(&mut self) {
        let Some((term, stop, tasks)) = self.running.as_mut() else {
            return;
        };
        for (service, task) in self.services.iter().zip(tasks.iter_mut()) {
            if task.is_finished() && !stop.is_cancelled() {
                tracing::error!(
                    term = *term,
                    "a leader service ended while its term runs: started again"
                );
                let (service, stop) = (service.clone(), stop.clone());
                let ended =
                    std::mem::replace(task, tokio::spawn(async move { service.run(stop).await }));
                // Finished: only its panic, if any, is left to log (without waiting).
                tokio::spawn(async move {
                    if let Err(e) = ended.await {
                        tracing::error!(error = %e, "a leader service ended abnormally");
                    }
                });
            }
        }
    }

    /// Stops the services, waiting at most `within` for them to end; one that has not ended
    /// by then (stuck in a store call, say) is aborted.
    async fn stop(&mut self, ctx: &NodeContext, within: Duration) {
        if let Some((term, stop, tasks)) = self.running.take() {
            stop.cancel();
            let deadline = Instant::now() + within;
            for mut task in tasks {
                match tokio::time::timeout_at(deadline, &mut task).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "a leader service ended abnormally"),
                    Err(_) => {
                        tracing::error!(
                            within_ms = within.as_millis() as u64,
                            "a leader service did not stop in time: aborted"
                        );
                        task.abort();
                    }
                }
            }
            ctx.telemetry.emit(Event::Leadership {
                term,
                leading: false,
            });
        }
    }
}

impl Drop for LeaderGate {
    /// The services never outlive their gate (an elector task aborted or panicking).
    fn drop(&mut self) {
        if let Some((_, stop, _)) = &self.running {
            stop.cancel();
        }
    }
}

/// Elects, renews, and switches the [`LeaderGate`].
pub struct Elector {
    ctx: NodeContext,
    config: ElectorConfig,
    gate: LeaderGate,
    started_at: Timestamp,
    /// The services must be stopped by then unless a renewal holds (the monotonic clock: a
    /// step of the wall clock neither shortens nor stretches it).
    held_until: Option<Instant>,
}

impl Elector {
    pub fn new(ctx: NodeContext, config: ElectorConfig, gate: LeaderGate) -> Self {
        let started_at = ctx.clock.now();
        Self {
            ctx,
            config,
            gate,
            started_at,
            held_until: None,
        }
    }

    /// The term this node leads, if any.
    pub fn leading(&self) -> Option<i64> {
        self.gate.term()
    }

    fn margin(&self) -> SignedDuration {
        self.config.ttl / 5
    }

    /// How long services get to end when the gate stops them: half the margin, so that a
    /// leader that steps down for want of a renewal has ended them (or aborted them) before its
    /// lease can expire.
    fn stop_limit(&self) -> Duration {
        self.margin().unsigned_abs() / 2
    }

    /// For a leader, the time left before it must have stopped its services.
    fn hold_left(&self) -> Option<Duration> {
        self.gate.term()?;
        Some(self.held_until.map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(Instant::now())
        }))
    }

    /// One election attempt (or renewal), switching the gate by its result. Returns the leader
    /// the store reported, if the store answered.
    pub async fn run_once(&mut self) -> Option<Leader> {
        let sent = Instant::now();
        let limit = self.call_limit();
        let result = tokio::time::timeout(
            limit,
            self.ctx.store.leader_elect(LeaderElectParams {
                node_id: self.ctx.node_id.clone(),
                node_name: self.ctx.node.clone(),
                ttl: self.config.ttl,
                now: self.ctx.clock.store_now(),
            }),
        )
        .await;
        let leader = match result {
            Ok(Ok(leader)) => leader,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "leader election failed");
                self.check_hold().await;
                return None;
            }
            Err(_) => {
                tracing::error!("leader election timed out");
                self.check_hold().await;
                return None;
            }
        };
        if leader.node_id == self.ctx.node_id {
            self.held_until = sent.checked_add((self.config.ttl - self.margin()).unsigned_abs());
            if self.gate.term() != Some(leader.term) {
                // A new term (or a term lost and regained): its services start afresh.
                let within = self.stop_limit();
                self.gate.stop(&self.ctx, within).await;
                self.gate.start(&self.ctx, leader.term);
            }
        } else {
            self.held_until = None;
            let within = self.stop_limit();
            self.gate.stop(&self.ctx, within).await;
        }
        Some(leader)
    }

    /// A leader that could not renew in time stops its services.
    async fn check_hold(&mut self) {
        if self.hold_left() == Some(Duration::ZERO) {
            tracing::error!("leadership not renewed in time (store unreachable?): stepping down");
            self.held_until = None;
            let within = self.stop_limit();
            self.gate.stop(&self.ctx, within).await;
        }
    }

    /// Longest wait for one store call: a store that hangs must not hold up stepping down, so
    /// a leader's calls also end when its hold does.
    fn call_limit(&self) -> Duration {
        let limit = self.config.ttl.unsigned_abs() / 5;
        self.hold_left().map_or(limit, |left| limit.min(left))
    }

    /// Refreshes this node's registry row.
    pub async fn heartbeat_once(&self) {
        let call = self.ctx.store.node_heartbeat(NodeHeartbeatParams {
            id: self.ctx.node_id.clone(),
            name: self.ctx.node.clone(),
            address: self.config.address.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            running: u32::try_from(self.ctx.live.len()).unwrap_or(u32::MAX),
            now: self.ctx.clock.store_now(),
        });
        match tokio::time::timeout(self.call_limit(), call).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "node heartbeat failed"),
            Err(_) => tracing::warn!("node heartbeat timed out"),
        }
    }

    /// Runs until `shutdown`; then stops the leader services, resigns and leaves the registry.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let renew = self.config.ttl.unsigned_abs() / 5;
        self.ctx.telemetry.emit(Event::NodeJoined {
            node_id: self.ctx.node_id.clone(),
            node: self.ctx.node.clone(),
        });
        loop {
            self.heartbeat_once().await;
            self.check_hold().await;
            self.run_once().await;
            self.gate.restart_ended();
            let wait = match self.hold_left() {
                // A leader wakes no later than its hold ends, to step down on time.
                Some(left) => renew
                    .min(self.config.attempt.max(Duration::from_millis(1)) * 2)
                    .min(left),
                None => self.config.attempt,
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.ctx.leader_wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if let Some(term) = self.gate.term() {
            let within = self.stop_limit();
            self.gate.stop(&self.ctx, within).await;
            let resign = self.ctx.store.leader_resign(LeaderResignParams {
                node_id: self.ctx.node_id.clone(),
                term,
                now: self.ctx.clock.store_now(),
            });
            match tokio::time::timeout(self.call_limit(), resign).await {
                Ok(Ok(true)) => tracing::info!(term, "resigned leadership"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "resigning leadership failed"),
                Err(_) => tracing::warn!("resigning leadership timed out"),
            }
        }
        let leave = self.ctx.store.node_leave(NodeLeaveParams {
            id: self.ctx.node_id.clone(),
        });
        let _ = tokio::time::timeout(self.call_limit(), leave).await;
        self.ctx.telemetry.emit(Event::NodeLeft {
            node_id: self.ctx.node_id.clone(),
            node: self.ctx.node.clone(),
        });
    }
}
