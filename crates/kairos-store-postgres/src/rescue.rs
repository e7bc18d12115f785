//! Rescuing runs whose lease expired: select, decide with the rule every store shares
//! ([`kairos_core::lease::rescue_decision`]), apply with writes fenced by the lease token.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use kairos_core::lease::{ExpiredRun, RescueDecision, rescue_decision};
use kairos_core::run::RunId;
use kairos_core::spec::ExecutionMode;
use kairos_store::{RescueReport, RunRescueParams, StoreResult};

use crate::rows::{col, query, query_opt};

/// A running run whose lease expired (or whose node restarted).
struct Expired {
    id: RunId,
    lease_token: Option<String>,
    run: ExpiredRun,
}

/// `run_rescue`, inside the caller's transaction: selects expired leases (skipping runs another
/// rescuer or a late heartbeat holds), decides each, applies each with a write fenced by its
/// lease token. The expired attempt is recorded as `lost` (except for a release: nothing ran).
pub(crate) async fn rescue(
    c: &impl GenericClient,
    p: &RunRescueParams,
) -> StoreResult<RescueReport> {
    let rows = query(
        c,
        "SELECT id, lease_token, attempt, max_attempts, execution, started_at, \
           cancel_requested, coalesce($1::timestamptz, now()) \
         FROM runs WHERE state = 'running' \
           AND (lease_expires_at < coalesce($1::timestamptz, now()) OR node = $2::text) \
         ORDER BY lease_expires_at, id LIMIT $3 FOR UPDATE SKIP LOCKED",
        &[&p.now, &p.orphaned_node, &i64::from(p.limit.max(1))],
    )
    .await?;
    let mut report = RescueReport::default();
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
                never_started: started_at.is_some_and(|s| s > now),
            },
        };
        let decision = rescue_decision(&run.run);
        if !apply(c, &run, decision, now).await? {
            continue;
        }
        match decision {
            RescueDecision::Release | RescueDecision::Requeue => report.requeued.push(run.id),
            RescueDecision::Lost => report.lost.push(run.id),
            RescueDecision::Cancelled => {}
        }
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
             lease_token = NULL, lease_expires_at = NULL, started_at = NULL, \
             reason = 'released: its node stopped before the due time' \
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
             lease_token = NULL, lease_expires_at = NULL, reason = 'lease expired' \
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
