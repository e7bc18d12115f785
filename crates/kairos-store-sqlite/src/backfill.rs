//! Backfills: runs held as `scheduled` for the due times of a range, released to the queue by
//! the scheduler as the job's overlap policy allows (`kairos_core::policy::backfill_release`).

use kairos_core::auth::AuditAction;
use kairos_core::run::{RunId, RunOrigin};
use kairos_store::*;
use rusqlite::{Connection, params};

use crate::auth::{Change, audit};
use crate::rows::{self, all, col, exec, first, micros};

/// `run_backfill` inside the write transaction.
pub(crate) fn create(
    conn: &Connection,
    p: &RunBackfillParams,
    now: jiff::Timestamp,
) -> StoreResult<RunBackfillResult> {
    let Some((namespace, name, actual)) = first(
        conn,
        "SELECT namespace, name, version FROM jobs WHERE id = ?1",
        [p.job_id],
        |r| {
            Ok((
                col::<String>(r, 0)?,
                col::<String>(r, 1)?,
                col::<i64>(r, 2)?,
            ))
        },
    )?
    else {
        return Err(StoreError::JobGone(p.job_id));
    };
    check_version(&namespace, &name, p.expected_version, actual)?;
    let mut times = p.due_times.clone();
    times.sort_unstable();
    times.dedup();
    let mut result = RunBackfillResult::default();
    for at in times {
        let exists = first(
            conn,
            "SELECT 1 FROM runs WHERE job_id = ?1 AND scheduled_for = ?2 AND parent_id IS NULL \
             AND event_id IS NULL AND upstream_run_id IS NULL",
            params![p.job_id, micros(at)],
            |r| col::<i64>(r, 0),
        )?
        .is_some();
        if exists {
            result.existing.push(at);
            continue;
        }
        let run_id = if p.dry_run {
            None
        } else {
            exec(
                conn,
                "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
                 execution, exclusive, created_at) \
                 VALUES (?1, ?2, ?2, 'scheduled', ?3, ?4, ?5, 0, ?6) \
                 ON CONFLICT DO NOTHING",
                params![
                    p.job_id,
                    micros(at),
                    RunOrigin::Backfill.as_str(),
                    p.max_attempts,
                    rows::execution_str(p.execution),
                    micros(now),
                ],
            )?;
            Some(conn.last_insert_rowid())
        };
        result.created.push(BackfillRun {
            scheduled_for: at,
            run_id,
        });
    }
    if !p.dry_run && !result.created.is_empty() {
        let mut change = Change::job(&p.actor, AuditAction::JobBackfill, &namespace, &name);
        change.detail = Some(backfill_detail(&result));
        audit(conn, change, now)?;
    }
    Ok(result)
}

/// The audit detail of a backfill: how many runs, for which due times.
pub(crate) fn backfill_detail(result: &RunBackfillResult) -> String {
    match (result.created.first(), result.created.last()) {
        (Some(first), Some(last)) => format!(
            "{} runs for due times {} to {}",
            result.created.len(),
            first.scheduled_for,
            last.scheduled_for
        ),
        _ => "no runs".into(),
    }
}

/// `run_held`.
pub(crate) fn held(conn: &Connection) -> StoreResult<Vec<HeldRuns>> {
    all(
        conn,
        "SELECT h.job_id, h.n, \
           (SELECT count(*) FROM runs a WHERE a.job_id = h.job_id AND a.parent_id IS NULL \
              AND a.state IN ('queued', 'running')) \
         FROM (SELECT job_id, count(*) AS n FROM runs \
               WHERE state = 'scheduled' AND parent_id IS NULL GROUP BY job_id) h \
         ORDER BY h.job_id",
        [],
        |r| {
            Ok(HeldRuns {
                job_id: col(r, 0)?,
                held: col::<i64>(r, 1)?.unsigned_abs(),
                active: col::<i64>(r, 2)?.unsigned_abs(),
            })
        },
    )
}

/// `run_release` inside the write transaction: one statement, fenced on the active count.
pub(crate) fn release(
    conn: &Connection,
    p: &RunReleaseParams,
    now: jiff::Timestamp,
) -> StoreResult<Vec<RunId>> {
    if p.count == 0 {
        return Ok(vec![]);
    }
    let expected = i64::try_from(p.expected_active).unwrap_or(i64::MAX);
    all(
        conn,
        "UPDATE runs SET state = 'queued', run_at = max(run_at, ?4) \
         WHERE id IN (SELECT id FROM runs WHERE job_id = ?1 AND state = 'scheduled' \
             AND parent_id IS NULL ORDER BY scheduled_for, id LIMIT ?2) \
           AND state = 'scheduled' \
           AND (SELECT count(*) FROM runs a WHERE a.job_id = ?1 AND a.parent_id IS NULL \
                  AND a.state IN ('queued', 'running')) = ?3 \
         RETURNING id",
        params![p.job_id, p.count, expected, micros(now)],
        |r| col(r, 0),
    )
    .map(|mut ids: Vec<RunId>| {
        ids.sort_unstable();
        ids
    })
}
