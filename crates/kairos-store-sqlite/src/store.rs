//! `Store` for SQLite.

use jiff::Timestamp;
use kairos_core::run::{JobId, RunId, RunState};
use kairos_store::*;
use sqlx::Row;

use crate::batch;
use crate::open::SqliteStore;
use crate::rows::{self, JOB_COLUMNS, RUN_SELECT, instant, internal, micros};

/// Attempts a run may lose to expired leases beyond its `max_attempts` before it is marked
/// `lost` (see `Store::run_rescue`).
const RESCUE_EXTRA_ATTEMPTS: i64 = 2;

/// The store's clock: in production the node's wall clock (one node shares one file).
#[allow(
    clippy::disallowed_methods,
    reason = "the store's own clock rules when no `now` is given"
)]
fn now_or(now: Option<Timestamp>) -> Timestamp {
    now.unwrap_or_else(Timestamp::now)
}

fn spec_json(spec: &kairos_core::JobSpec) -> StoreResult<String> {
    serde_json::to_string(spec).map_err(|e| StoreError::Internal(e.to_string()))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl SqliteStore {
    async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(internal)
    }

    async fn fetch_job<'e, E>(exec: E, namespace: &str, name: &str) -> StoreResult<Option<Job>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE namespace = ? AND name = ?");
        let row = sqlx::query(&sql)
            .bind(namespace)
            .bind(name)
            .fetch_optional(exec)
            .await
            .map_err(internal)?;
        row.as_ref().map(rows::job).transpose()
    }

    /// Ends a job insert or update: a taken name is `JobExists`; otherwise the job is read back
    /// in the same transaction and committed.
    async fn finish_job_write(
        mut tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        result: Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>,
        spec: &kairos_core::JobSpec,
    ) -> StoreResult<Job> {
        match result {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::JobExists {
                    namespace: spec.namespace.clone(),
                    name: spec.name.clone(),
                });
            }
            other => {
                other.map_err(internal)?;
            }
        }
        let job = Self::fetch_job(&mut *tx, &spec.namespace, &spec.name)
            .await?
            .ok_or_else(|| StoreError::Internal("written job vanished".into()))?;
        tx.commit().await.map_err(internal)?;
        Ok(job)
    }

    async fn fetch_run<'e, E>(exec: E, id: RunId) -> StoreResult<Option<Run>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    {
        let sql = format!("{RUN_SELECT} WHERE r.id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(exec)
            .await
            .map_err(internal)?;
        row.as_ref().map(rows::run).transpose()
    }

    async fn insert_run(
        tx: &mut sqlx::SqliteConnection,
        job_id: JobId,
        run: &RunInsert,
        now: Timestamp,
    ) -> StoreResult<Option<RunId>> {
        let (state, reason, finished_at) = match run.skip {
            Some(reason) => (RunState::Skipped, Some(reason.as_str()), Some(micros(now))),
            None => (RunState::Queued, None, None),
        };
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
             execution, exclusive, reason, created_at, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (job_id, scheduled_for) DO NOTHING RETURNING id",
        )
        .bind(job_id)
        .bind(micros(run.scheduled_for))
        .bind(micros(run.run_at))
        .bind(state.as_str())
        .bind(run.origin.as_str())
        .bind(i64::from(run.max_attempts))
        .bind(rows::execution_str(run.execution))
        .bind(run.exclusive as i64)
        .bind(reason)
        .bind(micros(now))
        .bind(finished_at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(internal)?;
        Ok(id)
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn job_create(&self, p: JobCreateParams) -> StoreResult<Job> {
        let now = micros(now_or(p.now));
        let spec = spec_json(&p.spec)?;
        let mut tx = self.begin().await?;
        let result = sqlx::query(
            "INSERT INTO jobs (namespace, name, spec, version, paused, next_fire_at, created_at, updated_at) \
             VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
        )
        .bind(&p.spec.namespace)
        .bind(&p.spec.name)
        .bind(&spec)
        .bind(p.spec.paused as i64)
        .bind(p.next_fire_at.map(micros))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        Self::finish_job_write(tx, result, &p.spec).await
    }

    async fn job_get(&self, p: JobGetParams) -> StoreResult<Option<Job>> {
        Self::fetch_job(&self.pool, &p.namespace, &p.name).await
    }

    async fn job_get_by_id(&self, p: JobGetByIdParams) -> StoreResult<Option<Job>> {
        let id = p.id;
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(internal)?;
        row.as_ref().map(rows::job).transpose()
    }

    async fn job_list(&self, p: JobListParams) -> StoreResult<Vec<Job>> {
        let limit = if p.limit == 0 {
            i64::MAX
        } else {
            i64::from(p.limit)
        };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR namespace = ?1) \
             ORDER BY namespace, name LIMIT ?2"
        );
        let rows = sqlx::query(&sql)
            .bind(p.namespace)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(internal)?;
        rows.iter().map(rows::job).collect()
    }

    async fn job_update(&self, p: JobUpdateParams) -> StoreResult<Job> {
        let now = micros(now_or(p.now));
        let spec = spec_json(&p.spec)?;
        let mut tx = self.begin().await?;
        let current = Self::fetch_job(&mut *tx, &p.namespace, &p.name)
            .await?
            .ok_or_else(|| StoreError::JobNotFound {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })?;
        if current.version != p.expected_version {
            return Err(StoreError::VersionConflict {
                namespace: p.namespace,
                name: p.name,
                expected: p.expected_version,
                actual: current.version,
            });
        }
        let result = sqlx::query(
            "UPDATE jobs SET namespace = ?, name = ?, spec = ?, paused = ?, next_fire_at = ?, \
             version = version + 1, updated_at = ? WHERE id = ? AND version = ?",
        )
        .bind(&p.spec.namespace)
        .bind(&p.spec.name)
        .bind(&spec)
        .bind(p.spec.paused as i64)
        .bind(p.next_fire_at.map(micros))
        .bind(now)
        .bind(current.id)
        .bind(p.expected_version)
        .execute(&mut *tx)
        .await;
        Self::finish_job_write(tx, result, &p.spec).await
    }

    async fn job_delete(&self, p: JobDeleteParams) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let current = Self::fetch_job(&mut *tx, &p.namespace, &p.name)
            .await?
            .ok_or_else(|| StoreError::JobNotFound {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })?;
        if let Some(expected) = p.expected_version
            && expected != current.version
        {
            return Err(StoreError::VersionConflict {
                namespace: p.namespace,
                name: p.name,
                expected,
                actual: current.version,
            });
        }
        sqlx::query("DELETE FROM jobs WHERE id = ?")
            .bind(current.id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(())
    }

    async fn job_set_paused(&self, p: JobSetPausedParams) -> StoreResult<Job> {
        let now = micros(now_or(p.now));
        let mut tx = self.begin().await?;
        let mut current = Self::fetch_job(&mut *tx, &p.namespace, &p.name)
            .await?
            .ok_or_else(|| StoreError::JobNotFound {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })?;
        if current.spec.paused == p.paused {
            return Ok(current);
        }
        current.spec.paused = p.paused;
        let spec = spec_json(&current.spec)?;
        // Pausing keeps next_fire_at (it is recomputed on resume, so a resume never replays).
        let next = if p.paused {
            current.next_fire_at
        } else {
            p.next_fire_at
        };
        sqlx::query(
            "UPDATE jobs SET paused = ?, spec = ?, next_fire_at = ?, version = version + 1, \
             updated_at = ? WHERE id = ?",
        )
        .bind(p.paused as i64)
        .bind(&spec)
        .bind(next.map(micros))
        .bind(now)
        .bind(current.id)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let job = Self::fetch_job(&mut *tx, &p.namespace, &p.name)
            .await?
            .ok_or_else(|| StoreError::Internal("paused job vanished".into()))?;
        tx.commit().await.map_err(internal)?;
        Ok(job)
    }

    async fn job_due(&self, p: JobDueParams) -> StoreResult<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE paused = 0 AND next_fire_at IS NOT NULL \
             AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(micros(p.before))
            .bind(i64::from(p.limit.max(1)))
            .fetch_all(&self.pool)
            .await
            .map_err(internal)?;
        rows.iter().map(rows::job).collect()
    }

    async fn job_next_fire_at(&self) -> StoreResult<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_fire_at) FROM jobs WHERE paused = 0 AND next_fire_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(internal)?;
        next.map(instant).transpose()
    }

    async fn job_fire(&self, p: JobFireParams) -> StoreResult<JobFireResult> {
        let mut results = self.job_fire_many(std::slice::from_ref(&p)).await?;
        Ok(results.pop().unwrap_or_default())
    }

    async fn job_fire_many(&self, ps: &[JobFireParams]) -> StoreResult<Vec<JobFireResult>> {
        let mut tx = self.begin().await?;
        let mut ids: Vec<JobId> = ps.iter().map(|p| p.job_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let results = if ids.len() == ps.len() {
            batch::fire_many(&mut tx, ps, now_or(ps.first().and_then(|p| p.now))).await?
        } else {
            // A job twice in one batch: fire one at a time so the second sees the first's fence.
            let mut out = Vec::with_capacity(ps.len());
            for p in ps {
                out.extend(
                    batch::fire_many(&mut tx, std::slice::from_ref(p), now_or(p.now)).await?,
                );
            }
            out
        };
        tx.commit().await.map_err(internal)?;
        Ok(results)
    }

    async fn run_insert(&self, p: RunInsertParams) -> StoreResult<Run> {
        let now = now_or(p.now);
        let mut tx = self.begin().await?;
        let id = match Self::insert_run(&mut tx, p.job_id, &p.run, now).await? {
            Some(id) => id,
            None => {
                sqlx::query_scalar("SELECT id FROM runs WHERE job_id = ? AND scheduled_for = ?")
                    .bind(p.job_id)
                    .bind(micros(p.run.scheduled_for))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(internal)?
            }
        };
        let run = Self::fetch_run(&mut *tx, id)
            .await?
            .ok_or(StoreError::RunNotFound(id))?;
        tx.commit().await.map_err(internal)?;
        Ok(run)
    }

    async fn run_insert_many(&self, p: RunInsertManyParams) -> StoreResult<Vec<RunId>> {
        let now = now_or(p.now);
        let items: Vec<(JobId, &RunInsert)> = p.runs.iter().map(|r| (p.job_id, r)).collect();
        let mut tx = self.begin().await?;
        let created = batch::insert_runs(&mut tx, &items, now).await?;
        tx.commit().await.map_err(internal)?;
        let mut created: Vec<_> = created.into_iter().map(|(id, _, at)| (at, id)).collect();
        created.sort_unstable();
        Ok(created.into_iter().map(|(_, id)| id).collect())
    }

    async fn run_active_counts(&self, p: RunActiveCountsParams) -> StoreResult<Vec<(JobId, u64)>> {
        let job_ids = &p.job_ids;
        if job_ids.is_empty() {
            return Ok(vec![]);
        }
        let ids =
            serde_json::to_string(job_ids).map_err(|e| StoreError::Internal(e.to_string()))?;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT job_id, COUNT(*) FROM runs WHERE job_id IN (SELECT value FROM json_each(?)) \
             AND state IN ('scheduled', 'queued', 'running') GROUP BY job_id",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(internal)?;
        Ok(rows.into_iter().map(|(id, n)| (id, n as u64)).collect())
    }

    async fn run_next_at(&self) -> StoreResult<Option<Timestamp>> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MIN(run_at) FROM runs WHERE state = 'queued'")
                .fetch_one(&self.pool)
                .await
                .map_err(internal)?;
        next.map(instant).transpose()
    }

    async fn run_active_count(&self, p: RunActiveCountParams) -> StoreResult<u64> {
        let job_id = p.job_id;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE job_id = ? AND state IN ('scheduled', 'queued', 'running')",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await
        .map_err(internal)?;
        Ok(n as u64)
    }

    async fn run_claim(&self, p: RunClaimParams) -> StoreResult<Vec<ClaimedRun>> {
        let now = now_or(p.now);
        let expires = now
            .checked_add(p.lease)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let token = uuid::Uuid::new_v4().to_string();
        let mut tx = self.begin().await?;
        // `exclusive` runs (overlap: queue) start only when no run of their job is running and
        // no earlier exclusive run of the job is waiting.
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE runs SET state = 'running', attempt = attempt + 1, node = ?1, lease_token = ?2, \
             lease_expires_at = ?3, started_at = COALESCE(started_at, ?4), reason = NULL \
             WHERE id IN (SELECT r.id FROM runs r WHERE r.state = 'queued' AND r.run_at <= ?4 \
               AND (r.exclusive = 0 OR ( \
                 NOT EXISTS (SELECT 1 FROM runs x WHERE x.job_id = r.job_id AND x.state = 'running') \
                 AND NOT EXISTS (SELECT 1 FROM runs y WHERE y.job_id = r.job_id AND y.state = 'queued' \
                   AND y.exclusive = 1 AND (y.run_at < r.run_at OR (y.run_at = r.run_at AND y.id < r.id))))) \
               ORDER BY r.run_at, r.id LIMIT ?5) \
             RETURNING id",
        )
        .bind(&p.node)
        .bind(&token)
        .bind(micros(expires))
        .bind(micros(now))
        .bind(i64::from(p.limit.max(1)))
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        // Read the claimed runs, then each distinct job once, in two statements.
        let ids_json =
            serde_json::to_string(&ids).map_err(|e| StoreError::Internal(e.to_string()))?;
        let sql = format!("{RUN_SELECT} WHERE r.id IN (SELECT value FROM json_each(?))");
        let run_rows = sqlx::query(&sql)
            .bind(&ids_json)
            .fetch_all(&mut *tx)
            .await
            .map_err(internal)?;
        let runs = run_rows
            .iter()
            .map(rows::run)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut job_ids: Vec<JobId> = runs.iter().map(|r| r.job_id).collect();
        job_ids.sort_unstable();
        job_ids.dedup();
        let job_ids_json =
            serde_json::to_string(&job_ids).map_err(|e| StoreError::Internal(e.to_string()))?;
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(?))");
        let job_rows = sqlx::query(&sql)
            .bind(&job_ids_json)
            .fetch_all(&mut *tx)
            .await
            .map_err(internal)?;
        let mut jobs = std::collections::HashMap::with_capacity(job_rows.len());
        for row in &job_rows {
            let job = rows::job(row)?;
            jobs.insert(job.id, job);
        }
        let mut claimed = Vec::with_capacity(runs.len());
        for run in runs {
            let job = jobs
                .get(&run.job_id)
                .cloned()
                .ok_or_else(|| StoreError::Internal(format!("job of run {} vanished", run.id)))?;
            claimed.push(ClaimedRun {
                run,
                lease_token: token.clone(),
                job,
            });
        }
        tx.commit().await.map_err(internal)?;
        claimed.sort_by_key(|c| (c.run.run_at, c.run.id));
        Ok(claimed)
    }

    async fn run_heartbeat(&self, p: RunHeartbeatParams) -> StoreResult<Vec<HeartbeatResult>> {
        let now = now_or(p.now);
        let expires = now
            .checked_add(p.lease)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(p.leases.len());
        for (run_id, token) in &p.leases {
            let cancel: Option<i64> = sqlx::query_scalar(
                "UPDATE runs SET lease_expires_at = ? WHERE id = ? AND lease_token = ? \
                 AND state = 'running' RETURNING cancel_requested",
            )
            .bind(micros(expires))
            .bind(run_id)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await
            .map_err(internal)?;
            out.push(HeartbeatResult {
                run_id: *run_id,
                held: cancel.is_some(),
                cancel_requested: cancel.unwrap_or(0) != 0,
            });
        }
        tx.commit().await.map_err(internal)?;
        Ok(out)
    }

    async fn run_finish(&self, p: RunFinishParams) -> StoreResult<bool> {
        let results = self.run_finish_many(std::slice::from_ref(&p)).await?;
        Ok(results.first().copied().unwrap_or(false))
    }

    async fn run_finish_many(&self, ps: &[RunFinishParams]) -> StoreResult<Vec<bool>> {
        let mut tx = self.begin().await?;
        let applied = batch::finish_many(&mut tx, ps, now_or).await?;
        tx.commit().await.map_err(internal)?;
        Ok(applied)
    }

    async fn run_rescue(&self, p: RunRescueParams) -> StoreResult<RescueReport> {
        let now = now_or(p.now);
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT id, attempt, max_attempts, execution, node, started_at, cancel_requested FROM runs \
             WHERE state = 'running' AND (lease_expires_at < ? OR node = ?) \
             ORDER BY lease_expires_at LIMIT ?",
        )
        .bind(micros(now))
        .bind(p.orphaned_node.as_deref())
        .bind(i64::from(p.limit.max(1)))
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        let mut report = RescueReport::default();
        for row in rows {
            let id: i64 = row.try_get("id").map_err(internal)?;
            let attempt: i64 = row.try_get("attempt").map_err(internal)?;
            let execution: String = row.try_get("execution").map_err(internal)?;
            let node: Option<String> = row.try_get("node").map_err(internal)?;
            let started: Option<i64> = row.try_get("started_at").map_err(internal)?;
            let cancel: i64 = row.try_get("cancel_requested").map_err(internal)?;
            sqlx::query(
                "INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, status, error) \
                 VALUES (?, ?, ?, ?, ?, 'lost', 'lease expired: the worker stopped heartbeating') \
                 ON CONFLICT (run_id, attempt) DO NOTHING",
            )
            .bind(id)
            .bind(attempt)
            .bind(node.unwrap_or_default())
            .bind(started.unwrap_or(micros(now)))
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
            let max_attempts: i64 = row.try_get("max_attempts").map_err(internal)?;
            // A run whose worker keeps dying (a task that kills its node, say) is given up after
            // RESCUE_EXTRA_ATTEMPTS attempts beyond its retry budget instead of looping forever.
            let (state, list) = if cancel != 0 {
                ("cancelled", None)
            } else if execution == "at_most_once" || attempt >= max_attempts + RESCUE_EXTRA_ATTEMPTS
            {
                ("lost", Some(&mut report.lost))
            } else {
                ("queued", Some(&mut report.requeued))
            };
            let finished = (state != "queued").then_some(micros(now));
            sqlx::query(
                "UPDATE runs SET state = ?, run_at = CASE WHEN ? = 'queued' THEN ? ELSE run_at END, \
                 finished_at = ?, lease_token = NULL, lease_expires_at = NULL, \
                 reason = 'lease expired' WHERE id = ?",
            )
            .bind(state)
            .bind(state)
            .bind(micros(now))
            .bind(finished)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
            if let Some(list) = list {
                list.push(id);
            }
        }
        tx.commit().await.map_err(internal)?;
        Ok(report)
    }

    async fn run_cancel(&self, p: RunCancelParams) -> StoreResult<Run> {
        let now = now_or(p.now);
        let mut tx = self.begin().await?;
        let run = Self::fetch_run(&mut *tx, p.run_id)
            .await?
            .ok_or(StoreError::RunNotFound(p.run_id))?;
        match run.state {
            RunState::Scheduled | RunState::Queued => {
                sqlx::query(
                    "UPDATE runs SET state = 'cancelled', finished_at = ?, reason = 'cancelled' WHERE id = ?",
                )
                .bind(micros(now))
                .bind(p.run_id)
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
            }
            RunState::Running => {
                sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = ?")
                    .bind(p.run_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(internal)?;
            }
            state => {
                return Err(StoreError::InvalidRunState {
                    run_id: p.run_id,
                    state: state.to_string(),
                    action: "cancelled",
                });
            }
        }
        let run = Self::fetch_run(&mut *tx, p.run_id)
            .await?
            .ok_or(StoreError::RunNotFound(p.run_id))?;
        tx.commit().await.map_err(internal)?;
        Ok(run)
    }

    async fn run_get(&self, p: RunGetParams) -> StoreResult<Option<Run>> {
        let id = p.id;
        Self::fetch_run(&self.pool, id).await
    }

    async fn run_list(&self, p: RunListParams) -> StoreResult<Vec<Run>> {
        let limit = if p.limit == 0 {
            100
        } else {
            i64::from(p.limit)
        };
        let sql = format!(
            "{RUN_SELECT} WHERE (?1 IS NULL OR r.job_id = ?1) AND (?2 IS NULL OR j.namespace = ?2) \
             AND (?3 IS NULL OR r.state = ?3) AND (?4 IS NULL OR r.id < ?4) \
             ORDER BY r.id DESC LIMIT ?5"
        );
        let rows = sqlx::query(&sql)
            .bind(p.job_id)
            .bind(p.namespace)
            .bind(p.state.map(|s| s.as_str()))
            .bind(p.before_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(internal)?;
        rows.iter().map(rows::run).collect()
    }

    async fn attempt_list(&self, p: AttemptListParams) -> StoreResult<Vec<Attempt>> {
        let run_id = p.run_id;
        let rows = sqlx::query("SELECT * FROM attempts WHERE run_id = ? ORDER BY attempt")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await
            .map_err(internal)?;
        rows.iter().map(rows::attempt).collect()
    }

    async fn run_count_by_state(&self) -> StoreResult<Vec<(RunState, u64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(internal)?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state").map_err(internal)?;
                let n: i64 = r.try_get("n").map_err(internal)?;
                Ok((state.parse().map_err(StoreError::Internal)?, n as u64))
            })
            .collect()
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(internal)?;
        Ok(())
    }
}

pub(crate) async fn cancel_active_runs(
    tx: &mut sqlx::SqliteConnection,
    job_id: JobId,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE runs SET state = 'cancelled', finished_at = ?, reason = 'replaced' \
         WHERE job_id = ? AND state IN ('scheduled', 'queued')",
    )
    .bind(micros(now))
    .bind(job_id)
    .execute(&mut *tx)
    .await
    .map_err(internal)?;
    sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE job_id = ? AND state = 'running'")
        .bind(job_id)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
    Ok(())
}
