//! Event triggers: the jobs an event is for, and the event's runs.
//!
//! An event's runs follow the fire's lock order (see `crate::batch`): the jobs' rows first, in
//! job id order (each fence is also the row lock), then the runs `overlap: replace` cancels, in
//! id order, then the new runs. Two posts of one event to two nodes meet at the job's row lock:
//! the second one's fence then finds the first one's run and writes nothing.

use deadpool_postgres::GenericClient;
use kairos_core::run::{JobId, RunId};
use kairos_store::*;

use crate::changes::Notices;
use crate::rows::{self, JOB_SELECT, RUN_SELECT, col, execute, query};

/// Replaces the job's rows in `job_topics` with the topics its document subscribes to.
pub(crate) async fn set_topics(
    c: &impl GenericClient,
    job_id: JobId,
    spec: &kairos_core::JobSpec,
) -> StoreResult<()> {
    execute(c, "DELETE FROM job_topics WHERE job_id = $1", &[&job_id]).await?;
    let topics = kairos_core::event::topics(spec);
    if !topics.is_empty() {
        execute(
            c,
            "INSERT INTO job_topics (topic, job_id) SELECT t, $2 FROM unnest($1::text[]) AS t",
            &[&topics, &job_id],
        )
        .await?;
    }
    Ok(())
}

/// `event_targets`: unpaused subscribed jobs, each with its run for the event and its count of
/// active runs, in three statements whatever the number of jobs.
pub(crate) async fn targets(
    c: &impl GenericClient,
    p: &EventTargetsParams,
) -> StoreResult<Vec<EventTarget>> {
    let jobs = query(
        c,
        &format!(
            "{JOB_SELECT} WHERE NOT j.paused \
             AND j.id IN (SELECT job_id FROM job_topics WHERE topic = $1) \
             AND ($2::text[] IS NULL OR j.namespace = ANY($2)) ORDER BY j.id"
        ),
        &[&p.topic, &p.namespaces],
    )
    .await?
    .iter()
    .map(rows::job)
    .collect::<StoreResult<Vec<Job>>>()?;
    if jobs.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let existing = query(
        c,
        &format!(
            "{RUN_SELECT} WHERE r.job_id = ANY($1) AND r.event_id = $2 AND r.parent_id IS NULL"
        ),
        &[&ids, &p.event_id],
    )
    .await?
    .iter()
    .map(rows::run)
    .collect::<StoreResult<Vec<Run>>>()?;
    let counts = query(
        c,
        "SELECT job_id, count(*) FROM runs WHERE job_id = ANY($1) AND parent_id IS NULL \
         AND state IN ('scheduled', 'queued', 'running') GROUP BY job_id",
        &[&ids],
    )
    .await?;
    let mut active = std::collections::HashMap::new();
    for row in &counts {
        active.insert(col::<JobId>(row, 0)?, col::<i64>(row, 1)?.unsigned_abs());
    }
    Ok(jobs
        .into_iter()
        .map(|job| EventTarget {
            existing: existing.iter().find(|r| r.job_id == job.id).cloned(),
            active: active.get(&job.id).copied().unwrap_or(0),
            job,
        })
        .collect())
}

/// An event's fence, and the lock on its job's row.
const EVENT_FENCE: &str = "SELECT 1 FROM jobs WHERE id = $1 AND version = $2 AND NOT paused \
     FOR NO KEY UPDATE";

/// `event_fire_many`: the fences (each job unchanged and not paused, locked in job id order;
/// no run for the event yet; the overlap counts), then the cancels, then the runs.
pub(crate) async fn fire_many(
    c: &impl GenericClient,
    ps: &[EventFireParams],
    notices: &mut Notices,
) -> StoreResult<Vec<Option<RunId>>> {
    let mut results = vec![None; ps.len()];
    let mut order: Vec<usize> = (0..ps.len()).collect();
    order.sort_by_key(|&i| ps[i].job_id);
    // The fences and the jobs' row locks (the lock a fire's `UPDATE` takes, which a job write
    // and a trigger-now's share lock wait for), sent at once (pipelined: run in this order).
    // With them, in the same id order, the jobs that run after the jobs whose runs an event
    // replaces.
    let own: Vec<(JobId, usize, bool)> = order
        .iter()
        .map(|&i| (ps[i].job_id, i, ps[i].cancel_active))
        .collect();
    let mut applied = crate::batch::lock_jobs(c, &own, EVENT_FENCE, |i| async move {
        let p = &ps[i];
        execute(c, EVENT_FENCE, &[&p.job_id, &p.expected_version]).await
    })
    .await?;
    if applied.is_empty() {
        return Ok(results);
    }
    // With the rows locked, new statements see every run committed for these jobs: a run
    // for the event (the same event posted to another node), and the active runs.
    let ids: Vec<JobId> = applied.iter().map(|&i| ps[i].job_id).collect();
    let event_ids: Vec<&str> = applied
        .iter()
        .map(|&i| ps[i].run.event.as_deref().map_or("", |e| e.id.as_str()))
        .collect();
    let facts = query(
        c,
        "SELECT k.job_id, \
           EXISTS (SELECT 1 FROM runs r WHERE r.job_id = k.job_id AND r.event_id = k.event_id \
             AND r.parent_id IS NULL), \
           (SELECT count(*) FROM runs r WHERE r.job_id = k.job_id AND r.parent_id IS NULL \
             AND r.state IN ('scheduled', 'queued', 'running')) \
         FROM unnest($1::bigint[], $2::text[]) AS k (job_id, event_id)",
        &[&ids, &event_ids],
    )
    .await?;
    let mut refused = Vec::new();
    for row in &facts {
        let (job_id, exists, active): (JobId, bool, i64) =
            (col(row, 0)?, col(row, 1)?, col(row, 2)?);
        if let Some(&i) = applied.iter().find(|&&i| ps[i].job_id == job_id)
            && (exists
                || ps[i].run.event.is_none()
                || ps[i]
                    .max_active
                    .is_some_and(|max| active.unsigned_abs() > max))
        {
            refused.push(i);
        }
    }
    applied.retain(|i| !refused.contains(i));
    // The rest as a fire would: runs locked (and cancelled for `replace`), then inserted.
    let fires: Vec<JobFireParams> = applied
        .iter()
        .map(|&i| {
            let p = &ps[i];
            JobFireParams {
                job_id: p.job_id,
                expected_next_fire_at: p.run.scheduled_for,
                runs: vec![p.run.clone()],
                cancel_active: p.cancel_active,
                max_active: p.max_active,
                next_fire_at: None,
                now: p.now,
                expected_version: None,
            }
        })
        .collect();
    let refs: Vec<&JobFireParams> = fires.iter().collect();
    // The cancels first, then the inserts: a fire may send both at once because its cancels
    // keep the runs of the due times it inserts, but an event's run has no due-time key to be
    // kept by, and must not be cancelled with the runs it replaces.
    let replaced: Vec<JobId> = fires
        .iter()
        .filter(|f| f.cancel_active)
        .map(|f| f.job_id)
        .collect();
    crate::dependency::lock_dependents_of_jobs(c, &replaced).await?;
    let (stopping, flows, dependents) = crate::batch::lock_runs(c, &refs).await?;
    notices.merge(dependents);
    let inserted = futures::future::try_join_all(
        fires
            .iter()
            .map(|f| crate::batch::insert_job_runs(c, f.job_id, &f.runs, &f.now)),
    )
    .await?;
    notices.add_if(stopping, Change::Cancel);
    for (id, now) in flows {
        crate::workflow::cancel(c, id, "replaced", false, &now, notices).await?;
    }
    for (&i, (runs, queued)) in applied.iter().zip(inserted) {
        notices.add_if(queued, Change::Runs);
        results[i] = runs.first().map(|(id, _)| *id);
    }
    Ok(results)
}
