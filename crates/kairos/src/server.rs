//! `kairos server`: one node on the embedded SQLite store, serving the API.

use std::sync::Arc;

use anyhow::Context;
use kairos_exec::{FunctionRegistry, TaskExecutor};
use kairos_runtime::{Node, NodeConfig, NodeContext, SchedulerConfig, SystemClock, WorkerConfig};
use kairos_store::Store;
use kairos_store_sqlite::SqliteStore;

use crate::config::ServerConfig;

/// Starts a node with `functions` registered and serves until SIGTERM or SIGINT.
pub async fn serve(config: ServerConfig, functions: FunctionRegistry) -> anyhow::Result<()> {
    let store = SqliteStore::open_dir(&config.data_dir)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(data_dir = %config.data_dir.display(), "store opened");
    let store: Arc<dyn Store> = Arc::new(store);
    let ctx = NodeContext::new(config.node_name.clone(), store, Arc::new(SystemClock));
    let node_config = NodeConfig {
        worker: WorkerConfig {
            concurrency: config.concurrency,
            lease: config.lease,
            lookahead: config.lookahead,
            ..WorkerConfig::default()
        },
        scheduler: SchedulerConfig {
            lookahead: config.lookahead,
        },
        shutdown_grace: config.shutdown_grace,
        ..NodeConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let node = Node::start(
        ctx.clone(),
        Arc::new(TaskExecutor::new(functions)),
        node_config,
    )
    .await;
    let app = kairos_api::router(kairos_api::AppState {
        ctx,
        jobs: node.jobs.clone(),
        access: Arc::new(kairos_api::guard::Access {
            allowed_hosts: config.allowed_hosts.clone(),
            allowed_origins: config.allowed_origins.clone(),
            tls: false,
        }),
    });
    tracing::info!(url = %format!("http://{}", config.listen), "listening");
    let shutdown = node.shutdown_token();
    let http_stop = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
    });
    wait_for_signal().await;
    tracing::info!("shutting down");
    // Stop the services first (running attempts get their grace period), then the API.
    node.shutdown().await;
    match tokio::time::timeout(std::time::Duration::from_secs(5), http).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "API server ended with an error"),
        Err(_) => tracing::warn!("API connections still open after shutdown; closing"),
        _ => {}
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
