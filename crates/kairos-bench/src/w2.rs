//! W2, fire lateness: K jobs due every second for D seconds; for every run, lateness = start of
//! its attempt − its due time.
//!
//! Two shapes of the same K fires per second:
//! - **herd**: each job is `{"cron": "* * * * * *"}`, so all K are due in the same instant, at
//!   the start of every second (what K cron jobs on a whole second do);
//! - **spread**: job i is `{"interval": "1s"}` anchored i/K of a second into the second, so one
//!   job is due every 1/K s (a steady rate of K fires per second).
//!
//! Each job runs the no-op function, with `overlap: allow` and
//! `catchup: all`, so that every due time gets a run even when the node falls behind: a slow
//! node shows up as lateness, not hidden by skipped or coalesced runs (which would be counted
//! as missed). The trigger is bounded (`start_at`, `end_at`) to D + 2 whole seconds that begin
//! after all jobs exist; the first (warm-up) and last (cool-down) of them are fired but not
//! measured. After the last due time the node gets up to max(30 s, D) to finish the runs.
//!
//! With `nodes` > 1 (a cluster store), that many nodes run in this process, each with a store
//! connection, elector, scheduler and worker of its own, as separate processes would: one of
//! them leads and fires, all of them claim and run. Lateness then includes the hand-over from
//! the leader to another node's worker (a change notification through the database).
//!
//! Then every run and attempt is read from the store. For each job and each whole second of the
//! measured window: **missed** if it has no run, a skipped run, or a run that never started;
//! **duplicate** for each run beyond the first with the same due time (the store's unique key
//! makes it 0, the benchmark checks anyway). Lateness is `attempts[0].started_at −
//! scheduled_for`, both written by the node (the worker's clock and the due time), in µs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{JobId, RunState};
use kairos_runtime::{Clock, Node, SystemClock};
use kairos_store::{RunListParams, Store};
use serde_json::json;

use crate::error::{BenchError, BenchResult};
use crate::harness;
use crate::procstat::{self, CpuTimes};
use crate::report::Measurement;
use crate::stats::nearest_rank;
use crate::store_url::{OpenStore, StoreUrl};

/// When in each second the K jobs are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// All at the start of the second.
    Herd,
    /// Job i at i/K of the second.
    Spread,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Herd => "herd",
            Shape::Spread => "spread",
        }
    }

    /// How far into each second job `i` of `jobs` is due.
    pub fn offset(self, i: u64, jobs: u64) -> SignedDuration {
        match self {
            Shape::Herd => SignedDuration::ZERO,
            Shape::Spread => {
                let ns = u128::from(i) * 1_000_000_000 / u128::from(jobs.max(1));
                SignedDuration::from_nanos(ns as i64)
            }
        }
    }
}

/// W2 settings.
#[derive(Debug, Clone)]
pub struct W2Params {
    /// Jobs due every second.
    pub jobs: u64,
    pub shape: Shape,
    /// Measured seconds.
    pub secs: u64,
    /// Worker concurrency of each node.
    pub concurrency: usize,
    /// Nodes in this process sharing the store (more than one needs a cluster store).
    pub nodes: usize,
    pub keep: bool,
}

impl Default for W2Params {
    fn default() -> Self {
        Self {
            jobs: 100,
            shape: Shape::Herd,
            secs: 60,
            concurrency: 64,
            nodes: 1,
            keep: false,
        }
    }
}

/// A run's figures and its raw lateness sample (for the chart).
#[derive(Debug, Clone)]
pub struct W2Outcome {
    pub measurement: Measurement,
    /// Lateness of every measured run, µs, sorted.
    pub lateness_us: Vec<i64>,
}

/// What the store holds for the measured window.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WindowCount {
    pub expected: u64,
    pub no_run: u64,
    pub skipped: u64,
    pub unstarted: u64,
    pub duplicates: u64,
    pub lateness_us: Vec<i64>,
}

impl WindowCount {
    pub fn missed(&self) -> u64 {
        self.no_run + self.skipped + self.unstarted
    }
}

fn ceil_second(t: Timestamp) -> BenchResult<Timestamp> {
    let s = t.as_second() + i64::from(t.subsec_nanosecond() > 0);
    Timestamp::from_second(s).map_err(|e| BenchError::Incomplete(e.to_string()))
}

fn plus(t: Timestamp, d: SignedDuration) -> BenchResult<Timestamp> {
    t.checked_add(d)
        .map_err(|e| BenchError::Incomplete(e.to_string()))
}

/// Runs W2 once.
pub async fn run(url: &StoreUrl, p: &W2Params) -> BenchResult<W2Outcome> {
    if p.jobs == 0 || p.secs == 0 || p.nodes == 0 {
        return Err(BenchError::InvalidParameter {
            name: "--jobs/--secs/--nodes",
            reason: "must be at least 1".into(),
        });
    }
    if p.nodes > 1 && !url.is_cluster() {
        return Err(BenchError::NeedsCluster {
            workload: "w2 --nodes 2 or more",
            store: url.to_string(),
        });
    }
    let place = url.fresh("w2", p.keep)?;
    // One store connection per node (pool, change feed and leader lock of its own), as nodes
    // in processes of their own have; each node elects, schedules when it leads, and works.
    let mut opened = Vec::with_capacity(p.nodes);
    let mut nodes = Vec::with_capacity(p.nodes);
    for i in 1..=p.nodes {
        let (open, name) = if p.nodes == 1 {
            (place.open().await?, "bench".to_owned())
        } else {
            let name = format!("n{i}");
            (place.open_as(&name).await?, name)
        };
        let ctx = harness::context_named(&name, open.store.clone());
        let node = Node::start(
            ctx,
            harness::executor(),
            harness::node_config(p.concurrency, !url.is_cluster()),
        )
        .await;
        opened.push(open);
        nodes.push(node);
    }
    let store = nodes[0].ctx.store.clone();
    let clock = SystemClock;

    // The warm-up second comes after every job exists: 0.5 s plus a margin per job (creating
    // a job takes well under 1 ms on SQLite, a few ms on a PostgreSQL server).
    let per_job_ms = if url.is_cluster() { 10 } else { 3 };
    let margin = SignedDuration::from_millis(500 + per_job_ms * p.jobs as i64);
    let t_create = Instant::now();
    let warmup = ceil_second(plus(clock.now(), margin)?)?;
    let first = plus(warmup, SignedDuration::from_secs(1))?;
    let last = plus(first, SignedDuration::from_secs(p.secs as i64 - 1))?;
    let cooldown = plus(last, SignedDuration::from_secs(1))?;
    let mut jobs = Vec::with_capacity(p.jobs as usize);
    for i in 0..p.jobs {
        let offset = p.shape.offset(i, p.jobs);
        let trigger = match p.shape {
            Shape::Herd => json!({
                "cron": "* * * * * *",
                "start_at": warmup.to_string(),
                "end_at": cooldown.to_string(),
            }),
            Shape::Spread => json!({
                "interval": "1s",
                "start_at": plus(warmup, offset)?.to_string(),
                "end_at": plus(cooldown, offset)?.to_string(),
            }),
        };
        let job = nodes[0]
            .jobs
            .create(harness::spec(json!({
                "name": format!("tick-{i:05}"),
                "triggers": [trigger],
                "task": {"kind": "function", "name": harness::NOOP},
                "overlap": "allow",
                "max_concurrent": 10_000,
                "catchup": "all",
            }))?)
            .await?;
        jobs.push((job.id, offset));
    }
    let create_s = t_create.elapsed().as_secs_f64();
    let created = clock.now();
    if created >= first {
        stop(nodes, opened, store).await;
        return Err(BenchError::Incomplete(format!(
            "creating {} jobs took {create_s:.1} s, past the first measured due time {first}; \
             use fewer jobs",
            p.jobs
        )));
    }

    procstat::reset_peak_rss();
    clock
        .sleep_until(plus(warmup, SignedDuration::from_millis(-100))?)
        .await;
    let cpu0 = CpuTimes::now();
    let t_window = Instant::now();
    clock
        .sleep_until(plus(cooldown, SignedDuration::from_millis(200))?)
        .await;
    let fired = p.jobs * (p.secs + 2);
    let drain_limit = Duration::from_secs(p.secs.max(30));
    let drained = wait_drained(&*store, fired, drain_limit).await?;
    let cpu = CpuTimes::now().since(&cpu0).own.as_secs_f64();
    let wall = t_window.elapsed().as_secs_f64();
    let peak = procstat::peak_rss_kib();
    for node in nodes {
        node.shutdown().await;
    }

    let count = count_window(&*store, &jobs, first, last).await;
    drop(store);
    for open in opened {
        open.close().await;
    }
    let count = count?;

    let ms = |q: f64| nearest_rank(&count.lateness_us, q).map_or(f64::NAN, |us| us as f64 / 1e3);
    let mean = if count.lateness_us.is_empty() {
        f64::NAN
    } else {
        count.lateness_us.iter().sum::<i64>() as f64 / count.lateness_us.len() as f64 / 1e3
    };
    let mut m = Measurement::new("w2");
    m.param("store", url.backend())
        .param("jobs", p.jobs)
        .param("shape", p.shape.as_str())
        .param("secs", p.secs)
        .param("concurrency", p.concurrency as u64)
        .param("nodes", p.nodes as u64);
    m.metric("lateness_p50_ms", "ms", ms(0.5))
        .metric("lateness_p99_ms", "ms", ms(0.99))
        .metric("lateness_p999_ms", "ms", ms(0.999))
        .metric("lateness_max_ms", "ms", ms(1.0))
        .metric("lateness_mean_ms", "ms", mean)
        .metric("runs_measured", "runs", count.lateness_us.len() as f64)
        .metric("missed", "due times", count.missed() as f64)
        .metric("missed_no_run", "due times", count.no_run as f64)
        .metric("missed_skipped", "due times", count.skipped as f64)
        .metric("missed_unstarted", "due times", count.unstarted as f64)
        .metric("duplicates", "runs", count.duplicates as f64)
        .metric("drained", "0/1", f64::from(u8::from(drained)))
        .metric("job_create_s", "s", create_s)
        .metric("cpu_pct", "% of one core", 100.0 * cpu / wall)
        .metric("peak_rss_mib", "MiB", procstat::mib(peak));
    Ok(W2Outcome {
        measurement: m,
        lateness_us: count.lateness_us,
    })
}

/// Stops the nodes and closes their stores (on an early return).
async fn stop(nodes: Vec<Node>, opened: Vec<OpenStore>, store: Arc<dyn Store>) {
    for node in nodes {
        node.shutdown().await;
    }
    drop(store);
    for open in opened {
        open.close().await;
    }
}

/// Waits until at least `fired` runs exist and none is active. False if `limit` passed first
/// (the figures then show what did not run).
async fn wait_drained(store: &dyn Store, fired: u64, limit: Duration) -> BenchResult<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let (mut total, mut active) = (0, 0);
        for (state, n) in store.run_count_by_state().await? {
            total += n;
            if state.is_active() {
                active += n;
            }
        }
        if total >= fired && active == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every run of the jobs and counts the window `first..=last` (whole seconds; each job
/// is due its offset into every second).
pub async fn count_window(
    store: &dyn Store,
    jobs: &[(JobId, SignedDuration)],
    first: Timestamp,
    last: Timestamp,
) -> BenchResult<WindowCount> {
    let per_job: Vec<WindowCount> = futures::stream::iter(jobs.iter().copied())
        .map(|(job, offset)| count_job(store, job, offset, first, last))
        .buffer_unordered(4)
        .try_collect()
        .await?;
    let mut total = WindowCount::default();
    for c in per_job {
        total.expected += c.expected;
        total.no_run += c.no_run;
        total.skipped += c.skipped;
        total.unstarted += c.unstarted;
        total.duplicates += c.duplicates;
        total.lateness_us.extend(c.lateness_us);
    }
    total.lateness_us.sort_unstable();
    Ok(total)
}

async fn count_job(
    store: &dyn Store,
    job: JobId,
    offset: SignedDuration,
    first: Timestamp,
    last: Timestamp,
) -> BenchResult<WindowCount> {
    const PAGE: u32 = 1000;
    let mut runs = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .run_list(RunListParams {
                job_id: Some(job),
                limit: PAGE,
                before_id,
                ..Default::default()
            })
            .await?;
        let full = page.len() == PAGE as usize;
        before_id = page.last().map(|r| r.id);
        runs.extend(page);
        if !full {
            break;
        }
    }
    // Every due time of the window, with the runs for it.
    let mut by_due: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    let mut t = first;
    while t <= last {
        by_due.insert(t.as_second(), Vec::new());
        t = plus(t, SignedDuration::from_secs(1))?;
    }
    for run in runs {
        // The whole second this due time belongs to.
        let second = plus(run.scheduled_for, -offset)?;
        if second.subsec_nanosecond() != 0 {
            continue;
        }
        if let Some(list) = by_due.get_mut(&second.as_second()) {
            list.push(run);
        }
    }
    let mut c = WindowCount {
        expected: by_due.len() as u64,
        ..Default::default()
    };
    for list in by_due.values() {
        c.duplicates += (list.len() as u64).saturating_sub(1);
        let Some(run) = list.first() else {
            c.no_run += 1;
            continue;
        };
        if run.state == RunState::Skipped {
            c.skipped += 1;
            continue;
        }
        // The attempt is written when it ends; a run still running has only its claim time.
        let attempts = store
            .attempt_list(kairos_store::AttemptListParams { run_id: run.id })
            .await?;
        match attempts.first().map(|a| a.started_at).or(run.started_at) {
            Some(started) => {
                let late = started.duration_since(run.scheduled_for);
                c.lateness_us
                    .push(i64::try_from(late.as_micros()).unwrap_or(i64::MAX));
            }
            None => c.unstarted += 1,
        }
    }
    Ok(c)
}
