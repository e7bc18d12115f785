//! Workflow runs: starting one (its step runs) and settling it after a step changed, inside the
//! transaction of the change (see `Store::workflow_start`). The decisions are
//! `kairos_store::workflow`'s; this applies them with writes fenced by the state each row is
//! expected in, so a step that moved on meanwhile is left alone.
//!
//! # Lock order
//!
//! Every transaction that changes a step run and then settles its workflow run holds the
//! workflow run's row lock before it touches the step's row (finish, rescue, cancel, `overlap:
//! replace`, a user's action on the steps: `crate::control`, which then locks all the steps in
//! id order). Settling reads the step runs only once that lock is held, in statements of their
//! own: under READ COMMITTED each statement sees what was committed before it began, so of two
//! steps that end at once (two transactions), the second to lock the workflow run waits for
//! the first to commit and then reads both ends; neither misses the other, and a step is
//! released once (the release is also fenced by `state = 'scheduled'`).
//!
//! This keeps the store's one lock order (jobs, then runs in ascending id order, see `batch`):
//! a workflow run's id is lower than its steps' (it exists before them), so locking the
//! workflow run and the runs to change together, in id order, takes it first. Two kinds of
//! writes come after locks of higher ids, and neither can close a circle:
//!
//! - **Waiting steps** (`scheduled`), which settle queues or ends: only a transaction that
//!   holds the workflow run ever locks one (settle and cancel hold it; a fire's `replace` or
//!   repeated due time and a job delete lock, in id order, sets in which a step comes with its
//!   workflow run: the same job and due time, and a step is waiting only while its workflow
//!   run is running). Whoever wants a waiting step holds its workflow run, so nobody else
//!   holds the step.
//! - **A rescue** locks the workflow runs of the steps it will rescue first, while it holds no
//!   lock at all, then the expired runs with `SKIP LOCKED` (it waits for no row after that,
//!   see `rescue`).
//!
//! Queued and running steps are also locked without their workflow run, by claims (`SKIP
//! LOCKED`: they wait for no row) and heartbeats (running runs with a lease, in id order; a
//! started workflow run has no lease, so no heartbeat ever waits for one).
//!
//! A workflow run's step runs are inserted by `workflow_start` only, which locks the job's row
//! (`FOR KEY SHARE`) before the workflow run's, as every run insert does: the inserts' foreign
//! key check would otherwise wait, holding the workflow run, for a job delete that waits for
//! the workflow run.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use kairos_core::run::{RunId, RunState};
use kairos_store::workflow::{self, StepRow};
use kairos_store::{Run, StoreError, StoreResult, WorkflowStartParams};
use tokio_postgres::Row;

use crate::changes::Notices;
use crate::rows::{self, RUN_SELECT, col, execute, int, query, query_opt};

/// Locks runs' rows in id order: workflow runs together with the runs of theirs a transaction
/// is about to change, so that each workflow run is locked before its steps (see above).
pub(crate) async fn lock(c: &impl GenericClient, ids: &[RunId]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    query(
        c,
        "SELECT id FROM runs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )
    .await?;
    Ok(())
}

/// `workflow_start`: false when the lease was lost (nothing written). The fenced update locks
/// the workflow run's row before its steps exist. Notes `Runs` if steps were queued.
pub(crate) async fn start(
    c: &impl GenericClient,
    p: &WorkflowStartParams,
    notices: &mut Notices,
) -> StoreResult<bool> {
    let flow = workflow::workflow_of(&p.spec)?;
    let spec = serde_json::to_string(&p.spec).map_err(|e| StoreError::Internal(e.to_string()))?;
    // The job first (see the lock order above), as the step inserts' foreign key check would
    // lock it (fires are not held up); a run whose job is gone is gone too.
    query(
        c,
        "SELECT 1 FROM jobs WHERE id = (SELECT job_id FROM runs WHERE id = $1) FOR KEY SHARE",
        &[&p.run_id],
    )
    .await?;
    let started = query_opt(
        c,
        "UPDATE runs SET spec = $1, lease_token = NULL, lease_expires_at = NULL, begun = true, \
           started_at = coalesce(started_at, coalesce($2::timestamptz, now())) \
         WHERE id = $3 AND lease_token = $4 AND state = 'running' AND parent_id IS NULL \
         RETURNING cancel_requested",
        &[&spec, &p.now, &p.run_id, &p.lease_token],
    )
    .await?;
    let Some(started) = started else {
        return Ok(false);
    };
    let cancelling: bool = col(&started, 0)?;
    let inserts = workflow::step_inserts(&p.spec, &flow);
    let names: Vec<&str> = inserts.iter().map(|s| s.step.as_str()).collect();
    let attempts: Vec<i32> = inserts.iter().map(|s| int(s.max_attempts)).collect();
    // In step order, so that step runs' ids follow it.
    execute(
        c,
        "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
           execution, exclusive, created_at, parent_id, step, params, event_id, event_topic, \
           event_payload, upstream_run_id) \
         SELECT r.job_id, r.scheduled_for, coalesce($1::timestamptz, now()), 'scheduled', \
           r.origin, u.max_attempts, r.execution, false, coalesce($1::timestamptz, now()), r.id, \
           u.step, r.params, r.event_id, r.event_topic, r.event_payload, r.upstream_run_id \
         FROM runs r, unnest($2::text[], $3::integer[]) WITH ORDINALITY \
           AS u (step, max_attempts, ord) \
         WHERE r.id = $4 ORDER BY u.ord",
        &[&p.now, &names, &attempts, &p.run_id],
    )
    .await?;
    if cancelling {
        // Asked to stop since its claim (a cancel, `overlap: replace`): its steps end at once
        // instead of waiting forever (a cancelled run queues none).
        cancel(c, p.run_id, "cancelled", true, &p.now, notices).await?;
    } else {
        settle(c, p.run_id, &p.now, notices).await?;
    }
    Ok(true)
}

/// Applies `kairos_store::workflow::settle` to a running workflow run; nothing for a run that is
/// not one (a plain run, or one that has ended). The caller holds the workflow run's row lock
/// (see the module's lock order). Notes `Runs` if steps were queued.
pub(crate) async fn settle(
    c: &impl GenericClient,
    run_id: RunId,
    now: &Option<Timestamp>,
    notices: &mut Notices,
) -> StoreResult<()> {
    // Both read after the lock, each in a statement of its own (sent at once).
    let (parent, steps) = futures::future::try_join(
        query_opt(
            c,
            "SELECT spec, cancel_requested FROM runs \
             WHERE id = $1 AND state = 'running' AND spec IS NOT NULL",
            &[&run_id],
        ),
        query(
            c,
            "SELECT id, step, state FROM runs WHERE parent_id = $1",
            &[&run_id],
        ),
    )
    .await?;
    let Some(parent) = parent else {
        return Ok(());
    };
    let flow = workflow::workflow_of(&workflow::parse_spec(col(&parent, 0)?)?)?;
    let steps = steps
        .iter()
        .map(step_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let plan = workflow::settle(&flow, &steps, col(&parent, 1)?)?;
    let mut release = plan.release;
    release.sort_unstable();
    let (decide_ids, decide_states, decide_reasons) = plan.decide.iter().fold(
        (Vec::new(), Vec::new(), Vec::new()),
        |(mut ids, mut states, mut reasons), (id, state, reason)| {
            ids.push(*id);
            states.push(state.as_str());
            reasons.push(reason.as_str());
            (ids, states, reasons)
        },
    );
    let finish = plan.finish.map(RunState::as_str);
    // Every write fenced by the state it expects; sent at once.
    let released = async {
        if release.is_empty() {
            return Ok(0);
        }
        execute(
            c,
            "UPDATE runs SET state = 'queued', run_at = coalesce($1::timestamptz, now()) \
             WHERE id = ANY($2) AND state = 'scheduled'",
            &[now, &release],
        )
        .await
    };
    let decided = async {
        if decide_ids.is_empty() {
            return Ok(0);
        }
        execute(
            c,
            "UPDATE runs r SET state = u.state, reason = u.reason, \
               finished_at = coalesce($1::timestamptz, now()) \
             FROM unnest($2::bigint[], $3::text[], $4::text[]) AS u (id, state, reason) \
             WHERE r.id = u.id AND r.state = 'scheduled'",
            &[now, &decide_ids, &decide_states, &decide_reasons],
        )
        .await
    };
    let finished = async {
        let Some(state) = finish else {
            return Ok(0);
        };
        execute(
            c,
            "UPDATE runs SET state = $1, finished_at = coalesce($2::timestamptz, now()) \
             WHERE id = $3 AND state = 'running'",
            &[&state, now, &run_id],
        )
        .await
    };
    let (released, _, finished) = futures::future::try_join3(released, decided, finished).await?;
    notices.add_if(released > 0, kairos_store::Change::Runs);
    if finished == 1 {
        // The workflow run ended with this step: the jobs that run after it run.
        crate::dependency::runs_ended(c, &[run_id], notices).await?;
    }
    Ok(())
}

/// A row of `SELECT id, step, state` of step runs.
pub(crate) fn step_row(r: &Row) -> StoreResult<StepRow> {
    Ok(StepRow {
        id: col(r, 0)?,
        step: col(r, 1)?,
        state: col::<&str>(r, 2)?.parse().map_err(StoreError::Internal)?,
    })
}

/// Cancelling a running workflow run, whose row the caller holds: its steps that have not
/// started end `cancelled` (with `reason`), its running ones are asked to stop (with
/// `stop_running`), then it is settled (it ends with its last running step). Steps are locked
/// in id order. Notes `Cancel` if a running step was asked to stop.
///
/// Without `stop_running` no running step is locked: for a caller that holds runs of higher
/// ids already (a fire's `replace`, which asked the running steps it locked in order to stop),
/// where waiting for a running step could close a circle with a heartbeat.
pub(crate) async fn cancel(
    c: &impl GenericClient,
    run_id: RunId,
    reason: &str,
    stop_running: bool,
    now: &Option<Timestamp>,
    notices: &mut Notices,
) -> StoreResult<()> {
    let stopping = query(
        c,
        "WITH locked AS MATERIALIZED ( \
           SELECT id FROM runs WHERE parent_id = $1 \
             AND (state IN ('scheduled', 'queued') OR ($4::boolean AND state = 'running')) \
           ORDER BY id FOR UPDATE), \
         changed AS ( \
           UPDATE runs r SET \
             state = CASE WHEN r.state = 'running' THEN r.state ELSE 'cancelled' END, \
             finished_at = CASE WHEN r.state = 'running' THEN r.finished_at \
               ELSE coalesce($2::timestamptz, now()) END, \
             reason = CASE WHEN r.state = 'running' THEN r.reason ELSE $3 END, \
             cancel_requested = r.cancel_requested OR r.state = 'running' \
           FROM locked WHERE r.id = locked.id \
             AND r.state IN ('scheduled', 'queued', 'running') \
           RETURNING r.state) \
         SELECT count(*) FROM changed WHERE state = 'running'",
        &[&run_id, now, &reason, &stop_running],
    )
    .await?;
    let stopping = stopping
        .first()
        .map(|r| col::<i64>(r, 0))
        .transpose()?
        .is_some_and(|n| n > 0);
    notices.add_if(stopping, kairos_store::Change::Cancel);
    settle(c, run_id, now, notices).await
}

/// The step runs of a workflow run, in step order (their ids follow it).
pub(crate) async fn steps(c: &impl GenericClient, run_id: RunId) -> StoreResult<Vec<Run>> {
    query(
        c,
        &format!("{RUN_SELECT} WHERE r.parent_id = $1 ORDER BY r.id"),
        &[&run_id],
    )
    .await?
    .iter()
    .map(rows::run)
    .collect()
}
