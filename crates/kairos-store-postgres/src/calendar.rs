//! Calendars: the documents, the `job_calendars` index kept with each job write, the fence a
//! job write planned with calendars carries, and a calendar change that re-plans its jobs.
//!
//! Lock order: a calendar's row before any job row. A job write share-locks the calendars it
//! names first ([`check`]); a calendar change locks the calendar (its update), then its jobs in
//! id order, then their runs.

use deadpool_postgres::GenericClient;
use kairos_core::JobSpec;
use kairos_core::auth::AuditAction;
use kairos_core::calendar::CalendarSpec;
use kairos_core::run::JobId;
use kairos_store::*;
use tokio_postgres::Row;

use crate::auth::{Change, audit};
use crate::changes::Notices;
use crate::connect::PostgresStore;
use crate::rows::{self, col, execute, pg_error, query, query_opt, query_opt_unique};

const CALENDAR_SELECT: &str = "SELECT id, spec, version, created_at, updated_at FROM calendars";

fn calendar(row: &Row) -> StoreResult<StoredCalendar> {
    let spec: &str = col(row, 1)?;
    let spec: CalendarSpec = serde_json::from_str(spec)
        .map_err(|e| StoreError::Internal(format!("stored calendar does not parse: {e}")))?;
    Ok(StoredCalendar {
        id: col(row, 0)?,
        spec,
        version: col(row, 2)?,
        created_at: col(row, 3)?,
        updated_at: col(row, 4)?,
    })
}

async fn fetch(
    c: &impl GenericClient,
    namespace: &str,
    name: &str,
    lock: bool,
) -> StoreResult<Option<StoredCalendar>> {
    let sql = if lock {
        format!("{CALENDAR_SELECT} WHERE namespace = $1 AND name = $2 FOR UPDATE")
    } else {
        format!("{CALENDAR_SELECT} WHERE namespace = $1 AND name = $2")
    };
    query_opt(c, &sql, &[&namespace, &name])
        .await?
        .as_ref()
        .map(calendar)
        .transpose()
}

async fn users(c: &impl GenericClient, namespace: &str, name: &str) -> StoreResult<Vec<Job>> {
    query(
        c,
        &format!(
            "{} WHERE j.id IN (SELECT job_id FROM job_calendars \
             WHERE namespace = $1 AND calendar = $2) ORDER BY j.name",
            rows::JOB_SELECT
        ),
        &[&namespace, &name],
    )
    .await?
    .iter()
    .map(rows::job)
    .collect()
}

/// The fence of a job write, taken before its job row: every calendar the document names
/// exists in its namespace at the version the write was planned with, and stays
/// so until the write commits (share-locked). Otherwise `CalendarChanged`.
pub(crate) async fn check(
    c: &impl GenericClient,
    spec: &JobSpec,
    planned: &[CalendarVersion],
) -> StoreResult<()> {
    let names = kairos_core::calendar::used_by(spec);
    if names.is_empty() {
        return Ok(());
    }
    let found = query(
        c,
        "SELECT name, version FROM calendars WHERE namespace = $1 AND name = ANY($2) \
         ORDER BY name FOR SHARE",
        &[&spec.namespace, &names],
    )
    .await?;
    let found: Vec<(String, i64)> = found
        .iter()
        .map(|r| Ok((col::<String>(r, 0)?, col::<i64>(r, 1)?)))
        .collect::<StoreResult<_>>()?;
    kairos_store::calendar::fence(spec, &found, planned)
}

/// Replaces the job's `job_calendars` rows with the calendars of its document.
pub(crate) async fn set(c: &impl GenericClient, job_id: JobId, spec: &JobSpec) -> StoreResult<()> {
    execute(c, "DELETE FROM job_calendars WHERE job_id = $1", &[&job_id]).await?;
    let names = kairos_core::calendar::used_by(spec);
    if names.is_empty() {
        return Ok(());
    }
    execute(
        c,
        "INSERT INTO job_calendars (job_id, namespace, calendar) \
         SELECT $1, $2, unnest($3::text[])",
        &[&job_id, &spec.namespace, &names],
    )
    .await?;
    Ok(())
}

async fn version_conflict(
    c: &impl GenericClient,
    ns: &str,
    name: &str,
    expected: i64,
) -> StoreError {
    match fetch(c, ns, name, false).await {
        Ok(Some(cal)) => StoreError::CalendarVersionConflict {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            expected,
            actual: cal.version,
        },
        Ok(None) => StoreError::CalendarNotFound {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        },
        Err(e) => e,
    }
}

impl PostgresStore {
    pub(crate) async fn calendar_put_tx(
        &self,
        p: CalendarPutParams,
    ) -> StoreResult<StoredCalendar> {
        let (ns, name) = (p.spec.namespace.as_str(), p.spec.name.as_str());
        let spec =
            serde_json::to_string(&p.spec).map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // The calendar first: its row lock orders this write before or after every job write
        // that names it.
        let row = match p.expected_version {
            None => query_opt_unique(
                &tx,
                "INSERT INTO calendars (namespace, name, spec, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, 1, coalesce($4::timestamptz, now()), \
                 coalesce($4::timestamptz, now())) \
                 RETURNING id, spec, version, created_at, updated_at",
                &[&ns, &name, &spec, &p.now],
            )
            .await?
            .map_err(|_| StoreError::CalendarExists {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })?,
            Some(expected) => {
                query_opt(
                    &tx,
                    "UPDATE calendars SET spec = $1, version = version + 1, \
                     updated_at = coalesce($2::timestamptz, now()) \
                     WHERE namespace = $3 AND name = $4 AND version = $5 \
                     RETURNING id, spec, version, created_at, updated_at",
                    &[&spec, &p.now, &ns, &name, &expected],
                )
                .await?
            }
        };
        let Some(row) = row else {
            let expected = p.expected_version.unwrap_or_default();
            return Err(version_conflict(&tx, ns, name, expected).await);
        };
        let stored = calendar(&row)?;
        let changed = || StoreError::CalendarChanged {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        };
        // Its jobs, locked in id order: exactly those planned, each at its planned version.
        let users = query(
            &tx,
            "SELECT j.id, j.name, j.version FROM jobs j WHERE j.id IN (SELECT job_id \
             FROM job_calendars WHERE namespace = $1 AND calendar = $2) ORDER BY j.id FOR UPDATE",
            &[&ns, &name],
        )
        .await?;
        let mut planned: Vec<JobId> = p.replans.iter().map(|r| r.job_id).collect();
        planned.sort_unstable();
        let found: Vec<JobId> = users
            .iter()
            .map(|r| col(r, 0))
            .collect::<StoreResult<_>>()?;
        if planned != found {
            return Err(changed());
        }
        let mut replans = p.replans.clone();
        replans.sort_by_key(|r| r.job_id);
        // The runs the new plans decide again, of every job at once.
        let moved: Vec<(JobId, Option<jiff::Timestamp>)> = replans
            .iter()
            .filter(|r| matches!(r.next_fire_at, NextFire::Set(_)))
            .map(|r| (r.job_id, Some(r.after)))
            .collect();
        if !moved.is_empty() {
            crate::jobs::withdraw_early_runs_after(&tx, &moved, &p.now).await?;
        }
        for r in &replans {
            let (keep, next) = match r.next_fire_at {
                NextFire::Keep => (true, None),
                NextFire::Set(next) => (false, next),
            };
            let applied = execute(
                &tx,
                // A re-plan is not a change of the job's document: `updated_at` stays (it is
                // when a dead-man switch starts counting, among others).
                "UPDATE jobs SET next_fire_at = CASE WHEN $1 THEN next_fire_at ELSE $2 END, \
                 version = version + 1 WHERE id = $3 AND version = $4",
                &[&keep, &next, &r.job_id, &r.expected_version],
            )
            .await?;
            if applied != 1 {
                return Err(changed());
            }
            let job: &str = users
                .iter()
                .find(|u| u.get::<_, JobId>(0) == r.job_id)
                .map_or("", |u| u.get(1));
            let change = Change::job(&p.actor, AuditAction::JobReplan, ns, job)
                .versions(Some(r.expected_version), Some(r.expected_version + 1))
                .detail(format!("calendar `{name}` changed"));
            audit(&tx, change, &p.now).await?;
        }
        let action = if p.expected_version.is_none() {
            AuditAction::CalendarCreate
        } else {
            AuditAction::CalendarUpdate
        };
        let change = Change::calendar(&p.actor, action, ns, name)
            .versions(p.expected_version, Some(stored.version));
        audit(&tx, change, &p.now).await?;
        let notices = if replans.is_empty() {
            Notices::default()
        } else {
            Notices::of(kairos_store::Change::Jobs)
        };
        self.commit(tx, notices).await?;
        Ok(stored)
    }

    pub(crate) async fn calendar_get_read(
        &self,
        p: CalendarGetParams,
    ) -> StoreResult<Option<StoredCalendar>> {
        let client = self.client().await?;
        fetch(&client, &p.namespace, &p.name, false).await
    }

    pub(crate) async fn calendar_list_read(
        &self,
        p: CalendarListParams,
    ) -> StoreResult<Vec<StoredCalendar>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "{CALENDAR_SELECT} WHERE ($1::text[] IS NULL OR namespace = ANY($1)) \
                 AND ($2::text[] IS NULL OR name = ANY($2)) ORDER BY namespace, name"
            ),
            &[&p.namespaces, &p.names],
        )
        .await?
        .iter()
        .map(calendar)
        .collect()
    }

    pub(crate) async fn calendar_jobs_read(&self, p: CalendarGetParams) -> StoreResult<Vec<Job>> {
        let client = self.client().await?;
        users(&client, &p.namespace, &p.name).await
    }

    pub(crate) async fn calendar_delete_tx(&self, p: CalendarDeleteParams) -> StoreResult<()> {
        let (ns, name) = (p.namespace.as_str(), p.name.as_str());
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Locked first: a job write that names it waits, then finds it gone.
        let current =
            fetch(&tx, ns, name, true)
                .await?
                .ok_or_else(|| StoreError::CalendarNotFound {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })?;
        if let Some(expected) = p.expected_version
            && expected != current.version
        {
            return Err(StoreError::CalendarVersionConflict {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                expected,
                actual: current.version,
            });
        }
        let jobs: Vec<String> = users(&tx, ns, name)
            .await?
            .into_iter()
            .map(|j| j.spec.name)
            .collect();
        if !jobs.is_empty() {
            return Err(StoreError::CalendarInUse {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                jobs,
            });
        }
        execute(
            &tx,
            "DELETE FROM calendars WHERE id = $1 AND version = $2",
            &[&current.id, &current.version],
        )
        .await?;
        let change = Change::calendar(&p.actor, AuditAction::CalendarDelete, ns, name)
            .versions(Some(current.version), None);
        audit(&tx, change, &p.now).await?;
        self.commit(tx, Notices::default()).await
    }
}
