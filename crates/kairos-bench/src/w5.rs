//! W5, workflow step hand-off: how long a workflow step waits, once its upstream steps have
//! finished, before it starts.
//!
//! One job whose `steps` are no-op `function` tasks, in one of two shapes:
//! - **fan-out** (`width` W): a root `start`, W middle steps `m-000`… each depending on
//!   `start`, and `end` depending on all W middle steps (W + 2 steps, three levels);
//! - **chain** (`len` N): steps `s-000`… each depending on the one before (N levels), which
//!   isolates the hand-off of one step to the next.
//!
//! `max_concurrent_steps` is 500 (the most a job may have), so it never holds a step back. One
//! node runs in this process, as in W1, with a worker concurrency large enough for the fan-out.
//! The job is triggered (`JobService::trigger`, as `POST /jobs/{name}/trigger` does) `runs`
//! times, one run after another, each to its end; `warmup` runs before them are not measured.
//!
//! # What is measured
//!
//! For every step with upstream steps (one sample per released step: W + 1 per fan-out run,
//! N − 1 per chain run), from the times the store recorded:
//!
//! - **hand-off** = its first attempt's `started_at` − the latest `finished_at` of its
//!   upstream steps' last attempts. An attempt's `started_at` is the worker's clock when the
//!   attempt began (just before the task is called); its `finished_at` is the store's clock in
//!   the transaction that recorded its end and settled the workflow run, queuing the steps it
//!   released (their `run_at` is the same instant). On SQLite that is the writer thread's
//!   clock as that end's statements begin (the completer writes a batch of ends in one
//!   transaction), on PostgreSQL `now()`, the start of the batch's transaction. So the
//!   hand-off covers the rest of that transaction (the settle; the ends after it in the batch,
//!   and on PostgreSQL those before it too), the commit, the reply to the worker, the
//!   worker's wake-up, the claim and the attempt's start.
//! - split into **claim** = the step run's `started_at` (set by the claim that took it: the
//!   time the worker asked, or its `run_at` if later) − the upstream finish, and **start** =
//!   the attempt's start − the run's `started_at`.
//! - **step record**: for every step, its attempt's `finished_at` − `started_at`: the no-op
//!   call and the wait for its end to be written (the completer's queue and the batches
//!   before it).
//!
//! Also: the wall time of each workflow run (trigger to the event of its last step's end),
//! the CPU time of the process (user + system) over the measured runs as % of one core, peak
//! resident memory, and errors (workflow runs or steps that did not succeed, steps without an
//! attempt), which must be 0.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kairos_core::run::{RunId, RunState};
use kairos_core::workflow::MAX_STEPS;
use kairos_runtime::Node;
use kairos_store::{AttemptListParams, RunGetParams, RunStepsParams, Store};
use serde_json::json;

use crate::error::{BenchError, BenchResult};
use crate::harness::{self, FinishCounter};
use crate::procstat::{self, CpuTimes};
use crate::report::Measurement;
use crate::stats::nearest_rank;
use crate::store_url::StoreUrl;

/// The workflow's `max_concurrent_steps`: the most a job may have, so that it holds nothing
/// back.
pub const MAX_CONCURRENT_STEPS: usize = MAX_STEPS;

/// The shape of the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `start`, `width` middle steps each depending on it, `end` depending on all of them.
    FanOut { width: u32 },
    /// `len` steps, each depending on the one before.
    Chain { len: u32 },
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::FanOut { .. } => "fanout",
            Shape::Chain { .. } => "chain",
        }
    }

    /// Steps in the workflow.
    pub fn step_count(self) -> usize {
        match self {
            Shape::FanOut { width } => width as usize + 2,
            Shape::Chain { len } => len as usize,
        }
    }

    /// Steps on the longest path.
    pub fn depth(self) -> usize {
        match self {
            Shape::FanOut { .. } => 3,
            Shape::Chain { len } => len as usize,
        }
    }

    /// The steps, each with the names of its upstream steps, in the document's order.
    pub fn steps(self) -> Vec<(String, Vec<String>)> {
        match self {
            Shape::FanOut { width } => {
                let middle: Vec<String> = (0..width).map(|i| format!("m-{i:03}")).collect();
                let mut steps = vec![("start".to_owned(), Vec::new())];
                steps.extend(middle.iter().map(|m| (m.clone(), vec!["start".to_owned()])));
                steps.push(("end".to_owned(), middle));
                steps
            }
            Shape::Chain { len } => (0..len)
                .map(|i| {
                    let upstream = if i == 0 {
                        Vec::new()
                    } else {
                        vec![format!("s-{:03}", i - 1)]
                    };
                    (format!("s-{i:03}"), upstream)
                })
                .collect(),
        }
    }

    /// Samples per workflow run: one per step with upstream steps.
    pub fn samples_per_run(self) -> usize {
        self.step_count() - 1
    }
}

/// W5 settings.
#[derive(Debug, Clone)]
pub struct W5Params {
    pub shape: Shape,
    /// Measured workflow runs, one after another.
    pub runs: u64,
    /// Workflow runs before them, not measured.
    pub warmup: u64,
    /// Worker concurrency of the node.
    pub concurrency: usize,
    pub keep: bool,
}

impl Default for W5Params {
    fn default() -> Self {
        Self {
            shape: Shape::FanOut { width: 98 },
            runs: 20,
            warmup: 1,
            concurrency: 128,
            keep: false,
        }
    }
}

/// Runs W5 once.
pub async fn run(url: &StoreUrl, p: &W5Params) -> BenchResult<Measurement> {
    let (ok, name) = match p.shape {
        Shape::FanOut { width } => (width >= 1 && p.shape.step_count() <= MAX_STEPS, "--width"),
        Shape::Chain { len } => (len >= 2 && p.shape.step_count() <= MAX_STEPS, "--chain"),
    };
    if !ok {
        return Err(BenchError::InvalidParameter {
            name,
            reason: format!("the workflow must have 2 to {MAX_STEPS} steps"),
        });
    }
    if p.runs == 0 {
        return Err(BenchError::InvalidParameter {
            name: "--runs",
            reason: "must be at least 1".into(),
        });
    }
    let steps = p.shape.steps();
    let place = url.fresh(&format!("w5-{}", p.shape.as_str()), p.keep)?;
    let open = place.open().await?;
    let ctx = harness::context(open.store.clone());
    let counter = FinishCounter::start(ctx.telemetry.subscribe());
    let node = Node::start(
        ctx.clone(),
        harness::executor(),
        harness::node_config(p.concurrency, !url.is_cluster()),
    )
    .await;
    let outcome = drive(&node, &counter, &steps, p).await;
    let peak = procstat::peak_rss_kib();
    let lagged = counter.lagged();
    drop(counter);
    node.shutdown().await;
    let store = ctx.store.clone();
    drop(ctx);
    let analysis = match outcome {
        Ok(driven) => analyse(&*store, &driven.runs, &steps)
            .await
            .map(|a| (driven, a)),
        Err(e) => Err(e),
    };
    drop(store);
    open.close().await;
    let (driven, a) = analysis?;

    let ms = |v: &[i64], q: f64| nearest_rank(v, q).map_or(f64::NAN, |us| us as f64 / 1e3);
    let mean = |v: &[i64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<i64>() as f64 / v.len() as f64 / 1e3
        }
    };
    let wall_p50 = ms(&driven.walls_us, 0.5);
    let mut m = Measurement::new(format!("w5-{}", p.shape.as_str()));
    m.param("store", url.backend())
        .param("steps", p.shape.step_count() as u64);
    match p.shape {
        Shape::FanOut { width } => m.param("width", width),
        Shape::Chain { len } => m.param("len", len),
    };
    m.param("runs", p.runs)
        .param("warmup", p.warmup)
        .param("concurrency", p.concurrency as u64);
    m.metric("handoff_p50_ms", "ms", ms(&a.handoff_us, 0.5))
        .metric("handoff_p99_ms", "ms", ms(&a.handoff_us, 0.99))
        .metric("handoff_p999_ms", "ms", ms(&a.handoff_us, 0.999))
        .metric("handoff_max_ms", "ms", ms(&a.handoff_us, 1.0))
        .metric("handoff_mean_ms", "ms", mean(&a.handoff_us))
        .metric("claim_p50_ms", "ms", ms(&a.claim_us, 0.5))
        .metric("claim_p99_ms", "ms", ms(&a.claim_us, 0.99))
        .metric("start_p50_ms", "ms", ms(&a.start_us, 0.5))
        .metric("start_p99_ms", "ms", ms(&a.start_us, 0.99));
    if let Shape::FanOut { .. } = p.shape {
        m.metric("fanin_p50_ms", "ms", ms(&a.fanin_us, 0.5)).metric(
            "fanin_max_ms",
            "ms",
            ms(&a.fanin_us, 1.0),
        );
    }
    m.metric("step_record_p50_ms", "ms", ms(&a.record_us, 0.5))
        .metric("step_record_p99_ms", "ms", ms(&a.record_us, 0.99))
        .metric("samples", "steps", a.handoff_us.len() as f64)
        .metric("run_wall_p50_ms", "ms", wall_p50)
        .metric("run_wall_max_ms", "ms", ms(&driven.walls_us, 1.0))
        .metric("wall_per_level_ms", "ms", wall_p50 / p.shape.depth() as f64)
        .metric("total_s", "s", driven.wall_s)
        .metric(
            "cpu_pct",
            "% of one core",
            100.0 * driven.cpu_s / driven.wall_s,
        )
        .metric("peak_rss_mib", "MiB", procstat::mib(peak))
        .metric("errors", "runs", a.errors as f64)
        .metric("extra_attempts", "attempts", a.extra_attempts as f64)
        .metric("events_lagged", "0/1", f64::from(u8::from(lagged)));
    Ok(m)
}

/// What driving the runs gave: the measured workflow runs, their wall times, and the
/// process's CPU time and the wall time over them.
struct Driven {
    runs: Vec<RunId>,
    walls_us: Vec<i64>,
    cpu_s: f64,
    wall_s: f64,
}

/// Creates the job and triggers its runs one after another, each to its end.
async fn drive(
    node: &Node,
    counter: &FinishCounter,
    steps: &[(String, Vec<String>)],
    p: &W5Params,
) -> BenchResult<Driven> {
    let doc: Vec<serde_json::Value> = steps
        .iter()
        .map(|(name, upstream)| {
            json!({
                "name": name,
                "depends_on": upstream,
                "task": {"kind": "function", "name": harness::NOOP},
            })
        })
        .collect();
    let job = node
        .jobs
        .create(harness::spec(json!({
            "name": "flow",
            "max_concurrent_steps": MAX_CONCURRENT_STEPS,
            "steps": doc,
        }))?)
        .await?;
    let store = node.ctx.store.clone();
    let per_run = steps.len() as u64;
    let limit = Duration::from_secs(60) + Duration::from_millis(per_run * 20);
    let mut finished = 0u64;
    let mut runs = Vec::with_capacity(p.runs as usize);
    let mut walls_us = Vec::with_capacity(p.runs as usize);
    let mut cpu0 = CpuTimes::now();
    let mut t0 = Instant::now();
    for i in 0..p.warmup + p.runs {
        if i == p.warmup {
            procstat::reset_peak_rss();
            cpu0 = CpuTimes::now();
            t0 = Instant::now();
        }
        let t = Instant::now();
        let run = node
            .jobs
            .trigger(&job.spec.namespace, &job.spec.name)
            .await?;
        finished += per_run;
        let done = wait_run_end(counter, &*store, run.id, finished, limit).await?;
        if i >= p.warmup {
            runs.push(run.id);
            walls_us.push(i64::try_from(done.duration_since(t).as_micros()).unwrap_or(i64::MAX));
        }
    }
    let cpu_s = CpuTimes::now().since(&cpu0).own.as_secs_f64();
    let wall_s = t0.elapsed().as_secs_f64();
    walls_us.sort_unstable();
    Ok(Driven {
        runs,
        walls_us,
        cpu_s,
        wall_s,
    })
}

/// Waits until `run_id` has ended: until `target` step runs have finished (counted from the
/// node's events, so that the wait reads nothing from the store), then confirms the workflow
/// run's end in the store (it ends in the transaction of its last step's end). A step that
/// fails leaves others that never run, so every second without the count the run is read to
/// see whether it ended anyway. Returns when its last step's end was seen.
async fn wait_run_end(
    counter: &FinishCounter,
    store: &dyn Store,
    run_id: RunId,
    target: u64,
    limit: Duration,
) -> BenchResult<Instant> {
    let deadline = Instant::now() + limit;
    let ended = |at: Instant| async move {
        let run = store.run_get(RunGetParams { id: run_id }).await?;
        Ok::<_, BenchError>(run.is_some_and(|r| r.state.is_terminal()).then_some(at))
    };
    loop {
        let seen = match counter
            .wait_for(store, target, Duration::from_secs(1))
            .await
        {
            Ok((at, _)) => Some(at),
            Err(BenchError::Incomplete(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(at) = ended(seen.unwrap_or_else(Instant::now)).await? {
            return Ok(at);
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Incomplete(format!(
                "workflow run {run_id} did not end within {} s",
                limit.as_secs()
            )));
        }
        if seen.is_some() {
            // Counted (from the store, after lost events) before the run's end was visible.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The samples of the measured runs, each sorted (µs).
#[derive(Debug, Default)]
struct Analysis {
    handoff_us: Vec<i64>,
    claim_us: Vec<i64>,
    start_us: Vec<i64>,
    /// The `end` step of a fan-out (its hand-off).
    fanin_us: Vec<i64>,
    record_us: Vec<i64>,
    errors: u64,
    extra_attempts: u64,
}

/// One step run as read back: its claim, its first attempt's start, its last attempt's end.
struct StepTimes {
    claimed: Option<Timestamp>,
    started: Option<Timestamp>,
    finished: Option<Timestamp>,
}

fn micros(from: Timestamp, to: Timestamp) -> i64 {
    i64::try_from(to.duration_since(from).as_micros()).unwrap_or(i64::MAX)
}

/// Reads every measured run's steps and attempts and computes the samples.
async fn analyse(
    store: &dyn Store,
    runs: &[RunId],
    steps: &[(String, Vec<String>)],
) -> BenchResult<Analysis> {
    let mut a = Analysis::default();
    for &run_id in runs {
        let run = store.run_get(RunGetParams { id: run_id }).await?;
        if run.is_none_or(|r| r.state != RunState::Succeeded) {
            a.errors += 1;
        }
        let mut times: HashMap<String, StepTimes> = HashMap::with_capacity(steps.len());
        for step in store.run_steps(RunStepsParams { run_id }).await? {
            let attempts = store
                .attempt_list(AttemptListParams { run_id: step.id })
                .await?;
            if step.state != RunState::Succeeded || attempts.is_empty() {
                a.errors += 1;
            }
            a.extra_attempts += attempts.len().saturating_sub(1) as u64;
            if let Some(first) = attempts.first() {
                a.record_us
                    .push(micros(first.started_at, first.finished_at));
            }
            let name = step.step.clone().unwrap_or_default();
            times.insert(
                name,
                StepTimes {
                    claimed: step.started_at,
                    started: attempts.first().map(|x| x.started_at),
                    finished: attempts.last().map(|x| x.finished_at),
                },
            );
        }
        for (name, upstream) in steps.iter().filter(|(_, up)| !up.is_empty()) {
            let Some(step) = times.get(name) else {
                a.errors += 1;
                continue;
            };
            let released = upstream
                .iter()
                .map(|u| times.get(u).and_then(|t| t.finished))
                .collect::<Option<Vec<_>>>()
                .and_then(|ends| ends.into_iter().max());
            let (Some(released), Some(started)) = (released, step.started) else {
                continue;
            };
            let handoff = micros(released, started);
            a.handoff_us.push(handoff);
            if name == "end" {
                a.fanin_us.push(handoff);
            }
            if let Some(claimed) = step.claimed {
                a.claim_us.push(micros(released, claimed));
                a.start_us.push(micros(claimed, started));
            }
        }
    }
    for v in [
        &mut a.handoff_us,
        &mut a.claim_us,
        &mut a.start_us,
        &mut a.fanin_us,
        &mut a.record_us,
    ] {
        v.sort_unstable();
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_name_their_steps_and_dependencies() {
        let fan = Shape::FanOut { width: 3 }.steps();
        assert_eq!(fan.len(), 5);
        assert_eq!(fan[0], ("start".to_owned(), Vec::new()));
        assert_eq!(fan[2], ("m-001".to_owned(), vec!["start".to_owned()]));
        assert_eq!(fan[4].0, "end");
        assert_eq!(fan[4].1, ["m-000", "m-001", "m-002"]);
        assert_eq!(Shape::FanOut { width: 3 }.samples_per_run(), 4);

        let chain = Shape::Chain { len: 3 }.steps();
        assert_eq!(chain[0], ("s-000".to_owned(), Vec::new()));
        assert_eq!(chain[2], ("s-002".to_owned(), vec!["s-001".to_owned()]));
        assert_eq!(Shape::Chain { len: 3 }.samples_per_run(), 2);
        assert_eq!(Shape::Chain { len: 3 }.depth(), 3);
    }
}
