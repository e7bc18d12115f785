//! `Store` for PostgreSQL: each method is one transaction (or one read) on a pooled connection.
//! Job writes are in [`crate::jobs`], the hot paths in [`crate::batch`], the rescue in
//! [`crate::rescue`], cancels in [`crate::cancel`], workflow runs in [`crate::workflow`] (a
//! user's action on their steps in [`crate::control`]), tokens and the audit log in
//! [`crate::auth`], alert deliveries in [`crate::alert`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use kairos_core::auth::AuditAction;
use kairos_core::run::{JobId, RunId, RunState};
use kairos_core::spec::JobSpec;
use kairos_store::*;

use crate::auth::{Change, audit};
use crate::batch;
use crate::changes::Notices;
use crate::connect::PostgresStore;
use crate::rows::{
    self, ATTEMPT_COLUMNS, JOB_SELECT, RUN_SELECT, col, execute, pg_error, query, query_opt,
};

/// How long a claim's last position is a start for the next (see `run_claim`).
const CLAIM_START_FOR: Duration = Duration::from_millis(100);

pub(crate) async fn fetch_run(c: &impl GenericClient, id: RunId) -> StoreResult<Option<Run>> {
    query_opt(c, &format!("{RUN_SELECT} WHERE r.id = $1"), &[&id])
        .await?
        .as_ref()
        .map(rows::run)
        .transpose()
}

/// `JobGone` unless the job exists; holds a share lock on it, so a delete waits for this
/// transaction (and a deleted job is seen as gone), and so does a fire: a fire counts the
/// job's active runs once it holds the job (its overlap fence), so a run inserted here is
/// either counted by it or created after it.
async fn ensure_job_exists(c: &impl GenericClient, job_id: JobId) -> StoreResult<()> {
    ensure_job_at(c, job_id, None).await
}

/// `JobGone` unless the job exists, and `VersionConflict` unless it is at `expected` (when
/// given); the job stays so until the transaction ends (its row is share-locked).
async fn ensure_job_at(
    c: &impl GenericClient,
    job_id: JobId,
    expected: Option<i64>,
) -> StoreResult<()> {
    let row = query_opt(
        c,
        "SELECT version, namespace, name FROM jobs WHERE id = $1 FOR SHARE",
        &[&job_id],
    )
    .await?
    .ok_or(StoreError::JobGone(job_id))?;
    let (namespace, name): (String, String) = (col(&row, 1)?, col(&row, 2)?);
    check_version(&namespace, &name, expected, col(&row, 0)?)
}

impl PostgresStore {
    /// One claim transaction (see `Store::run_claim`): in one round trip with its commit
    /// (`at_once`), or on the full path, which can start exclusive runs. Notes whether
    /// exclusive runs were waiting, for the node's next claim.
    async fn claim_batch(
        &self,
        p: &RunClaimParams,
        start: Option<batch::ClaimStart>,
        at_once: bool,
    ) -> StoreResult<(Vec<ClaimedRun>, bool)> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        // The claim's transaction begins with its first statements (a claim is on every
        // attempt's path: a round trip less each).
        let tx = self.begun().await?;
        let claimed = if at_once {
            let claimed =
                batch::claim_at_once(tx.client(), p, &token, start, tx.send_commit()).await?;
            tx.committed();
            claimed
        } else {
            let claimed =
                batch::claim(tx.client(), self.claim_lock_class, p, &token, start).await?;
            tx.commit().await?;
            claimed
        };
        self.claim_exclusive
            .store(claimed.exclusive_waiting, Ordering::Relaxed);
        Ok((
            batch::claimed_runs(&claimed.rows, &token)?,
            claimed.exclusive_waiting,
        ))
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn job_create(&self, p: JobCreateParams) -> StoreResult<Job> {
        self.job_create_tx(p).await
    }

    async fn job_get(&self, p: JobGetParams) -> StoreResult<Option<Job>> {
        let client = self.client().await?;
        query_opt(
            &client,
            &format!("{JOB_SELECT} WHERE j.namespace = $1 AND j.name = $2"),
            &[&p.namespace, &p.name],
        )
        .await?
        .as_ref()
        .map(rows::job)
        .transpose()
    }

    async fn job_get_by_id(&self, p: JobGetByIdParams) -> StoreResult<Option<Job>> {
        let client = self.client().await?;
        query_opt(&client, &format!("{JOB_SELECT} WHERE j.id = $1"), &[&p.id])
            .await?
            .as_ref()
            .map(rows::job)
            .transpose()
    }

    async fn job_list(&self, p: JobListParams) -> StoreResult<Vec<Job>> {
        let limit = if p.limit == 0 {
            i64::MAX
        } else {
            i64::from(p.limit)
        };
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "{JOB_SELECT} WHERE ($1::text[] IS NULL OR j.namespace = ANY($1)) \
                 ORDER BY j.namespace, j.name LIMIT $2"
            ),
            &[&p.namespaces, &limit],
        )
        .await?
        .iter()
        .map(rows::job)
        .collect()
    }

    async fn job_update(&self, p: JobUpdateParams) -> StoreResult<Job> {
        self.job_update_tx(p).await
    }

    async fn job_delete(&self, p: JobDeleteParams) -> StoreResult<()> {
        self.job_delete_tx(p).await
    }

    async fn job_set_paused(&self, p: JobSetPausedParams) -> StoreResult<Job> {
        self.job_set_paused_tx(p).await
    }

    async fn job_due(&self, p: JobDueParams) -> StoreResult<Vec<Job>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "{JOB_SELECT} WHERE NOT j.paused AND j.next_fire_at IS NOT NULL \
                 AND j.next_fire_at <= $1 ORDER BY j.next_fire_at LIMIT $2"
            ),
            &[&p.before, &i64::from(p.limit.max(1))],
        )
        .await?
        .iter()
        .map(rows::job)
        .collect()
    }

    async fn job_next_fire_at(&self) -> StoreResult<Option<Timestamp>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT min(next_fire_at) FROM jobs WHERE NOT paused AND next_fire_at IS NOT NULL",
            &[],
        )
        .await?;
        rows::earliest(row, 0)
    }

    async fn job_fire(&self, p: JobFireParams) -> StoreResult<JobFireResult> {
        let results = self.job_fire_many(std::slice::from_ref(&p)).await?;
        Ok(results.into_iter().next().unwrap_or_default())
    }

    async fn job_fire_many(&self, ps: &[JobFireParams]) -> StoreResult<Vec<JobFireResult>> {
        if ps.is_empty() {
            return Ok(vec![]);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut notices = Notices::default();
        let results = batch::fire_many(&tx, ps, &mut notices).await?;
        self.commit(tx, notices).await?;
        Ok(results)
    }

    async fn run_report(&self, p: RunReportParams) -> StoreResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE runs SET progress = coalesce($1, progress), \
             progress_message = coalesce($2, progress_message), \
             checkpoint = coalesce($3, checkpoint), \
             reported_at = coalesce($4::timestamptz, now()) \
             WHERE id = $5 AND lease_token = $6 AND state = 'running'",
            &[
                &p.progress,
                &p.message,
                &p.checkpoint,
                &p.now,
                &p.run_id,
                &p.lease_token,
            ],
        )
        .await?;
        Ok(changed == 1)
    }

    async fn event_targets(&self, p: EventTargetsParams) -> StoreResult<Vec<EventTarget>> {
        let client = self.client().await?;
        crate::event::targets(&client, &p).await
    }

    async fn event_fire_many(&self, ps: &[EventFireParams]) -> StoreResult<Vec<Option<RunId>>> {
        if ps.is_empty() {
            return Ok(vec![]);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut notices = Notices::default();
        let results = crate::event::fire_many(&tx, ps, &mut notices).await?;
        self.commit(tx, notices).await?;
        Ok(results)
    }

    async fn run_insert(&self, p: RunInsertParams) -> StoreResult<Run> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        ensure_job_at(&tx, p.job_id, p.expected_version).await?;
        let mut notices = Notices::default();
        let inserted = batch::insert_runs(
            &tx,
            p.job_id,
            std::slice::from_ref(&p.run),
            &p.now,
            &mut notices,
        )
        .await?;
        let Some(&(id, _)) = inserted.first() else {
            // The due time has its run already: that one, unchanged and not audited.
            let row = query_opt(
                &tx,
                &format!(
                    "{RUN_SELECT} WHERE r.job_id = $1 AND r.scheduled_for = $2 \
                     AND r.parent_id IS NULL AND r.event_id IS NULL \
                     AND r.upstream_run_id IS NULL"
                ),
                &[&p.job_id, &p.run.scheduled_for],
            )
            .await?
            .ok_or_else(|| StoreError::Internal("existing run vanished".into()))?;
            return rows::run(&row);
        };
        if let Some(params) = &p.params {
            execute(
                &tx,
                "UPDATE runs SET params = $1 WHERE id = $2",
                &[params, &id],
            )
            .await?;
        }
        let run = fetch_run(&tx, id)
            .await?
            .ok_or(StoreError::RunNotFound(id))?;
        let change = Change::job(
            &p.actor,
            AuditAction::JobTrigger,
            &run.namespace,
            &run.job_name,
        );
        audit(&tx, change.run(id), &p.now).await?;
        self.commit(tx, notices).await?;
        Ok(run)
    }

    async fn run_insert_many(&self, p: RunInsertManyParams) -> StoreResult<Vec<RunId>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        ensure_job_exists(&tx, p.job_id).await?;
        let mut notices = Notices::default();
        let created = batch::insert_runs(&tx, p.job_id, &p.runs, &p.now, &mut notices).await?;
        self.commit(tx, notices).await?;
        Ok(created.into_iter().map(|(id, _)| id).collect())
    }

    async fn run_backfill(&self, p: RunBackfillParams) -> StoreResult<RunBackfillResult> {
        self.backfill(p).await
    }

    async fn run_held(&self) -> StoreResult<Vec<HeldRuns>> {
        self.held().await
    }

    async fn run_release(&self, p: RunReleaseParams) -> StoreResult<Vec<RunId>> {
        self.release(p).await
    }

    async fn run_active_count(&self, p: RunActiveCountParams) -> StoreResult<u64> {
        let counts = self
            .run_active_counts(RunActiveCountsParams {
                job_ids: vec![p.job_id],
            })
            .await?;
        Ok(counts.first().map_or(0, |(_, n)| *n))
    }

    async fn run_active_counts(&self, p: RunActiveCountsParams) -> StoreResult<Vec<(JobId, u64)>> {
        if p.job_ids.is_empty() {
            return Ok(vec![]);
        }
        let client = self.client().await?;
        query(
            &client,
            // The condition of the `runs_job_active` index, word for word.
            "SELECT job_id, count(*) FROM runs WHERE job_id = ANY($1) \
             AND parent_id IS NULL AND state IN ('scheduled', 'queued', 'running') \
             GROUP BY job_id",
            &[&p.job_ids],
        )
        .await?
        .iter()
        .map(|r| Ok((col(r, 0)?, col::<i64>(r, 1)?.unsigned_abs())))
        .collect()
    }

    async fn run_next_at(&self, p: RunNextAtParams) -> StoreResult<NextQueued> {
        let client = self.client().await?;
        // Two lookups in the `runs_queued` index.
        let row = query_opt(
            &client,
            "SELECT (SELECT min(run_at) FROM runs WHERE state = 'queued'), \
             (SELECT min(run_at) FROM runs WHERE state = 'queued' AND run_at > $1)",
            &[&p.after],
        )
        .await?;
        let Some(row) = row else {
            return Ok(NextQueued::default());
        };
        Ok(NextQueued {
            earliest: col(&row, 0)?,
            earliest_after: col(&row, 1)?,
        })
    }

    /// A claim that took a full batch leaves its last position for the next one to start from
    /// (see `batch::claim`): while a backlog lasts, claims walk the queue from where the
    /// previous one stopped instead of from its head. The walk from a position is bounded in
    /// time: [`CLAIM_START_FOR`] after the last claim from the head, the next claim starts at
    /// the head again (and so does one that comes up short, or one whose chosen exclusive run
    /// lies behind the position), so runs behind the position (released, caught up, held by a
    /// writer when the walk passed) wait at most about that long. The position is only a hint:
    /// which runs may be claimed is decided in the claim statement, as ever.
    ///
    /// A node whose last claim saw no exclusive run (`overlap: queue`) waiting claims in one
    /// round trip, its commit included (`batch::claim_at_once`), instead of three or four:
    /// on a busy node each round trip waits for a backend to be scheduled. That claim takes
    /// nothing while an exclusive run waits; if it finds one waiting after all, a claim on the
    /// full path follows at once for what it left of the limit, and so does every claim of the
    /// node until one sees none waiting again.
    async fn run_claim(&self, p: RunClaimParams) -> StoreResult<Vec<ClaimedRun>> {
        let from = self
            .claim_start
            .lock()
            .ok()
            .and_then(|s| *s)
            .filter(|(_, since)| since.elapsed() < CLAIM_START_FOR);
        let start = from.map(|(start, _)| start);
        let limit = usize::try_from(p.limit.max(1)).unwrap_or(usize::MAX);
        let at_once = !self.claim_exclusive.load(Ordering::Relaxed);
        let (mut claimed, exclusive_waiting) = self.claim_batch(&p, start, at_once).await?;
        if at_once && exclusive_waiting && claimed.len() < limit {
            let rest = RunClaimParams {
                limit: u32::try_from(limit - claimed.len()).unwrap_or(u32::MAX),
                ..p.clone()
            };
            // The first claim has committed: its runs are returned whatever happens here.
            match self.claim_batch(&rest, start, false).await {
                Ok((more, _)) => {
                    claimed.extend(more);
                    claimed.sort_by_key(|c| (c.run.run_at, c.run.id));
                }
                Err(e) => tracing::warn!(error = %e, "claiming waiting exclusive runs failed"),
            }
        }
        // The window runs from the last claim that started at the head: a walk from a position
        // moves the position on, never the window.
        let next = (claimed.len() >= limit)
            .then(|| claimed.iter().map(|c| (c.run.run_at, c.run.id)).max())
            .flatten()
            .map(|(run_at, id)| {
                let since = from.map_or_else(Instant::now, |(_, since)| since);
                (batch::ClaimStart { run_at, id }, since)
            });
        if let Ok(mut s) = self.claim_start.lock() {
            *s = next;
        }
        Ok(claimed)
    }

    async fn run_begin(&self, p: RunBeginParams) -> StoreResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE runs SET begun = true \
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
            &[&p.run_id, &p.lease_token],
        )
        .await?;
        Ok(changed == 1)
    }

    async fn run_heartbeat(&self, p: RunHeartbeatParams) -> StoreResult<Vec<HeartbeatResult>> {
        let client = self.client().await?;
        batch::heartbeat(&client, &p).await
    }

    async fn run_finish(&self, p: RunFinishParams) -> StoreResult<bool> {
        let results = self.run_finish_many(std::slice::from_ref(&p)).await?;
        Ok(results.first().copied().unwrap_or(false))
    }

    async fn run_finish_many(&self, ps: &[RunFinishParams]) -> StoreResult<Vec<bool>> {
        if ps.is_empty() {
            return Ok(vec![]);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut notices = Notices::default();
        let held = batch::finish_many(&tx, ps, &mut notices).await?;
        self.commit(tx, notices).await?;
        Ok(held)
    }

    async fn run_rescue(&self, p: RunRescueParams) -> StoreResult<RescueReport> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut notices = Notices::default();
        let report = crate::rescue::rescue(&tx, &p, &mut notices).await?;
        self.commit(tx, notices).await?;
        Ok(report)
    }

    async fn run_cancel(&self, p: RunCancelParams) -> StoreResult<Run> {
        self.run_cancel_tx(p).await
    }

    async fn workflow_start(&self, p: WorkflowStartParams) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut notices = Notices::default();
        if !crate::workflow::start(&tx, &p, &mut notices).await? {
            return Ok(false);
        }
        self.commit(tx, notices).await?;
        Ok(true)
    }

    async fn run_steps(&self, p: RunStepsParams) -> StoreResult<Vec<Run>> {
        let client = self.client().await?;
        crate::workflow::steps(&client, p.run_id).await
    }

    async fn workflow_control(&self, p: WorkflowControlParams) -> StoreResult<Run> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut notices = Notices::default();
        let run = crate::control::control(&tx, &p, &mut notices).await?;
        self.commit(tx, notices).await?;
        Ok(run)
    }

    async fn run_step_results(
        &self,
        p: RunStepResultsParams,
    ) -> StoreResult<Vec<(String, Option<String>)>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT step, result FROM runs WHERE parent_id = $1 AND step = ANY($2::text[])",
            &[&p.run_id, &p.steps],
        )
        .await?;
        rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))).collect()
    }

    async fn run_document(&self, p: RunStepsParams) -> StoreResult<Option<JobSpec>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT spec FROM runs WHERE id = $1 AND spec IS NOT NULL",
            &[&p.run_id],
        )
        .await?;
        row.map(|r| kairos_store::workflow::parse_spec(col(&r, 0)?))
            .transpose()
    }

    async fn run_cancel_requested(&self, ids: &[RunId]) -> StoreResult<Vec<RunId>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let client = self.client().await?;
        query(
            &client,
            "SELECT id FROM runs WHERE id = ANY($1::bigint[]) AND state = 'running' \
             AND cancel_requested ORDER BY id",
            &[&ids],
        )
        .await?
        .iter()
        .map(|row| col(row, 0))
        .collect()
    }

    async fn run_get(&self, p: RunGetParams) -> StoreResult<Option<Run>> {
        let client = self.client().await?;
        fetch_run(&client, p.id).await
    }

    async fn run_list(&self, p: RunListParams) -> StoreResult<Vec<Run>> {
        let limit = if p.limit == 0 {
            100
        } else {
            i64::from(p.limit)
        };
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "{RUN_SELECT} WHERE r.parent_id IS NULL AND ($1::bigint IS NULL OR r.job_id = $1) \
                 AND ($2::text[] IS NULL OR j.namespace = ANY($2)) \
                 AND ($3::text IS NULL OR r.state = $3) \
                 AND ($4::bigint IS NULL OR r.id < $4) ORDER BY r.id DESC LIMIT $5"
            ),
            &[
                &p.job_id,
                &p.namespaces,
                &p.state.map(|s| s.as_str()),
                &p.before_id,
                &limit,
            ],
        )
        .await?
        .iter()
        .map(rows::run)
        .collect()
    }

    async fn run_recent(&self, p: RunRecentParams) -> StoreResult<Vec<RecentRun>> {
        let per_job = i64::from(p.per_job);
        let client = self.client().await?;
        query(
            &client,
            "SELECT r.job_id, r.id, r.state, r.scheduled_for, r.started_at, r.finished_at \
             FROM jobs j CROSS JOIN LATERAL (SELECT x.job_id, x.id, x.state, x.scheduled_for, \
               x.started_at, x.finished_at FROM runs x \
               WHERE x.job_id = j.id AND x.parent_id IS NULL AND x.finished_at IS NOT NULL \
               AND x.state <> 'skipped' \
               ORDER BY x.id DESC LIMIT $3) r \
             WHERE ($1::bigint IS NULL OR j.id = $1) \
             AND ($2::text[] IS NULL OR j.namespace = ANY($2)) \
             ORDER BY j.id, r.id DESC",
            &[&p.job_id, &p.namespaces, &per_job],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(RecentRun {
                job_id: rows::col(row, 0)?,
                run_id: rows::col(row, 1)?,
                state: rows::col::<&str>(row, 2)?
                    .parse()
                    .map_err(StoreError::Internal)?,
                scheduled_for: rows::col(row, 3)?,
                started_at: rows::col(row, 4)?,
                finished_at: rows::col(row, 5)?,
            })
        })
        .collect()
    }

    async fn run_active_brief(&self, p: RunActiveBriefParams) -> StoreResult<Vec<ActiveRun>> {
        let client = self.client().await?;
        query(
            &client,
            "SELECT id, state, origin, scheduled_for, started_at FROM runs \
             WHERE job_id = $1 AND parent_id IS NULL \
             AND (state = 'scheduled' OR state = 'queued' OR state = 'running') \
             ORDER BY scheduled_for, id LIMIT $2",
            &[&p.job_id, &i64::from(p.limit)],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(ActiveRun {
                run_id: rows::col(row, 0)?,
                state: rows::col::<&str>(row, 1)?
                    .parse()
                    .map_err(StoreError::Internal)?,
                origin: rows::col::<&str>(row, 2)?
                    .parse()
                    .map_err(StoreError::Internal)?,
                scheduled_for: rows::col(row, 3)?,
                started_at: rows::col(row, 4)?,
            })
        })
        .collect()
    }

    async fn attempt_list(&self, p: AttemptListParams) -> StoreResult<Vec<Attempt>> {
        let client = self.client().await?;
        query(
            &client,
            &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1 ORDER BY attempt"),
            &[&p.run_id],
        )
        .await?
        .iter()
        .map(rows::attempt)
        .collect()
    }

    async fn run_count_by_state(&self) -> StoreResult<Vec<(RunState, u64)>> {
        let client = self.client().await?;
        query(
            &client,
            "SELECT state, count(*) FROM runs GROUP BY state",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let state = col::<&str>(r, 0)?.parse().map_err(StoreError::Internal)?;
            Ok((state, col::<i64>(r, 1)?.unsigned_abs()))
        })
        .collect()
    }

    async fn run_totals(&self) -> StoreResult<RunTotals> {
        let client = self.client().await?;
        // Each count reads one partial index (queued runs, leases).
        let row = query(
            &client,
            "SELECT (SELECT count(*) FROM runs WHERE state = 'queued'), \
             (SELECT count(*) FROM runs WHERE state = 'running')",
            &[],
        )
        .await?;
        let row = row
            .first()
            .ok_or_else(|| StoreError::Internal("no row from a count".into()))?;
        Ok(RunTotals {
            queued: col::<i64>(row, 0)?.unsigned_abs(),
            running: col::<i64>(row, 1)?.unsigned_abs(),
        })
    }

    async fn job_import(&self, p: JobImportParams) -> StoreResult<Job> {
        self.job_import_tx(p).await
    }

    async fn run_import(&self, p: RunImportParams) -> StoreResult<u64> {
        self.run_import_tx(p).await
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        query(&client, "SELECT 1", &[]).await?;
        Ok(())
    }

    async fn token_create(&self, p: TokenCreateParams) -> StoreResult<Token> {
        self.token_create_tx(p).await
    }

    async fn token_list(&self, p: TokenListParams) -> StoreResult<Vec<Token>> {
        self.token_list_read(p).await
    }

    async fn token_revoke(&self, p: TokenRevokeParams) -> StoreResult<Token> {
        self.token_revoke_tx(p).await
    }

    async fn token_authenticate(&self, p: TokenAuthenticateParams) -> StoreResult<Option<Token>> {
        self.token_authenticate_read(p).await
    }

    async fn alert_enqueue(&self, p: AlertEnqueueParams) -> StoreResult<Vec<Option<i64>>> {
        self.alert_enqueue_tx(p).await
    }

    async fn alert_claim(&self, p: AlertClaimParams) -> StoreResult<Vec<AlertDelivery>> {
        self.alert_claim_write(p).await
    }

    async fn alert_finish(&self, p: AlertFinishParams) -> StoreResult<bool> {
        self.alert_finish_write(p).await
    }

    async fn alert_list(&self, p: AlertListParams) -> StoreResult<Vec<AlertDelivery>> {
        self.alert_list_read(p).await
    }

    async fn alert_prune(&self, p: AlertPruneParams) -> StoreResult<u64> {
        self.alert_prune_before(p).await
    }

    async fn alert_cursor(&self) -> StoreResult<Option<ActivityCursor>> {
        self.alert_cursor_read().await
    }

    async fn alert_cursor_set(&self, p: AlertCursorParams) -> StoreResult<bool> {
        self.alert_cursor_cas(p).await
    }

    async fn session_create(&self, p: SessionCreateParams) -> StoreResult<bool> {
        self.session_create_tx(p).await
    }

    async fn session_authenticate(&self, p: SessionParams) -> StoreResult<Option<Token>> {
        self.session_authenticate_read(p).await
    }

    async fn session_delete(&self, p: SessionParams) -> StoreResult<bool> {
        self.session_delete_tx(p).await
    }

    async fn audit_list(&self, p: AuditListParams) -> StoreResult<Vec<AuditEntry>> {
        self.audit_list_read(p).await
    }

    async fn activity_append(&self, records: Vec<ActivityRecord>) -> StoreResult<()> {
        self.activity_append_write(records).await
    }

    async fn activity_read(&self, p: ActivityReadParams) -> StoreResult<Vec<ActivityEntry>> {
        self.activity_read_entries(p).await
    }

    async fn activity_head(&self) -> StoreResult<ActivityCursor> {
        self.activity_head_position().await
    }

    async fn activity_contains(&self, cursor: ActivityCursor) -> StoreResult<bool> {
        self.activity_contains_entry(cursor).await
    }

    async fn activity_prune(&self, p: ActivityPruneParams) -> StoreResult<u64> {
        self.activity_prune_before(p).await
    }

    async fn calendar_put(&self, p: CalendarPutParams) -> StoreResult<StoredCalendar> {
        self.calendar_put_tx(p).await
    }

    async fn calendar_get(&self, p: CalendarGetParams) -> StoreResult<Option<StoredCalendar>> {
        self.calendar_get_read(p).await
    }

    async fn calendar_list(&self, p: CalendarListParams) -> StoreResult<Vec<StoredCalendar>> {
        self.calendar_list_read(p).await
    }

    async fn calendar_jobs(&self, p: CalendarGetParams) -> StoreResult<Vec<Job>> {
        self.calendar_jobs_read(p).await
    }

    async fn calendar_delete(&self, p: CalendarDeleteParams) -> StoreResult<()> {
        self.calendar_delete_tx(p).await
    }

    async fn leader_elect(&self, p: LeaderElectParams) -> StoreResult<Leader> {
        self.leader_elect_write(p).await
    }

    async fn leader_resign(&self, p: LeaderResignParams) -> StoreResult<bool> {
        self.leader_resign_write(p).await
    }

    async fn leader_get(&self) -> StoreResult<Option<Leader>> {
        self.leader_get_read().await
    }

    async fn node_heartbeat(&self, p: NodeHeartbeatParams) -> StoreResult<()> {
        self.node_heartbeat_write(p).await
    }

    async fn node_list(&self) -> StoreResult<Vec<NodeInfo>> {
        self.node_list_read().await
    }

    async fn node_expire(&self, p: NodeExpireParams) -> StoreResult<Vec<String>> {
        self.node_expire_write(p).await
    }

    async fn node_leave(&self, p: NodeLeaveParams) -> StoreResult<()> {
        self.node_leave_write(p).await
    }

    /// Every node's changes to this schema, this node's included (see [`crate::changes`]).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<kairos_store::Change>> {
        Some(self.subscribe())
    }

    async fn clock_now(&self) -> StoreResult<Option<ClockReading>> {
        // The checkout and the statement's preparation are not timed: only its round trip.
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT clock_timestamp()")
            .await
            .map_err(crate::rows::pg_error)?;
        let sent = std::time::Instant::now();
        let row = client
            .query_one(&statement, &[])
            .await
            .map_err(crate::rows::pg_error)?;
        let round_trip = sent.elapsed();
        Ok(Some(ClockReading {
            at: crate::rows::col(&row, 0)?,
            round_trip,
        }))
    }
}
