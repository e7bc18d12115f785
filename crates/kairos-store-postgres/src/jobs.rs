//! Job writes: create, update, delete, pause and resume. Each locks the job's row first
//! (`FOR UPDATE`), so the version it checks cannot change under it, fences its write by that
//! version as well, and writes its audit entry in the same transaction.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use kairos_core::auth::AuditAction;
use kairos_core::run::JobId;
use kairos_store::*;

use crate::auth::{Change, audit};
use crate::changes::Notices;
use crate::connect::PostgresStore;
use crate::rows::{
    self, JOB_SELECT, execute, job_columns, pg_error, query, query_opt, query_opt_unique,
};

fn spec_json(spec: &kairos_core::JobSpec) -> StoreResult<String> {
    serde_json::to_string(spec).map_err(|e| StoreError::Internal(e.to_string()))
}

fn not_found(namespace: &str, name: &str) -> StoreError {
    StoreError::JobNotFound {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn version_conflict(namespace: &str, name: &str, expected: i64, actual: i64) -> StoreError {
    StoreError::VersionConflict {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        expected,
        actual,
    }
}

/// A job write that violated the `(namespace, name)` constraint: the name is taken.
fn job_exists(spec: &kairos_core::JobSpec) -> StoreError {
    StoreError::JobExists {
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
    }
}

/// Reads the job and locks its row for the rest of the transaction.
async fn lock_job(c: &impl GenericClient, namespace: &str, name: &str) -> StoreResult<Job> {
    let row = query_opt(
        c,
        &format!("{JOB_SELECT} WHERE j.namespace = $1 AND j.name = $2 FOR UPDATE"),
        &[&namespace, &name],
    )
    .await?
    .ok_or_else(|| not_found(namespace, name))?;
    rows::job(&row)
}

/// Takes back the runs created ahead of their due time (look-ahead) that have not started: a
/// pause, or a new schedule, decides those due times again. They are deleted, as if never
/// fired, so that the same due time can be fired again: queued ones, and ones a worker already
/// claimed and waits to start at their `run_at` (its lease is gone, so the worker drops them
/// at its next heartbeat and the store refuses their results). Only runs created before their
/// due time qualify, so a clock stepped backwards never takes back a run fired when due. The
/// caller holds the job's row lock; the runs are locked in id order.
async fn withdraw_early_runs(
    c: &impl GenericClient,
    job_id: JobId,
    now: &Option<Timestamp>,
) -> StoreResult<()> {
    withdraw_early_runs_after(c, &[(job_id, None)], now).await
}

/// Takes back the runs created ahead of their due time that have not started, of each job for
/// the due times after its instant (`None`: now), as `kairos_core::lease::withdrawable` decides,
/// on the database's clock unless `now` is given: a pause or a new schedule decides those due
/// times again. The candidates of every job are locked in id order (as a heartbeat locks a
/// worker's runs across jobs), then the ones decided are deleted.
pub(crate) async fn withdraw_early_runs_after(
    c: &impl GenericClient,
    jobs: &[(JobId, Option<Timestamp>)],
    now: &Option<Timestamp>,
) -> StoreResult<()> {
    let (job_ids, afters): (Vec<JobId>, Vec<Option<Timestamp>>) = jobs.iter().copied().unzip();
    let rows = query(
        c,
        "SELECT r.id, r.scheduled_for, r.created_at, r.state = 'queued', r.attempt, \
           r.spec IS NOT NULL, r.started_at, r.execution = 'at_most_once', r.begun, \
           coalesce(w.after, $3::timestamptz, now()), coalesce($3::timestamptz, now()) \
         FROM runs r JOIN unnest($1::bigint[], $2::timestamptz[]) AS w (job_id, after) \
           ON r.job_id = w.job_id \
         WHERE r.parent_id IS NULL AND r.origin = 'schedule' \
           AND r.scheduled_for > coalesce(w.after, $3::timestamptz, now()) \
           AND r.state IN ('queued', 'running') \
         ORDER BY r.id FOR UPDATE OF r",
        &[&job_ids, &afters, now],
    )
    .await?;
    let mut withdrawn: Vec<i64> = Vec::new();
    for row in &rows {
        let run = kairos_core::lease::EarlyRun {
            scheduled_for: rows::col(row, 1)?,
            created_at: rows::col(row, 2)?,
            queued: rows::col(row, 3)?,
            attempt: rows::col::<i32>(row, 4)?.max(0).unsigned_abs(),
            workflow: rows::col(row, 5)?,
            started_at: rows::col(row, 6)?,
            execution: if rows::col(row, 7)? {
                kairos_core::spec::ExecutionMode::AtMostOnce
            } else {
                kairos_core::spec::ExecutionMode::AtLeastOnce
            },
            begun: rows::col(row, 8)?,
        };
        if kairos_core::lease::withdrawable(&run, rows::col(row, 9)?, rows::col(row, 10)?) {
            withdrawn.push(rows::col(row, 0)?);
        }
    }
    if !withdrawn.is_empty() {
        // Locked above: as decided.
        execute(c, "DELETE FROM runs WHERE id = ANY($1)", &[&withdrawn]).await?;
    }
    Ok(())
}

impl PostgresStore {
    pub(crate) async fn job_create_tx(&self, p: JobCreateParams) -> StoreResult<Job> {
        let spec = spec_json(&p.spec)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        crate::calendar::check(&tx, &p.spec, &p.calendars).await?;
        crate::dependency::lock(&tx, self.schema(), &p.spec).await?;
        crate::dependency::check(&tx, &p.spec).await?;
        let row = query_opt_unique(
            &tx,
            concat!(
                "INSERT INTO jobs AS j (namespace, name, spec, version, paused, next_fire_at, \
                 created_at, updated_at) VALUES ($1, $2, $3, 1, $4, $5, \
                 coalesce($6::timestamptz, now()), coalesce($6::timestamptz, now())) RETURNING ",
                job_columns!()
            ),
            &[
                &p.spec.namespace,
                &p.spec.name,
                &spec,
                &p.spec.paused,
                &p.next_fire_at,
                &p.now,
            ],
        )
        .await?
        .map_err(|_| job_exists(&p.spec))?
        .ok_or_else(|| StoreError::Internal("created job vanished".into()))?;
        let job = rows::job(&row)?;
        crate::event::set_topics(&tx, job.id, &p.spec).await?;
        crate::dependency::set(&tx, job.id, &p.spec).await?;
        crate::calendar::set(&tx, job.id, &p.spec).await?;
        let change = Change::job(
            &p.actor,
            AuditAction::JobCreate,
            job.namespace(),
            job.name(),
        );
        audit(&tx, change.versions(None, Some(job.version)), &p.now).await?;
        self.commit(tx, Notices::of(kairos_store::Change::Jobs))
            .await?;
        Ok(job)
    }

    pub(crate) async fn job_update_tx(&self, p: JobUpdateParams) -> StoreResult<Job> {
        let spec = spec_json(&p.spec)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        crate::calendar::check(&tx, &p.spec, &p.calendars).await?;
        crate::dependency::lock(&tx, self.schema(), &p.spec).await?;
        crate::dependency::lock_rows(&tx, &p.namespace, &p.name, &p.spec).await?;
        let current = lock_job(&tx, &p.namespace, &p.name).await?;
        if current.version != p.expected_version {
            return Err(version_conflict(
                &p.namespace,
                &p.name,
                p.expected_version,
                current.version,
            ));
        }
        let (keep, next) = match p.next_fire_at {
            NextFire::Keep => (true, None),
            NextFire::Set(next) => (false, next),
        };
        if (p.spec.namespace.as_str(), p.spec.name.as_str())
            != (p.namespace.as_str(), p.name.as_str())
        {
            // Renamed: the jobs that run after it would lose it.
            crate::dependency::refuse_if_depended_on(&tx, current.id, &p.namespace, &p.name)
                .await?;
        }
        crate::dependency::check(&tx, &p.spec).await?;
        let moved = !keep && next != current.next_fire_at;
        if kairos_core::policy::reschedules(&current.spec, &p.spec, moved) {
            withdraw_early_runs(&tx, current.id, &p.now).await?;
        }
        // `Keep` keeps what is stored when the write happens (the row is locked; a fire that
        // committed before the lock was taken is kept).
        let row = query_opt_unique(
            &tx,
            concat!(
                "UPDATE jobs AS j SET namespace = $1, name = $2, spec = $3, paused = $4, \
                 next_fire_at = CASE WHEN $9 THEN j.next_fire_at ELSE $5 END, \
                 version = version + 1, updated_at = coalesce($6::timestamptz, now()) \
                 WHERE id = $7 AND version = $8 RETURNING ",
                job_columns!()
            ),
            &[
                &p.spec.namespace,
                &p.spec.name,
                &spec,
                &p.spec.paused,
                &next,
                &p.now,
                &current.id,
                &p.expected_version,
                &keep,
            ],
        )
        .await?
        .map_err(|_| job_exists(&p.spec))?
        // The row is locked: the version fence cannot fail, but a write never goes unfenced.
        .ok_or_else(|| StoreError::Internal("locked job changed".into()))?;
        let job = rows::job(&row)?;
        crate::event::set_topics(&tx, job.id, &p.spec).await?;
        crate::dependency::set(&tx, job.id, &p.spec).await?;
        crate::calendar::set(&tx, job.id, &p.spec).await?;
        let change = Change::job(&p.actor, AuditAction::JobUpdate, &p.namespace, &p.name);
        let change = change.versions(Some(current.version), Some(job.version));
        audit(&tx, change, &p.now).await?;
        self.commit(tx, Notices::of(kairos_store::Change::Jobs))
            .await?;
        Ok(job)
    }

    pub(crate) async fn job_delete_tx(&self, p: JobDeleteParams) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let current = lock_job(&tx, &p.namespace, &p.name).await?;
        if let Some(expected) = p.expected_version
            && expected != current.version
        {
            return Err(version_conflict(
                &p.namespace,
                &p.name,
                expected,
                current.version,
            ));
        }
        if !p.force {
            crate::dependency::refuse_if_depended_on(&tx, current.id, &p.namespace, &p.name)
                .await?;
        }
        // The cascade deletes the job's runs in no particular order; locking them in id order
        // first keeps it from waiting in a circle with a batch that holds some of them.
        query(
            &tx,
            "SELECT count(*) FROM (SELECT 1 FROM runs WHERE job_id = $1 ORDER BY id FOR UPDATE) s",
            &[&current.id],
        )
        .await?;
        let deleted = execute(
            &tx,
            "DELETE FROM jobs WHERE id = $1 AND version = $2",
            &[&current.id, &current.version],
        )
        .await?;
        if deleted != 1 {
            return Err(StoreError::Internal("locked job changed".into()));
        }
        let change = Change::job(&p.actor, AuditAction::JobDelete, &p.namespace, &p.name);
        audit(&tx, change.versions(Some(current.version), None), &p.now).await?;
        self.commit(tx, Notices::of(kairos_store::Change::Jobs))
            .await
    }

    pub(crate) async fn job_set_paused_tx(&self, p: JobSetPausedParams) -> StoreResult<Job> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut current = lock_job(&tx, &p.namespace, &p.name).await?;
        if let Some(expected) = p.expected_version
            && expected != current.version
        {
            return Err(version_conflict(
                &p.namespace,
                &p.name,
                expected,
                current.version,
            ));
        }
        if current.spec.paused == p.paused {
            return Ok(current);
        }
        current.spec.paused = p.paused;
        let spec = spec_json(&current.spec)?;
        // Pausing keeps next_fire_at (it is recomputed on resume, so a resume never replays
        // the pause).
        let next = if p.paused {
            withdraw_early_runs(&tx, current.id, &p.now).await?;
            current.next_fire_at
        } else {
            p.next_fire_at
        };
        let row = query_opt(
            &tx,
            concat!(
                "UPDATE jobs AS j SET paused = $1, spec = $2, next_fire_at = $3, \
                 version = version + 1, updated_at = coalesce($4::timestamptz, now()) \
                 WHERE id = $5 AND version = $6 RETURNING ",
                job_columns!()
            ),
            &[
                &p.paused,
                &spec,
                &next,
                &p.now,
                &current.id,
                &current.version,
            ],
        )
        .await?
        .ok_or_else(|| StoreError::Internal("locked job changed".into()))?;
        let job = rows::job(&row)?;
        let action = if p.paused {
            AuditAction::JobPause
        } else {
            AuditAction::JobResume
        };
        let change = Change::job(&p.actor, action, &p.namespace, &p.name);
        let change = change.versions(Some(current.version), Some(job.version));
        audit(&tx, change, &p.now).await?;
        self.commit(tx, Notices::of(kairos_store::Change::Jobs))
            .await?;
        Ok(job)
    }
}
