//! W6, events: events posted over HTTP at a steady rate, from POST to task start.
//!
//! One node runs in this process with its HTTP API on a free port of 127.0.0.1 (the router
//! `kairos server` serves, authentication off); `jobs` jobs subscribe to the topic
//! `bench.event`, each a no-op `function` task with `overlap: allow` and a `max_concurrent`
//! that never skips an event. A client in this process (one HTTP/1.1 connection pool, at most
//! `connections` requests in flight) posts `rate` events per second for `warmup_secs` +
//! `secs` seconds, each `POST /api/v1/events/bench.event` with its own `Idempotency-Key` and
//! a small JSON payload: open loop, the sends due by each millisecond go out in that
//! millisecond, whether or not earlier ones were answered (a send that finds every connection
//! busy waits, and counts as behind).
//!
//! # What is measured
//!
//! For every event posted in the measured seconds (not the warm-up):
//! - **start** = the first attempt's `started_at` of the event's run (the worker's clock as
//!   the attempt began, read from the store afterwards) − the instant just before the POST
//!   was sent (this process's clock: the same one). This covers the request, the event's
//!   transaction, the worker's wake-up and claim, and the attempt's start.
//! - **post** = the POST's round trip (until its 202 was read).
//!
//! Also: events accepted per second over the measured seconds (202 answers / their span),
//! the sends that went out late because every connection was busy, the CPU time of the
//! process (client, API, node) as % of one core, peak resident memory, and errors (answers
//! other than 202, events without exactly `jobs` runs, runs that did not succeed): must be 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kairos_core::run::{RunId, RunState};
use kairos_runtime::Node;
use kairos_store::{AttemptListParams, RunGetParams, Store};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::error::{BenchError, BenchResult};
use crate::harness::{self, FinishCounter};
use crate::procstat::{self, CpuTimes};
use crate::report::Measurement;
use crate::stats::nearest_rank;
use crate::store_url::StoreUrl;

/// The topic every event goes to.
pub const TOPIC: &str = "bench.event";

/// W6 settings.
#[derive(Debug, Clone)]
pub struct W6Params {
    /// Events per second.
    pub rate: u64,
    /// Measured seconds.
    pub secs: u64,
    /// Seconds posted before them, not measured.
    pub warmup_secs: u64,
    /// Requests in flight at most.
    pub connections: usize,
    /// Jobs subscribed to the topic (runs per event).
    pub jobs: u64,
    /// Worker concurrency of the node.
    pub concurrency: usize,
    pub keep: bool,
}

impl Default for W6Params {
    fn default() -> Self {
        Self {
            rate: 5000,
            secs: 10,
            warmup_secs: 2,
            connections: 64,
            jobs: 1,
            concurrency: 256,
            keep: false,
        }
    }
}

/// One event sent in the measured seconds: when, its HTTP round trip, and its runs.
struct Sent {
    at: Timestamp,
    post_us: i64,
    runs: Vec<RunId>,
}

/// Runs W6 once.
pub async fn run(url: &StoreUrl, p: &W6Params) -> BenchResult<Measurement> {
    for (name, ok) in [
        ("--rate", p.rate >= 1),
        ("--secs", p.secs >= 1),
        ("--connections", p.connections >= 1),
        ("--jobs", (1..=100).contains(&p.jobs)),
    ] {
        if !ok {
            return Err(BenchError::InvalidParameter {
                name,
                reason: "out of range (--jobs: 1 to 100; the others at least 1)".into(),
            });
        }
    }
    let place = url.fresh("w6", p.keep)?;
    let open = place.open().await?;
    let ctx = harness::context(open.store.clone());
    let counter = FinishCounter::start(ctx.telemetry.subscribe());
    let node = Node::start(
        ctx.clone(),
        harness::executor(),
        harness::node_config(p.concurrency, !url.is_cluster()),
    )
    .await;
    let outcome = drive(&node, &counter, p).await;
    let peak = procstat::peak_rss_kib();
    drop(counter);
    node.shutdown().await;
    let store = ctx.store.clone();
    drop(ctx);
    let analysis = match outcome {
        Ok(driven) => analyse(&*store, &driven, p.jobs).await.map(|a| (driven, a)),
        Err(e) => Err(e),
    };
    drop(store);
    open.close().await;
    let (driven, a) = analysis?;

    let ms = |v: &[i64], q: f64| nearest_rank(v, q).map_or(f64::NAN, |us| us as f64 / 1e3);
    let mut m = Measurement::new("w6");
    m.param("store", url.backend())
        .param("rate", p.rate)
        .param("secs", p.secs)
        .param("warmup_secs", p.warmup_secs)
        .param("connections", p.connections as u64)
        .param("jobs", p.jobs)
        .param("concurrency", p.concurrency as u64);
    m.metric("events_per_s", "events/s", driven.accepted_per_s)
        .metric("start_p50_ms", "ms", ms(&a.start_us, 0.5))
        .metric("start_p99_ms", "ms", ms(&a.start_us, 0.99))
        .metric("start_p999_ms", "ms", ms(&a.start_us, 0.999))
        .metric("start_max_ms", "ms", ms(&a.start_us, 1.0))
        .metric("post_p50_ms", "ms", ms(&a.post_us, 0.5))
        .metric("post_p99_ms", "ms", ms(&a.post_us, 0.99))
        .metric("samples", "runs", a.start_us.len() as f64)
        .metric("behind", "sends", driven.behind as f64)
        .metric(
            "cpu_pct",
            "% of one core",
            100.0 * driven.cpu_s / driven.wall_s,
        )
        .metric("peak_rss_mib", "MiB", procstat::mib(peak))
        .metric("errors", "events", (a.errors + driven.refused) as f64);
    Ok(m)
}

/// What posting gave.
struct Driven {
    sent: Vec<Sent>,
    accepted_per_s: f64,
    /// Answers other than 202 (all seconds).
    refused: u64,
    /// Sends that waited for a free connection.
    behind: u64,
    cpu_s: f64,
    wall_s: f64,
}

/// Serves the API, creates the jobs and posts the events; waits for their runs to end.
async fn drive(node: &Node, counter: &FinishCounter, p: &W6Params) -> BenchResult<Driven> {
    for i in 0..p.jobs {
        node.jobs
            .create(harness::spec(json!({
                "name": format!("on-event-{i:03}"),
                "triggers": [{"event": TOPIC}],
                "overlap": "allow",
                "max_concurrent": 10_000,
                "task": {"kind": "function", "name": harness::NOOP},
            }))?)
            .await?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::io("cannot listen on 127.0.0.1", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::io("cannot listen on 127.0.0.1", e))?;
    let app = kairos_api::router(kairos_api::AppState::new(
        node.ctx.clone(),
        node.jobs.clone(),
    ));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(p.connections)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| BenchError::Incomplete(format!("HTTP client: {e}")))?;
    let url = Arc::new(format!("http://{addr}/api/v1/events/{TOPIC}"));
    let slots = Arc::new(Semaphore::new(p.connections));
    let refused = Arc::new(AtomicU64::new(0));
    let total = p.rate * (p.warmup_secs + p.secs);
    let measured_from = p.rate * p.warmup_secs;
    let mut tasks = tokio::task::JoinSet::new();
    let mut behind = 0u64;
    let mut cpu0 = CpuTimes::now();
    let start = Instant::now();
    let mut measured_start = start;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next = 0u64;
    while next < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * p.rate as f64) as u64).min(total);
        while next < due {
            let i = next;
            next += 1;
            if i == measured_from {
                procstat::reset_peak_rss();
                cpu0 = CpuTimes::now();
                measured_start = Instant::now();
            }
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    behind += u64::from(i >= measured_from);
                    slots
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|e| BenchError::Incomplete(e.to_string()))?
                }
            };
            let (client, url, refused) = (client.clone(), url.clone(), refused.clone());
            tasks.spawn(async move {
                // The workers' clock: the attempts' `started_at` come from it.
                let at = kairos_runtime::Clock::now(&kairos_runtime::SystemClock);
                let t = Instant::now();
                let answer = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("e-{i}"))
                    .body(format!(r#"{{"n":{i},"user":"u-{}"}}"#, i % 1000))
                    .send()
                    .await;
                let post_us = i64::try_from(t.elapsed().as_micros()).unwrap_or(i64::MAX);
                let runs = match answer {
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                        r.json::<serde_json::Value>().await.ok().and_then(|v| {
                            v["runs"].as_array().map(|runs| {
                                runs.iter()
                                    .filter_map(|r| r["run_id"].as_i64())
                                    .collect::<Vec<_>>()
                            })
                        })
                    }
                    _ => None,
                };
                drop(permit);
                let Some(runs) = runs else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                (i >= measured_from).then_some((t, Sent { at, post_us, runs }))
            });
        }
    }
    let mut sent = Vec::with_capacity((total - measured_from) as usize);
    let mut last_answer = measured_start;
    while let Some(done) = tasks.join_next().await {
        if let Some((t, s)) = done.map_err(|e| BenchError::Incomplete(e.to_string()))? {
            last_answer = last_answer.max(t + Duration::from_micros(s.post_us.unsigned_abs()));
            sent.push(s);
        }
    }
    let span = last_answer.duration_since(measured_start).as_secs_f64();
    let accepted_per_s = sent.len() as f64 / span.max(1e-9);
    // Every run of every event (the warm-up's too) ends before the store is read.
    let runs = (total - refused.load(Ordering::Relaxed)) * p.jobs;
    counter
        .wait_for(&*node.ctx.store, runs, harness::drain_limit(runs))
        .await?;
    let cpu_s = CpuTimes::now().since(&cpu0).own.as_secs_f64();
    let wall_s = measured_start.elapsed().as_secs_f64();
    server.abort();
    Ok(Driven {
        sent,
        accepted_per_s,
        refused: refused.load(Ordering::Relaxed),
        behind,
        cpu_s,
        wall_s,
    })
}

/// The samples, each sorted (µs).
#[derive(Debug, Default)]
struct Analysis {
    start_us: Vec<i64>,
    post_us: Vec<i64>,
    errors: u64,
}

async fn analyse(store: &dyn Store, driven: &Driven, jobs: u64) -> BenchResult<Analysis> {
    let mut a = Analysis::default();
    for s in &driven.sent {
        a.post_us.push(s.post_us);
        if s.runs.len() as u64 != jobs {
            a.errors += 1;
        }
        for &id in &s.runs {
            let run = store.run_get(RunGetParams { id }).await?;
            let attempts = store.attempt_list(AttemptListParams { run_id: id }).await?;
            match (run, attempts.first()) {
                (Some(run), Some(first)) if run.state == RunState::Succeeded => a.start_us.push(
                    i64::try_from(first.started_at.duration_since(s.at).as_micros())
                        .unwrap_or(i64::MAX),
                ),
                _ => a.errors += 1,
            }
        }
    }
    a.start_us.sort_unstable();
    a.post_us.sort_unstable();
    Ok(a)
}
