//! A user's action on a workflow run's steps (`Store::workflow_control`): skip a step, mark it
//! succeeded, run it (and its downstream) again, run the failed steps again. The decision is
//! `kairos_store::workflow::plan_control`'s; this takes the locks, reads the rows it decides
//! on, and applies it in one transaction with the settle and the audit entry.
//!
//! # Locks
//!
//! As every writer of a workflow run's steps (see `crate::workflow`): the workflow run's row
//! first (`FOR UPDATE`, a statement of its own), then all its step runs (`FOR UPDATE`, in id
//! order, another statement: one that began before the lock was granted would not see steps
//! that a concurrent `workflow_start` inserted), and only then, in a third statement, their
//! states. Every other writer of a step either holds the workflow run first (finish, rescue,
//! cancel, `overlap: replace`, settle) and so waits for this transaction or is waited for, or
//! never waits for a row (claims, `SKIP LOCKED`), or locks running runs in id order only
//! (heartbeats): no circle. Holding every step, the states read stay true until the commit; a
//! queued step is either claimed before (then read `running`) or not claimable until after
//! (then it is written). The writes are fenced by the state read all the same, and one that
//! does not apply rolls everything back (`WorkflowConflict`).

use deadpool_postgres::GenericClient;
use kairos_core::run::{RunId, RunState};
use kairos_store::workflow;
use kairos_store::{Run, StoreError, StoreResult, WorkflowControlParams};

use crate::auth::{Change, audit};
use crate::changes::Notices;
use crate::rows::{self, RUN_WIDTH, col, execute, int, query, query_opt, run_columns};
use crate::store::fetch_run;

/// A run with its stored document (`spec`, at `RUN_WIDTH`), its row locked.
const RUN_FOR_CONTROL: &str = concat!(
    "SELECT ",
    run_columns!(),
    ", r.spec FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = $1 FOR UPDATE OF r"
);

/// `workflow_control`: checks the run, locks it and its steps, decides the action on the steps
/// as they are, writes it fenced by each step's state, reopens a run that had ended, settles
/// it (noting `Runs` if steps were queued) and records the change. Returns the run after it.
pub(crate) async fn control(
    c: &impl GenericClient,
    p: &WorkflowControlParams,
    notices: &mut Notices,
) -> StoreResult<Run> {
    let run_id = p.run_id;
    let conflict = |message: String| StoreError::WorkflowConflict { run_id, message };
    // A run's parent never changes: read before any lock, so that a step is refused without
    // locking it (a step is locked by whoever holds its workflow run, or in id order).
    let parent: Option<RunId> = col(
        &query_opt(c, "SELECT parent_id FROM runs WHERE id = $1", &[&run_id])
            .await?
            .ok_or(StoreError::RunNotFound(run_id))?,
        0,
    )?;
    if let Some(parent) = parent {
        return Err(conflict(format!(
            "is a step of run {parent}; act on the workflow run"
        )));
    }
    // The rows of the jobs that run after its job (it may end here: jobs before runs), then
    // the workflow run's row: its state, document and cancel request stay as read.
    crate::dependency::lock_dependents(c, &[run_id]).await?;
    let row = query_opt(c, RUN_FOR_CONTROL, &[&run_id])
        .await?
        .ok_or(StoreError::RunNotFound(run_id))?;
    let run = rows::run(&row)?;
    let Some(spec) = col::<Option<&str>>(&row, RUN_WIDTH)? else {
        return Err(conflict(
            if run.state.is_terminal() || run.state == RunState::Running {
                "is not a workflow run".to_owned()
            } else {
                format!("is {}: its steps do not exist until it starts", run.state)
            },
        ));
    };
    if run.state == RunState::Running && run.cancel_requested {
        return Err(conflict("is being cancelled".to_owned()));
    }
    let spec = workflow::parse_spec(spec)?;
    // Then its steps, in id order; then their states, read under those locks.
    query(
        c,
        "SELECT id FROM runs WHERE parent_id = $1 ORDER BY id FOR UPDATE",
        &[&run_id],
    )
    .await?;
    let steps = query(
        c,
        "SELECT id, step, state FROM runs WHERE parent_id = $1",
        &[&run_id],
    )
    .await?
    .iter()
    .map(crate::workflow::step_row)
    .collect::<StoreResult<Vec<_>>>()?;
    let writes = workflow::plan_control(run_id, &spec, &steps, &p.action, &p.actor)?;
    let changed_meanwhile = || conflict("its steps changed meanwhile; try again".to_owned());

    if !writes.set.is_empty() {
        let mut ids = Vec::with_capacity(writes.set.len());
        let mut was = Vec::with_capacity(writes.set.len());
        let mut states = Vec::with_capacity(writes.set.len());
        let mut reasons = Vec::with_capacity(writes.set.len());
        for (id, read, state, reason) in &writes.set {
            ids.push(*id);
            was.push(read.as_str());
            states.push(state.as_str());
            reasons.push(reason.as_str());
        }
        let changed = execute(
            c,
            "UPDATE runs r SET state = u.state, reason = u.reason, \
               finished_at = coalesce($1::timestamptz, now()) \
             FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) \
               AS u (id, was, state, reason) \
             WHERE r.id = u.id AND r.parent_id = $6 AND r.state = u.was",
            &[&p.now, &ids, &was, &states, &reasons, &run_id],
        )
        .await?;
        if changed != ids.len() as u64 {
            return Err(changed_meanwhile());
        }
    }
    if !writes.reset.is_empty() {
        let mut ids = Vec::with_capacity(writes.reset.len());
        let mut was = Vec::with_capacity(writes.reset.len());
        let mut budgets = Vec::with_capacity(writes.reset.len());
        for (id, read, budget) in &writes.reset {
            ids.push(*id);
            was.push(read.as_str());
            budgets.push(int(*budget));
        }
        let reason = format!("run again by {}", p.actor);
        // A new budget on top of the attempts used: the attempt count goes on.
        let changed = execute(
            c,
            "UPDATE runs r SET state = 'scheduled', max_attempts = r.attempt + u.budget, \
               run_at = coalesce($1::timestamptz, now()), reason = $2, exit_code = NULL, \
               started_at = NULL, finished_at = NULL, node = NULL, result = NULL, \
               lease_token = NULL, lease_expires_at = NULL, cancel_requested = false \
             FROM unnest($3::bigint[], $4::text[], $5::integer[]) AS u (id, was, budget) \
             WHERE r.id = u.id AND r.parent_id = $6 AND r.state = u.was",
            &[&p.now, &reason, &ids, &was, &budgets, &run_id],
        )
        .await?;
        if changed != ids.len() as u64 {
            return Err(changed_meanwhile());
        }
    }
    if run.state.is_terminal() {
        // Steps were set back: the run runs again (settle ends it again if nothing is left).
        let reopened = execute(
            c,
            "UPDATE runs SET state = 'running', finished_at = NULL, cancel_requested = false, reason = NULL \
             WHERE id = $1 AND state = $2",
            &[&run_id, &run.state.as_str()],
        )
        .await?;
        if reopened != 1 {
            return Err(changed_meanwhile());
        }
    }
    crate::workflow::settle(c, run_id, &p.now, notices).await?;
    let mut change = Change::job(
        &p.actor,
        p.action.audit_action(),
        &run.namespace,
        &run.job_name,
    )
    .run(run.id);
    change.detail = p.action.step().map(|s| format!("step `{s}`"));
    audit(c, change, &p.now).await?;
    fetch_run(c, run_id)
        .await?
        .ok_or(StoreError::RunNotFound(run_id))
}
