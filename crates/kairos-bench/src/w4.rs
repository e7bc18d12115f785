//! W4, scale: M cron jobs with spread schedules in one store, then a node started on it.
//!
//! Registration goes through the job service, as the API does (validation, the first due time,
//! one insert transaction per job), with a few creations in flight at once. Each job is
//! `"{s} {m} {h} * * *"` (daily, at a second of the day taken from a hash of its index), running
//! the no-op function; so while the node idles, M / 86 400 jobs fire per second (about 12 for a
//! million), as they would in production.
//!
//! Reported: registration time and jobs/s; the store's size right after registration (SQLite:
//! every file, `-wal` included; PostgreSQL: the schema's tables, indexes included); then, for a node on that store: start-up time (from opening the
//! store to `Node::start` returned and a store round trip, the readiness check), resident memory
//! after start and after idling, and CPU over the idle period. The node phase runs in a fresh
//! process of this program when possible (`w4-node`), so that its memory is the node's alone and
//! not what registration left in this process's heap.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kairos_runtime::{JobService, Node};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{BenchError, BenchResult};
use crate::harness::{self, FinishCounter};
use crate::procstat::{self, CpuTimes};
use crate::report::Measurement;
use crate::store_url::{StoreLocation, StoreUrl};

/// Job creations in flight at once.
pub const REGISTER_IN_FLIGHT: usize = 4;

/// Where the node phase runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeProcess {
    /// In this process (its memory includes what registration left behind).
    InProcess,
    /// In a new process: this program's executable, run as `EXE w4-node --dir D --idle-secs S`
    /// (or `--schema S` with the PostgreSQL URL in the environment).
    Exe(PathBuf),
}

/// W4 settings.
#[derive(Debug, Clone)]
pub struct W4Params {
    /// Cron jobs to register.
    pub jobs: u64,
    /// Seconds the node idles while its CPU is measured.
    pub idle_secs: u64,
    pub node_process: NodeProcess,
    pub keep: bool,
}

impl Default for W4Params {
    fn default() -> Self {
        Self {
            jobs: 1_000_000,
            idle_secs: 30,
            node_process: NodeProcess::InProcess,
            keep: false,
        }
    }
}

/// What the node phase measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodePhase {
    pub startup_ms: f64,
    pub rss_after_start_kib: Option<u64>,
    pub rss_after_idle_kib: Option<u64>,
    pub idle_secs: f64,
    pub idle_cpu_s: f64,
    /// Runs that finished while idling (jobs that came due).
    pub runs_finished: u64,
}

/// A second of the day for job `i`, spread by a hash (splitmix64).
pub fn spread_cron(i: u64) -> String {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let second_of_day = z % 86_400;
    format!(
        "{} {} {} * * *",
        second_of_day % 60,
        (second_of_day / 60) % 60,
        second_of_day / 3600
    )
}

/// Runs W4 once.
pub async fn run(url: &StoreUrl, p: &W4Params) -> BenchResult<Measurement> {
    if p.jobs == 0 {
        return Err(BenchError::InvalidParameter {
            name: "--jobs",
            reason: "must be at least 1".into(),
        });
    }
    let place = url.fresh("w4", p.keep)?;
    let open = place.open().await?;
    let jobs = JobService::new(harness::context(open.store.clone()));
    let t0 = Instant::now();
    futures::stream::iter(0..p.jobs)
        .map(|i| {
            let jobs = jobs.clone();
            async move {
                let spec = harness::spec(json!({
                    "name": format!("cron-{i:07}"),
                    "triggers": [{"cron": spread_cron(i)}],
                    "task": {"kind": "function", "name": harness::NOOP},
                }))?;
                jobs.create(spec).await?;
                Ok::<_, BenchError>(())
            }
        })
        .buffer_unordered(REGISTER_IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    let register = t0.elapsed().as_secs_f64();
    let disk = place.size().await?;
    drop(jobs);
    open.close().await;

    let location = place.location();
    let phase = match &p.node_process {
        NodeProcess::InProcess => node_phase(&location, p.idle_secs).await?,
        NodeProcess::Exe(exe) => node_phase_in_child(exe, &location, p.idle_secs).await?,
    };

    let mut m = Measurement::new("w4");
    m.param("store", url.backend())
        .param("jobs", p.jobs)
        .param("idle_secs", p.idle_secs)
        .param(
            "node_process",
            match p.node_process {
                NodeProcess::InProcess => "same",
                NodeProcess::Exe(_) => "fresh",
            },
        );
    m.metric("register_s", "s", register)
        .metric("register_jobs_per_s", "jobs/s", p.jobs as f64 / register)
        .metric("store_mib", "MiB", disk.total as f64 / 1_048_576.0);
    if let Some(wal) = disk.wal {
        m.metric("store_wal_mib", "MiB", wal as f64 / 1_048_576.0);
    }
    m.metric("startup_ms", "ms", phase.startup_ms)
        .metric(
            "rss_after_start_mib",
            "MiB",
            procstat::mib(phase.rss_after_start_kib),
        )
        .metric(
            "rss_after_idle_mib",
            "MiB",
            procstat::mib(phase.rss_after_idle_kib),
        )
        .metric(
            "idle_cpu_pct",
            "% of one core",
            100.0 * phase.idle_cpu_s / phase.idle_secs.max(f64::MIN_POSITIVE),
        )
        .metric("idle_runs_finished", "runs", phase.runs_finished as f64);
    Ok(m)
}

/// Starts a node on the store at `location`, measures start-up and memory, idles `idle_secs`
/// measuring CPU, and stops it.
pub async fn node_phase(location: &StoreLocation, idle_secs: u64) -> BenchResult<NodePhase> {
    let t0 = Instant::now();
    let open = location.open().await?;
    let ctx = harness::context(open.store.clone());
    let counter = FinishCounter::start(ctx.telemetry.subscribe());
    let node = Node::start(
        ctx.clone(),
        harness::executor(),
        harness::node_config(16, location.exclusive()),
    )
    .await;
    ctx.store.ping().await?;
    let startup_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rss_after_start_kib = procstat::rss_kib();

    let cpu0 = CpuTimes::now();
    let t_idle = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_cpu_s = CpuTimes::now().since(&cpu0).own.as_secs_f64();
    let idle = t_idle.elapsed().as_secs_f64();
    let rss_after_idle_kib = procstat::rss_kib();
    let (runs_finished, _) = counter.finished(&*ctx.store).await?;
    drop(counter);
    node.shutdown().await;
    drop(ctx);
    open.close().await;
    Ok(NodePhase {
        startup_ms,
        rss_after_start_kib,
        rss_after_idle_kib,
        idle_secs: idle,
        idle_cpu_s,
        runs_finished,
    })
}

/// Runs [`node_phase`] in a new process (`EXE w4-node ...`) and reads its JSON answer.
pub async fn node_phase_in_child(
    exe: &Path,
    location: &StoreLocation,
    idle_secs: u64,
) -> BenchResult<NodePhase> {
    let (args, env) = location.child_args();
    let out = tokio::process::Command::new(exe)
        .arg("w4-node")
        .args(args)
        .envs(env)
        .arg("--idle-secs")
        .arg(idle_secs.to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| BenchError::io(format!("cannot run {}", exe.display()), e))?;
    if !out.status.success() {
        return Err(BenchError::Incomplete(format!(
            "the node phase ({} w4-node) failed: {}",
            exe.display(),
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| {
        BenchError::Incomplete(format!(
            "the node phase answered `{line}`, not its figures: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_schedules_are_valid_daily_times() {
        let mut seconds = std::collections::HashSet::new();
        for i in 0..1000 {
            let cron = spread_cron(i);
            let fields: Vec<u32> = cron
                .split(' ')
                .take(3)
                .map(|f| f.parse().unwrap())
                .collect();
            assert!(fields[0] < 60 && fields[1] < 60 && fields[2] < 24, "{cron}");
            seconds.insert(cron);
        }
        assert!(seconds.len() > 990);
    }
}
