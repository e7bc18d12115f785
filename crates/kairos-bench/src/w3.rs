//! W3, shell jobs: N `command` runs of `/bin/true` through Kairos, against a bare loop in this
//! program that spawns `/bin/true` N times.
//!
//! Kairos: one job `{"task": {"kind": "command", "argv": ["/bin/true"]}}`; its N runs are
//! queued in bulk (as in W1 bulk), then a node with worker concurrency C drains them; timed from
//! the first enqueue to the last finish. Each attempt is a full Kairos attempt: claim with a
//! lease, a process in its own session and group with `PR_SET_PDEATHSIG`, stdout and stderr
//! captured line by line with timestamps, `wait4` usage, the attempt row and the run's state
//! written to the store.
//!
//! Bare loop (run first, which also warms the page cache): N spawns of `/bin/true` with at most
//! C at once (tokio's `Command`, stdin from `/dev/null`, stdout and stderr through pipes read to
//! the end, exit status waited for).
//!
//! Reported: µs per job of each (wall time / N), and the ratio Kairos / bare.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use kairos_runtime::{Clock, Node, SystemClock};
use kairos_store::JobCreateParams;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::{BenchError, BenchResult};
use crate::harness::{self, FinishCounter};
use crate::procstat::CpuTimes;
use crate::report::Measurement;
use crate::store_url::StoreUrl;

/// The program both sides run.
pub const TRUE: &str = "/bin/true";

/// W3 settings.
#[derive(Debug, Clone)]
pub struct W3Params {
    /// Processes on each side.
    pub n: u64,
    /// Processes at once (worker concurrency; the bare loop's limit).
    pub concurrency: usize,
    /// Per-task cgroups where the machine allows (the server's default).
    pub task_cgroups: bool,
    pub keep: bool,
}

impl Default for W3Params {
    fn default() -> Self {
        Self {
            n: 5000,
            concurrency: 16,
            task_cgroups: true,
            keep: false,
        }
    }
}

/// Runs W3 once.
pub async fn run(url: &StoreUrl, p: &W3Params) -> BenchResult<Measurement> {
    if p.n == 0 {
        return Err(BenchError::InvalidParameter {
            name: "--n",
            reason: "must be at least 1".into(),
        });
    }
    let concurrency = p.concurrency.max(1);
    if !p.task_cgroups {
        kairos_exec::disable_task_cgroups();
    }

    let cpu0 = CpuTimes::now();
    let t0 = Instant::now();
    bare_loop(p.n, concurrency).await?;
    let bare = t0.elapsed().as_secs_f64();
    let bare_cpu = CpuTimes::now().since(&cpu0);

    let place = url.fresh("w3", p.keep)?;
    let open = place.open().await?;
    let job = open
        .store
        .job_create(JobCreateParams {
            actor: "bench".into(),
            spec: harness::spec(json!({
                "name": "true",
                "task": {"kind": "command", "argv": [TRUE]},
            }))?,
            next_fire_at: None,
            now: None,
            calendars: vec![],
        })
        .await?;
    let ctx = harness::context(open.store.clone());
    let counter = FinishCounter::start(ctx.telemetry.subscribe());
    let cpu0 = CpuTimes::now();
    let t0 = Instant::now();
    let base = SystemClock.now();
    harness::enqueue(&ctx, job.id, base, 0..p.n, base).await?;
    let t_start = Instant::now();
    let node = Node::start(
        ctx.clone(),
        harness::executor(),
        harness::node_config(concurrency, !url.is_cluster()),
    )
    .await;
    let (done, failed) = counter
        .wait_for(&*ctx.store, p.n, harness::drain_limit(p.n))
        .await?;
    let kairos = done.duration_since(t0).as_secs_f64();
    let drain = done.duration_since(t_start).as_secs_f64();
    let kairos_cpu = CpuTimes::now().since(&cpu0);
    drop(counter);
    node.shutdown().await;
    drop(ctx);
    open.close().await;

    let per_job_us = |secs: f64| secs * 1e6 / p.n as f64;
    let mut m = Measurement::new("w3");
    m.param("store", url.backend())
        .param("n", p.n)
        .param("concurrency", concurrency as u64);
    m.metric("kairos_us_per_job", "µs", per_job_us(kairos))
        .metric("kairos_drain_us_per_job", "µs", per_job_us(drain))
        .metric("bare_us_per_job", "µs", per_job_us(bare))
        .metric("ratio", "kairos/bare", kairos / bare)
        .metric(
            "kairos_cpu_us_per_job",
            "µs",
            per_job_us(kairos_cpu.own.as_secs_f64()),
        )
        .metric(
            "bare_cpu_us_per_job",
            "µs",
            per_job_us(bare_cpu.own.as_secs_f64()),
        )
        .metric(
            "kairos_children_cpu_us_per_job",
            "µs",
            per_job_us(kairos_cpu.children.as_secs_f64()),
        )
        .metric(
            "bare_children_cpu_us_per_job",
            "µs",
            per_job_us(bare_cpu.children.as_secs_f64()),
        )
        .metric("failed", "runs", failed as f64);
    Ok(m)
}

/// Spawns `/bin/true` `n` times, at most `concurrency` at once, capturing its output.
pub async fn bare_loop(n: u64, concurrency: usize) -> BenchResult<()> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| BenchError::Incomplete(e.to_string()))?;
        tasks.spawn(async move {
            let out = tokio::process::Command::new(TRUE)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .await;
            drop(permit);
            out
        });
        while let Some(done) = tasks.try_join_next() {
            check(done)?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        check(done)?;
    }
    Ok(())
}

fn check(
    done: Result<std::io::Result<std::process::Output>, tokio::task::JoinError>,
) -> BenchResult<()> {
    let out = done
        .map_err(|e| BenchError::Incomplete(e.to_string()))?
        .map_err(|e| BenchError::io(format!("cannot run {TRUE}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::Incomplete(format!(
            "{TRUE} exited with {}",
            out.status
        )))
    }
}
