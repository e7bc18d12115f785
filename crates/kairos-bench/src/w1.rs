//! W1, throughput: N no-op `function` runs, due now, from enqueue to all finished.
//!
//! One job without triggers (`noop`); its runs are queued in bulk through the store
//! (`run_insert_many`, 1000 runs per transaction, each with a unique due time), waking the
//! worker after each transaction as an enqueue API would.
//!
//! - **bulk**: the timer starts, all N runs are queued with no node running, then a node starts
//!   and drains them. Reported: total jobs/s (N over enqueue + drain), and the two phases.
//! - **steady**: the node runs first; a producer keeps the outstanding runs (queued or running)
//!   at `depth`, topping up whenever a tenth of it has drained, until N were queued. Reported:
//!   jobs/s from the first enqueue to the last finish.
//!
//! Both report the CPU time of the whole process (node and producer: user + system) and its
//! peak resident memory during the run.

use std::time::Instant;

use kairos_runtime::{Clock, Node, SystemClock};

use crate::error::{BenchError, BenchResult};
use crate::harness::{self, FinishCounter};
use crate::procstat::{self, CpuTimes};
use crate::report::Measurement;
use crate::store_url::StoreUrl;

/// How runs arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// All runs queued first, then drained.
    Bulk,
    /// Queued by a producer at a fixed depth while the node drains.
    Steady,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Bulk => "bulk",
            Shape::Steady => "steady",
        }
    }
}

/// W1 settings.
#[derive(Debug, Clone)]
pub struct W1Params {
    /// Runs in all.
    pub n: u64,
    pub shape: Shape,
    /// Outstanding runs the steady producer keeps.
    pub depth: u64,
    /// Worker concurrency of the node.
    pub concurrency: usize,
    /// Record the node's events in the activity log (as `kairos server` does).
    pub event_log: bool,
    /// Keep the store's files afterwards.
    pub keep: bool,
}

impl Default for W1Params {
    fn default() -> Self {
        Self {
            n: 100_000,
            shape: Shape::Bulk,
            depth: 1000,
            concurrency: 64,
            event_log: true,
            keep: false,
        }
    }
}

/// Runs W1 once.
pub async fn run(url: &StoreUrl, p: &W1Params) -> BenchResult<Measurement> {
    if p.n == 0 {
        return Err(BenchError::InvalidParameter {
            name: "--n",
            reason: "must be at least 1".into(),
        });
    }
    let place = url.fresh(&format!("w1-{}", p.shape.as_str()), p.keep)?;
    let open = place.open().await?;
    let job = harness::noop_job(open.store.as_ref(), "noop").await?;
    let ctx = harness::context(open.store.clone());
    let counter = FinishCounter::start(ctx.telemetry.subscribe());
    let clock = SystemClock;
    let mut config = harness::node_config(p.concurrency, !url.is_cluster());
    if !p.event_log {
        config.activity_retention = std::time::Duration::ZERO;
    }
    let limit = harness::drain_limit(p.n);

    let (node, timing) = match p.shape {
        Shape::Bulk => {
            procstat::reset_peak_rss();
            let cpu0 = CpuTimes::now();
            let t0 = Instant::now();
            let base = clock.now();
            harness::enqueue(&ctx, job.id, base, 0..p.n, base).await?;
            let enqueued = t0.elapsed();
            let node = Node::start(ctx.clone(), harness::executor(), config).await;
            let t_start = Instant::now();
            let (done, failed) = counter.wait_for(&*ctx.store, p.n, limit).await?;
            let cpu = CpuTimes::now().since(&cpu0);
            let timing = Timing {
                total: done.duration_since(t0).as_secs_f64(),
                enqueue: Some(enqueued.as_secs_f64()),
                drain: Some(done.duration_since(t_start).as_secs_f64()),
                cpu: cpu.own.as_secs_f64(),
                failed,
            };
            (node, timing)
        }
        Shape::Steady => {
            let node = Node::start(ctx.clone(), harness::executor(), config).await;
            procstat::reset_peak_rss();
            let cpu0 = CpuTimes::now();
            let t0 = Instant::now();
            let base = clock.now();
            let refill = (p.depth / 10).max(1);
            let mut queued = 0u64;
            while queued < p.n {
                let (finished, _) = counter.finished(&*ctx.store).await?;
                let outstanding = queued.saturating_sub(finished);
                let room = p.depth.saturating_sub(outstanding);
                if room >= refill.min(p.n - queued) {
                    let end = p.n.min(queued + room);
                    harness::enqueue(&ctx, job.id, base, queued..end, clock.now()).await?;
                    queued = end;
                } else {
                    // Wake when enough has drained to top up again.
                    let want = (queued + refill).saturating_sub(p.depth);
                    counter.wait_for(&*ctx.store, want, limit).await?;
                }
            }
            let (done, failed) = counter.wait_for(&*ctx.store, p.n, limit).await?;
            let cpu = CpuTimes::now().since(&cpu0);
            let timing = Timing {
                total: done.duration_since(t0).as_secs_f64(),
                enqueue: None,
                drain: None,
                cpu: cpu.own.as_secs_f64(),
                failed,
            };
            (node, timing)
        }
    };
    let peak = procstat::peak_rss_kib();
    let lagged = counter.lagged();
    drop(counter);
    node.shutdown().await;
    drop(ctx);
    open.close().await;

    let mut m = Measurement::new(format!("w1-{}", p.shape.as_str()));
    m.param("store", url.backend())
        .param("n", p.n)
        .param("concurrency", p.concurrency as u64);
    if p.shape == Shape::Steady {
        m.param("depth", p.depth);
    }
    m.metric("jobs_per_s", "jobs/s", p.n as f64 / timing.total)
        .metric("total_s", "s", timing.total);
    if let (Some(enqueue), Some(drain)) = (timing.enqueue, timing.drain) {
        m.metric("enqueue_s", "s", enqueue)
            .metric("enqueue_per_s", "runs/s", p.n as f64 / enqueue)
            .metric("drain_s", "s", drain)
            .metric("drain_jobs_per_s", "jobs/s", p.n as f64 / drain);
    }
    m.metric("cpu_s", "s", timing.cpu)
        .metric(
            "cpu_pct",
            "% of one core",
            100.0 * timing.cpu / timing.total,
        )
        .metric("peak_rss_mib", "MiB", procstat::mib(peak))
        .metric("failed", "runs", timing.failed as f64)
        .metric("events_lagged", "0/1", f64::from(u8::from(lagged)));
    Ok(m)
}

struct Timing {
    total: f64,
    enqueue: Option<f64>,
    drain: Option<f64>,
    cpu: f64,
    failed: u64,
}
