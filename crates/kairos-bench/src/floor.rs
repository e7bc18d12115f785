//! Floor: what one run's durable bookkeeping costs in the store and in the database itself,
//! below the rest of Kairos. It puts W1's and W3's figures in proportion: the part of a job that no
//! change above the store can remove.
//!
//! One job; 3·N runs are queued (as in W1). Then N runs each, one at a time:
//!
//! - **store**: `run_claim` (limit 1) and then `run_finish` through the store API: two
//!   transactions and two hand-offs to the writer thread per run, as when attempts end one at a
//!   time (W3 at low concurrency).
//! - **round trip**: N `ping`s through the store: a `SELECT 1` on a reader thread and back, the
//!   cost of handing work to a database thread and getting the answer.
//! - **sqlite**: the same changes as plain statements on one connection set up as the store's
//!   writer (same file, schema and settings), on this thread: a claim transaction (the run
//!   becomes `running` with its lease), then a finish transaction (the run ends, its attempt
//!   row is inserted).
//! - **sqlite merged**: one transaction per run that finishes the previous run and claims the
//!   next: the least any design with a durable claim before the work and a durable result
//!   after it can write per run when runs end one at a time.
//!
//! On PostgreSQL the plain variants are named `postgres` and `postgres merged`: the same
//! statements on one connection to the run's schema (round trips to the server included), and
//! the round trip is a `SELECT 1` on a pooled connection. The CPU figures are this process's
//! only; the server's own work shows in the wall times.
//!
//! Reported: CPU µs per run (per round trip) of the whole process (user + system) and wall µs,
//! for each.

use std::path::Path;
use std::time::Instant;

use jiff::SignedDuration;
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunState};
use kairos_runtime::{Clock, SystemClock};
use kairos_store::{RunClaimParams, RunFinishParams, RunNext};
use kairos_store_sqlite::DB_FILE_NAME;
use rusqlite::{Connection, TransactionBehavior, params};

use crate::error::{BenchError, BenchResult};
use crate::harness;
use crate::pg_schema::pg;
use crate::procstat::CpuTimes;
use crate::report::Measurement;
use crate::store_url::StoreUrl;

/// Floor settings.
#[derive(Debug, Clone)]
pub struct FloorParams {
    /// Runs per variant.
    pub n: u64,
    /// Keep the store's files afterwards.
    pub keep: bool,
}

impl Default for FloorParams {
    fn default() -> Self {
        Self {
            n: 5000,
            keep: false,
        }
    }
}

/// CPU and wall time of `n` runs, per run.
#[derive(Debug, Clone, Copy)]
struct PerRun {
    cpu_us: f64,
    wall_us: f64,
}

impl PerRun {
    fn since(cpu0: &CpuTimes, t0: Instant, n: u64) -> Self {
        let n = n.max(1) as f64;
        Self {
            cpu_us: CpuTimes::now().since(cpu0).own.as_secs_f64() * 1e6 / n,
            wall_us: t0.elapsed().as_secs_f64() * 1e6 / n,
        }
    }
}

/// Runs the floor once.
pub async fn run(url: &StoreUrl, p: &FloorParams) -> BenchResult<Measurement> {
    if p.n == 0 {
        return Err(BenchError::InvalidParameter {
            name: "--n",
            reason: "must be at least 1".into(),
        });
    }
    let place = url.fresh("floor", p.keep)?;
    let open = place.open().await?;
    let job = harness::noop_job(open.store.as_ref(), "floor").await?;
    let ctx = harness::context(open.store.clone());
    let base = SystemClock.now();
    harness::enqueue(&ctx, job.id, base, 0..3 * p.n, base).await?;

    let cpu0 = CpuTimes::now();
    let t0 = Instant::now();
    for _ in 0..p.n {
        let claimed = open
            .store
            .run_claim(RunClaimParams {
                node: "floor".into(),
                limit: 1,
                lease: SignedDuration::from_secs(30),
                ahead: SignedDuration::ZERO,
                now: None,
            })
            .await?;
        let c = claimed
            .into_iter()
            .next()
            .ok_or_else(|| BenchError::Incomplete("the store had no run left to claim".into()))?;
        let applied = open
            .store
            .run_finish(RunFinishParams {
                run_id: c.run.id,
                parent_id: None,
                lease_token: c.lease_token,
                attempt: c.run.attempt,
                node: "floor".into(),
                started_at: SystemClock.now(),
                outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
                next: RunNext::Finish(RunState::Succeeded),
                now: None,
            })
            .await?;
        if !applied {
            return Err(BenchError::Incomplete("a finish lost its lease".into()));
        }
    }
    let store = PerRun::since(&cpu0, t0, p.n);

    let cpu0 = CpuTimes::now();
    let t0 = Instant::now();
    for _ in 0..p.n {
        open.store.ping().await?;
    }
    let round_trip = PerRun::since(&cpu0, t0, p.n);
    drop(ctx);
    open.close().await;

    let n = p.n;
    let (plain, merged) = match (place.sqlite_dir(), place.postgres()) {
        (Some(dir), _) => {
            let path = dir.join(DB_FILE_NAME);
            tokio::task::spawn_blocking(move || sqlite_variants(&path, n))
                .await
                .map_err(|e| BenchError::Incomplete(e.to_string()))??
        }
        (None, Some(schema)) => postgres_variants(&schema.client().await?, n).await?,
        (None, None) => return Err(BenchError::UnsupportedStore(url.to_string())),
    };

    // `sqlite_…` or `postgres_…`: the plain statements on the backend's own terms.
    let name = |what: &str| format!("{}_{what}", url.backend());
    let mut m = Measurement::new("floor");
    m.param("store", url.backend()).param("n", p.n);
    m.metric("round_trip_cpu_us", "µs", round_trip.cpu_us)
        .metric("round_trip_us", "µs", round_trip.wall_us)
        .metric("store_cpu_us_per_run", "µs", store.cpu_us)
        .metric("store_us_per_run", "µs", store.wall_us)
        .metric(&name("cpu_us_per_run"), "µs", plain.cpu_us)
        .metric(&name("us_per_run"), "µs", plain.wall_us)
        .metric(&name("merged_cpu_us_per_run"), "µs", merged.cpu_us)
        .metric(&name("merged_us_per_run"), "µs", merged.wall_us);
    Ok(m)
}

/// The two plain-PostgreSQL variants, on a connection to the run's schema (the store closed
/// before): the statements of [`claim`] and [`finish`] in PostgreSQL's dialect.
async fn postgres_variants(
    client: &tokio_postgres::Client,
    n: u64,
) -> BenchResult<(PerRun, PerRun)> {
    let sql = |e| pg("floor", e);
    let queued: Vec<i64> = client
        .query(
            "SELECT id FROM runs WHERE state = 'queued' ORDER BY id LIMIT $1",
            &[&(2 * n as i64)],
        )
        .await
        .map_err(sql)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if queued.len() as u64 != 2 * n {
        return Err(BenchError::Incomplete(format!(
            "expected {} queued runs, found {}",
            2 * n,
            queued.len()
        )));
    }
    let (separate, together) = queued.split_at(n as usize);
    let claim = client
        .prepare(
            "UPDATE runs SET state = 'running', attempt = attempt + 1, node = 'floor', \
             lease_token = 'floor-lease', lease_expires_at = now() + interval '30 seconds', \
             started_at = now() WHERE id = $1",
        )
        .await
        .map_err(sql)?;
    let finish = client
        .prepare(
            "UPDATE runs SET state = 'succeeded', finished_at = now(), lease_token = NULL, \
             lease_expires_at = NULL WHERE id = $1 AND lease_token = 'floor-lease' \
             AND state = 'running'",
        )
        .await
        .map_err(sql)?;
    let attempt = client
        .prepare(
            "INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, status) \
             VALUES ($1, 1, 'floor', now(), now(), 'succeeded')",
        )
        .await
        .map_err(sql)?;
    let finish_run = |id: i64| {
        let (finish, attempt) = (&finish, &attempt);
        async move {
            client.execute(finish, &[&id]).await?;
            client.execute(attempt, &[&id]).await
        }
    };

    let cpu0 = CpuTimes::now();
    let t0 = Instant::now();
    for &id in separate {
        client.batch_execute("BEGIN").await.map_err(sql)?;
        client.execute(&claim, &[&id]).await.map_err(sql)?;
        client.batch_execute("COMMIT").await.map_err(sql)?;
        client.batch_execute("BEGIN").await.map_err(sql)?;
        finish_run(id).await.map_err(sql)?;
        client.batch_execute("COMMIT").await.map_err(sql)?;
    }
    let plain = PerRun::since(&cpu0, t0, n);

    let cpu0 = CpuTimes::now();
    let t0 = Instant::now();
    let mut previous: Option<i64> = None;
    for &id in together {
        client.batch_execute("BEGIN").await.map_err(sql)?;
        if let Some(done) = previous {
            finish_run(done).await.map_err(sql)?;
        }
        client.execute(&claim, &[&id]).await.map_err(sql)?;
        client.batch_execute("COMMIT").await.map_err(sql)?;
        previous = Some(id);
    }
    if let Some(done) = previous {
        client.batch_execute("BEGIN").await.map_err(sql)?;
        finish_run(done).await.map_err(sql)?;
        client.batch_execute("COMMIT").await.map_err(sql)?;
    }
    let merged = PerRun::since(&cpu0, t0, n);
    Ok((plain, merged))
}

/// The two plain-SQLite variants on the store's file (closed by the store before).
fn sqlite_variants(path: &Path, n: u64) -> BenchResult<(PerRun, PerRun)> {
    let sql = |e: rusqlite::Error| BenchError::Incomplete(format!("sqlite: {e}"));
    let mut conn = kairos_store_sqlite::writer_connection(path)?;
    let queued: Vec<i64> = conn
        .prepare("SELECT id FROM runs WHERE state = 'queued' ORDER BY id LIMIT ?1")
        .and_then(|mut s| {
            s.query_map([2 * n as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(sql)?;
    if queued.len() as u64 != 2 * n {
        return Err(BenchError::Incomplete(format!(
            "expected {} queued runs, found {}",
            2 * n,
            queued.len()
        )));
    }
    let (separate, together) = queued.split_at(n as usize);

    let cpu0 = CpuTimes::now();
    let t0 = Instant::now();
    for &id in separate {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        claim(&tx, id).map_err(sql)?;
        tx.commit().map_err(sql)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        finish(&tx, id).map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    let sqlite = PerRun::since(&cpu0, t0, n);

    let cpu0 = CpuTimes::now();
    let t0 = Instant::now();
    let mut previous: Option<i64> = None;
    for &id in together {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        if let Some(done) = previous {
            finish(&tx, done).map_err(sql)?;
        }
        claim(&tx, id).map_err(sql)?;
        tx.commit().map_err(sql)?;
        previous = Some(id);
    }
    if let Some(done) = previous {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        finish(&tx, done).map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    let merged = PerRun::since(&cpu0, t0, n);
    Ok((sqlite, merged))
}

fn now_us() -> i64 {
    SystemClock.now().as_microsecond()
}

/// What a claim changes: the run becomes `running` with a lease and its first start.
fn claim(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    let now = now_us();
    conn.prepare_cached(
        "UPDATE runs SET state = 'running', attempt = attempt + 1, node = 'floor', \
         lease_token = 'floor-lease', lease_expires_at = ?2, started_at = ?3 WHERE id = ?1",
    )?
    .execute(params![id, now + 30_000_000, now])?;
    Ok(())
}

/// What a finish changes: the run ends (fenced by its lease) and its attempt is recorded.
fn finish(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    let now = now_us();
    conn.prepare_cached(
        "UPDATE runs SET state = 'succeeded', finished_at = ?2, lease_token = NULL, \
         lease_expires_at = NULL WHERE id = ?1 AND lease_token = 'floor-lease' \
         AND state = 'running'",
    )?
    .execute(params![id, now])?;
    conn.prepare_cached(
        "INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, status) \
         VALUES (?1, 1, 'floor', ?2, ?2, 'succeeded')",
    )?
    .execute(params![id, now])?;
    Ok(())
}
