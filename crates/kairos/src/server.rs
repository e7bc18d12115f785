//! `kairos server`: one node, on the embedded SQLite store or as a member of a cluster on
//! PostgreSQL, serving the API (HTTP or HTTPS).

use std::sync::Arc;

use anyhow::Context;
use kairos_exec::{FunctionRegistry, TaskExecutor};
use kairos_runtime::{
    AlignedClock, ElectorConfig, Node, NodeConfig, NodeContext, SchedulerConfig, SystemClock,
    WorkerConfig,
};
use kairos_store::Store;

use crate::config::ServerConfig;

/// Starts a node with `functions` registered and serves until SIGTERM or SIGINT.
pub async fn serve(config: ServerConfig, functions: FunctionRegistry) -> anyhow::Result<()> {
    let store = config.store.open().await?;
    tracing::info!(store = %config.store.redacted(), "store opened");
    // The node's clock is set to the store's (a cluster's database) before anything reads it,
    // and kept so (see `AlignedClock`); the embedded store's clock is the node's.
    let clock = Arc::new(AlignedClock::new(SystemClock));
    match clock.align(store.as_ref()).await {
        Ok(Some(offset)) => tracing::debug!(offset_ms = offset.as_millis(), "clock aligned"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the store's clock yet"),
    }
    let aligning = tokio_util::sync::CancellationToken::new();
    let _stop_aligning = aligning.clone().drop_guard();
    tokio::spawn({
        let (clock, store) = (clock.clone(), store.clone());
        async move { clock.keep_aligned(store, aligning).await }
    });
    let mut ctx = NodeContext::new(config.node_name.clone(), store, clock);
    // Tasks report to this node's API (`KAIROS_API_URL`).
    ctx.api_url = Some(config.advertise.clone());
    // A job's `notify` may name the channels of this node's configuration.
    ctx.alert_channels = std::sync::Arc::new(
        config
            .alerts
            .channels
            .iter()
            .map(|c| c.name.clone())
            .collect(),
    );
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
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
        activity_retention: config.event_retention,
        // A run whose lease expired waits at most a heartbeat (or 5 s) for its rescue.
        rescue_interval: config
            .lease
            .heartbeat()
            .unsigned_abs()
            .min(std::time::Duration::from_secs(5)),
        elector: ElectorConfig {
            address: Some(config.advertise.clone()),
            ..ElectorConfig::default()
        },
        recover_on_start: config.store.exclusive(),
        alerts: std::sync::Arc::new(config.alerts.clone()),
    };
    // Everything that can fail on the user's input (the TLS files, the address) fails before
    // the node starts.
    let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    warn_about_access(&config, ctx.store.as_ref()).await;
    // Per-task cgroups are set up now (a cgroup v2 server moves itself into a leaf), not at the
    // first task; the executor logs what it found.
    if !config.task_cgroups {
        kairos_exec::disable_task_cgroups();
    }
    let _ = tokio::task::spawn_blocking(kairos_exec::task_cgroups).await;
    start_reaper().await;
    let node = Node::start(
        ctx.clone(),
        Arc::new(TaskExecutor::new(functions)),
        node_config,
    )
    .await;
    // The node's own advertised name is one it answers to: its tasks reach it there
    // (`KAIROS_API_URL`), as other nodes do.
    let mut allowed_hosts = config.allowed_hosts.clone();
    if let Some(host) = advertised_host(&config.advertise)
        && !allowed_hosts.contains(&host)
    {
        allowed_hosts.push(host);
    }
    let access = kairos_api::guard::Access {
        allowed_hosts,
        allowed_origins: config.allowed_origins.clone(),
        tls: tls.is_some(),
        auth: config.auth,
        metrics_public: config.metrics_public,
        stream_recheck: None,
    };
    let app = kairos_api::router(
        kairos_api::AppState::with_access(ctx, node.jobs.clone(), access)
            .with_shutdown(node.shutdown_token()),
    );
    tracing::info!(url = %format!("{scheme}://{}", config.listen), auth = ?config.auth, "listening");
    let shutdown = node.shutdown_token();
    let http_stop = shutdown.clone();
    let http = tokio::spawn(async move {
        let stopped = async move { http_stop.cancelled().await };
        match tls {
            Some(acceptor) => {
                let listener = crate::tls::TlsListener::new(listener, acceptor)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        }
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

/// The argument that starts the `kairos` binary as a server's reaper (see
/// [`kairos_exec::reaper`]); not a command of the CLI.
pub const REAPER_MODE: &str = "__kairos-reaper";

static USE_REAPER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`serve`] start a reaper beside the server: this program run again with
/// [`REAPER_MODE`] as its only argument, which must then call [`kairos_exec::reaper::run`]
/// (as the `kairos` binary does). Without it, what a task started may outlive a server killed
/// with SIGKILL.
pub fn use_reaper() {
    USE_REAPER.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Starts the reaper, if asked for (see [`use_reaper`]). Without it (the binary cannot be
/// started again, say) the server runs on and says so.
async fn start_reaper() {
    if !USE_REAPER.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let started = tokio::task::spawn_blocking(|| {
        // This very file, even if it was replaced on disk since (an upgrade in place).
        let program = if cfg!(target_os = "linux") {
            std::path::PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe()?
        };
        // Named as this program is in process lists (`kairos __kairos-reaper`).
        let name = std::env::args()
            .next()
            .unwrap_or_else(|| "kairos".to_owned());
        kairos_exec::reaper::start(&program, &name, &[REAPER_MODE])
    })
    .await;
    match started {
        Ok(Ok(())) => tracing::debug!("reaper started"),
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "cannot start the reaper: if this server is killed, processes its tasks started may \
             outlive it"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot start the reaper"),
    }
}

/// Warns at every start about settings that leave the node open, or locked for everyone.
async fn warn_about_access(config: &ServerConfig, store: &dyn Store) {
    use kairos_api::auth::AuthMode;
    if config.insecure_no_auth {
        tracing::warn!(
            listen = %config.listen,
            "authentication is OFF on an address beyond loopback (--insecure-no-auth): anyone \
             who reaches this port can run commands on this machine"
        );
    }
    if config.auth == AuthMode::Required
        && store
            .token_list(kairos_store::TokenListParams::default())
            .await
            .is_ok_and(|tokens| tokens.is_empty())
    {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            "authentication is required but no token exists yet: stop the server and run \
             `kairos token create --data-dir DIR --name admin --role admin`"
        );
    }
    if config.tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "serving plain HTTP beyond loopback: tokens cross the network in clear text; \
             use --tls-cert and --tls-key"
        );
    }
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

/// The host name of an advertised URL (`http://node3.internal:7433` → `node3.internal`),
/// lowercase; `None` for an IP address (always allowed) or a URL without a host.
fn advertised_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    if host.is_empty() || host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::advertised_host;

    #[test]
    fn the_advertised_host_name_is_allowed() {
        assert_eq!(
            advertised_host("http://Node3.internal:7433").as_deref(),
            Some("node3.internal")
        );
        assert_eq!(
            advertised_host("https://kairos.example").as_deref(),
            Some("kairos.example")
        );
        assert_eq!(advertised_host("http://127.0.0.1:7433"), None);
        assert_eq!(advertised_host("http://[::1]:7433"), None);
    }
}
