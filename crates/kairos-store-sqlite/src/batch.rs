//! Set-based writes for the hot paths: a batch of runs, fires or finished attempts becomes a few
//! statements over a JSON array (`json_each`) instead of a few statements per item.
//!
//! Each statement costs a round trip to the connection's thread (sqlx runs every SQLite
//! connection on a thread of its own), so the number of statements per batch, not per item, is
//! what bounds throughput and lateness. The semantics are those of the per-item versions: every
//! run insert is `ON CONFLICT DO NOTHING` on `(job_id, scheduled_for)`, every fire is fenced by
//! its job's `next_fire_at`, every finish by its lease token.

use std::collections::HashMap;

use jiff::Timestamp;
use kairos_core::run::{AttemptStatus, JobId, RunId, RunState};
use kairos_store::{
    JobFireParams, JobFireResult, RunFinishParams, RunInsert, RunNext, StoreError, StoreResult,
};
use serde_json::{Value, json};
use sqlx::Row;

use crate::rows::{self, instant, internal, micros};

fn to_json(v: &Value) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Inserts runs (each for its job), skipping due times that already have a run. Returns the runs
/// created as `(run id, job id, scheduled_for)`.
pub(crate) async fn insert_runs(
    tx: &mut sqlx::SqliteConnection,
    items: &[(JobId, &RunInsert)],
    now: Timestamp,
) -> StoreResult<Vec<(RunId, JobId, Timestamp)>> {
    if items.is_empty() {
        return Ok(vec![]);
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|(job_id, run)| {
            let (state, reason, finished_at) = match run.skip {
                Some(reason) => (RunState::Skipped, Some(reason.as_str()), Some(micros(now))),
                None => (RunState::Queued, None, None),
            };
            json!([
                job_id,
                micros(run.scheduled_for),
                micros(run.run_at),
                state.as_str(),
                run.origin.as_str(),
                run.max_attempts,
                rows::execution_str(run.execution),
                run.exclusive as i64,
                reason,
                finished_at,
            ])
        })
        .collect();
    // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the INSERT, not a join.
    let created = sqlx::query(
        "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, execution, \
         exclusive, reason, created_at, finished_at) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
         value ->> 6, value ->> 7, value ->> 8, ?2, value ->> 9 FROM json_each(?1) WHERE true \
         ON CONFLICT (job_id, scheduled_for) DO NOTHING RETURNING id, job_id, scheduled_for",
    )
    .bind(to_json(&Value::Array(rows))?)
    .bind(micros(now))
    .fetch_all(&mut *tx)
    .await
    .map_err(internal)?;
    created
        .iter()
        .map(|r| {
            let id: i64 = r.try_get(0).map_err(internal)?;
            let job_id: i64 = r.try_get(1).map_err(internal)?;
            let at: i64 = r.try_get(2).map_err(internal)?;
            Ok((id, job_id, instant(at)?))
        })
        .collect()
}

/// `job_fire` for many jobs: fence every job, cancel where asked, insert all runs, advance every
/// `next_fire_at`. The caller falls back to one-by-one when a job appears twice.
pub(crate) async fn fire_many(
    tx: &mut sqlx::SqliteConnection,
    ps: &[JobFireParams],
    now: Timestamp,
) -> StoreResult<Vec<JobFireResult>> {
    let ids: Vec<JobId> = ps.iter().map(|p| p.job_id).collect();
    let current: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, next_fire_at FROM jobs WHERE paused = 0 AND id IN (SELECT value FROM json_each(?))",
    )
    .bind(to_json(&json!(ids))?)
    .fetch_all(&mut *tx)
    .await
    .map_err(internal)?;
    let current: HashMap<i64, Option<i64>> = current.into_iter().collect();
    let applies: Vec<bool> = ps
        .iter()
        .map(|p| current.get(&p.job_id) == Some(&Some(micros(p.expected_next_fire_at))))
        .collect();
    for (p, _) in ps
        .iter()
        .zip(&applies)
        .filter(|(p, ok)| **ok && p.cancel_active)
    {
        crate::store::cancel_active_runs(tx, p.job_id, now).await?;
    }
    let items: Vec<(JobId, &RunInsert)> = ps
        .iter()
        .zip(&applies)
        .filter(|(_, ok)| **ok)
        .flat_map(|(p, _)| p.runs.iter().map(move |r| (p.job_id, r)))
        .collect();
    let created = insert_runs(tx, &items, now).await?;
    let nexts: Vec<Value> = ps
        .iter()
        .zip(&applies)
        .filter(|(_, ok)| **ok)
        .map(|(p, _)| json!([p.job_id, p.next_fire_at.map(micros)]))
        .collect();
    if !nexts.is_empty() {
        sqlx::query(
            "UPDATE jobs SET next_fire_at = v.value ->> 1 FROM json_each(?) AS v \
             WHERE jobs.id = v.value ->> 0",
        )
        .bind(to_json(&Value::Array(nexts))?)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
    }
    let mut by_job: HashMap<JobId, Vec<(RunId, Timestamp)>> = HashMap::new();
    for (id, job_id, at) in created {
        by_job.entry(job_id).or_default().push((id, at));
    }
    Ok(ps
        .iter()
        .zip(applies)
        .map(|(p, applied)| {
            let mut inserted = if applied {
                by_job.remove(&p.job_id).unwrap_or_default()
            } else {
                vec![]
            };
            inserted.sort_by_key(|(_, at)| *at);
            JobFireResult { applied, inserted }
        })
        .collect())
}

/// `run_finish` for many attempts: one fenced UPDATE moves the runs on and reports which leases
/// held, one INSERT records their attempts.
pub(crate) async fn finish_many(
    tx: &mut sqlx::SqliteConnection,
    ps: &[RunFinishParams],
    default_now: impl Fn(Option<Timestamp>) -> Timestamp,
) -> StoreResult<Vec<bool>> {
    if ps.is_empty() {
        return Ok(vec![]);
    }
    let nows: Vec<Timestamp> = ps.iter().map(|p| default_now(p.now)).collect();
    let moves: Vec<Value> = ps
        .iter()
        .zip(&nows)
        .map(|(p, now)| {
            let (state, run_at, finished, release) = match &p.next {
                RunNext::Finish(state) => (state.as_str(), None, Some(micros(*now)), 0),
                RunNext::Retry { run_at } => {
                    (RunState::Queued.as_str(), Some(micros(*run_at)), None, 0)
                }
                RunNext::Release => (RunState::Queued.as_str(), None, None, 1),
            };
            json!([
                p.run_id,
                p.lease_token,
                state,
                run_at,
                finished,
                p.outcome.exit_code,
                release
            ])
        })
        .collect();
    let held = sqlx::query(
        "UPDATE runs SET state = v.value ->> 2, run_at = COALESCE(v.value ->> 3, runs.run_at), \
         finished_at = v.value ->> 4, \
         exit_code = CASE WHEN v.value ->> 6 = 1 THEN runs.exit_code ELSE v.value ->> 5 END, \
         attempt = runs.attempt - (v.value ->> 6), lease_token = NULL, lease_expires_at = NULL \
         FROM json_each(?) AS v \
         WHERE runs.id = v.value ->> 0 AND runs.lease_token = v.value ->> 1 AND runs.state = 'running' \
         RETURNING runs.id, runs.attempt",
    )
    .bind(to_json(&Value::Array(moves))?)
    .fetch_all(&mut *tx)
    .await
    .map_err(internal)?;
    let mut attempt_of: HashMap<RunId, i64> = HashMap::with_capacity(held.len());
    for row in &held {
        attempt_of.insert(
            row.try_get(0).map_err(internal)?,
            row.try_get(1).map_err(internal)?,
        );
    }
    let attempts: Vec<Value> = ps
        .iter()
        .zip(&nows)
        .filter(|(p, _)| p.next != RunNext::Release)
        .filter_map(|(p, now)| {
            let attempt = attempt_of.get(&p.run_id)?;
            let o = &p.outcome;
            let error = match &o.status {
                AttemptStatus::Error { message } => Some(message.as_str()),
                _ => None,
            };
            Some(json!([
                p.run_id,
                attempt,
                p.node,
                micros(p.started_at),
                micros(*now),
                o.status.label(),
                o.exit_code,
                o.http_status,
                error,
                o.output,
                o.output_truncated as i64,
                o.usage.map(|u| u.max_rss_kib),
                o.usage.map(|u| u.user_cpu_us),
                o.usage.map(|u| u.sys_cpu_us),
            ]))
        })
        .collect();
    if !attempts.is_empty() {
        sqlx::query(
            "INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, status, \
             exit_code, http_status, error, output, output_truncated, max_rss_kib, user_cpu_us, \
             sys_cpu_us) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
             value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, \
             value ->> 11, value ->> 12, value ->> 13 FROM json_each(?) WHERE true \
             ON CONFLICT (run_id, attempt) DO NOTHING",
        )
        .bind(to_json(&Value::Array(attempts))?)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
    }
    Ok(ps
        .iter()
        .map(|p| attempt_of.contains_key(&p.run_id))
        .collect())
}
