//! Embedding a node in a Rust program.

use std::path::PathBuf;
use std::sync::Arc;

use kairos_exec::{FunctionRegistry, TaskExecutor};
use kairos_runtime::{Event, JobService, Node, NodeConfig, NodeContext, SystemClock};
use kairos_store::Store;
use kairos_store_sqlite::SqliteStore;

/// Settings of an embedded node.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub node_name: String,
    pub node: NodeConfig,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            node_name: "embedded".into(),
            node: NodeConfig::default(),
        }
    }
}

/// A node running inside the host program (no HTTP server).
pub struct Embedded {
    node: Node,
}

impl Embedded {
    /// Opens the store in `config.data_dir` and starts the scheduler, worker and rescuer.
    pub async fn start(
        config: EmbeddedConfig,
        functions: FunctionRegistry,
    ) -> anyhow::Result<Self> {
        let store = SqliteStore::open_dir(&config.data_dir)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let store: Arc<dyn Store> = Arc::new(store);
        let ctx = NodeContext::new(config.node_name, store, Arc::new(SystemClock));
        let node = Node::start(ctx, Arc::new(TaskExecutor::new(functions)), config.node).await;
        Ok(Self { node })
    }

    /// Create, change, pause, trigger jobs.
    pub fn jobs(&self) -> &JobService {
        &self.node.jobs
    }

    /// Every event from now on (runs queued, started, finished, ...).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.node.ctx.telemetry.subscribe()
    }

    /// The node's context (store, clock, telemetry) for advanced use.
    pub fn context(&self) -> &NodeContext {
        &self.node.ctx
    }

    /// Stops the node gracefully.
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}
