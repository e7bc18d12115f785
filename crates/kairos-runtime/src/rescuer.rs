//! The rescuer: runs whose lease expired (their worker died or was cut off) are requeued as a
//! new attempt (`at_least_once`) or marked `lost` (`at_most_once`). A startup pass also recovers
//! every run this node held before it restarted, without waiting for the lease. The rescuer
//! runs on the leader only, and also removes nodes that stopped heartbeating from the registry.

use std::time::Duration;

use kairos_store::{NodeExpireParams, RescueReport, RunRescueParams, StoreError};
use tokio_util::sync::CancellationToken;

use crate::context::NodeContext;
use crate::telemetry::Event;

const RESCUE_BATCH: u32 = 1000;
/// A node silent for this long is taken off the registry.
pub const NODE_EXPIRY: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

pub struct Rescuer {
    ctx: NodeContext,
    interval: Duration,
}

impl Rescuer {
    pub fn new(ctx: NodeContext, interval: Duration) -> Self {
        Self { ctx, interval }
    }

    /// One pass. `startup`: also recover runs this node held before a restart.
    pub async fn run_once(&self, startup: bool) -> Result<RescueReport, StoreError> {
        let report = self
            .ctx
            .store
            .run_rescue(RunRescueParams {
                limit: RESCUE_BATCH,
                orphaned_node: startup.then(|| self.ctx.node.clone()),
                now: self.ctx.clock.store_now(),
            })
            .await?;
        if !report.requeued.is_empty() || !report.lost.is_empty() {
            self.ctx.telemetry.emit(Event::RunsRescued {
                requeued: report.requeued.clone(),
                lost: report.lost.clone(),
            });
            self.ctx.worker_wake.notify_one();
        }
        Ok(report)
    }

    /// Removes registry rows of nodes not heard from for [`NODE_EXPIRY`].
    pub async fn expire_nodes_once(&self) -> Result<Vec<String>, StoreError> {
        let gone = self
            .ctx
            .store
            .node_expire(NodeExpireParams {
                after: NODE_EXPIRY,
                now: self.ctx.clock.store_now(),
            })
            .await?;
        if !gone.is_empty() {
            self.ctx
                .telemetry
                .emit(crate::telemetry::Event::NodesExpired {
                    node_ids: gone.clone(),
                });
        }
        Ok(gone)
    }

    /// Runs until `shutdown`: a pass for expired leases every `interval`. (The startup pass for
    /// this node's own runs is done by [`crate::Node::start`] before the worker starts.)
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if let Err(e) = self.run_once(false).await {
                tracing::error!(error = %e, "rescuer pass failed");
            }
            if let Err(e) = self.expire_nodes_once().await {
                tracing::error!(error = %e, "expiring nodes failed");
            }
        }
    }
}
