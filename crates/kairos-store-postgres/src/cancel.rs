//! Cancelling a run: a queued one ends at once, a running one's worker is asked to stop it. A
//! workflow run's cancel reaches its steps (see `crate::workflow::cancel`); a step's cancel
//! moves its workflow run on. Audited in the same transaction.

use kairos_core::auth::AuditAction;
use kairos_core::run::{RunId, RunState};
use kairos_store::{Run, RunCancelParams, StoreError, StoreResult};

use crate::auth::{Change, audit};
use crate::changes::Notices;
use crate::connect::PostgresStore;
use crate::rows::{self, RUN_SELECT, col, execute, pg_error, query_opt};
use crate::store::fetch_run;

impl PostgresStore {
    pub(crate) async fn run_cancel_tx(&self, p: RunCancelParams) -> StoreResult<Run> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // A step's workflow run is locked before the step (see `crate::workflow`); a run's
        // parent never changes, so it can be read before any lock.
        let parent: Option<RunId> = col(
            &query_opt(
                &tx,
                "SELECT parent_id FROM runs WHERE id = $1",
                &[&p.run_id],
            )
            .await?
            .ok_or(StoreError::RunNotFound(p.run_id))?,
            0,
        )?;
        // A top-level run that ends here (or the workflow run of a step, which may end with
        // it) starts the jobs that run after its job: their rows first (jobs before runs), so
        // that a delete of one of them, or a fire counting their runs, cannot cross this.
        crate::dependency::lock_dependents(&tx, &[parent.unwrap_or(p.run_id)]).await?;
        if let Some(parent) = parent {
            crate::workflow::lock(&tx, &[parent]).await?;
        }
        // Locked: the state read stays true until this transaction ends.
        let row = query_opt(
            &tx,
            &format!("{RUN_SELECT} WHERE r.id = $1 FOR UPDATE OF r"),
            &[&p.run_id],
        )
        .await?
        .ok_or(StoreError::RunNotFound(p.run_id))?;
        let run = rows::run(&row)?;
        let invalid = |state: RunState| StoreError::InvalidRunState {
            run_id: p.run_id,
            state: state.to_string(),
            action: "cancelled",
        };
        let changed =
            match run.state {
                // A step waiting for its upstream steps is not cancelled on its own: cancel the
                // workflow run.
                RunState::Scheduled if parent.is_some() => {
                    return Err(StoreError::InvalidRunState {
                        run_id: p.run_id,
                        state: "waiting for its upstream steps".into(),
                        action: "cancelled",
                    });
                }
                RunState::Scheduled | RunState::Queued => {
                    execute(
                        &tx,
                        "UPDATE runs SET state = 'cancelled', \
                     finished_at = coalesce($1::timestamptz, now()), reason = 'cancelled' \
                     WHERE id = $2 AND state = $3",
                        &[&p.now, &p.run_id, &run.state.as_str()],
                    )
                    .await?
                }
                RunState::Running => execute(
                    &tx,
                    "UPDATE runs SET cancel_requested = true WHERE id = $1 AND state = 'running'",
                    &[&p.run_id],
                )
                .await?,
                state => return Err(invalid(state)),
            };
        if changed != 1 {
            return Err(invalid(run.state));
        }
        let mut notices = Notices::default();
        if run.state != RunState::Running && parent.is_none() {
            // Cancelled before it started: it ended, and the jobs that run after it run.
            crate::dependency::runs_ended(&tx, &[p.run_id], &mut notices).await?;
        }
        match parent {
            // A workflow run (nothing for a plain run: it has no steps): its steps, in id
            // order after it.
            None if run.state == RunState::Running => {
                crate::workflow::cancel(&tx, p.run_id, "cancelled", true, &p.now, &mut notices)
                    .await?;
            }
            None => {}
            Some(parent) => crate::workflow::settle(&tx, parent, &p.now, &mut notices).await?,
        }
        let change = Change::job(
            &p.actor,
            AuditAction::RunCancel,
            &run.namespace,
            &run.job_name,
        );
        audit(&tx, change.run(run.id), &p.now).await?;
        let run = fetch_run(&tx, p.run_id)
            .await?
            .ok_or(StoreError::RunNotFound(p.run_id))?;
        // A queued run is simply gone; a running one's worker must hear of it.
        notices.add_if(run.state == RunState::Running, kairos_store::Change::Cancel);
        self.commit(tx, notices).await?;
        Ok(run)
    }
}
