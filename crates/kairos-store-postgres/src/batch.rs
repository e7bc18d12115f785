//! The hot paths: firing jobs, claiming runs, heartbeats, recording attempts. Each function runs
//! inside the caller's transaction (READ COMMITTED: every statement sees what was committed
//! before it started).
//!
//! Every run insert is `ON CONFLICT DO NOTHING` on its key (`(job_id, scheduled_for)`, or
//! `(job_id, event_id)` for an event's run) (top-level runs),
//! every fire is fenced by its job's `next_fire_at`, every heartbeat and finish by its lease
//! token.
//!
//! Lock order, so that two writers never wait for each other in a circle: a transaction locks
//! jobs' rows (in job id order) before any run, and runs in ascending id order over the whole
//! transaction (one statement per batch where a batch spans jobs, `ORDER BY id FOR UPDATE`
//! inside it). An insert's unique check waits for whoever changed a row with the same key, as
//! a lock would: a fire locks the runs whose due times it repeats with the others, in id order,
//! before it inserts. A claim never waits for a row at all (`SKIP LOCKED`); the advisory locks it may
//! wait for are taken before any row lock, in key order, and only by claims. A workflow run's id
//! is lower than its steps', so this order locks it before them (see `crate::workflow` for the
//! writes to waiting steps that settling a workflow run makes afterwards).

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use kairos_core::policy::{ExclusiveCandidate, exclusive_heads};
use kairos_core::run::{AttemptStatus, JobId, RunId, RunState};
use kairos_store::*;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::changes::Notices;
use crate::rows::{
    self, RUN_WIDTH, col, execute, int, job_columns, micros, pg_error, query, run_columns,
};

/// Inserts runs of one job unless their key (`(job_id, scheduled_for)`, or `(job_id, event_id)`
/// for an event's run) exists: the new runs' ids and
/// due times, by due time. One statement however many runs; rows go in by due time, so two
/// batches that share due times wait for each other in the same order. Notes `Runs` if a
/// queued run went in.
pub(crate) async fn insert_runs(
    c: &impl GenericClient,
    job_id: JobId,
    runs: &[RunInsert],
    now: &Option<Timestamp>,
    notices: &mut Notices,
) -> StoreResult<Vec<(RunId, Timestamp)>> {
    let (inserted, queued) = insert_job_runs(c, job_id, runs, now).await?;
    notices.add_if(queued, Change::Runs);
    Ok(inserted)
}

/// [`insert_runs`] without the notices: the runs created, and whether any of them is queued
/// (so that several jobs' inserts can be sent at once).
pub(crate) async fn insert_job_runs(
    c: &impl GenericClient,
    job_id: JobId,
    runs: &[RunInsert],
    now: &Option<Timestamp>,
) -> StoreResult<(Vec<(RunId, Timestamp)>, bool)> {
    if runs.is_empty() {
        return Ok((vec![], false));
    }
    let mut runs: Vec<&RunInsert> = runs.iter().collect();
    runs.sort_by_key(|r| r.scheduled_for);
    let column = |f: fn(&RunInsert) -> _| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
    let scheduled: Vec<Timestamp> = column(|r| r.scheduled_for);
    let run_at: Vec<Timestamp> = column(|r| r.run_at);
    let state: Vec<&str> = runs
        .iter()
        .map(|r| match r.skip {
            Some(_) => RunState::Skipped.as_str(),
            None => RunState::Queued.as_str(),
        })
        .collect();
    let origin: Vec<&str> = runs.iter().map(|r| r.origin.as_str()).collect();
    let max_attempts: Vec<i32> = runs.iter().map(|r| int(r.max_attempts)).collect();
    let execution: Vec<&str> = runs
        .iter()
        .map(|r| rows::execution_str(r.execution))
        .collect();
    let exclusive: Vec<bool> = runs.iter().map(|r| r.exclusive).collect();
    let reason: Vec<Option<&str>> = runs.iter().map(|r| r.skip.map(|s| s.as_str())).collect();
    let event = |f: fn(&RunEvent) -> &str| -> Vec<Option<&str>> {
        runs.iter().map(|r| r.event.as_deref().map(f)).collect()
    };
    let (event_id, event_topic, event_payload) =
        (event(|e| &e.id), event(|e| &e.topic), event(|e| &e.payload));
    let rows = query(
        c,
        "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
         execution, exclusive, reason, created_at, finished_at, event_id, event_topic, \
         event_payload) \
         SELECT $1::bigint, u.scheduled_for, u.run_at, u.state, u.origin, u.max_attempts, \
           u.execution, u.exclusive, u.reason, coalesce($2::timestamptz, now()), \
           CASE WHEN u.state = 'skipped' THEN coalesce($2::timestamptz, now()) END, \
           u.event_id, u.event_topic, u.event_payload \
         FROM unnest($3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[], \
           $7::integer[], $8::text[], $9::boolean[], $10::text[], $11::text[], $12::text[], \
           $13::text[]) WITH ORDINALITY \
           AS u (scheduled_for, run_at, state, origin, max_attempts, execution, exclusive, \
             reason, event_id, event_topic, event_payload, ord) \
         ORDER BY u.ord \
         ON CONFLICT DO NOTHING \
         RETURNING id, scheduled_for, state = 'queued'",
        &[
            &job_id,
            now,
            &scheduled,
            &run_at,
            &state,
            &origin,
            &max_attempts,
            &execution,
            &exclusive,
            &reason,
            &event_id,
            &event_topic,
            &event_payload,
        ],
    )
    .await?;
    let mut inserted = Vec::with_capacity(rows.len());
    let mut queued = false;
    for row in &rows {
        inserted.push((col(row, 0)?, col(row, 1)?));
        queued |= col::<bool>(row, 2)?;
    }
    inserted.sort_by_key(|(id, at)| (*at, *id));
    Ok((inserted, queued))
}

/// `job_fire_many`: every fire fenced on its own, in one transaction.
///
/// Done in phases so that the transaction takes its locks in one order: the jobs' rows (each
/// fence, in job id order), then the active runs of every job that replaces them (one
/// statement, in run id order), then the new runs. Firing job by job instead would lock one
/// job's runs before the next job's, and a worker heartbeating runs of both jobs (in run id
/// order) could then wait for this transaction while it waits for the worker.
///
/// A job that appears twice in a batch is fired again in a later wave, after the first fire's
/// runs are in, as if the fires had been made one after the other (such a batch, which the
/// scheduler never sends, gives up the single lock order).
///
/// Notes `Runs` if queued runs went in, `Cancel` if running runs were asked to stop.
pub(crate) async fn fire_many(
    c: &impl GenericClient,
    ps: &[JobFireParams],
    notices: &mut Notices,
) -> StoreResult<Vec<JobFireResult>> {
    let mut results = vec![JobFireResult::default(); ps.len()];
    let mut pending: Vec<usize> = (0..ps.len()).collect();
    pending.sort_by_key(|&i| ps[i].job_id);
    while !pending.is_empty() {
        let mut wave = Vec::with_capacity(pending.len());
        let mut later = Vec::new();
        for i in pending {
            if wave
                .last()
                .is_some_and(|&w: &usize| ps[w].job_id == ps[i].job_id)
            {
                later.push(i);
            } else {
                wave.push(i);
            }
        }
        fire_wave(c, ps, &wave, &mut results, notices).await?;
        pending = later;
    }
    Ok(results)
}

/// A fire's fence, and the lock on its job's row.
const FIRE_FENCE: &str = "UPDATE jobs SET next_fire_at = $1 \
     WHERE id = $2 AND NOT paused AND next_fire_at = $3 \
     AND ($4::bigint IS NULL OR version = $4)";

/// Locks the job rows of a wave of fires (or events) in one id order, in one pipeline: its
/// own jobs through their fences (`own`: job id, index, whether it replaces runs; in job id
/// order; `fence(index)` is the statement, `fence_sql` its text, prepared first when the
/// pipeline mixes statements), and the jobs that run after the jobs whose runs it replaces,
/// share-locked (see `crate::dependency::dependents_to_share`; a job of the wave right after
/// its fence, which locks nothing when it does not apply). Returns the indexes whose fence
/// applied, in the order given.
pub(crate) async fn lock_jobs<F, Fut>(
    c: &impl GenericClient,
    own: &[(JobId, usize, bool)],
    fence_sql: &str,
    fence: F,
) -> StoreResult<Vec<usize>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = StoreResult<u64>>,
{
    let replacing: Vec<JobId> = own.iter().filter(|o| o.2).map(|o| o.0).collect();
    let shared = crate::dependency::dependents_to_share(c, &replacing, fence_sql).await?;
    let mut locks: Vec<(JobId, Option<usize>)> = own
        .iter()
        .map(|&(id, i, _)| (id, Some(i)))
        .chain(shared.iter().map(|&id| (id, None)))
        .collect();
    // Stable: a job of the wave keeps its fence first, and its fences their order.
    locks.sort_by_key(|(id, _)| *id);
    let sent = locks.into_iter().map(|(id, index)| {
        let fenced = index.map(|i| (i, fence(i)));
        async move {
            match fenced {
                Some((i, fenced)) => Ok(Some((i, fenced.await? == 1))),
                None => crate::dependency::share(c, id).await.map(|()| None),
            }
        }
    });
    Ok(futures::future::try_join_all(sent)
        .await?
        .into_iter()
        .flatten()
        .filter(|&(_, applied)| applied)
        .map(|(i, _)| i)
        .collect())
}

/// Fires of distinct jobs, in job id order.
async fn fire_wave(
    c: &impl GenericClient,
    ps: &[JobFireParams],
    wave: &[usize],
    results: &mut [JobFireResult],
    notices: &mut Notices,
) -> StoreResult<()> {
    // The fences and the jobs' row locks, one statement per job, sent at once (pipelined on
    // the one connection: the server runs them in order, so the rows are locked in job id
    // order, and the whole wave costs about one round trip instead of one per job). Each
    // fence is also the lock: a concurrent fire of the same due time waits here, then finds
    // `next_fire_at` moved and changes nothing; the statements after these see everything
    // that earlier holders of the locks committed.
    // With them, in the same id order, the jobs that run after the jobs whose runs it replaces.
    let own: Vec<(JobId, usize, bool)> = wave
        .iter()
        .map(|&i| (ps[i].job_id, i, ps[i].cancel_active))
        .collect();
    let mut applied = lock_jobs(c, &own, FIRE_FENCE, |i| async move {
        let p = &ps[i];
        execute(
            c,
            FIRE_FENCE,
            &[
                &p.next_fire_at,
                &p.job_id,
                &p.expected_next_fire_at,
                &p.expected_version,
            ],
        )
        .await
    })
    .await?;
    // The overlap decision's fence, counted after the row locks are held (a new statement:
    // it sees every run committed before, and a trigger-now takes a share lock on the job,
    // so none can commit in between). A fire whose count grew is undone.
    let fenced: Vec<JobId> = applied
        .iter()
        .filter(|&&i| ps[i].max_active.is_some())
        .map(|&i| ps[i].job_id)
        .collect();
    if !fenced.is_empty() {
        let counts = query(
            c,
            "SELECT job_id, count(*) FROM runs WHERE job_id = ANY($1) \
             AND parent_id IS NULL AND state IN ('scheduled', 'queued', 'running') \
             GROUP BY job_id",
            &[&fenced],
        )
        .await?;
        let mut over = Vec::new();
        for row in &counts {
            let (job_id, n): (JobId, i64) = (col(row, 0)?, col(row, 1)?);
            if let Some(&i) = applied.iter().find(|&&i| ps[i].job_id == job_id)
                && ps[i].max_active.is_some_and(|max| n.unsigned_abs() > max)
            {
                over.push(i);
            }
        }
        for &i in &over {
            let p = &ps[i];
            execute(
                c,
                "UPDATE jobs SET next_fire_at = $1 WHERE id = $2",
                &[&p.expected_next_fire_at, &p.job_id],
            )
            .await?;
        }
        applied.retain(|i| !over.contains(i));
    }
    // The runs this wave touches, locked in id order before any insert (see
    // [`lock_runs`]), then the new runs, one statement per job: all sent at once.
    let fires: Vec<&JobFireParams> = applied.iter().map(|&i| &ps[i]).collect();
    // The runs `replace` cancels end, and the jobs that run after theirs get runs: those jobs'
    // rows are share-locked first, before any run (and before the pipeline below).
    let replaced: Vec<JobId> = fires
        .iter()
        .filter(|p| p.cancel_active)
        .map(|p| p.job_id)
        .collect();
    crate::dependency::lock_dependents_of_jobs(c, &replaced).await?;
    let inserts = futures::future::try_join_all(
        fires
            .iter()
            .map(|p| insert_job_runs(c, p.job_id, &p.runs, &p.now)),
    );
    let ((stopping, flows, dependents), inserted) =
        futures::future::try_join(lock_runs(c, &fires), inserts).await?;
    notices.add_if(stopping, Change::Cancel);
    notices.merge(dependents);
    // The workflow runs asked to stop, locked above: their steps that have not started end,
    // each ends now if none of its steps is running. The steps `lock_runs` saw are cancelled
    // or asked to stop already; these catch the ones a start committed since (not running
    // ones: this transaction holds runs of higher ids, see `crate::workflow::cancel`).
    for (id, now) in flows {
        crate::workflow::cancel(c, id, "replaced", false, &now, notices).await?;
    }
    for (&i, (runs, queued)) in applied.iter().zip(inserted) {
        notices.add_if(queued, Change::Runs);
        results[i] = JobFireResult {
            applied: true,
            inserted: runs,
        };
    }
    Ok(())
}

/// The statement of [`lock_runs`].
pub(crate) const LOCK_RUNS: &str = "WITH candidates AS ( \
       SELECT r.id FROM unnest($5::bigint[], $6::timestamptz[]) AS k (job_id, scheduled_for) \
       CROSS JOIN LATERAL ( \
         SELECT r.id FROM runs r \
         WHERE r.job_id = k.job_id AND r.scheduled_for = k.scheduled_for \
           AND r.parent_id IS NULL AND r.event_id IS NULL AND r.upstream_run_id IS NULL \
         LIMIT 1) AS r \
       UNION \
       SELECT r.id FROM runs r WHERE r.job_id = ANY($1::bigint[]) \
         AND r.parent_id IS NULL AND r.state IN ('scheduled', 'queued', 'running') \
       UNION \
       SELECT s.id FROM runs s WHERE s.parent_id IN ( \
           SELECT r.id FROM runs r WHERE r.job_id = ANY($1::bigint[]) \
             AND r.parent_id IS NULL AND r.state IN ('scheduled', 'queued', 'running') \
             AND r.state = 'running') \
         AND s.state IN ('scheduled', 'queued', 'running')), \
     locked AS MATERIALIZED ( \
       SELECT r.id, f.now, \
         f.job_id IS NOT NULL AND r.state IN ('scheduled', 'queued', 'running') \
         AND NOT EXISTS (SELECT 1 FROM unnest($3::bigint[], $4::timestamptz[]) \
           AS k (job_id, scheduled_for) \
           WHERE k.job_id = r.job_id AND k.scheduled_for = r.scheduled_for) AS ends \
       FROM (SELECT id FROM candidates ORDER BY id) AS c \
       CROSS JOIN LATERAL ( \
         SELECT r.id, r.job_id, r.scheduled_for, r.state FROM runs r \
         WHERE r.id = c.id FOR UPDATE) AS r \
       LEFT JOIN unnest($1::bigint[], $2::timestamptz[]) AS f (job_id, now) \
         ON r.job_id = f.job_id), \
     changed AS ( \
       UPDATE runs r SET \
         state = CASE WHEN r.state = 'running' THEN r.state ELSE 'cancelled' END, \
         finished_at = CASE WHEN r.state = 'running' THEN r.finished_at \
           ELSE coalesce(locked.now, now()) END, \
         reason = CASE WHEN r.state = 'running' THEN r.reason ELSE 'replaced' END, \
         cancel_requested = r.cancel_requested OR r.state = 'running' \
       FROM locked WHERE r.id = locked.id AND locked.ends \
       RETURNING r.id, r.state, r.parent_id IS NULL AND r.spec IS NOT NULL AS flow, \
         locked.now) \
     SELECT id, flow, now, state = 'running' FROM changed ORDER BY id";

/// Locks, in id order, every existing run a wave of fires may wait for, and cancels the runs
/// that `overlap: replace` ends; the caller holds the jobs' row locks. Returns whether a running
/// run was asked to stop, the started workflow runs asked to stop (with their fire's `now`),
/// in id order, for the caller to settle, and the notices of the runs it queued for the jobs
/// that run after the runs it cancelled.
///
/// Two kinds of rows are locked. The runs whose `(job_id, scheduled_for)` a fire inserts again
/// (a schedule moved back, a catch-up that repeats a due time): the insert's unique check waits
/// for any transaction that changed such a row, and a heartbeat or a finish that changed it may
/// itself be waiting for a run this transaction holds; locked here, in the one order, the
/// insert finds them held by this transaction and waits for nobody. And, for the fires with
/// `cancel_active`, the job's active runs (top-level ones through `runs_job_active`, and the
/// steps of its running workflow runs through their workflow run): the ones that have not
/// started are cancelled, the running ones asked to stop. Only top-level runs that are neither an
/// event's nor a dependency's hold a `(job_id, scheduled_for)` key, so only they are looked up
/// by it: one probe of `runs_due` per key (the statement names the index's whole condition, and
/// each lookup is a `LATERAL` subquery with `LIMIT 1`, which the planner cannot turn into a hash
/// join over every run: a fire of a thousand jobs cost a scan of each job's whole history, half
/// a second and growing, before). The runs for the due times a round starts (its runs without
/// `skip`) are left alone: a fire that repeats a due time must not cancel that due time's run,
/// which nothing could replace (the unique key keeps the round's own run out).
///
/// The rows are locked one by one in id order, each found by its primary key (a `LATERAL`
/// lookup with `FOR UPDATE`, which the planner keeps as such): a join of the candidates with
/// `runs` let it hash the whole table on statistics that lag. Which locked run is cancelled is
/// decided on the row as it is once locked (a run that finished meanwhile is left alone).
pub(crate) async fn lock_runs(
    c: &impl GenericClient,
    fires: &[&JobFireParams],
) -> StoreResult<(bool, Vec<(RunId, Option<Timestamp>)>, Notices)> {
    let replacing: Vec<&&JobFireParams> = fires.iter().filter(|p| p.cancel_active).collect();
    // An event's run is keyed by its event, not its due time: no due-time key to wait for or
    // to keep.
    let keyed = |r: &&RunInsert| r.event.is_none();
    let key_count: usize = fires
        .iter()
        .map(|p| p.runs.iter().filter(keyed).count())
        .sum();
    if replacing.is_empty() && key_count == 0 {
        return Ok((false, vec![], Notices::default()));
    }
    let (key_jobs, key_times): (Vec<JobId>, Vec<Timestamp>) = fires
        .iter()
        .flat_map(|p| {
            p.runs
                .iter()
                .filter(keyed)
                .map(|r| (p.job_id, r.scheduled_for))
        })
        .unzip();
    let job_ids: Vec<JobId> = replacing.iter().map(|p| p.job_id).collect();
    let nows: Vec<Option<Timestamp>> = replacing.iter().map(|p| p.now).collect();
    let (keep_jobs, keep_times): (Vec<JobId>, Vec<Timestamp>) = replacing
        .iter()
        .flat_map(|p| {
            p.runs
                .iter()
                .filter(|r| r.skip.is_none() && r.event.is_none())
                .map(|r| (p.job_id, r.scheduled_for))
        })
        .unzip();
    let changed = query(
        c,
        LOCK_RUNS,
        &[
            &job_ids,
            &nows,
            &keep_jobs,
            &keep_times,
            &key_jobs,
            &key_times,
        ],
    )
    .await?;
    let mut flows = Vec::new();
    let mut cancelled = Vec::new();
    let mut asked = false;
    for row in &changed {
        let (id, running): (RunId, bool) = (col(row, 0)?, col(row, 3)?);
        if !running {
            cancelled.push(id);
        } else {
            asked = true;
            if col(row, 1)? {
                flows.push((id, col(row, 2)?));
            }
        }
    }
    // A run cancelled here has ended: the jobs that run after it run.
    let mut dependents = Notices::default();
    crate::dependency::runs_ended(c, &cancelled, &mut dependents).await?;
    Ok((asked, flows, dependents))
}

/// The facts for the exclusive rule (`kairos_core::policy::exclusive_heads`): for each job with
/// a waiting exclusive run (`overlap: queue`) due by the horizon (found through
/// `runs_queued_exclusive_due`), its head, the waiting exclusive run with the earliest due time,
/// due or not (`runs_queued_exclusive`); whether the job has a run running; and the horizon
/// (the claim's, on the database's clock: `now()` is the transaction's start, the same for the
/// claim statement after it).
pub(crate) const EXCLUSIVE_WAITING: &str = "SELECT h.job_id, h.id, h.scheduled_for, h.run_at, \
       EXISTS (SELECT 1 FROM runs x WHERE x.job_id = h.job_id AND x.parent_id IS NULL \
         AND x.state = 'running'), \
       coalesce($1::timestamptz, now()) + $2::bigint * interval '1 microsecond' \
     FROM (SELECT DISTINCT r.job_id FROM runs r \
       WHERE r.state = 'queued' AND r.exclusive \
         AND r.run_at <= coalesce($1::timestamptz, now()) + $2::bigint * interval '1 microsecond') \
       AS d \
     CROSS JOIN LATERAL ( \
       SELECT x.job_id, x.id, x.scheduled_for, x.run_at FROM runs x \
       WHERE x.job_id = d.job_id AND x.state = 'queued' AND x.exclusive \
       ORDER BY x.scheduled_for, x.id LIMIT 1) AS h";

/// The pick of a claim: due queued runs (`$where` an extra condition), in `runs_queued` order,
/// locked and skipping rows another claimer holds, at most `$limit`. Exclusive runs qualify only
/// if chosen (`$4`, their jobs' advisory locks held by this transaction) and, the fence, if their
/// job still has no run running.
macro_rules! claim_pick {
    ($where:expr, $limit:literal) => {
        concat!(
            "SELECT r.id FROM runs r WHERE r.state = 'queued' ",
            $where,
            " AND r.run_at <= coalesce($1::timestamptz, now()) \
                 + $2::bigint * interval '1 microsecond' \
               AND (NOT r.exclusive OR (r.id = ANY($4::bigint[]) \
                 AND NOT EXISTS (SELECT 1 FROM runs x WHERE x.job_id = r.job_id \
                   AND x.parent_id IS NULL AND x.state = 'running'))) \
             ORDER BY r.run_at, r.id LIMIT ",
            $limit,
            " FOR UPDATE SKIP LOCKED"
        )
    };
}

/// The claim: the runs of `picked` (the CTEs `$picked` define) move to `running` with the lease,
/// and each is returned with its job and, for a step, its workflow run's document (which never
/// changes once written), so that nothing is read after the claim commits.
macro_rules! claim_statement {
    ($picked:expr) => {
        concat!(
            "WITH ",
            $picked,
            " UPDATE runs r SET state = 'running', attempt = r.attempt + 1, node = $5, \
               lease_token = $6, \
               lease_expires_at = \
                 coalesce($1::timestamptz, now()) + $7::bigint * interval '1 microsecond', \
               started_at = coalesce(r.started_at, \
                 greatest(coalesce($1::timestamptz, now()), r.run_at)), \
               reason = NULL, begun = r.execution <> 'at_most_once' \
             FROM picked, jobs j WHERE r.id = picked.id AND j.id = r.job_id \
             RETURNING ",
            run_columns!(),
            ", ",
            job_columns!(),
            ", (SELECT w.spec FROM runs w WHERE w.id = r.parent_id)"
        )
    };
}

/// A claim's extra condition on the picked runs for a claim that chooses no exclusive run
/// ([`claim_at_once`]): it takes nothing while an exclusive run is waiting, due by the
/// horizon, so that it never takes the room of one the full path would have started (the
/// full path then follows, see `PostgresStore::run_claim`). One probe of
/// `runs_queued_exclusive_due` per walk of the queue.
macro_rules! no_exclusive_waiting {
    () => {
        "AND NOT EXISTS (SELECT 1 FROM runs e WHERE e.state = 'queued' AND e.exclusive \
           AND e.run_at <= coalesce($1::timestamptz, now()) \
             + $2::bigint * interval '1 microsecond') "
    };
}

/// The claim from the head of the queue: `$where` is an extra condition on the picked runs.
macro_rules! claim_from_head {
    ($where:expr) => {
        claim_statement!(concat!(
            "picked AS MATERIALIZED (",
            claim_pick!($where, "$3"),
            ")"
        ))
    };
}

/// The claim from a position on: queued runs after (`run_at`, `id`) = (`$8`, `$9`) first, then
/// what that left of the limit from the head of the queue up to the position (runs behind it:
/// released, caught up, or held by another claimer when an earlier walk passed). The second
/// walk reads nothing when the first filled the limit. `$where` as for [`claim_from_head`].
macro_rules! claim_from_position {
    ($where:expr) => {
        claim_statement!(concat!(
            "past AS MATERIALIZED (",
            claim_pick!(
                concat!(
                    $where,
                    "AND (r.run_at, r.id) > ($8::timestamptz, $9::bigint)"
                ),
                "$3"
            ),
            "), behind AS MATERIALIZED (",
            claim_pick!(
                concat!(
                    $where,
                    "AND (r.run_at, r.id) <= ($8::timestamptz, $9::bigint)"
                ),
                "$3 - (SELECT count(*) FROM past)"
            ),
            "), picked AS (SELECT id FROM past UNION ALL SELECT id FROM behind)"
        ))
    };
}

/// The column of a claim's row that holds a step's workflow document: after the run's and the
/// job's columns.
const CLAIM_FLOW_AT: usize = RUN_WIDTH + 7;

/// The claims: from the head or from a position, on the full path or without exclusive runs.
pub(crate) const CLAIM: &str = claim_from_head!("");
pub(crate) const CLAIM_FROM: &str = claim_from_position!("");
pub(crate) const CLAIM_PLAIN: &str = claim_from_head!(no_exclusive_waiting!());
pub(crate) const CLAIM_PLAIN_FROM: &str = claim_from_position!(no_exclusive_waiting!());

/// Where a claim may start its walk of the queue (see [`claim`]): the position of the last run
/// a full claim took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimStart {
    pub run_at: Timestamp,
    pub id: RunId,
}

/// The rows a claim took, and whether exclusive runs (`overlap: queue`) were waiting when it
/// looked (the next claim of this node then takes the path that can start them).
pub(crate) struct Claimed {
    pub rows: Vec<Row>,
    pub exclusive_waiting: bool,
}

/// Runs the claim statement `stmt` (prepared from [`claim_sql`] for `start`) with its
/// parameters (`$1`–`$7`, then the position). Sent when first polled.
#[allow(clippy::too_many_arguments, reason = "the statement's parameters")]
async fn claim_query(
    c: &impl GenericClient,
    stmt: &tokio_postgres::Statement,
    p: &RunClaimParams,
    token: &str,
    start: Option<ClaimStart>,
    limit: i64,
    heads: &[RunId],
) -> StoreResult<Vec<Row>> {
    let (ahead, lease) = (micros(p.ahead), micros(p.lease));
    let fixed: [&(dyn ToSql + Sync); 7] = [&p.now, &ahead, &limit, &heads, &p.node, &token, &lease];
    let rows = match start {
        Some(at) => {
            let mut params = fixed.to_vec();
            params.extend([&at.run_at as &(dyn ToSql + Sync), &at.id]);
            c.query(stmt, &params).await
        }
        None => c.query(stmt, &fixed).await,
    };
    rows.map_err(pg_error)
}

/// The claim statement: from a position or from the head; `plain` for [`claim_at_once`].
fn claim_sql(from_position: bool, plain: bool) -> &'static str {
    match (from_position, plain) {
        (false, false) => CLAIM,
        (true, false) => CLAIM_FROM,
        (false, true) => CLAIM_PLAIN,
        (true, true) => CLAIM_PLAIN_FROM,
    }
}

/// Begins a claim's transaction, sent ahead of its other statements in one pipeline.
///
/// The claim must walk `runs_queued` in its order and stop at the limit. Left to its
/// statistics, which lag a burst of inserts or claims (autovacuum analyzes a table at most once
/// a minute), PostgreSQL believes a few runs are queued when thousands are, reads them all
/// through a bitmap and sorts them to keep `limit`: the cost of every claim grows with the
/// backlog (W1 on PostgreSQL lost half its throughput to it). A sort is never needed here (the
/// index has the order), so the transaction turns sorting off with its `BEGIN`. A plan made
/// here and cached on the connection keeps that choice; the statements of a claim need no sort
/// (they read by index order or by id).
async fn begin_claim(c: &impl GenericClient) -> StoreResult<()> {
    c.batch_execute("BEGIN; SET LOCAL enable_sort = off")
        .await
        .map_err(pg_error)
}

/// The claim in one round trip, commit included (`commit`, sent last in the same pipeline), for
/// a node whose last claim saw no exclusive run (`overlap: queue`) waiting. It chooses no
/// exclusive run, so it needs nothing from the exclusive facts before its claim statement; and
/// that statement takes nothing while an exclusive run is waiting (see
/// [`no_exclusive_waiting`]), so it never takes what the full path ([`claim`]) would not. The
/// facts are read beside it, to say whether the node's next claim may take this path again.
/// `c` is outside a transaction, as for [`claim`].
///
/// The statements are prepared first (a cached statement needs no round trip), so that each
/// is sent as soon as it is polled, in the order of the pipeline; an error in any of them
/// aborts the transaction, and the `COMMIT` behind it then fails too (see
/// [`crate::connect::Begun::send_commit`]). Once the pipeline is sent, the claim commits even
/// if this future is dropped: its runs are then held by a lease nobody renews, and rescued when
/// it expires, as those of a node that died after its claim.
pub(crate) async fn claim_at_once(
    c: &impl GenericClient,
    p: &RunClaimParams,
    token: &str,
    start: Option<ClaimStart>,
    commit: impl std::future::Future<Output = StoreResult<()>>,
) -> StoreResult<Claimed> {
    let limit = i64::from(p.limit.max(1));
    let ahead = micros(p.ahead);
    let waiting = c
        .prepare_cached(EXCLUSIVE_WAITING)
        .await
        .map_err(pg_error)?;
    let claim = c
        .prepare_cached(claim_sql(start.is_some(), true))
        .await
        .map_err(pg_error)?;
    // The facts go after the claim statement: under READ COMMITTED each statement reads its
    // own snapshot, so they see every exclusive run the claim's guard saw.
    let ((), rows, waiting, ()) = futures::future::try_join4(
        begin_claim(c),
        claim_query(c, &claim, p, token, start, limit, &[]),
        async { c.query(&waiting, &[&p.now, &ahead]).await.map_err(pg_error) },
        commit,
    )
    .await?;
    Ok(Claimed {
        rows,
        exclusive_waiting: !waiting.is_empty(),
    })
}

/// Claims up to `limit` queued runs due by now + `ahead` (a worker that claims ahead waits for
/// `run_at` itself), with one lease token. `c` is outside a transaction: the claim begins one
/// in its first round trip (see [`crate::connect::Begun`]), and the caller commits it. A run's
/// `started_at` is its first attempt's start: now, or its `run_at` if later.
///
/// `start` is where the walk of `runs_queued` may begin (see `PostgresStore::run_claim`): a
/// claimed run leaves its entry in that index until VACUUM removes it, so under a backlog every
/// claim from the head steps over the entries of every run claimed since the last VACUUM (a
/// quarter of a millisecond per 5 000 entries on this machine, for each claim, growing until
/// autovacuum comes, at most once a minute). Walking from the position of the last full batch
/// skips them. Runs before that position (a released run, a caught-up due time, one another
/// claimer held) are still claimed: whatever the walk from `start` leaves of the limit is
/// claimed from the head, in the same statement ([`CLAIM_FROM`]).
///
/// The exclusive rule (an exclusive run starts only when no run of its job is running and no
/// earlier exclusive run of its job is waiting) is decided by
/// `kairos_core::policy::exclusive_heads` on the facts one statement reads, and fenced in the
/// claim statement (the chosen run is still queued, its job still has nothing running). Under
/// READ COMMITTED with `SKIP LOCKED` that fence alone would let two claimers each start a
/// different exclusive run of one job: each sees the other's claim uncommitted (so the job
/// has nothing running), and each locks a different row (so neither waits). The claim
/// therefore first takes a transaction-scoped advisory lock on the job of every chosen run (in
/// key order, so that claimers never wait in a circle). Whoever claims an exclusive run of a
/// job holds that job's lock until it commits, and the next holder's claim statement starts
/// after that commit and sees the run as running. Claims of other runs take no lock and never
/// wait. (A claim of a non-exclusive run of the same job is not serialized with it: as in the
/// SQLite store, where one claim may take both, an exclusive run only waits for runs that were
/// running before its claim.)
pub(crate) async fn claim(
    c: &impl GenericClient,
    lock_class: i32,
    p: &RunClaimParams,
    token: &str,
    start: Option<ClaimStart>,
) -> StoreResult<Claimed> {
    let limit = i64::from(p.limit.max(1));
    let ahead = micros(p.ahead);
    let ((), waiting) = futures::future::try_join(
        begin_claim(c),
        query(c, EXCLUSIVE_WAITING, &[&p.now, &ahead]),
    )
    .await?;
    let horizon = match waiting.first() {
        Some(r) => col(r, 5)?,
        None => Timestamp::MAX,
    };
    let exclusive_waiting = !waiting.is_empty();
    let waiting = waiting
        .iter()
        .map(|r| {
            Ok(ExclusiveCandidate {
                job_id: col(r, 0)?,
                run_id: col(r, 1)?,
                scheduled_for: col(r, 2)?,
                run_at: col(r, 3)?,
                job_running: col(r, 4)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let heads = exclusive_heads(
        &waiting,
        horizon,
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    let chosen: Vec<&ExclusiveCandidate> = waiting
        .iter()
        .filter(|w| heads.contains(&w.run_id))
        .collect();
    if !chosen.is_empty() {
        // Keys are job ids truncated to 32 bits: a collision only makes two jobs share a lock.
        let mut keys: Vec<i32> = chosen.iter().map(|w| w.job_id as i32).collect();
        keys.sort_unstable();
        keys.dedup();
        query(
            c,
            "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::integer[]) AS k",
            &[&lock_class, &keys],
        )
        .await?;
    }
    // An exclusive run chosen to start that lies before the start position might be beyond
    // what the walk from the head up to it takes: claim from the head then (it is a job's
    // only candidate until it runs).
    let start = start.filter(|at| {
        chosen
            .iter()
            .all(|w| (w.run_at, w.run_id) > (at.run_at, at.id))
    });
    let stmt = c
        .prepare_cached(claim_sql(start.is_some(), false))
        .await
        .map_err(pg_error)?;
    let rows = claim_query(c, &stmt, p, token, start, limit, &heads).await?;
    Ok(Claimed {
        rows,
        exclusive_waiting,
    })
}

/// The claimed runs of a claim's rows, in (`run_at`, `id`) order, each with its job (a step
/// with the job its workflow run's document makes of it) and the claim's lease token.
pub(crate) fn claimed_runs(rows: &[Row], token: &str) -> StoreResult<Vec<ClaimedRun>> {
    let mut jobs: HashMap<JobId, Job> = HashMap::new();
    let mut claimed = Vec::with_capacity(rows.len());
    let runs = rows
        .iter()
        .map(rows::run)
        .collect::<StoreResult<Vec<_>>>()?;
    // A step runs as its workflow run started: with the document stored on that run (parsed
    // once per workflow run).
    let mut flows: HashMap<RunId, std::sync::Arc<kairos_core::spec::JobSpec>> = HashMap::new();
    for (row, run) in rows.iter().zip(&runs) {
        let Some(parent) = run.parent_id else {
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(flow) = flows.entry(parent) {
            let doc: Option<&str> = col(row, CLAIM_FLOW_AT)?;
            let doc = doc.ok_or_else(|| {
                StoreError::Internal(format!("workflow run {parent} has no document"))
            })?;
            flow.insert(std::sync::Arc::new(kairos_store::workflow::parse_spec(
                doc,
            )?));
        }
    }
    for (row, run) in rows.iter().zip(runs) {
        if !jobs.contains_key(&run.job_id) {
            let job = rows::job_at(row, RUN_WIDTH)?;
            jobs.insert(job.id, job);
        }
        let job = &jobs[&run.job_id];
        // A step runs as the plain job its step makes of its workflow run's document.
        let (job, workflow) = match (run.parent_id.and_then(|p| flows.get(&p)), &run.step) {
            (Some(doc), Some(step)) => {
                let spec = doc.step_job(step).ok_or_else(|| {
                    StoreError::Internal(format!("run {} names no step of its workflow", run.id))
                })?;
                let job = Job {
                    id: job.id,
                    spec,
                    version: job.version,
                    next_fire_at: job.next_fire_at,
                    created_at: job.created_at,
                    updated_at: job.updated_at,
                };
                (job, Some(doc.clone()))
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

/// Extends the leases still held, in one statement; reports each lease in the order given.
///
/// Each run is locked by its primary key in id order and the fence computed in the select list,
/// as in [`FINISH_MANY`]: a join with `runs` fenced in a `WHERE` let the planner walk every
/// running run of the cluster (`runs_leases`) on statistics that lag. A lease never moves
/// back: a node may have several renewals in flight, and one that waited for a row lock may
/// commit after a later one; the worker keeps the later of their points, so the store must too.
pub(crate) const HEARTBEAT: &str = "WITH held AS MATERIALIZED ( \
       SELECT l.id, r.lease_token = l.token AND r.state = 'running' AS holds \
       FROM unnest($1::bigint[], $2::text[]) AS l (id, token) \
       CROSS JOIN LATERAL ( \
         SELECT r.lease_token, r.state FROM runs r WHERE r.id = l.id FOR UPDATE) AS r) \
     UPDATE runs r SET lease_expires_at = greatest(r.lease_expires_at, \
       coalesce($3::timestamptz, now()) + $4::bigint * interval '1 microsecond') \
     FROM held WHERE r.id = held.id AND held.holds \
     RETURNING r.id, r.lease_token, r.cancel_requested";

/// Extends the leases still held (see [`HEARTBEAT`]).
pub(crate) async fn heartbeat(
    c: &impl GenericClient,
    p: &RunHeartbeatParams,
) -> StoreResult<Vec<HeartbeatResult>> {
    if p.leases.is_empty() {
        return Ok(vec![]);
    }
    let mut leases: Vec<&(RunId, String)> = p.leases.iter().collect();
    leases.sort();
    leases.dedup();
    let ids: Vec<RunId> = leases.iter().map(|(id, _)| *id).collect();
    let tokens: Vec<&str> = leases.iter().map(|(_, t)| t.as_str()).collect();
    let rows = query(c, HEARTBEAT, &[&ids, &tokens, &p.now, &micros(p.lease)]).await?;
    let mut held: HashMap<(RunId, String), bool> = HashMap::with_capacity(rows.len());
    for row in &rows {
        held.insert((col(row, 0)?, col(row, 1)?), col(row, 2)?);
    }
    Ok(p.leases
        .iter()
        .map(|(run_id, token)| {
            let cancel = held.get(&(*run_id, token.clone()));
            HeartbeatResult {
                run_id: *run_id,
                held: cancel.is_some(),
                cancel_requested: cancel.copied().unwrap_or(false),
            }
        })
        .collect())
}

/// Moves runs on where their leases hold and records their attempts (not for a release, which
/// gives the attempt back and keeps the previous exit code), in one statement for a whole batch;
/// returns the runs that moved, each with its workflow run (for a step). A released run whose
/// cancel was requested meanwhile (a user, `overlap: replace`) ends cancelled instead of going
/// back to the queue, as a rescue would decide (`kairos_core::lease::rescue_decision`); so does
/// a run whose failed attempt would be retried.
///
/// `$1` must hold distinct run ids in ascending order: `held` locks the rows one by one in that
/// order (a nested loop over the arrays, each row looked up by its primary key), whatever rows
/// the lease fence then keeps, so the batch keeps the lock order of this module. The fence is
/// computed in `held`'s select list rather than in a `WHERE`: there PostgreSQL would push
/// `state = 'running'` into the lookup, where the partial index of running runs matches it, and
/// with statistics that lag a burst of claims (they always do) it would walk every running run
/// for each row of the batch instead of one primary-key probe. The update then finds each row
/// locked by this transaction already; it sees the row's latest version (one a concurrent
/// writer committed while `held` waited for its lock), as the fence did.
///
/// Tried and not kept: one `UPDATE … FROM` the arrays with the fence in its `WHERE` (as a
/// `CASE`, which keeps the partial index out). No faster, and it may deadlock: on a small
/// table with fresh statistics PostgreSQL joins by scanning `runs` (heap order, not id order).
/// The `LATERAL … FOR UPDATE` lookup is what keeps the lock order.
pub(crate) const FINISH_MANY: &str = "WITH f AS ( \
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], \
         $5::boolean[], $6::timestamptz[], $7::boolean[], $8::integer[], $9::integer[], \
         $10::text[], $11::timestamptz[], $12::text[], $13::integer[], $14::text[], $15::text[], \
         $16::boolean[], $17::bigint[], $18::bigint[], $19::bigint[], $20::text[]) \
         AS f (id, token, state, run_at, finishes, now, release, exit_code, attempt, node, \
           started_at, status, http_status, error, output, output_truncated, max_rss_kib, \
           user_cpu_us, sys_cpu_us, result)), \
     held AS MATERIALIZED ( \
       SELECT f.*, l.lease_token = f.token AND l.state = 'running' AS holds \
       FROM f CROSS JOIN LATERAL ( \
         SELECT r.lease_token, r.state FROM runs r WHERE r.id = f.id FOR UPDATE) AS l), \
     moved AS ( \
       UPDATE runs r SET \
         state = CASE WHEN (h.release OR h.run_at IS NOT NULL) AND r.cancel_requested \
           THEN 'cancelled' ELSE h.state END, \
         run_at = coalesce(h.run_at, r.run_at), \
         finished_at = CASE WHEN h.finishes \
           OR ((h.release OR h.run_at IS NOT NULL) AND r.cancel_requested) \
           THEN coalesce(h.now, now()) END, \
         exit_code = CASE WHEN h.release THEN r.exit_code ELSE h.exit_code END, \
         attempt = r.attempt - CASE WHEN h.release THEN 1 ELSE 0 END, \
         result = coalesce(h.result, r.result), \
         lease_token = NULL, lease_expires_at = NULL, begun = true \
       FROM held h WHERE r.id = h.id AND h.holds \
       RETURNING r.id, r.parent_id, h.token, h.release, h.attempt AS number, h.node, h.started_at, \
         h.now, h.status, h.exit_code, h.http_status, h.error, h.output, h.output_truncated, \
         h.max_rss_kib, h.user_cpu_us, h.sys_cpu_us), \
     recorded AS ( \
       INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, status, exit_code, \
         http_status, error, output, output_truncated, max_rss_kib, user_cpu_us, sys_cpu_us) \
       SELECT id, number, node, started_at, coalesce(now, now()), status, exit_code, \
         http_status, error, output, output_truncated, max_rss_kib, user_cpu_us, sys_cpu_us \
       FROM moved WHERE NOT release ORDER BY id \
       ON CONFLICT (run_id, attempt) DO NOTHING) \
     SELECT id, parent_id, token FROM moved";

/// A batch of finishes as the columns of [`FINISH_MANY`].
#[derive(Default)]
struct FinishColumns<'a> {
    run_id: Vec<RunId>,
    token: Vec<&'a str>,
    state: Vec<&'static str>,
    run_at: Vec<Option<Timestamp>>,
    finishes: Vec<bool>,
    now: Vec<Option<Timestamp>>,
    release: Vec<bool>,
    exit_code: Vec<Option<i32>>,
    attempt: Vec<i32>,
    node: Vec<&'a str>,
    started_at: Vec<Timestamp>,
    status: Vec<String>,
    http_status: Vec<Option<i32>>,
    error: Vec<Option<std::borrow::Cow<'a, str>>>,
    /// The captured output, without NUL characters (PostgreSQL's `text` cannot hold them).
    output: Vec<std::borrow::Cow<'a, str>>,
    output_truncated: Vec<bool>,
    max_rss_kib: Vec<Option<i64>>,
    user_cpu_us: Vec<Option<i64>>,
    sys_cpu_us: Vec<Option<i64>>,
    result: Vec<Option<&'a str>>,
}

impl<'a> FinishColumns<'a> {
    fn push(&mut self, p: &'a RunFinishParams) {
        let (state, run_at, finishes, release) = match &p.next {
            RunNext::Finish(state) => (state.as_str(), None, true, false),
            RunNext::Retry { run_at } => (RunState::Queued.as_str(), Some(*run_at), false, false),
            RunNext::Release => (RunState::Queued.as_str(), None, false, true),
        };
        let o = &p.outcome;
        self.run_id.push(p.run_id);
        self.token.push(&p.lease_token);
        self.state.push(state);
        self.run_at.push(run_at);
        self.finishes.push(finishes);
        self.now.push(p.now);
        self.release.push(release);
        self.exit_code.push(o.exit_code);
        self.attempt.push(int(p.attempt));
        self.node.push(&p.node);
        self.started_at.push(p.started_at);
        self.status.push(o.status.label());
        self.http_status.push(o.http_status.map(i32::from));
        self.error.push(match &o.status {
            AttemptStatus::Error { message } => Some(text(message)),
            _ => None,
        });
        self.output.push(text(&o.output));
        self.output_truncated.push(o.output_truncated);
        self.max_rss_kib.push(o.usage.and_then(|u| u.max_rss_kib));
        self.user_cpu_us.push(o.usage.map(|u| u.user_cpu_us));
        self.sys_cpu_us.push(o.usage.map(|u| u.sys_cpu_us));
        self.result.push(o.result.as_deref());
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 20] {
        [
            &self.run_id,
            &self.token,
            &self.state,
            &self.run_at,
            &self.finishes,
            &self.now,
            &self.release,
            &self.exit_code,
            &self.attempt,
            &self.node,
            &self.started_at,
            &self.status,
            &self.http_status,
            &self.error,
            &self.output,
            &self.output_truncated,
            &self.max_rss_kib,
            &self.user_cpu_us,
            &self.sys_cpu_us,
            &self.result,
        ]
    }
}

/// `s` as PostgreSQL `text` can hold it: a NUL character (which a task may print) becomes
/// U+FFFD, as other bytes that are not text do when the output is captured.
pub(crate) fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// `run_finish` for a batch: one statement per attempt, all sent at once (pipelined) in run id
/// order (the order their rows are locked in); each reports whether its lease held. Notes
/// `Runs` if a run was queued again or steps were released.
///
/// A step run that ended (or was to be retried after a cancel request) moves its workflow run on in the same
/// transaction ([`crate::workflow::settle`]), each workflow run once, after all the finishes.
/// When the batch has steps, the workflow runs named by `parent_id` and the runs to finish
/// are locked first, together, in id order (a workflow run before its steps: the lock order
/// of `crate::workflow`). A step whose caller did not name its workflow run is still settled,
/// its workflow run locked late: out of order, so such a caller may meet a deadlock (reported
/// as a write to retry), never a workflow run that stops moving.
pub(crate) async fn finish_many(
    c: &impl GenericClient,
    ps: &[RunFinishParams],
    notices: &mut Notices,
) -> StoreResult<Vec<bool>> {
    let parents: Vec<RunId> = ps.iter().filter_map(|p| p.parent_id).collect();
    // The top-level runs that may end here (a release too: one asked to stop meanwhile ends
    // `cancelled`), whose dependents may get runs: those jobs' rows are locked first.
    let ended: Vec<RunId> = ps
        .iter()
        .filter(|p| p.parent_id.is_none())
        .map(|p| p.run_id)
        .collect();
    crate::dependency::prepare(c).await?;
    // A workflow run may end with its steps (`crate::workflow::settle`): its dependents too.
    let may_end: Vec<RunId> = ended.iter().chain(&parents).copied().collect();
    let mut dependents_locked = Some(crate::dependency::lock_dependents(c, &may_end));
    if !parents.is_empty() {
        if let Some(locked) = dependents_locked.take() {
            locked.await?;
        }
        let runs = ps.iter().map(|p| p.run_id).chain(parents.iter().copied());
        crate::workflow::lock(c, &runs.collect::<Vec<_>>()).await?;
    }
    // The batch in run id order (the order its rows are locked in), each lease once: a second
    // finish of a run with the same token would find the lease the first one gave up, so it
    // never holds. A run may still come twice with different tokens (an attempt whose lease
    // was lost and the run's next attempt, both ending in one batch): each is fenced on its
    // own token, and at most one holds.
    let mut order: Vec<usize> = (0..ps.len()).collect();
    order.sort_by(|&a, &b| {
        (ps[a].run_id, &ps[a].lease_token).cmp(&(ps[b].run_id, &ps[b].lease_token))
    });
    order.dedup_by(|a, b| {
        ps[*a].run_id == ps[*b].run_id && ps[*a].lease_token == ps[*b].lease_token
    });
    let mut columns = FinishColumns::default();
    for &i in &order {
        columns.push(&ps[i]);
    }
    let params = columns.params();
    // Prepared before anything is sent, so that the pipeline below sends the finish first.
    let stmt = c.prepare_cached(FINISH_MANY).await.map_err(pg_error)?;
    // Behind it, in the same pipeline: the runs of the jobs that run after the ones that ended
    // (one that had ended before, its lease lost, already has them: left alone).
    let mut dependents = Notices::default();
    // Without steps, the dependents' locks go first in the same pipeline.
    let locked = async {
        match dependents_locked {
            Some(locked) => locked.await,
            None => Ok(()),
        }
    };
    let ((), rows, ()) = futures::future::try_join3(
        locked,
        async { c.query(&stmt, &params).await.map_err(pg_error) },
        crate::dependency::runs_ended(c, &ended, &mut dependents),
    )
    .await?;
    notices.merge(dependents);
    let mut moved: HashMap<(RunId, String), Option<RunId>> = HashMap::with_capacity(rows.len());
    for row in &rows {
        moved.insert((col(row, 0)?, col(row, 2)?), col(row, 1)?);
    }
    let mut held = vec![false; ps.len()];
    // The workflow runs to settle, in id order, each with the `now` of its first step's finish.
    let mut settle: std::collections::BTreeMap<RunId, Option<Timestamp>> = Default::default();
    for &i in &order {
        let p = &ps[i];
        let Some(parent) = moved.remove(&(p.run_id, p.lease_token.clone())) else {
            continue;
        };
        held[i] = true;
        if !matches!(p.next, RunNext::Finish(_)) {
            notices.add(Change::Runs);
        }
        // A retry settles too: one whose workflow run is being cancelled ends cancelled.
        if let Some(parent) = parent {
            settle.entry(parent).or_insert(p.now);
        }
    }
    let late: Vec<RunId> = settle
        .keys()
        .filter(|id| !parents.contains(id))
        .copied()
        .collect();
    crate::workflow::lock(c, &late).await?;
    for (parent, now) in &settle {
        crate::workflow::settle(c, *parent, now, notices).await?;
    }
    Ok(held)
}
