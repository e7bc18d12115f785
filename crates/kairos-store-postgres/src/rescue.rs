//! Rescuing runs whose lease expired: select, decide with the rule every store shares
//! ([`kairos_core::lease::rescue_decision`]), apply with writes fenced by the lease token.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use kairos_core::lease::{ExpiredRun, RescueDecision, rescue_decision};
use kairos_core::run::RunId;
use kairos_core::spec::ExecutionMode;
use kairos_store::{Change, RescueReport, RunRescueParams, StoreResult};

use crate::changes::Notices;
use crate::rows::{col, query, query_opt};

/// A running run whose lease expired (or whose node restarted).
struct Expired {
    id: RunId,
    lease_token: Option<String>,
    run: ExpiredRun,
}

/// Running runs whose lease expired or whose node restarted. A started workflow run has no
/// lease (its steps do): it is never rescued itself.
const EXPIRED: &str = "FROM runs WHERE state = 'running' AND lease_token IS NOT NULL \
       AND (lease_expires_at < coalesce($1::timestamptz, now()) OR node = $2::text)";

/// `run_rescue`, inside the caller's transaction: selects expired leases (skipping runs another
/// rescuer or a late heartbeat holds), decides each, applies each with a write fenced by its
/// lease token. The expired attempt is recorded as `lost` (except for a release: nothing ran).
///
/// A step run that ends (`lost`, `cancelled`) moves its workflow run on, in the same
/// transaction. The workflow runs are locked first, in id order, while this transaction holds
/// no lock at all: they are those of the expired step runs a first read (without locks) finds.
/// The expired runs are then locked (`SKIP LOCKED`: this waits for no row from then on), only
/// steps of a workflow run locked here among them; a step that expired in between is left to
/// the next round. So a rescue never holds a step while it waits for the step's workflow run,
/// which a finish of a sibling step holds while it waits for the step (see `crate::workflow`).
pub(crate) async fn rescue(
    c: &impl GenericClient,
    p: &RunRescueParams,
    notices: &mut Notices,
) -> StoreResult<RescueReport> {
    let limit = i64::from(p.limit.max(1));
    // The runs it may rescue, read without locks: the rows to lock first are those of the
    // jobs that run after their jobs (a rescue that ends a run creates their runs), then the
    // workflow runs of the steps among them (jobs before runs, a workflow run before its
    // steps).
    let candidates: Vec<(RunId, Option<RunId>)> = query(
        c,
        &format!("SELECT id, parent_id {EXPIRED} ORDER BY lease_expires_at, id LIMIT $3"),
        &[&p.now, &p.orphaned_node, &limit],
    )
    .await?
    .iter()
    .map(|r| Ok((col::<RunId>(r, 0)?, col::<Option<RunId>>(r, 1)?)))
    .collect::<StoreResult<Vec<_>>>()?;
    let mut parents: Vec<RunId> = candidates
        .iter()
        .filter_map(|(_, parent)| *parent)
        .collect();
    parents.sort_unstable();
    parents.dedup();
    // The runs that may end here: the top-level ones, and the workflow runs of the steps (a
    // workflow run may end with its step).
    let may_end: Vec<RunId> = candidates
        .iter()
        .filter(|(_, parent)| parent.is_none())
        .map(|(id, _)| *id)
        .chain(parents.iter().copied())
        .collect();
    crate::dependency::lock_dependents(c, &may_end).await?;
    crate::workflow::lock(c, &parents).await?;
    let rows = query(
        c,
        &format!(
            "SELECT id, lease_token, attempt, max_attempts, execution, started_at, \
               cancel_requested, coalesce($1::timestamptz, now()), parent_id, begun {EXPIRED} \
               AND (parent_id IS NULL OR parent_id = ANY($4)) \
             ORDER BY lease_expires_at, id LIMIT $3 FOR UPDATE SKIP LOCKED"
        ),
        &[&p.now, &p.orphaned_node, &limit, &parents],
    )
    .await?;
    let mut report = RescueReport::default();
    // The workflow runs to settle, in id order, with the instant of the rescue.
    let mut settle = std::collections::BTreeMap::new();
    for row in &rows {
        let now: Timestamp = col(row, 7)?;
        let started_at: Option<Timestamp> = col(row, 5)?;
        let run = Expired {
            id: col(row, 0)?,
            lease_token: col(row, 1)?,
            run: ExpiredRun {
                attempt: u32::try_from(col::<i32>(row, 2)?).unwrap_or(0),
                max_attempts: u32::try_from(col::<i32>(row, 3)?).unwrap_or(0),
                execution: if col::<&str>(row, 4)? == "at_most_once" {
                    ExecutionMode::AtMostOnce
                } else {
                    ExecutionMode::AtLeastOnce
                },
                cancel_requested: col(row, 6)?,
                never_started: kairos_core::lease::never_started(
                    crate::rows::execution_from(col(row, 4)?)?,
                    col(row, 9)?,
                    started_at,
                    now,
                ),
            },
        };
        let decision = rescue_decision(&run.run);
        if !apply(c, &run, decision, now).await? {
            continue;
        }
        match decision {
            RescueDecision::Release | RescueDecision::Requeue => report.requeued.push(run.id),
            RescueDecision::Lost | RescueDecision::Cancelled => {
                if decision == RescueDecision::Lost {
                    report.lost.push(run.id);
                }
                // A run that ended: the jobs that run after it run.
                crate::dependency::runs_ended(c, &[run.id], notices).await?;
                // A step that ended moves its workflow run on.
                if let Some(parent) = col::<Option<RunId>>(row, 8)? {
                    settle.insert(parent, now);
                }
            }
        }
    }
    notices.add_if(!report.requeued.is_empty(), Change::Runs);
    for (parent, now) in settle {
        crate::workflow::settle(c, parent, &Some(now), notices).await?;
    }
    Ok(report)
}

/// Applies a decision, fenced by the lease token and state read; false if the fence failed.
async fn apply(
    c: &impl GenericClient,
    run: &Expired,
    decision: RescueDecision,
    now: Timestamp,
) -> StoreResult<bool> {
    if decision == RescueDecision::Release {
        let moved = query_opt(
            c,
            "UPDATE runs SET state = 'queued', attempt = attempt - 1, node = NULL, \
             lease_token = NULL, lease_expires_at = NULL, begun = true, \
             started_at = CASE WHEN attempt = 1 THEN NULL ELSE started_at END, \
             reason = 'released: its node stopped before the attempt began' \
             WHERE id = $1 AND lease_token = $2 AND state = 'running' RETURNING id",
            &[&run.id, &run.lease_token],
        )
        .await?;
        return Ok(moved.is_some());
    }
    let state = match decision {
        RescueDecision::Cancelled => "cancelled",
        RescueDecision::Lost => "lost",
        RescueDecision::Requeue | RescueDecision::Release => "queued",
    };
    let moved = query_opt(
        c,
        "WITH moved AS ( \
           UPDATE runs SET state = $3::text, \
             run_at = CASE WHEN $3::text = 'queued' THEN $4::timestamptz ELSE run_at END, \
             finished_at = CASE WHEN $3::text = 'queued' THEN NULL ELSE $4::timestamptz END, \
             lease_token = NULL, lease_expires_at = NULL, begun = true, \
             reason = 'lease expired' \
           WHERE id = $1 AND lease_token = $2 AND state = 'running' \
           RETURNING id, attempt, node, started_at), \
         recorded AS ( \
           INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, status, error) \
           SELECT id, attempt, coalesce(node, ''), coalesce(started_at, $4::timestamptz), \
             $4::timestamptz, 'lost', 'lease expired: the worker stopped heartbeating' \
           FROM moved ON CONFLICT (run_id, attempt) DO NOTHING) \
         SELECT id FROM moved",
        &[&run.id, &run.lease_token, &state, &now],
    )
    .await?;
    Ok(moved.is_some())
}
