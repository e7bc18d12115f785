//! Kairos workload benchmarks: a program (`kairos-bench`) that measures the scheduler, the
//! worker and the store on a real store and prints a table for people or `--json` for scripts.
//!
//! # Workloads
//!
//! - **W1, throughput** ([`w1`]): N no-op `function` runs due now, from enqueue to all
//!   finished, in two shapes: *bulk* (queue all, then a node drains them) and *steady* (a
//!   producer keeps a fixed number of runs outstanding while the node drains). Measures jobs/s,
//!   CPU time (user + system) and peak resident memory of the process.
//! - **W2, fire lateness** ([`w2`]): K jobs due every second for D seconds. For every run,
//!   lateness = start of its attempt − its due time; reports p50, p99, p99.9 and max, and the
//!   missed and duplicate due times (both must be 0), and draws the distribution ([`chart`]).
//!   On a cluster store, `--nodes N` runs N nodes in this process on the one store.
//! - **W3, shell jobs** ([`w3`]): N `/bin/true` command runs through Kairos against a bare
//!   loop in this program that spawns `/bin/true` N times with the same output capture;
//!   reports µs per job of both and their ratio (Kairos's overhead per process).
//! - **W4, scale** ([`w4`]): registers M cron jobs with spread schedules; reports registration
//!   time, the store's size on disk, and for a node started on that store: start-up time,
//!   resident memory and idle CPU.
//! - **W5, workflow step hand-off** ([`w5`]): workflow runs of no-op steps (a fan-out/fan-in,
//!   or a chain), one after another; for every step released by its upstream steps, the time
//!   from the latest upstream finish to its start, as the store recorded them; reports p50,
//!   p99, p99.9 and max, and each run's wall time.
//! - **W6, events** ([`w6`]): events posted over HTTP at a steady rate to a topic that jobs
//!   subscribe to; events accepted per second and the time from POST to task start.
//! - **Floor** ([`floor`]): one run's claim and finish through the store API and as plain
//!   SQL statements on the same schema (SQLite or PostgreSQL), one run at a time: what W1 and
//!   W3 cannot go below.
//! - **Failover** ([`failover`]): N real `kairos server` processes ([`server_proc`]) on a
//!   PostgreSQL schema and a job due every second; the leader is killed with SIGKILL K times.
//!   Reports the time to a new leader and to the next fired due time, and missed and
//!   duplicate due times over the whole window (both must be 0).
//!
//! # Method
//!
//! Every run of every workload starts from a fresh, empty store named by `--store`
//! ([`store_url`]): a SQLite directory, or a PostgreSQL schema of its own ([`pg_schema`]);
//! Redis plugs in there when it exists. The workloads are written once against `dyn Store`;
//! only the floor's plain-SQL variants are per backend. Nodes are the production ones
//! (`Node::start` with the `TaskExecutor`, the wall clock, default settings but the worker
//! concurrency; on a shared store they do not recover runs under their name at start, as
//! `kairos server` does not). Elapsed time is measured with `Instant`; due times and attempt
//! starts are the instants Kairos itself records. CPU and memory come from `/proc`
//! ([`procstat`]). `--repeat R` runs everything R times and reports the median with min–max
//! ([`report`]).
//!
//! Benchmarks are never timed assertions: the crate's tests run every workload once at a tiny
//! size and check only that figures come out and that nothing was missed or duplicated.

pub mod chart;
pub mod cli;
pub mod error;
pub mod failover;
pub mod floor;
pub mod harness;
pub mod pg_schema;
pub mod plan;
pub mod procstat;
pub mod report;
pub mod server_proc;
pub mod stats;
pub mod store_url;
pub mod w1;
pub mod w2;
pub mod w3;
pub mod w4;
pub mod w5;
pub mod w6;

pub use error::{BenchError, BenchResult};
pub use report::{Measurement, Metric, Summary};
pub use store_url::StoreUrl;
