//! The hot paths: firing jobs, claiming runs, recording attempts. Each function is one item's
//! worth of cached statements inside the caller's transaction; the `*_many` store methods call
//! them in a loop, so a batch costs one transaction and one thread hand-off however many items
//! it holds.
//!
//! Every run insert is `ON CONFLICT DO NOTHING` on its key (`(job_id, scheduled_for)`, or
//! `(job_id, event_id)` for an event's run), every fire is fenced
//! by its job's `next_fire_at`, every finish by its lease token.

use std::collections::HashMap;

use jiff::Timestamp;
use kairos_core::policy::{ExclusiveCandidate, exclusive_heads};
use kairos_core::run::{AttemptStatus, JobId, RunId, RunState};
use kairos_store::{
    ClaimedRun, Job, JobFireParams, JobFireResult, RunFinishParams, RunInsert, RunNext, StoreError,
    StoreResult,
};
use rusqlite::{Connection, params};

use crate::rows::{self, JOB_COLUMNS, col, exec, first, micros};

/// Inserts one run unless its key (`(job_id, scheduled_for)`, or `(job_id, event_id)` for an
/// event's run) exists; the new run's id.
pub(crate) fn insert_run(
    conn: &Connection,
    job_id: JobId,
    run: &RunInsert,
    now: Timestamp,
) -> StoreResult<Option<RunId>> {
    let (state, reason, finished_at) = match run.skip {
        Some(reason) => (RunState::Skipped, Some(reason.as_str()), Some(micros(now))),
        None => (RunState::Queued, None, None),
    };
    // Without RETURNING (SQLite would build a temporary table for it): a conflict changes no
    // row, an insert changes one and sets the last rowid.
    let changed = exec(
        conn,
        "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
         execution, exclusive, reason, created_at, finished_at, event_id, event_topic, \
         event_payload) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
         ON CONFLICT DO NOTHING",
        params![
            job_id,
            micros(run.scheduled_for),
            micros(run.run_at),
            state.as_str(),
            run.origin.as_str(),
            run.max_attempts,
            rows::execution_str(run.execution),
            run.exclusive,
            reason,
            micros(now),
            finished_at,
            run.event.as_ref().map(|e| e.id.as_str()),
            run.event.as_ref().map(|e| e.topic.as_str()),
            run.event.as_ref().map(|e| e.payload.as_str()),
        ],
    )?;
    Ok((changed == 1).then(|| conn.last_insert_rowid()))
}

/// `job_fire` for one job: check the fence, cancel where asked, insert the runs, advance
/// `next_fire_at`.
pub(crate) fn fire(
    conn: &Connection,
    p: &JobFireParams,
    now: Timestamp,
) -> StoreResult<JobFireResult> {
    // The overlap decision's fence: a run triggered meanwhile is counted.
    if let Some(max) = p.max_active
        && crate::store::active_count(conn, p.job_id)? > max
    {
        return Ok(JobFireResult::default());
    }
    // The fence itself, in the write: the job is not paused, nobody fired it since, and it
    // has the version (triggers, calendars) the round was planned with.
    let fenced = exec(
        conn,
        "UPDATE jobs SET next_fire_at = ?1 WHERE id = ?2 AND paused = 0 AND next_fire_at = ?3 \
         AND (?4 IS NULL OR version = ?4)",
        params![
            p.next_fire_at.map(micros),
            p.job_id,
            micros(p.expected_next_fire_at),
            p.expected_version
        ],
    )?;
    if fenced != 1 {
        return Ok(JobFireResult::default());
    }
    if p.cancel_active {
        // The due times this round starts keep their run if they have one already.
        let keep: Vec<Timestamp> = p
            .runs
            .iter()
            .filter(|r| r.skip.is_none())
            .map(|r| r.scheduled_for)
            .collect();
        crate::store::cancel_active_runs(conn, p.job_id, now, &keep)?;
    }
    let mut inserted = Vec::with_capacity(p.runs.len());
    for run in &p.runs {
        if let Some(id) = insert_run(conn, p.job_id, run, now)? {
            inserted.push((id, run.scheduled_for));
        }
    }
    inserted.sort_by_key(|(_, at)| *at);
    Ok(JobFireResult {
        applied: true,
        inserted,
    })
}

/// The facts of the exclusive rule: for each job with a waiting exclusive run due by `?1`, its
/// head (its waiting exclusive run with the earliest due time, due or not), and whether the
/// job has a run running. Both reads go through the partial index of waiting exclusive runs.
const EXCLUSIVE_WAITING: &str = "SELECT h.job_id, h.id, h.scheduled_for, h.run_at, \
       EXISTS (SELECT 1 FROM runs x WHERE x.job_id = h.job_id AND x.parent_id IS NULL \
         AND x.state = 'running') \
     FROM runs h WHERE h.id IN ( \
       SELECT (SELECT x.id FROM runs x INDEXED BY runs_queued_exclusive \
           WHERE x.job_id = d.job_id AND x.state = 'queued' AND x.exclusive = 1 \
           ORDER BY x.scheduled_for, x.id LIMIT 1) \
       FROM (SELECT DISTINCT r.job_id FROM runs r INDEXED BY runs_queued_exclusive \
         WHERE r.state = 'queued' AND r.exclusive = 1 AND r.run_at <= ?1) AS d)";

/// Claims up to `limit` queued runs due by `horizon` (now, or a little later for a worker that
/// waits for `run_at` itself), with one lease token, and reads each run and (once per job) its
/// job. A run's `started_at` is its first attempt's start: now, or its `run_at` if later.
#[allow(
    clippy::too_many_arguments,
    reason = "one claim's inputs, all plain values"
)]
pub(crate) fn claim(
    conn: &Connection,
    node: &str,
    token: &str,
    limit: u32,
    now: Timestamp,
    horizon: Timestamp,
    expires: Timestamp,
) -> StoreResult<Vec<ClaimedRun>> {
    // `exclusive` runs (overlap: queue) start only when no run of their job is running and no
    // exclusive run of the job due earlier is waiting (even for its retry's backoff): decided
    // by `exclusive_heads` on the jobs' heads, and fenced in the claim (the chosen run is
    // queued, its job has nothing running).
    // The facts are read through the partial index of waiting exclusive runs, named: without
    // statistics the planner would rather walk every queued run by `run_at` (`runs_queued`)
    // and filter them, which made every claim of a large backlog cost the whole backlog.
    let waiting = rows::all(conn, EXCLUSIVE_WAITING, params![micros(horizon)], |r| {
        Ok(ExclusiveCandidate {
            job_id: col(r, 0)?,
            run_id: col(r, 1)?,
            scheduled_for: rows::instant(col(r, 2)?)?,
            run_at: rows::instant(col(r, 3)?)?,
            job_running: col::<i64>(r, 4)? != 0,
        })
    })?;
    let heads = exclusive_heads(
        &waiting,
        horizon,
        usize::try_from(limit.max(1)).unwrap_or(usize::MAX),
    );
    let heads = serde_json::to_string(&heads).map_err(|e| StoreError::Internal(e.to_string()))?;
    // The claimed rows come back from the UPDATE itself, in `rows::run`'s column order; the job's
    // namespace and name (two empty strings here) are filled in from the job below.
    let runs = rows::all(
        conn,
        "UPDATE runs SET state = 'running', attempt = attempt + 1, node = ?1, lease_token = ?2, \
         lease_expires_at = ?3, started_at = COALESCE(started_at, MAX(?4, run_at)), reason = NULL, \
         begun = (execution <> 'at_most_once') \
         WHERE id IN (SELECT r.id FROM runs r WHERE r.state = 'queued' AND r.run_at <= ?6 \
           AND (r.exclusive = 0 OR (r.id IN (SELECT value FROM json_each(?7)) \
             AND NOT EXISTS (SELECT 1 FROM runs x WHERE x.job_id = r.job_id AND x.parent_id IS NULL AND x.state = 'running'))) \
           ORDER BY r.run_at, r.id LIMIT ?5) \
         RETURNING id, job_id, '', '', scheduled_for, run_at, state, origin, attempt, \
           max_attempts, execution, exclusive, reason, node, lease_expires_at, cancel_requested, \
           created_at, started_at, finished_at, exit_code, parent_id, step, result, params, \
           event_id, event_topic, event_payload, upstream_run_id, progress, progress_message, \
           checkpoint, reported_at, begun",
        params![
            node,
            token,
            micros(expires),
            micros(now),
            i64::from(limit.max(1)),
            micros(horizon),
            heads
        ],
        rows::run,
    )?;
    let mut jobs: HashMap<JobId, Job> = HashMap::new();
    // Each workflow run's document once per claim, however many of its steps it claims.
    let mut documents: HashMap<RunId, std::sync::Arc<crate::workflow::Document>> = HashMap::new();
    let mut claimed = Vec::with_capacity(runs.len());
    let job_sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    for mut run in runs {
        if !jobs.contains_key(&run.job_id) {
            let job = first(conn, &job_sql, [run.job_id], rows::job)?
                .ok_or_else(|| StoreError::Internal(format!("job of run {} vanished", run.id)))?;
            jobs.insert(job.id, job);
        }
        let job = &jobs[&run.job_id];
        run.namespace.clone_from(&job.spec.namespace);
        run.job_name.clone_from(&job.spec.name);
        // A step runs as its workflow run started: as the plain job its step makes of the
        // document stored on that run.
        let (job, workflow) = match (run.parent_id, run.step.as_deref()) {
            (Some(parent), Some(step)) => {
                let doc = match documents.get(&parent) {
                    Some(doc) => doc.clone(),
                    None => {
                        let doc = crate::workflow::document(conn, parent)?;
                        documents.insert(parent, doc.clone());
                        doc
                    }
                };
                let spec = doc.spec.step_job(step).ok_or_else(|| {
                    StoreError::Internal(format!("workflow run {parent} has no step `{step}`"))
                })?;
                let job = Job {
                    id: job.id,
                    spec,
                    version: job.version,
                    next_fire_at: job.next_fire_at,
                    created_at: job.created_at,
                    updated_at: job.updated_at,
                };
                (job, Some(doc.spec.clone()))
            }
            _ => (job.clone(), None),
        };
        claimed.push(ClaimedRun {
            run,
            lease_token: token.to_owned(),
            job,
            workflow,
        });
    }
    claimed.sort_by_key(|c| (c.run.run_at, c.run.id));
    Ok(claimed)
}

/// `run_finish` for one attempt: move the run on if the lease holds, and record the attempt.
/// False when the lease was lost (nothing written).
pub(crate) fn finish(conn: &Connection, p: &RunFinishParams, now: Timestamp) -> StoreResult<bool> {
    let (state, run_at, finished, release) = match &p.next {
        RunNext::Finish(state) => (state.as_str(), None, Some(micros(now)), false),
        RunNext::Retry { run_at } => (
            RunState::Queued.as_str(),
            Some(micros(*run_at)),
            None,
            false,
        ),
        RunNext::Release => (RunState::Queued.as_str(), None, None, true),
    };
    let o = &p.outcome;
    // A released run gives its attempt back and keeps its previous exit code. One whose cancel
    // was requested meanwhile (a user, `overlap: replace`) ends cancelled instead of going back
    // to the queue, as a rescue would decide (`kairos_core::lease::rescue_decision`); so does a
    // run whose failed attempt would be retried.
    let changed = exec(
        conn,
        "UPDATE runs SET \
         state = CASE WHEN (?4 OR ?2 IS NOT NULL) AND cancel_requested THEN 'cancelled' ELSE ?1 END, \
         run_at = COALESCE(?2, run_at), \
         finished_at = CASE WHEN (?4 OR ?2 IS NOT NULL) AND cancel_requested THEN ?8 ELSE ?3 END, \
         exit_code = CASE WHEN ?4 THEN exit_code ELSE ?5 END, attempt = attempt - ?4, \
         result = COALESCE(?9, result), \
         lease_token = NULL, lease_expires_at = NULL, begun = 1 \
         WHERE id = ?6 AND lease_token = ?7 AND state = 'running'",
        params![
            state,
            run_at,
            finished,
            release,
            o.exit_code,
            p.run_id,
            p.lease_token,
            micros(now),
            o.result
        ],
    )?;
    if changed == 0 {
        return Ok(false);
    }
    // A release whose run was asked to stop meanwhile ends it too (`cancelled`).
    if p.parent_id.is_none() {
        crate::dependency::run_ended(conn, p.run_id)?;
    }
    if !release {
        let error = match &o.status {
            AttemptStatus::Error { message } => Some(message.as_str()),
            _ => None,
        };
        exec(
            conn,
            "INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, status, \
             exit_code, http_status, error, output, output_truncated, max_rss_kib, user_cpu_us, \
             sys_cpu_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
             ON CONFLICT (run_id, attempt) DO NOTHING",
            params![
                p.run_id,
                p.attempt,
                p.node,
                micros(p.started_at),
                micros(now),
                o.status.label(),
                o.exit_code,
                o.http_status,
                error,
                o.output,
                o.output_truncated,
                o.usage.and_then(|u| u.max_rss_kib),
                o.usage.map(|u| u.user_cpu_us),
                o.usage.map(|u| u.sys_cpu_us),
            ],
        )?;
    }
    // A step that ended (or was to go back to the queue, but was asked to cancel) moves its
    // workflow run on.
    if let Some(parent) = p.parent_id {
        crate::workflow::settle(conn, parent, now)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// The plan of a statement, one line per step.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps: Vec<String> = stmt
            .query_map([0_i64], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        steps.join("\n")
    }

    /// Every claim reads the exclusive rule's facts: through the partial index of waiting
    /// exclusive runs (empty for most stores), never by walking the whole queue.
    #[test]
    fn the_exclusive_facts_never_walk_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::writer_connection(&dir.path().join("k.db")).unwrap();
        let facts = plan(&conn, EXCLUSIVE_WAITING);
        assert!(facts.contains("runs_queued_exclusive"), "{facts}");
        assert!(facts.contains("runs_job_active"), "{facts}");
        assert!(!facts.contains("runs_queued "), "{facts}");
    }
}
