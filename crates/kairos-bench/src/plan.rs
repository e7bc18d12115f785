//! What a command asks for (one [`Plan`] per workload run) and running the plans, `--repeat`
//! times round robin, with a progress line per run on stderr.

use std::path::PathBuf;

use crate::chart::Series;
use crate::cli::Command;
use crate::error::BenchResult;
use crate::failover::{self, FailoverParams};
use crate::floor::{self, FloorParams};
use crate::report::{self, Measurement};
use crate::store_url::StoreUrl;
use crate::w1::{self, Shape, W1Params};
use crate::w2::Shape as W2Shape;
use crate::w2::{self, W2Params};
use crate::w3::{self, W3Params};
use crate::w4::{self, NodeProcess, W4Params};
use crate::w5::{self, W5Params};
use crate::w6::{self, W6Params};

/// One workload run with its parameters.
#[derive(Debug, Clone)]
pub enum Plan {
    W1(W1Params),
    W2(W2Params),
    W3(W3Params),
    W4(W4Params),
    W5(W5Params),
    W6(W6Params),
    Floor(FloorParams),
    Failover(FailoverParams),
}

impl Plan {
    fn name(&self) -> String {
        match self {
            Plan::W1(p) => format!("w1-{} n={}", p.shape.as_str(), p.n),
            Plan::W2(p) => format!(
                "w2-{} jobs={} secs={} nodes={}",
                p.shape.as_str(),
                p.jobs,
                p.secs,
                p.nodes
            ),
            Plan::W3(p) => format!("w3 n={}", p.n),
            Plan::W4(p) => format!("w4 jobs={}", p.jobs),
            Plan::W5(p) => match p.shape {
                w5::Shape::FanOut { width } => format!("w5-fanout width={width} runs={}", p.runs),
                w5::Shape::Chain { len } => format!("w5-chain len={len} runs={}", p.runs),
            },
            Plan::W6(p) => format!("w6 rate={} secs={} jobs={}", p.rate, p.secs, p.jobs),
            Plan::Floor(p) => format!("floor n={}", p.n),
            Plan::Failover(p) => format!("failover nodes={} kills={}", p.nodes, p.kills),
        }
    }
}

fn w4_node_process(in_process: bool) -> NodeProcess {
    match (in_process, std::env::current_exe()) {
        (false, Ok(exe)) => NodeProcess::Exe(exe),
        _ => NodeProcess::InProcess,
    }
}

/// The workloads a command asks for, and where the W2 chart goes.
pub fn plans(command: &Command, keep: bool) -> (Vec<Plan>, Option<PathBuf>) {
    let w1 = |n: u64, shape: Shape, depth: u64, concurrency: usize, event_log: bool| {
        Plan::W1(W1Params {
            n,
            shape,
            depth,
            concurrency,
            event_log,
            keep,
        })
    };
    let w2 = |jobs: u64, shape: W2Shape, secs: u64, concurrency: usize, nodes: u64| {
        Plan::W2(W2Params {
            jobs,
            shape,
            secs,
            concurrency,
            nodes: nodes as usize,
            keep,
        })
    };
    match command {
        Command::W1(a) => (
            a.shape
                .shapes()
                .into_iter()
                .map(|s| w1(a.n, s, a.depth, a.concurrency, a.event_log))
                .collect(),
            None,
        ),
        Command::W2(a) => (
            a.jobs
                .iter()
                .flat_map(|&k| {
                    a.shape
                        .shapes()
                        .into_iter()
                        .map(move |shape| w2(k, shape, a.secs, a.concurrency, a.nodes))
                })
                .collect(),
            Some(a.chart.clone()),
        ),
        Command::W3(a) => (
            vec![Plan::W3(W3Params {
                n: a.n,
                concurrency: a.concurrency,
                task_cgroups: a.task_cgroups,
                keep,
            })],
            None,
        ),
        Command::W4(a) => (
            vec![Plan::W4(W4Params {
                jobs: a.jobs,
                idle_secs: a.idle_secs,
                node_process: w4_node_process(a.in_process),
                keep,
            })],
            None,
        ),
        Command::W5(a) => (
            vec![Plan::W5(W5Params {
                shape: match a.chain {
                    Some(len) => w5::Shape::Chain { len },
                    None => w5::Shape::FanOut { width: a.width },
                },
                runs: a.runs,
                warmup: a.warmup,
                concurrency: a.concurrency,
                keep,
            })],
            None,
        ),
        Command::W6(a) => (
            vec![Plan::W6(W6Params {
                rate: a.rate,
                secs: a.secs,
                warmup_secs: a.warmup_secs,
                connections: a.connections,
                jobs: a.jobs,
                concurrency: a.concurrency,
                keep,
            })],
            None,
        ),
        Command::All(a) => {
            let defaults = W1Params::default();
            let mut plans = vec![
                w1(
                    a.w1_n,
                    Shape::Bulk,
                    defaults.depth,
                    defaults.concurrency,
                    true,
                ),
                w1(
                    a.w1_n,
                    Shape::Steady,
                    defaults.depth,
                    defaults.concurrency,
                    true,
                ),
            ];
            let w2_defaults = W2Params::default();
            plans.extend(a.w2_jobs.iter().flat_map(|&k| {
                [W2Shape::Herd, W2Shape::Spread]
                    .map(|shape| w2(k, shape, a.w2_secs, w2_defaults.concurrency, a.w2_nodes))
            }));
            plans.push(Plan::W3(W3Params {
                n: a.w3_n,
                keep,
                ..W3Params::default()
            }));
            plans.push(Plan::W4(W4Params {
                jobs: a.w4_jobs,
                idle_secs: a.w4_idle_secs,
                node_process: w4_node_process(false),
                keep,
            }));
            plans.push(Plan::W5(W5Params {
                runs: a.w5_runs,
                keep,
                ..W5Params::default()
            }));
            (plans, Some(a.chart.clone()))
        }
        Command::Floor(a) => (vec![Plan::Floor(FloorParams { n: a.n, keep })], None),
        Command::Failover(a) => (
            vec![Plan::Failover(FailoverParams {
                nodes: a.nodes as usize,
                kills: a.kills as usize,
                kairos_bin: a.kairos_bin.clone(),
                settle_secs: a.settle_secs,
                lease: a.lease.clone(),
                keep,
            })],
            None,
        ),
        Command::W4Node(_) => (Vec::new(), None),
    }
}

/// Figures worth a progress line.
const HEADLINES: &[&str] = &[
    "jobs_per_s",
    "lateness_p50_ms",
    "lateness_p99_ms",
    "missed",
    "duplicates",
    "ratio",
    "register_jobs_per_s",
    "startup_ms",
    "handoff_p50_ms",
    "handoff_p99_ms",
    "errors",
    "store_cpu_us_per_run",
    "sqlite_cpu_us_per_run",
    "postgres_cpu_us_per_run",
    "new_leader_max_ms",
    "next_fire_max_ms",
    "next_fire_late_max_ms",
];

fn progress(m: &Measurement) -> String {
    m.metrics
        .iter()
        .filter(|x| HEADLINES.contains(&x.name.as_str()))
        .map(|x| format!("{} {}", x.name, report::format_value(x.value)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the plans `repeat` times (round robin) and returns every measurement, and the W2
/// samples per number of jobs for the chart.
pub async fn run_plans(
    url: &StoreUrl,
    plans: &[Plan],
    repeat: u32,
) -> BenchResult<(Vec<Measurement>, Vec<Series>)> {
    let mut measurements = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    for r in 1..=repeat {
        for plan in plans {
            eprintln!("[{r}/{repeat}] {} ...", plan.name());
            let m = match plan {
                Plan::W1(p) => w1::run(url, p).await?,
                Plan::W2(p) => {
                    let out = w2::run(url, p).await?;
                    let label = format!("K={} {}", p.jobs, p.shape.as_str());
                    match series.iter_mut().find(|s| s.label == label) {
                        Some(s) => s.lateness_us.extend(out.lateness_us),
                        None => series.push(Series {
                            label,
                            lateness_us: out.lateness_us,
                        }),
                    }
                    out.measurement
                }
                Plan::W3(p) => w3::run(url, p).await?,
                Plan::W4(p) => w4::run(url, p).await?,
                Plan::W5(p) => w5::run(url, p).await?,
                Plan::W6(p) => w6::run(url, p).await?,
                Plan::Floor(p) => floor::run(url, p).await?,
                Plan::Failover(p) => failover::run(url, p).await?,
            };
            eprintln!("[{r}/{repeat}] {}: {}", plan.name(), progress(&m));
            measurements.push(m);
        }
    }
    for s in &mut series {
        s.lateness_us.sort_unstable();
    }
    Ok((measurements, series))
}
