//! The command line: `kairos-bench w1|w2|w3|w4|w5|w6|all|floor|failover [options]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use kairos_store_postgres::{DEFAULT_POOL_SIZE, PostgresConfig};

use crate::chart;
use crate::error::{BenchError, BenchResult};
use crate::plan::{Plan, plans, run_plans};
use crate::report;
use crate::store_url::{POSTGRES_URL_ENV, StoreLocation, StoreUrl};
use crate::w1::Shape;
use crate::w2::Shape as W2Shape;
use crate::w4;

const LONG_ABOUT: &str = "\
Measures Kairos workloads on a real store and prints a table (or --json).

Workloads (each has its own --help):
  w1   throughput: N no-op function runs due now, from enqueue to all finished; shapes bulk
       (queue all, then drain) and steady (a producer keeps a fixed number outstanding).
       Reports jobs/s, CPU time and peak resident memory of the process.
  w2   fire lateness: K jobs due every second for D seconds, all in the same instant (herd) or
       spread over the second (spread); lateness = attempt start - due time of every run.
       Reports p50/p99/p99.9/max and missed and duplicate due times (both must be 0), and draws
       the distribution as an SVG chart.
  w3   shell jobs: N `/bin/true` command runs through Kairos against a bare loop in this
       program spawning /bin/true N times with the same output capture; µs per job and ratio.
  w4   scale: register M cron jobs with spread daily schedules; registration time, store size
       on disk, start-up time of a node on that store, its resident memory and idle CPU.
  w5   workflow step hand-off: workflow runs of no-op function steps (a fan-out/fan-in of
       --width middle steps, or a --chain), one after another; for every step released by its
       upstream steps, its start - the latest upstream finish, from the store's records.
       Reports p50/p99/p99.9/max, each run's wall time, CPU time and peak resident memory.
  w6   events: events posted over HTTP at --rate per second for --secs to a topic --jobs jobs
       subscribe to (no-op function tasks), through the API served in this process; events
       accepted per second and p50/p99/max of POST to task start.
  all  every workload with its default sizes (override with --w1-n, --w2-jobs, ...).
  floor  what one run's claim and finish cost through the store API and in the database
       itself, one run at a time: the part of W1 and W3 that nothing above the store can remove.
  failover  N real `kairos server` processes on a PostgreSQL schema, a job due every second;
       the leader is killed K times: time to a new leader and to the next fired due time, and
       missed and duplicate due times (both must be 0). Needs --store postgres://... and the
       kairos binary (cargo build --release -p kairos). Not part of `all`.

Every run of every workload gets a fresh, empty store: a temporary SQLite directory, or with
--store postgres://... a schema kb_<label>_<random> on that database, dropped afterwards.
--repeat R runs everything R times (round robin) and reports the median with min-max. Figures depend on the machine and its load:
quote them with the command and the machine. Progress goes to stderr; RUST_LOG=info also logs
the node (which slows it down).

Examples:
  cargo run --release -p kairos-bench -- w1 --repeat 5
  cargo run --release -p kairos-bench -- w2 --jobs 100,1000 --shape both --secs 60 --chart w2-lateness.svg
  cargo run --release -p kairos-bench -- w3 --n 5000 --json
  cargo run --release -p kairos-bench -- w4 --jobs 1000000 --store sqlite:///var/tmp/kairos-bench
  cargo run --release -p kairos-bench -- w5 --width 98 --runs 20 --repeat 3
  cargo run --release -p kairos-bench -- w5 --chain 100 --runs 10
  cargo run --release -p kairos-bench -- w6 --rate 5000 --secs 10 --repeat 3
  cargo run --release -p kairos-bench -- all --repeat 5 --json > bench.json
  cargo run --release -p kairos-bench -- w1 --store postgres://postgres@127.0.0.1:5432/test
  cargo run --release -p kairos-bench -- w2 --jobs 1000 --shape spread --nodes 3 --store postgres://postgres@127.0.0.1:5432/test
  cargo build --release -p kairos && cargo run --release -p kairos-bench -- failover --store postgres://postgres@127.0.0.1:5432/test";

/// Measures Kairos workloads on a real store.
#[derive(Debug, Parser)]
#[command(name = "kairos-bench", version, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Store to run on: `sqlite://` (a temporary directory per run, deleted afterwards),
    /// `sqlite:///DIR` (a fresh subdirectory of DIR per run, to choose the file system), or
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` (a fresh schema `kb_<label>_<random>` per run
    /// on that database, dropped afterwards; other query parameters go to the driver).
    /// `redis://...` is refused (exit code 2) until that store exists.
    #[arg(long, global = true, default_value = "sqlite://")]
    pub store: String,
    /// Print JSON instead of the table: an array of {workload, params, runs, metrics: [{name,
    /// unit, median, min, max, values}]}.
    #[arg(long, global = true)]
    pub json: bool,
    /// Run each workload R times and report the median with min–max.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Keep each run's store (SQLite directory, PostgreSQL schema) instead of deleting it.
    #[arg(long, global = true)]
    pub keep: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Throughput: N no-op `function` runs due now, from enqueue to all finished.
    ///
    /// One job without triggers; its runs are queued through the store in transactions of 1000
    /// (each with its own due time, all due now), waking the worker after each as an enqueue
    /// API would. bulk: the timer starts, all runs are queued with no node running, then a node
    /// starts and drains them (jobs/s over both phases; each phase is reported too). steady: the
    /// node runs first and a producer keeps --depth runs outstanding (queued or running),
    /// topping up whenever a tenth has drained, until N were queued (jobs/s from the first
    /// enqueue to the last finish). CPU is user + system time of the whole process (node and
    /// producer), `cpu_pct` is per cent of one core; peak memory is VmHWM, reset before the run.
    W1(W1Args),
    /// Fire lateness: K jobs due every second for D seconds.
    ///
    /// Shape herd: every job is `* * * * * *`, all due in the same instant. Shape spread: job i
    /// is `interval: 1s` anchored i/K s into the second, one due time every 1/K s. For every
    /// run, lateness = start of its attempt − its due time. The jobs use `overlap:
    /// allow` and `catchup: all` so that a node that falls behind shows lateness rather than
    /// skipped or coalesced runs. Their triggers are bounded to D + 2 whole seconds starting
    /// after all jobs exist; the first (warm-up) and last (cool-down) second are not measured.
    /// After the last due time the node has max(30 s, D) to finish. Missed: due times of the
    /// window without a run, with a skipped run, or whose run never started; duplicates: runs
    /// beyond the first for one due time. Both must be 0. The chart shows, per K, the share of
    /// runs at least x ms late (log-log), pooled over the repeats. In the herd K runs must start
    /// at once, so with --concurrency below K they start one batch of slots after another; give
    /// at least K slots to measure the scheduler rather than the cap.
    W2(W2Args),
    /// Shell jobs: N `/bin/true` command runs through Kairos against a bare loop.
    ///
    /// Kairos: N runs of `{"kind":"command","argv":["/bin/true"]}` queued in bulk, then drained
    /// by a node with worker concurrency C (own process group, PDEATHSIG, output captured line
    /// by line, attempt recorded in the store). Bare loop, run first: N spawns of /bin/true in
    /// this program, at most C at once, stdout and stderr through pipes read to the end, exit
    /// waited for. Reports µs per job (wall time / N) of both and the ratio Kairos / bare.
    W3(W3Args),
    /// Scale: M cron jobs with spread schedules, then a node on that store.
    ///
    /// Registers M jobs `"{s} {m} {h} * * *"` (daily, at a second of the day hashed from the
    /// job's index) through the job service as the API does (validation, first due time, one
    /// transaction per job; 4 in flight). Reports registration time and jobs/s, the store's
    /// size on disk (every file, -wal included), then for a node started on the store in a
    /// fresh process: start-up time (open the store, start the node, one store round trip),
    /// resident memory after start and after idling, CPU while idling --idle-secs. Jobs that
    /// come due while idling run (M / 86 400 per second).
    W4(W4Args),
    /// Workflow step hand-off: how long a step waits after its upstream steps finished.
    ///
    /// One job whose steps are no-op function tasks: a fan-out (`start`, --width middle steps
    /// each depending on it, `end` depending on all of them) or, with --chain N, N steps each
    /// depending on the one before; max_concurrent_steps 500, so nothing is held back. One node
    /// in this process (worker concurrency --concurrency). The job is triggered --runs times,
    /// one run after another, each to its end, after --warmup runs that are not measured. For
    /// every step with upstream steps: hand-off = its first attempt's started_at (the worker's
    /// clock as the attempt began) - the latest finished_at of its upstream steps' attempts
    /// (the store's clock in the transaction that recorded that end and queued this step:
    /// SQLite's inside the transaction, PostgreSQL's now(), its start), split into claim (the
    /// step run's started_at, set by the claim that took it, - the upstream finish) and start
    /// (the attempt's start - the claim). fanin: the hand-off of `end`.
    /// step_record: a step's attempt from its start to its end's date in the store (the no-op
    /// call and the completer's queue). Also each run's wall time (trigger to its last step's
    /// end), CPU of the process over the measured runs, peak memory, and errors (runs or
    /// steps that did not succeed; must be 0).
    W5(W5Args),
    /// W6, events: events posted over HTTP at a steady rate, from POST to task start.
    ///
    /// A node runs in this process with its API on a free port of 127.0.0.1; --jobs jobs
    /// subscribe to the topic `bench.event` (no-op function tasks, `overlap: allow`). A client
    /// in this process posts --rate events per second (open loop, each with its own
    /// Idempotency-Key, at most --connections in flight) for --warmup-secs + --secs seconds.
    /// For each event of the measured seconds: start = its run's first attempt's started_at
    /// minus the instant before the POST was sent; post = the POST's round trip.
    /// events_per_s: 202 answers of the measured seconds / their span. behind: sends that
    /// waited for a connection. errors (other answers, missing or failed runs) must be 0.
    W6(W6Args),
    /// Every workload with its default sizes, or those given here.
    All(AllArgs),
    /// What one run's durable bookkeeping costs below Kairos, one run at a time.
    ///
    /// 3·N runs of one job are queued. store: N runs claimed (limit 1) and finished through the
    /// store API, two transactions and two hand-offs to the writer thread each. round trip: N
    /// pings through the store (a reader thread and back). sqlite: the same
    /// changes as plain statements on a connection set up as the store's writer: a claim
    /// transaction, then a finish transaction (run row and attempt row). sqlite merged: one
    /// transaction per run finishing the previous run and claiming the next. Reports CPU µs
    /// (user + system, whole process) and wall µs per run of each.
    Floor(FloorArgs),
    /// Failover: kill the leader of a cluster of `kairos server` processes, K times.
    ///
    /// Needs `--store postgres://...` and the `kairos` binary: `cargo build --release -p
    /// kairos` first (it is found next to this program, target/<profile>/kairos), or
    /// --kairos-bin. N nodes start on 127.0.0.1 (free ports) on a fresh schema; a job due
    /// every second (`catchup: all`, `overlap: allow`, `/bin/true`) is created through the
    /// API. After its first fire and --settle-secs, K times: the leader (GET /api/v1/nodes)
    /// is killed with SIGKILL; a survivor is polled every 20 ms until it names a new leader
    /// (time to new leader) and until a run due after the kill and created after it appears
    /// (time to next fire; a run the killed leader created ahead of its due time does not
    /// count); the killed node restarts and the cluster gets --settle-secs. Then the job is
    /// paused, its runs finish (runs the killed nodes held wait for their lease, --lease),
    /// and every due time between the job's creation and the pause must have exactly one
    /// run. Reports each kill's times, p50 and max over the kills, missed and duplicate due
    /// times (both must be 0), runs that did not succeed and runs rescued. Goal: next fire
    /// within 2 s of the kill.
    Failover(FailoverArgs),
    /// The node phase of W4, in a fresh process (used by `w4`; prints JSON).
    #[command(hide = true)]
    W4Node(W4NodeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShapeArg {
    Bulk,
    Steady,
    Both,
}

impl ShapeArg {
    pub(crate) fn shapes(self) -> Vec<Shape> {
        match self {
            ShapeArg::Bulk => vec![Shape::Bulk],
            ShapeArg::Steady => vec![Shape::Steady],
            ShapeArg::Both => vec![Shape::Bulk, Shape::Steady],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum W2ShapeArg {
    Herd,
    Spread,
    Both,
}

impl W2ShapeArg {
    pub(crate) fn shapes(self) -> Vec<W2Shape> {
        match self {
            W2ShapeArg::Herd => vec![W2Shape::Herd],
            W2ShapeArg::Spread => vec![W2Shape::Spread],
            W2ShapeArg::Both => vec![W2Shape::Herd, W2Shape::Spread],
        }
    }
}

#[derive(Debug, Args)]
pub struct W1Args {
    /// Runs in all.
    #[arg(long, default_value_t = 100_000)]
    pub n: u64,
    /// How runs arrive.
    #[arg(long, value_enum, default_value = "both")]
    pub shape: ShapeArg,
    /// Runs kept outstanding (queued or running) by the steady producer.
    #[arg(long, default_value_t = 1000)]
    pub depth: u64,
    /// Worker concurrency (attempts at once).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Record the node's events in the activity log (the event stream's history), as
    /// `kairos server` does by default; `--no-event-log` measures without it.
    #[arg(long = "no-event-log", action = clap::ArgAction::SetFalse)]
    pub event_log: bool,
}

#[derive(Debug, Args)]
pub struct W2Args {
    /// Jobs due every second; a comma-separated list runs each size.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub jobs: Vec<u64>,
    /// When in each second the jobs are due: `herd` (all at the start of the second, as cron
    /// jobs on `* * * * * *`), `spread` (job i at i/K s: a steady rate of K fires per second),
    /// or both.
    #[arg(long, value_enum, default_value = "herd")]
    pub shape: W2ShapeArg,
    /// Measured seconds.
    #[arg(long, default_value_t = 60)]
    pub secs: u64,
    /// Worker concurrency (attempts at once). Runs claimed ahead of their due time hold a slot
    /// while they wait, so K jobs due together start together only with at least K slots.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Where to write the lateness chart (SVG).
    #[arg(long, default_value = "w2-lateness.svg")]
    pub chart: PathBuf,
    /// Nodes in this process sharing the store, each with its own elector, scheduler and
    /// worker (--concurrency each): one leads and fires, all claim and run. More than one
    /// needs --store postgres://....
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub nodes: u64,
}

#[derive(Debug, Args)]
pub struct W3Args {
    /// Processes on each side.
    #[arg(long, default_value_t = 5000)]
    pub n: u64,
    /// Processes at once (worker concurrency; the bare loop's limit).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Give each task a cgroup of its own where the machine allows (as `kairos server` does by
    /// default); `false` measures tasks without.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub task_cgroups: bool,
}

#[derive(Debug, Args)]
pub struct W4Args {
    /// Cron jobs to register.
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: u64,
    /// Seconds the node idles while its CPU is measured.
    #[arg(long, default_value_t = 30)]
    pub idle_secs: u64,
    /// Run the node phase in this process instead of a fresh one (its memory then includes
    /// what registration left in the heap).
    #[arg(long)]
    pub in_process: bool,
}

#[derive(Debug, Args)]
pub struct W5Args {
    /// Middle steps of the fan-out (the workflow has width + 2 steps).
    #[arg(long, default_value_t = 98, value_parser = clap::value_parser!(u32).range(1..=498))]
    pub width: u32,
    /// Run a straight chain of N steps (each depending on the one before) instead of the
    /// fan-out.
    #[arg(long, conflicts_with = "width", value_parser = clap::value_parser!(u32).range(2..=500))]
    pub chain: Option<u32>,
    /// Measured workflow runs, one after another.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Workflow runs before the measured ones, not measured.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Worker concurrency (attempts at once): at least the width, for the fan-out's middle
    /// steps to start together.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct W6Args {
    /// Events posted per second.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub secs: u64,
    /// Seconds of posting before the measured ones.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Requests in flight at most (HTTP/1.1 connections).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Jobs subscribed to the topic: runs per event.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub jobs: u64,
    /// Worker concurrency (attempts at once).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct AllArgs {
    /// W1 runs (both shapes, depth 1000, concurrency 64).
    #[arg(long, default_value_t = 100_000)]
    pub w1_n: u64,
    /// W2 jobs due every second; a comma-separated list runs each size, in both shapes
    /// (concurrency 64).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub w2_jobs: Vec<u64>,
    /// W2 measured seconds.
    #[arg(long, default_value_t = 60)]
    pub w2_secs: u64,
    /// W2 nodes sharing the store (more than one needs --store postgres://...).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub w2_nodes: u64,
    /// W3 processes on each side (concurrency 16).
    #[arg(long, default_value_t = 5000)]
    pub w3_n: u64,
    /// W4 cron jobs to register.
    #[arg(long, default_value_t = 1_000_000)]
    pub w4_jobs: u64,
    /// W4 seconds of idling.
    #[arg(long, default_value_t = 30)]
    pub w4_idle_secs: u64,
    /// W5 measured workflow runs (fan-out of 98, concurrency 128).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub w5_runs: u64,
    /// Where to write the W2 lateness chart (SVG).
    #[arg(long, default_value = "w2-lateness.svg")]
    pub chart: PathBuf,
}

#[derive(Debug, Args)]
pub struct FloorArgs {
    /// Runs per variant.
    #[arg(long, default_value_t = 5000)]
    pub n: u64,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// `kairos server` processes (at least 2).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=16))]
    pub nodes: u64,
    /// Times the leader is killed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub kills: u64,
    /// The `kairos` binary (default: `kairos` next to this program, target/<profile>/kairos).
    #[arg(long)]
    pub kairos_bin: Option<PathBuf>,
    /// Seconds the cluster gets after the first fire and after each restart.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    /// The nodes' run lease (`KAIROS_LEASE`, e.g. `3s`; default: the server's, 30s). A run
    /// the killed node had claimed waits this long before it is rescued.
    #[arg(long)]
    pub lease: Option<String>,
}

#[derive(Debug, Args)]
pub struct W4NodeArgs {
    /// The SQLite data directory.
    #[arg(long, conflicts_with = "schema", required_unless_present = "schema")]
    pub dir: Option<PathBuf>,
    /// The PostgreSQL schema (the database's URL in the environment).
    #[arg(long)]
    pub schema: Option<String>,
    #[arg(long, env = crate::store_url::POSTGRES_URL_ENV, hide_env_values = true, hide = true)]
    pub postgres_url: Option<String>,
    #[arg(long)]
    pub idle_secs: u64,
}

impl W4NodeArgs {
    fn location(&self) -> BenchResult<StoreLocation> {
        match (&self.dir, &self.schema, &self.postgres_url) {
            (Some(dir), _, _) => Ok(StoreLocation::SqliteDir(dir.clone())),
            (None, Some(schema), Some(url)) => Ok(StoreLocation::Postgres(PostgresConfig {
                url: url.clone(),
                schema: schema.clone(),
                pool_size: DEFAULT_POOL_SIZE,
            })),
            _ => Err(BenchError::InvalidParameter {
                name: "--schema",
                reason: format!("needs the PostgreSQL URL in {POSTGRES_URL_ENV}"),
            }),
        }
    }
}

async fn execute(cli: Cli) -> BenchResult<()> {
    if let Command::W4Node(a) = &cli.command {
        let phase = w4::node_phase(&a.location()?, a.idle_secs).await?;
        let line =
            serde_json::to_string(&phase).map_err(|e| BenchError::Incomplete(e.to_string()))?;
        println!("{line}");
        return Ok(());
    }
    let url: StoreUrl = cli.store.parse()?;
    let (plans, chart_path) = plans(&cli.command, cli.keep);
    let (measurements, series) = run_plans(&url, &plans, cli.repeat).await?;
    let summaries = report::summarize(&measurements);
    if let Some(path) = chart_path.filter(|_| !series.is_empty()) {
        let secs = plans.iter().find_map(|p| match p {
            Plan::W2(p) => Some(p.secs),
            _ => None,
        });
        let title = format!(
            "Kairos W2 fire lateness ({}, {} s per run, {} run(s))",
            url.backend(),
            secs.unwrap_or_default(),
            cli.repeat
        );
        chart::lateness_svg(&path, &title, &series)?;
        eprintln!("chart: {}", path.display());
    }
    if cli.json {
        let text = serde_json::to_string_pretty(&summaries)
            .map_err(|e| BenchError::Incomplete(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", report::table(&summaries));
    }
    Ok(())
}

/// The program: parses the command line, runs, and maps errors to exit codes (2 for a bad
/// invocation such as an unsupported store, 1 when a workload failed).
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    match execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kairos-bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
