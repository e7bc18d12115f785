//! Backfills: runs held as `scheduled` for the due times of a range, released to the queue by
//! the scheduler as the job's overlap policy allows (`kairos_core::policy::backfill_release`).

use jiff::Timestamp;
use kairos_core::auth::AuditAction;
use kairos_core::run::{RunId, RunOrigin};
use kairos_store::*;

use crate::auth::{Change, audit};
use crate::changes::Notices;
use crate::connect::PostgresStore;
use crate::rows::{self, col, pg_error, query, query_opt};

impl PostgresStore {
    pub(crate) async fn backfill(&self, p: RunBackfillParams) -> StoreResult<RunBackfillResult> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // The job's row, shared: a delete waits for the backfill or comes before it.
        let job = query_opt(
            &tx,
            "SELECT namespace, name, version FROM jobs WHERE id = $1 FOR SHARE",
            &[&p.job_id],
        )
        .await?
        .ok_or(StoreError::JobGone(p.job_id))?;
        let (namespace, name): (String, String) = (col(&job, 0)?, col(&job, 1)?);
        check_version(&namespace, &name, p.expected_version, col(&job, 2)?)?;
        let mut times = p.due_times.clone();
        times.sort_unstable();
        times.dedup();
        let mut result = RunBackfillResult::default();
        if p.dry_run {
            let rows = query(
                &tx,
                "SELECT scheduled_for FROM runs WHERE job_id = $1 AND scheduled_for = ANY($2) \
                 AND parent_id IS NULL AND event_id IS NULL AND upstream_run_id IS NULL",
                &[&p.job_id, &times],
            )
            .await?;
            let existing = rows
                .iter()
                .map(|r| col::<Timestamp>(r, 0))
                .collect::<StoreResult<std::collections::HashSet<_>>>()?;
            for at in times {
                if existing.contains(&at) {
                    result.existing.push(at);
                } else {
                    result.created.push(BackfillRun {
                        scheduled_for: at,
                        run_id: None,
                    });
                }
            }
            return Ok(result);
        }
        let rows = query(
            &tx,
            "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
               execution, exclusive, created_at) \
             SELECT $1, t, t, 'scheduled', $3, $4, $5, false, coalesce($6::timestamptz, now()) \
             FROM unnest($2::timestamptz[]) WITH ORDINALITY AS u (t, ord) ORDER BY ord \
             ON CONFLICT DO NOTHING \
             RETURNING id, scheduled_for",
            &[
                &p.job_id,
                &times,
                &RunOrigin::Backfill.as_str(),
                &rows::int(p.max_attempts),
                &rows::execution_str(p.execution),
                &p.now,
            ],
        )
        .await?;
        let mut created = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            created.insert(col::<Timestamp>(row, 1)?, col::<RunId>(row, 0)?);
        }
        for at in times {
            match created.get(&at) {
                Some(&id) => result.created.push(BackfillRun {
                    scheduled_for: at,
                    run_id: Some(id),
                }),
                None => result.existing.push(at),
            }
        }
        let mut notices = Notices::default();
        if !result.created.is_empty() {
            let mut change = Change::job(&p.actor, AuditAction::JobBackfill, &namespace, &name);
            change.detail = Some(backfill_detail(&result));
            audit(&tx, change, &p.now).await?;
            // The leader's scheduler releases held runs: wake it wherever it runs.
            notices.add(kairos_store::Change::Jobs);
        }
        self.commit(tx, notices).await?;
        Ok(result)
    }

    pub(crate) async fn held(&self) -> StoreResult<Vec<HeldRuns>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT h.job_id, h.n, \
               (SELECT count(*) FROM runs a WHERE a.job_id = h.job_id \
                  AND a.parent_id IS NULL AND a.state IN ('queued', 'running')) \
             FROM (SELECT job_id, count(*) AS n FROM runs \
                   WHERE state = 'scheduled' AND parent_id IS NULL GROUP BY job_id) h \
             ORDER BY h.job_id",
            &[],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HeldRuns {
                    job_id: col(r, 0)?,
                    held: col::<i64>(r, 1)?.unsigned_abs(),
                    active: col::<i64>(r, 2)?.unsigned_abs(),
                })
            })
            .collect()
    }

    /// Locks the job's row first (as a fire does), so that releases and fires of one job
    /// take turns and the count they are fenced on cannot change under them.
    pub(crate) async fn release(&self, p: RunReleaseParams) -> StoreResult<Vec<RunId>> {
        if p.count == 0 {
            return Ok(vec![]);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let locked = query_opt(
            &tx,
            "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE",
            &[&p.job_id],
        )
        .await?;
        if locked.is_none() {
            return Ok(vec![]);
        }
        let expected = i64::try_from(p.expected_active).unwrap_or(i64::MAX);
        let rows = query(
            &tx,
            "WITH picked AS MATERIALIZED ( \
               SELECT id FROM runs WHERE job_id = $1 AND state = 'scheduled' \
                 AND parent_id IS NULL \
               ORDER BY scheduled_for, id LIMIT $2 FOR UPDATE) \
             UPDATE runs r SET state = 'queued', \
               run_at = greatest(r.run_at, coalesce($4::timestamptz, now())) \
             FROM picked WHERE r.id = picked.id AND r.state = 'scheduled' \
               AND (SELECT count(*) FROM runs a WHERE a.job_id = $1 \
                      AND a.parent_id IS NULL AND a.state IN ('queued', 'running')) = $3 \
             RETURNING r.id",
            &[&p.job_id, &i64::from(p.count), &expected, &p.now],
        )
        .await?;
        let mut ids = rows
            .iter()
            .map(|r| col::<RunId>(r, 0))
            .collect::<StoreResult<Vec<_>>>()?;
        ids.sort_unstable();
        let mut notices = Notices::default();
        notices.add_if(!ids.is_empty(), kairos_store::Change::Runs);
        self.commit(tx, notices).await?;
        Ok(ids)
    }
}

/// The audit detail of a backfill: how many runs, for which due times.
fn backfill_detail(result: &RunBackfillResult) -> String {
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
