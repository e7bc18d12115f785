//! Failover: how long a cluster of real `kairos server` processes goes without firing when its
//! leader is killed, and whether a due time is lost or doubled on the way. The goal is at most
//! 2 s from the kill to the next due time fired.
//!
//! N nodes (`kairos server`, see [`server_proc`](crate::server_proc)) start on a fresh schema
//! of the `--store` database, all on 127.0.0.1. Through the API a job is created that is due
//! every second (`* * * * * *`, `catchup: all`, `overlap: allow`, running `/bin/true`). Once
//! it fires and `settle` seconds passed, K times:
//!
//! 1. the leader is found (`GET /api/v1/nodes` on a live node) and killed with SIGKILL;
//! 2. a surviving node is polled every 20 ms until (a) `/api/v1/nodes` names another leader —
//!    **time to new leader** — and (b) the job's runs include one the new leader fired: due
//!    after the kill and created after it — **time to next fire**. A run the killed leader
//!    created ahead of its due time (the scheduler fires up to a few hundred ms early) does
//!    not count: it was fired before the kill. Both are measured from just before the kill on
//!    this program's monotonic clock, to within the polling period; the run's `created_at`
//!    minus the kill instant (the database's clock against this program's, one host) is
//!    reported too. Since a leader fires each due time a little ahead, the next fire comes up
//!    to a second after the kill even when the new leader took over at once; so the run's
//!    `created_at` minus its own due time is reported as well (**next fire late**: below zero
//!    the failover delayed nothing, above zero it is how late the earliest due time fired);
//! 3. the killed node is restarted (same name and port), and after it is ready the cluster gets
//!    `settle` seconds.
//!
//! Then the job is paused, its runs are left to finish (a run the killed node had claimed
//! waits for its lease, `--lease`, to expire and is rescued), and every due time from the
//! first whole second after the job was created to the last whole second before the pause must
//! have exactly one run: **missed** counts due times without a run or with a skipped one,
//! **duplicates** runs beyond the first for a due time; both must be 0.
//!
//! Reported: per kill the two times, their p50 and max over the kills, missed, duplicates,
//! runs that did not succeed, and runs rescued (more than one attempt).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use kairos_runtime::{Clock, SystemClock};
use serde_json::{Value, json};

use crate::error::{BenchError, BenchResult};
use crate::report::Measurement;
use crate::server_proc::{self, Api, Cluster, ServerProcess, ServerSpec};
use crate::stats::nearest_rank;
use crate::store_url::StoreUrl;

/// The job's name.
pub const JOB: &str = "failover-tick";

/// How often a surviving node is asked after a kill.
pub const POLL: Duration = Duration::from_millis(20);

/// How long a node may take to be ready, a leader to appear, a fire to come.
const LIMIT: Duration = Duration::from_secs(60);

/// Failover settings.
#[derive(Debug, Clone)]
pub struct FailoverParams {
    /// `kairos server` processes (at least 2).
    pub nodes: usize,
    /// Leader kills.
    pub kills: usize,
    /// The `kairos` binary; `None`: next to this program (`target/<profile>/kairos`).
    pub kairos_bin: Option<PathBuf>,
    /// Seconds the cluster gets after the first fire and after each restart.
    pub settle_secs: u64,
    /// The nodes' run lease (`KAIROS_LEASE`, e.g. `3s`); `None`: the server's default.
    pub lease: Option<String>,
    /// Keep the schema, and the nodes' logs and data directories.
    pub keep: bool,
}

impl Default for FailoverParams {
    fn default() -> Self {
        Self {
            nodes: 3,
            kills: 5,
            kairos_bin: None,
            settle_secs: 5,
            lease: None,
            keep: false,
        }
    }
}

/// What one kill measured.
#[derive(Debug, Clone, PartialEq)]
pub struct KillOutcome {
    pub killed: String,
    pub new_leader: String,
    pub new_leader_ms: f64,
    pub next_fire_ms: f64,
    /// The first fired run's `created_at` minus the kill instant.
    pub next_fire_store_ms: f64,
    /// That run's `created_at` minus its due time: negative when the new leader fired it
    /// ahead of time, as a leader does when nothing went wrong; positive, how late the
    /// failover made the earliest due time it fired.
    pub next_fire_late_ms: f64,
    /// That run's due time.
    pub next_due: Timestamp,
}

/// A run as the API shows it (the fields the workload reads).
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub id: i64,
    pub state: String,
    pub scheduled_for: Timestamp,
    pub created_at: Timestamp,
    pub attempt: u64,
}

impl RunView {
    fn parse(v: &Value) -> Option<Self> {
        let ts = |k: &str| v[k].as_str()?.parse::<Timestamp>().ok();
        Some(Self {
            id: v["id"].as_i64()?,
            state: v["state"].as_str()?.to_owned(),
            scheduled_for: ts("scheduled_for")?,
            created_at: ts("created_at")?,
            attempt: v["attempt"].as_u64().unwrap_or(0),
        })
    }

    fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "scheduled" | "queued" | "running")
    }
}

/// Due times of the window and what they got.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WindowCount {
    pub due_times: u64,
    pub no_run: u64,
    pub skipped: u64,
    pub duplicates: u64,
    /// First runs of a due time that ended other than `succeeded` (or `skipped`).
    pub not_succeeded: u64,
    /// Runs that took more than one attempt (rescued after their node was killed).
    pub rescued: u64,
}

impl WindowCount {
    pub fn missed(&self) -> u64 {
        self.no_run + self.skipped
    }
}

/// Counts the whole seconds `first..=last` against the runs.
pub fn count_window(runs: &[RunView], first: Timestamp, last: Timestamp) -> WindowCount {
    let mut by_due: BTreeMap<i64, Vec<&RunView>> = BTreeMap::new();
    let mut s = first.as_second();
    while s <= last.as_second() {
        by_due.insert(s, Vec::new());
        s += 1;
    }
    for run in runs {
        if run.scheduled_for.subsec_nanosecond() == 0
            && let Some(list) = by_due.get_mut(&run.scheduled_for.as_second())
        {
            list.push(run);
        }
    }
    let mut c = WindowCount {
        due_times: by_due.len() as u64,
        ..WindowCount::default()
    };
    for list in by_due.values() {
        c.duplicates += (list.len() as u64).saturating_sub(1);
        c.rescued += list.iter().filter(|r| r.attempt > 1).count() as u64;
        match list.first().map(|r| r.state.as_str()) {
            None => c.no_run += 1,
            Some("skipped") => c.skipped += 1,
            Some("succeeded") => {}
            Some(_) => c.not_succeeded += 1,
        }
    }
    c
}

fn floor_second(t: Timestamp) -> BenchResult<Timestamp> {
    Timestamp::from_second(t.as_second()).map_err(|e| BenchError::Incomplete(e.to_string()))
}

fn plus_secs(t: Timestamp, secs: i64) -> BenchResult<Timestamp> {
    t.checked_add(SignedDuration::from_secs(secs))
        .map_err(|e| BenchError::Incomplete(e.to_string()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the failover workload once.
pub async fn run(url: &StoreUrl, p: &FailoverParams) -> BenchResult<Measurement> {
    if p.nodes < 2 || p.kills == 0 {
        return Err(BenchError::InvalidParameter {
            name: "--nodes/--kills",
            reason: "needs at least 2 nodes (one survives each kill) and 1 kill".into(),
        });
    }
    if !url.is_cluster() {
        return Err(BenchError::NeedsCluster {
            workload: "failover",
            store: url.to_string(),
        });
    }
    let bin = match &p.kairos_bin {
        Some(bin) => bin.clone(),
        None => server_proc::kairos_bin_beside_this_program().ok_or_else(|| {
            BenchError::InvalidParameter {
                name: "--kairos-bin",
                reason: "no `kairos` binary next to this program; build it first \
                         (`cargo build --release -p kairos`) or give its path"
                    .into(),
            }
        })?,
    };
    if !bin.is_file() {
        return Err(BenchError::InvalidParameter {
            name: "--kairos-bin",
            reason: format!("{} is not a file", bin.display()),
        });
    }
    let place = url.fresh("failover", p.keep)?;
    let Some(schema) = place.postgres() else {
        return Err(BenchError::NeedsCluster {
            workload: "failover",
            store: url.to_string(),
        });
    };
    let work = tempfile::Builder::new()
        .prefix("kairos-bench-failover-")
        .tempdir()
        .map_err(|e| BenchError::io("cannot create a temporary directory", e))?;
    eprintln!(
        "failover: {} nodes of {} on schema {}; logs in {}",
        p.nodes,
        bin.display(),
        schema.name,
        work.path().display()
    );
    let env: Vec<(String, String)> = p
        .lease
        .iter()
        .map(|l| ("KAIROS_LEASE".to_owned(), l.clone()))
        .collect();
    let mut cluster = Cluster {
        nodes: Vec::with_capacity(p.nodes),
        api: Api::new()?,
    };
    for i in 1..=p.nodes {
        let name = format!("n{i}");
        cluster.nodes.push(ServerProcess::start(ServerSpec {
            bin: bin.clone(),
            store_url: schema.server_url(&name),
            name,
            port: server_proc::free_port()?,
            work_dir: work.path().to_owned(),
            env: env.clone(),
        })?);
    }
    let outcome = drive(&mut cluster, p).await;
    cluster.stop_all().await;
    drop(cluster);
    if p.keep {
        let _ = work.keep();
    }
    let (kills, count) = outcome?;

    let mut m = Measurement::new("failover");
    m.param("store", url.backend())
        .param("nodes", p.nodes as u64)
        .param("kills", p.kills as u64)
        .param("settle_secs", p.settle_secs)
        .param("lease", p.lease.clone().unwrap_or_else(|| "default".into()));
    let quantiles = |f: fn(&KillOutcome) -> f64| {
        let mut us: Vec<i64> = kills.iter().map(|k| (f(k) * 1e3) as i64).collect();
        us.sort_unstable();
        let q = |q| nearest_rank(&us, q).map_or(f64::NAN, |v| v as f64 / 1e3);
        (q(0.5), q(1.0))
    };
    let (leader_p50, leader_max) = quantiles(|k| k.new_leader_ms);
    let (fire_p50, fire_max) = quantiles(|k| k.next_fire_ms);
    let (store_p50, store_max) = quantiles(|k| k.next_fire_store_ms);
    let (late_p50, late_max) = quantiles(|k| k.next_fire_late_ms);
    m.metric("new_leader_p50_ms", "ms", leader_p50)
        .metric("new_leader_max_ms", "ms", leader_max)
        .metric("next_fire_p50_ms", "ms", fire_p50)
        .metric("next_fire_max_ms", "ms", fire_max)
        .metric("next_fire_store_p50_ms", "ms", store_p50)
        .metric("next_fire_store_max_ms", "ms", store_max)
        .metric("next_fire_late_p50_ms", "ms", late_p50)
        .metric("next_fire_late_max_ms", "ms", late_max)
        .metric("due_times", "due times", count.due_times as f64)
        .metric("missed", "due times", count.missed() as f64)
        .metric("missed_no_run", "due times", count.no_run as f64)
        .metric("missed_skipped", "due times", count.skipped as f64)
        .metric("duplicates", "runs", count.duplicates as f64)
        .metric("not_succeeded", "runs", count.not_succeeded as f64)
        .metric("rescued", "runs", count.rescued as f64);
    for (k, kill) in kills.iter().enumerate() {
        m.metric(
            &format!("kill{}_new_leader_ms", k + 1),
            "ms",
            kill.new_leader_ms,
        )
        .metric(
            &format!("kill{}_next_fire_ms", k + 1),
            "ms",
            kill.next_fire_ms,
        );
    }
    Ok(m)
}

/// Everything between starting the nodes and stopping them.
async fn drive(
    cluster: &mut Cluster,
    p: &FailoverParams,
) -> BenchResult<(Vec<KillOutcome>, WindowCount)> {
    let api = cluster.api.clone();
    for node in &mut cluster.nodes {
        node.wait_ready(&api, LIMIT).await?;
    }
    cluster.wait_leader(None, LIMIT).await?;
    let job = cluster
        .post(
            "/api/v1/jobs",
            Some(&json!({
                "name": JOB,
                "triggers": [{"cron": "* * * * * *"}],
                "catchup": "all",
                "catchup_window": "10m",
                "overlap": "allow",
                "max_concurrent": 100,
                "task": {"kind": "command", "argv": ["/bin/true"]},
            })),
        )
        .await?;
    let created_at = timestamp(&job["created_at"], "the job's created_at")?;
    let deadline = Instant::now() + LIMIT;
    while job_runs(cluster).await?.is_empty() {
        if Instant::now() >= deadline {
            return Err(BenchError::Incomplete("the job never fired".into()));
        }
        tokio::time::sleep(POLL * 10).await;
    }
    let settle = Duration::from_secs(p.settle_secs);
    tokio::time::sleep(settle).await;

    let mut kills = Vec::with_capacity(p.kills);
    for k in 1..=p.kills {
        let leader = cluster.wait_leader(None, LIMIT).await?;
        let outcome = kill_and_watch(cluster, leader).await?;
        eprintln!(
            "failover: kill {k}/{}: {} killed; {} leads after {:.0} ms; due time {} fired \
             after {:.0} ms (created {:.0} ms after the kill, {:+.0} ms from its due time)",
            p.kills,
            outcome.killed,
            outcome.new_leader,
            outcome.new_leader_ms,
            outcome.next_due,
            outcome.next_fire_ms,
            outcome.next_fire_store_ms,
            outcome.next_fire_late_ms,
        );
        kills.push(outcome);
        let node = &mut cluster.nodes[leader];
        node.restart()?;
        node.wait_ready(&api, LIMIT).await?;
        tokio::time::sleep(settle).await;
    }

    let paused = cluster
        .post(&format!("/api/v1/jobs/{JOB}/pause"), None)
        .await?;
    let paused_at = timestamp(&paused["updated_at"], "the job's updated_at")?;
    // A run the killed node had claimed waits for its lease (30 s by default) and the rescue.
    let deadline = Instant::now() + Duration::from_secs(180);
    let runs = loop {
        let runs = job_runs(cluster).await?;
        if !runs.iter().any(RunView::is_active) {
            break runs;
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Incomplete(
                "runs still active 180 s after the pause".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let first = plus_secs(floor_second(created_at)?, 1)?;
    let last = plus_secs(floor_second(paused_at)?, -1)?;
    Ok((kills, count_window(&runs, first, last)))
}

/// Kills node `leader` with SIGKILL and polls a survivor until another leader is named and
/// a due time after the kill is fired.
async fn kill_and_watch(cluster: &mut Cluster, leader: usize) -> BenchResult<KillOutcome> {
    let killed = cluster.nodes[leader].spec.name.clone();
    let kill_at = SystemClock.now();
    let t_kill = Instant::now();
    cluster.nodes[leader].kill9().await?;
    let mut new_leader: Option<(String, f64)> = None;
    let mut fired: Option<(f64, RunView)> = None;
    let runs_path = format!("/api/v1/jobs/{JOB}/runs?limit=20");
    loop {
        if new_leader.is_none()
            && let Some(i) = cluster.leader(Some(leader)).await
            && i != leader
        {
            new_leader = Some((cluster.nodes[i].spec.name.clone(), ms(t_kill.elapsed())));
        }
        if fired.is_none()
            && let Some(list) = cluster.get(&runs_path, Some(leader)).await
        {
            let first = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(RunView::parse)
                .filter(|r| r.scheduled_for > kill_at && r.created_at > kill_at)
                .min_by_key(|r| r.scheduled_for);
            if let Some(run) = first {
                fired = Some((ms(t_kill.elapsed()), run));
            }
        }
        if let (Some((name, leader_ms)), Some((fire_ms, run))) = (&new_leader, &fired) {
            return Ok(KillOutcome {
                killed,
                new_leader: name.clone(),
                new_leader_ms: *leader_ms,
                next_fire_ms: *fire_ms,
                next_fire_store_ms: run.created_at.duration_since(kill_at).as_secs_f64() * 1e3,
                next_fire_late_ms: run
                    .created_at
                    .duration_since(run.scheduled_for)
                    .as_secs_f64()
                    * 1e3,
                next_due: run.scheduled_for,
            });
        }
        if t_kill.elapsed() >= LIMIT {
            return Err(BenchError::Incomplete(format!(
                "{} s after {killed} was killed: new leader {:?}, a due time fired: {}",
                LIMIT.as_secs(),
                new_leader.map(|l| l.0),
                fired.is_some()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every run of the job (paged, newest first).
async fn job_runs(cluster: &Cluster) -> BenchResult<Vec<RunView>> {
    const PAGE: usize = 1000;
    let mut all = Vec::new();
    let mut before = String::new();
    loop {
        let path = format!("/api/v1/jobs/{JOB}/runs?limit={PAGE}{before}");
        let page = cluster
            .get(&path, None)
            .await
            .ok_or_else(|| BenchError::Incomplete(format!("no node answered GET {path}")))?;
        let page: Vec<RunView> = page
            .as_array()
            .map(|l| l.iter().filter_map(RunView::parse).collect())
            .unwrap_or_default();
        let full = page.len() == PAGE;
        if let Some(last) = page.last() {
            before = format!("&before={}", last.id);
        }
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

fn timestamp(v: &Value, what: &str) -> BenchResult<Timestamp> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BenchError::Incomplete(format!("{what} is not an instant: {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, second: i64, state: &str, attempt: u64) -> RunView {
        let t = Timestamp::from_second(second).unwrap();
        RunView {
            id,
            state: state.into(),
            scheduled_for: t,
            created_at: t,
            attempt,
        }
    }

    #[test]
    fn counts_missed_duplicate_and_rescued_due_times() {
        let runs = vec![
            run(1, 100, "succeeded", 1),
            run(2, 101, "succeeded", 2),
            run(3, 101, "succeeded", 1),
            run(4, 103, "skipped", 1),
            run(5, 104, "lost", 3),
            run(6, 99, "succeeded", 1),
            run(7, 105, "succeeded", 1),
        ];
        let c = count_window(
            &runs,
            Timestamp::from_second(100).unwrap(),
            Timestamp::from_second(104).unwrap(),
        );
        assert_eq!(c.due_times, 5);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.no_run, 1, "102");
        assert_eq!(c.skipped, 1, "103");
        assert_eq!(c.missed(), 2);
        assert_eq!(c.not_succeeded, 1, "104");
        assert_eq!(c.rescued, 2);
    }

    #[test]
    fn parses_runs_as_the_api_shows_them() {
        let v = json!({"id": 7, "state": "queued", "scheduled_for": "2026-01-01T00:00:01Z",
            "created_at": "2026-01-01T00:00:00.8Z", "attempt": 0, "job": "x"});
        let r = RunView::parse(&v).unwrap();
        assert_eq!(r.id, 7);
        assert!(r.is_active());
        assert_eq!(r.scheduled_for.as_second() - r.created_at.as_second(), 1);
    }
}
