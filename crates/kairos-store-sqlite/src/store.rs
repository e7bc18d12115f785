//! `Store` for SQLite: each method is one closure run on a connection thread (see [`crate::db`]);
//! the SQL inside is plain synchronous code.

use jiff::Timestamp;
use kairos_core::auth::AuditAction;
use kairos_core::lease::{ExpiredRun, RescueDecision, rescue_decision};
use kairos_core::run::{JobId, RunId, RunState};
use kairos_store::*;
use rusqlite::{Connection, params};

use crate::auth::{self, Change, audit};
use crate::backfill;
use crate::batch;
use crate::cluster;
use crate::open::SqliteStore;
use crate::rows::{
    self, ATTEMPT_COLUMNS, JOB_COLUMNS, RUN_SELECT, all, col, exec, first, instant, internal,
    micros,
};

/// The store's clock: in production the node's wall clock (one node shares one file).
#[allow(
    clippy::disallowed_methods,
    reason = "the store's own clock rules when no `now` is given"
)]
pub(crate) fn now_or(now: Option<Timestamp>) -> Timestamp {
    now.unwrap_or_else(Timestamp::now)
}

fn spec_json(spec: &kairos_core::JobSpec) -> StoreResult<String> {
    serde_json::to_string(spec).map_err(|e| StoreError::Internal(e.to_string()))
}

fn fetch_job(conn: &Connection, namespace: &str, name: &str) -> StoreResult<Option<Job>> {
    first(
        conn,
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE namespace = ?1 AND name = ?2"),
        params![namespace, name],
        rows::job,
    )
}

fn fetch_existing_job(conn: &Connection, namespace: &str, name: &str) -> StoreResult<Job> {
    fetch_job(conn, namespace, name)?.ok_or_else(|| StoreError::JobNotFound {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

pub(crate) fn fetch_run(conn: &Connection, id: RunId) -> StoreResult<Option<Run>> {
    first(
        conn,
        &format!("{RUN_SELECT} WHERE r.id = ?1"),
        [id],
        rows::run,
    )
}

/// Runs a job insert or update: a taken name is `JobExists`; otherwise the job is read back in
/// the same transaction.
fn write_job(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    spec: &kairos_core::JobSpec,
) -> StoreResult<Job> {
    match conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
    {
        Err(e) if rows::is_unique_violation(&e) => {
            return Err(StoreError::JobExists {
                namespace: spec.namespace.clone(),
                name: spec.name.clone(),
            });
        }
        Err(e) => return Err(internal(e)),
        Ok(_) => {}
    }
    let job = fetch_job(conn, &spec.namespace, &spec.name)?
        .ok_or_else(|| StoreError::Internal("written job vanished".into()))?;
    crate::event::set_topics(conn, job.id, spec)?;
    crate::dependency::set(conn, job.id, spec)?;
    crate::calendar::set(conn, job.id, spec)?;
    Ok(job)
}

/// `JobGone` unless the job exists (in this transaction, so a delete cannot come between).
fn ensure_job_exists(conn: &Connection, job_id: JobId) -> StoreResult<()> {
    ensure_job_at(conn, job_id, None)
}

/// `JobGone` unless the job exists, and `VersionConflict` unless it is at `expected` (when
/// given). Called inside the write transaction that depends on it.
fn ensure_job_at(conn: &Connection, job_id: JobId, expected: Option<i64>) -> StoreResult<()> {
    let (actual, namespace, name): (i64, String, String) = first(
        conn,
        "SELECT version, namespace, name FROM jobs WHERE id = ?1",
        [job_id],
        |r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)),
    )?
    .ok_or(StoreError::JobGone(job_id))?;
    check_version(&namespace, &name, expected, actual)
}

fn version_conflict(p_ns: &str, p_name: &str, expected: i64, actual: i64) -> StoreError {
    StoreError::VersionConflict {
        namespace: p_ns.to_owned(),
        name: p_name.to_owned(),
        expected,
        actual,
    }
}

/// Takes back the runs created ahead of their due time (look-ahead) that have not started: a
/// pause, or a new schedule, decides those due times again. They are deleted, as if never
/// fired, so that the same due time can be fired again: queued ones, and ones a worker already
/// claimed and waits to start at their `run_at` (its lease is gone, so the worker drops them
/// at its next heartbeat, which the job service wakes, and the store refuses their results).
/// Only runs created before their due time qualify, so a wall clock stepped backwards never
/// takes back a run that was fired when due, and a workflow run that has started (its steps
/// exist) is never taken back.
pub(crate) fn withdraw_early_runs(conn: &Connection, job_id: JobId, now: i64) -> StoreResult<()> {
    withdraw_early_runs_after(conn, job_id, now, now)
}

/// [`withdraw_early_runs`] of the due times after `after` (which may be before `now`: a
/// re-plan that decides an overdue due time again).
pub(crate) fn withdraw_early_runs_after(
    conn: &Connection,
    job_id: JobId,
    after: i64,
    now: i64,
) -> StoreResult<()> {
    // The candidates; the rule is `kairos_core::lease::withdrawable`.
    let candidates = all(
        conn,
        "SELECT id, scheduled_for, created_at, state = 'queued', attempt, spec IS NOT NULL, \
           started_at, execution = 'at_most_once', begun \
         FROM runs WHERE job_id = ?1 AND parent_id IS NULL AND origin = 'schedule' \
           AND scheduled_for > ?2 AND (state = 'queued' OR state = 'running')",
        params![job_id, after],
        |r| {
            Ok((
                col::<i64>(r, 0)?,
                kairos_core::lease::EarlyRun {
                    scheduled_for: instant(col(r, 1)?)?,
                    created_at: instant(col(r, 2)?)?,
                    queued: col(r, 3)?,
                    attempt: col::<i64>(r, 4)?.clamp(0, i64::from(u32::MAX)) as u32,
                    workflow: col(r, 5)?,
                    started_at: col::<Option<i64>>(r, 6)?.map(instant).transpose()?,
                    execution: if col(r, 7)? {
                        kairos_core::spec::ExecutionMode::AtMostOnce
                    } else {
                        kairos_core::spec::ExecutionMode::AtLeastOnce
                    },
                    begun: col(r, 8)?,
                },
            ))
        },
    )?;
    let (after, now) = (instant(after)?, instant(now)?);
    for (id, run) in candidates {
        if kairos_core::lease::withdrawable(&run, after, now) {
            // Fenced on what was decided on: still in the state it was read in.
            exec(
                conn,
                "DELETE FROM runs WHERE id = ?1 AND state = ?2 AND attempt = ?3",
                params![
                    id,
                    if run.queued { "queued" } else { "running" },
                    i64::from(run.attempt)
                ],
            )?;
        }
    }
    Ok(())
}

/// `overlap: replace`: cancels the job's runs that have not started and asks its running ones
/// to stop, except the runs for the due times in `keep` (those the round starts): a fire that
/// repeats a due time leaves that due time's run alone, since nothing could replace it (the
/// unique key keeps the round's own run out).
pub(crate) fn cancel_active_runs(
    conn: &Connection,
    job_id: JobId,
    now: Timestamp,
    keep: &[Timestamp],
) -> StoreResult<()> {
    let keep = serde_json::to_string(&keep.iter().map(|at| micros(*at)).collect::<Vec<_>>())
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    // The job's own runs, through the `runs_job_active` index (its condition word for word);
    // a workflow run's steps are reached through it below.
    let cancelled = all(
        conn,
        "UPDATE runs SET state = 'cancelled', finished_at = ?1, reason = 'replaced' \
         WHERE job_id = ?2 AND parent_id IS NULL \
           AND (state = 'scheduled' OR state = 'queued' OR state = 'running') \
           AND state <> 'running' AND scheduled_for NOT IN (SELECT value FROM json_each(?3)) \
         RETURNING id",
        params![micros(now), job_id, keep],
        |r| col::<i64>(r, 0),
    )?;
    for id in cancelled {
        crate::dependency::run_ended(conn, id)?;
    }
    let running = all(
        conn,
        "UPDATE runs SET cancel_requested = 1 WHERE job_id = ?1 AND parent_id IS NULL \
           AND (state = 'scheduled' OR state = 'queued' OR state = 'running') \
           AND state = 'running' AND scheduled_for NOT IN (SELECT value FROM json_each(?2)) \
         RETURNING id, spec IS NOT NULL",
        params![job_id, keep],
        |r| Ok((col::<i64>(r, 0)?, col::<i64>(r, 1)? != 0)),
    )?;
    // Workflow runs asked to stop: their steps that have not started are cancelled, the
    // running ones asked to stop; each ends now if none of its steps is running.
    for (id, _) in running.into_iter().filter(|(_, flow)| *flow) {
        crate::workflow::cancel(conn, id, now)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn job_create(&self, p: JobCreateParams) -> StoreResult<Job> {
        let at = now_or(p.now);
        let now = micros(at);
        let spec = spec_json(&p.spec)?;
        self.db
            .write(move |tx| {
                crate::calendar::check(tx, &p.spec, &p.calendars)?;
                crate::dependency::check(tx, &p.spec)?;
                let job = write_job(
                    tx,
                    "INSERT INTO jobs (namespace, name, spec, version, paused, next_fire_at, \
                     created_at, updated_at) VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?6)",
                    params![
                        p.spec.namespace,
                        p.spec.name,
                        spec,
                        p.spec.paused,
                        p.next_fire_at.map(micros),
                        now
                    ],
                    &p.spec,
                )?;
                let change = Change::job(
                    &p.actor,
                    AuditAction::JobCreate,
                    job.namespace(),
                    job.name(),
                );
                audit(tx, change.versions(None, Some(job.version)), at)?;
                Ok(job)
            })
            .await
    }

    async fn job_get(&self, p: JobGetParams) -> StoreResult<Option<Job>> {
        self.db
            .read(move |conn| fetch_job(conn, &p.namespace, &p.name))
            .await
    }

    async fn job_get_by_id(&self, p: JobGetByIdParams) -> StoreResult<Option<Job>> {
        self.db
            .read(move |conn| {
                first(
                    conn,
                    &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                    [p.id],
                    rows::job,
                )
            })
            .await
    }

    async fn job_list(&self, p: JobListParams) -> StoreResult<Vec<Job>> {
        let limit = if p.limit == 0 {
            i64::MAX
        } else {
            i64::from(p.limit)
        };
        self.db
            .read(move |conn| {
                all(
                    conn,
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL \
                         OR namespace IN (SELECT value FROM json_each(?1))) \
                         ORDER BY namespace, name LIMIT ?2"
                    ),
                    params![namespaces_json(p.namespaces.as_deref())?, limit],
                    rows::job,
                )
            })
            .await
    }

    async fn job_update(&self, p: JobUpdateParams) -> StoreResult<Job> {
        let at = now_or(p.now);
        let now = micros(at);
        let spec = spec_json(&p.spec)?;
        self.db
            .write(move |tx| {
                crate::calendar::check(tx, &p.spec, &p.calendars)?;
                let current = fetch_existing_job(tx, &p.namespace, &p.name)?;
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
                    crate::dependency::refuse_if_depended_on(
                        tx,
                        current.id,
                        &p.namespace,
                        &p.name,
                    )?;
                }
                crate::dependency::check(tx, &p.spec)?;
                let moved = !keep && next != current.next_fire_at;
                if kairos_core::policy::reschedules(&current.spec, &p.spec, moved) {
                    withdraw_early_runs(tx, current.id, now)?;
                }
                // `Keep` keeps what is stored when the write happens, not what was read.
                let job = write_job(
                    tx,
                    "UPDATE jobs SET namespace = ?1, name = ?2, spec = ?3, paused = ?4, \
                     next_fire_at = CASE WHEN ?9 THEN next_fire_at ELSE ?5 END, \
                     version = version + 1, updated_at = ?6 \
                     WHERE id = ?7 AND version = ?8",
                    params![
                        p.spec.namespace,
                        p.spec.name,
                        spec,
                        p.spec.paused,
                        next.map(micros),
                        now,
                        current.id,
                        p.expected_version,
                        keep
                    ],
                    &p.spec,
                )?;
                let change = Change::job(&p.actor, AuditAction::JobUpdate, &p.namespace, &p.name);
                audit(
                    tx,
                    change.versions(Some(current.version), Some(job.version)),
                    at,
                )?;
                Ok(job)
            })
            .await
    }

    async fn job_delete(&self, p: JobDeleteParams) -> StoreResult<()> {
        let at = now_or(p.now);
        self.db
            .write(move |tx| {
                let current = fetch_existing_job(tx, &p.namespace, &p.name)?;
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
                    crate::dependency::refuse_if_depended_on(
                        tx,
                        current.id,
                        &p.namespace,
                        &p.name,
                    )?;
                }
                // Fenced by the version read: a change in between is a conflict, not lost.
                let deleted = exec(
                    tx,
                    "DELETE FROM jobs WHERE id = ?1 AND version = ?2",
                    params![current.id, current.version],
                )?;
                if deleted != 1 {
                    let actual = fetch_existing_job(tx, &p.namespace, &p.name)?.version;
                    return Err(version_conflict(
                        &p.namespace,
                        &p.name,
                        current.version,
                        actual,
                    ));
                }
                let change = Change::job(&p.actor, AuditAction::JobDelete, &p.namespace, &p.name);
                audit(tx, change.versions(Some(current.version), None), at)?;
                Ok(())
            })
            .await
    }

    async fn job_set_paused(&self, p: JobSetPausedParams) -> StoreResult<Job> {
        let at = now_or(p.now);
        let now = micros(at);
        self.db
            .write(move |tx| {
                let mut current = fetch_existing_job(tx, &p.namespace, &p.name)?;
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
                // Pausing keeps next_fire_at (it is recomputed on resume, so a resume never
                // replays the pause).
                let next = if p.paused {
                    withdraw_early_runs(tx, current.id, now)?;
                    current.next_fire_at
                } else {
                    p.next_fire_at
                };
                let changed = exec(
                    tx,
                    "UPDATE jobs SET paused = ?1, spec = ?2, next_fire_at = ?3, \
                     version = version + 1, updated_at = ?4 WHERE id = ?5 AND version = ?6",
                    params![
                        p.paused,
                        spec,
                        next.map(micros),
                        now,
                        current.id,
                        current.version
                    ],
                )?;
                if changed != 1 {
                    let actual = fetch_existing_job(tx, &p.namespace, &p.name)?.version;
                    return Err(version_conflict(
                        &p.namespace,
                        &p.name,
                        current.version,
                        actual,
                    ));
                }
                let job = fetch_job(tx, &p.namespace, &p.name)?
                    .ok_or_else(|| StoreError::Internal("paused job vanished".into()))?;
                let action = if p.paused {
                    AuditAction::JobPause
                } else {
                    AuditAction::JobResume
                };
                let change = Change::job(&p.actor, action, &p.namespace, &p.name);
                audit(
                    tx,
                    change.versions(Some(current.version), Some(job.version)),
                    at,
                )?;
                Ok(job)
            })
            .await
    }

    async fn job_due(&self, p: JobDueParams) -> StoreResult<Vec<Job>> {
        self.db
            .read(move |conn| {
                all(
                    conn,
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM jobs WHERE paused = 0 AND next_fire_at IS NOT NULL \
                         AND next_fire_at <= ?1 ORDER BY next_fire_at LIMIT ?2"
                    ),
                    params![micros(p.before), i64::from(p.limit.max(1))],
                    rows::job,
                )
            })
            .await
    }

    async fn job_next_fire_at(&self) -> StoreResult<Option<Timestamp>> {
        self.db.read(|conn| earliest(conn, "SELECT MIN(next_fire_at) FROM jobs WHERE paused = 0 AND next_fire_at IS NOT NULL")).await
    }

    async fn job_fire(&self, p: JobFireParams) -> StoreResult<JobFireResult> {
        let mut results = self.job_fire_many(std::slice::from_ref(&p)).await?;
        Ok(results.pop().unwrap_or_default())
    }

    async fn job_fire_many(&self, ps: &[JobFireParams]) -> StoreResult<Vec<JobFireResult>> {
        let ps = ps.to_vec();
        self.db
            .write(move |tx| {
                // One job at a time, in order: a job twice in one batch sees its first fire's
                // fence.
                ps.iter()
                    .map(|p| batch::fire(tx, p, now_or(p.now)))
                    .collect()
            })
            .await
    }

    async fn run_report(&self, p: RunReportParams) -> StoreResult<bool> {
        let now = micros(now_or(p.now));
        self.db
            .write(move |tx| {
                let changed = exec(
                    tx,
                    "UPDATE runs SET progress = COALESCE(?1, progress), \
                     progress_message = COALESCE(?2, progress_message), \
                     checkpoint = COALESCE(?3, checkpoint), reported_at = ?4 \
                     WHERE id = ?5 AND lease_token = ?6 AND state = 'running'",
                    params![
                        p.progress,
                        p.message,
                        p.checkpoint,
                        now,
                        p.run_id,
                        p.lease_token
                    ],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    async fn event_targets(&self, p: EventTargetsParams) -> StoreResult<Vec<EventTarget>> {
        self.db
            .read(move |conn| crate::event::targets(conn, &p))
            .await
    }

    async fn event_fire_many(&self, ps: &[EventFireParams]) -> StoreResult<Vec<Option<RunId>>> {
        let ps = ps.to_vec();
        self.db
            .write(move |tx| {
                ps.iter()
                    .map(|p| crate::event::fire(tx, p, now_or(p.now)))
                    .collect()
            })
            .await
    }

    async fn run_insert(&self, p: RunInsertParams) -> StoreResult<Run> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| {
                ensure_job_at(tx, p.job_id, p.expected_version)?;
                let id = match batch::insert_run(tx, p.job_id, &p.run, now)? {
                    Some(id) => {
                        if let Some(params) = &p.params {
                            exec(
                                tx,
                                "UPDATE runs SET params = ?1 WHERE id = ?2",
                                params![params, id],
                            )?;
                        }
                        let run = fetch_run(tx, id)?.ok_or(StoreError::RunNotFound(id))?;
                        let change = Change::job(
                            &p.actor,
                            AuditAction::JobTrigger,
                            &run.namespace,
                            &run.job_name,
                        );
                        audit(tx, change.run(id), now)?;
                        return Ok(run);
                    }
                    None => first(
                        tx,
                        "SELECT id FROM runs WHERE job_id = ?1 AND scheduled_for = ?2 \
                         AND parent_id IS NULL AND event_id IS NULL AND upstream_run_id IS NULL",
                        params![p.job_id, micros(p.run.scheduled_for)],
                        |r| col(r, 0),
                    )?
                    .ok_or_else(|| StoreError::Internal("existing run vanished".into()))?,
                };
                fetch_run(tx, id)?.ok_or(StoreError::RunNotFound(id))
            })
            .await
    }

    async fn run_insert_many(&self, p: RunInsertManyParams) -> StoreResult<Vec<RunId>> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| {
                ensure_job_exists(tx, p.job_id)?;
                let mut created = Vec::with_capacity(p.runs.len());
                for run in &p.runs {
                    if let Some(id) = batch::insert_run(tx, p.job_id, run, now)? {
                        created.push((run.scheduled_for, id));
                    }
                }
                created.sort_unstable();
                Ok(created.into_iter().map(|(_, id)| id).collect())
            })
            .await
    }

    async fn run_backfill(&self, p: RunBackfillParams) -> StoreResult<RunBackfillResult> {
        let now = now_or(p.now);
        if p.dry_run {
            return self
                .db
                .read(move |conn| backfill::create(conn, &p, now))
                .await;
        }
        self.db.write(move |tx| backfill::create(tx, &p, now)).await
    }

    async fn run_held(&self) -> StoreResult<Vec<HeldRuns>> {
        self.db.read(backfill::held).await
    }

    async fn run_release(&self, p: RunReleaseParams) -> StoreResult<Vec<RunId>> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| backfill::release(tx, &p, now))
            .await
    }

    async fn run_active_counts(&self, p: RunActiveCountsParams) -> StoreResult<Vec<(JobId, u64)>> {
        if p.job_ids.is_empty() {
            return Ok(vec![]);
        }
        self.db
            .read(move |conn| {
                let mut out = Vec::new();
                for id in p.job_ids {
                    let n = active_count(conn, id)?;
                    if n > 0 {
                        out.push((id, n));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn run_next_at(&self, p: RunNextAtParams) -> StoreResult<NextQueued> {
        self.db
            .read(move |conn| {
                // Two lookups in the `runs_queued` index.
                let (earliest, after): (Option<i64>, Option<i64>) = first(
                    conn,
                    "SELECT (SELECT MIN(run_at) FROM runs WHERE state = 'queued'), \
                     (SELECT MIN(run_at) FROM runs WHERE state = 'queued' AND run_at > ?1)",
                    [micros(p.after)],
                    |r| Ok((col(r, 0)?, col(r, 1)?)),
                )?
                .unwrap_or_default();
                Ok(NextQueued {
                    earliest: earliest.map(instant).transpose()?,
                    earliest_after: after.map(instant).transpose()?,
                })
            })
            .await
    }

    async fn run_active_count(&self, p: RunActiveCountParams) -> StoreResult<u64> {
        self.db.read(move |conn| active_count(conn, p.job_id)).await
    }

    async fn run_claim(&self, p: RunClaimParams) -> StoreResult<Vec<ClaimedRun>> {
        let now = now_or(p.now);
        let expires = now
            .checked_add(p.lease)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let horizon = now
            .checked_add(p.ahead)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let token = uuid::Uuid::new_v4().to_string();
        self.db
            .write(move |tx| batch::claim(tx, &p.node, &token, p.limit, now, horizon, expires))
            .await
    }

    async fn run_begin(&self, p: RunBeginParams) -> StoreResult<bool> {
        self.db
            .write(move |tx| {
                let changed = exec(
                    tx,
                    "UPDATE runs SET begun = 1 \
                     WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
                    params![p.run_id, p.lease_token],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    async fn run_heartbeat(&self, p: RunHeartbeatParams) -> StoreResult<Vec<HeartbeatResult>> {
        let now = now_or(p.now);
        let expires = micros(
            now.checked_add(p.lease)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        );
        self.db
            .write(move |tx| {
                p.leases
                    .iter()
                    .map(|(run_id, token)| {
                        let cancel: Option<i64> = first(
                            tx,
                            // A lease never moves back (see the PostgreSQL store's).
                            "UPDATE runs SET lease_expires_at = MAX(COALESCE(lease_expires_at, ?1), ?1) \
                             WHERE id = ?2 AND lease_token = ?3 AND state = 'running' \
                             RETURNING cancel_requested",
                            params![expires, run_id, token],
                            |r| col(r, 0),
                        )?;
                        Ok(HeartbeatResult {
                            run_id: *run_id,
                            held: cancel.is_some(),
                            cancel_requested: cancel.unwrap_or(0) != 0,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn run_finish(&self, p: RunFinishParams) -> StoreResult<bool> {
        let results = self.run_finish_many(std::slice::from_ref(&p)).await?;
        Ok(results.first().copied().unwrap_or(false))
    }

    async fn run_finish_many(&self, ps: &[RunFinishParams]) -> StoreResult<Vec<bool>> {
        let ps = ps.to_vec();
        self.db
            .write(move |tx| {
                ps.iter()
                    .map(|p| batch::finish(tx, p, now_or(p.now)))
                    .collect()
            })
            .await
    }

    async fn run_rescue(&self, p: RunRescueParams) -> StoreResult<RescueReport> {
        let now = micros(now_or(p.now));
        self.db
            .write(move |tx| {
                struct Expired {
                    id: i64,
                    token: String,
                    node: Option<String>,
                    started: Option<i64>,
                    parent: Option<i64>,
                    run: ExpiredRun,
                }
                let expired = all(
                    tx,
                    "SELECT id, lease_token, attempt, max_attempts, execution, node, started_at, \
                     cancel_requested, parent_id, begun FROM runs \
                     WHERE state = 'running' AND lease_token IS NOT NULL \
                       AND (lease_expires_at < ?1 OR node = ?2) \
                     ORDER BY lease_expires_at LIMIT ?3",
                    params![now, p.orphaned_node, i64::from(p.limit.max(1))],
                    |r| {
                        let started: Option<i64> = col(r, 6)?;
                        Ok(Expired {
                            id: col(r, 0)?,
                            token: col::<Option<String>>(r, 1)?.unwrap_or_default(),
                            node: col(r, 5)?,
                            started,
                            parent: col(r, 8)?,
                            run: ExpiredRun {
                                attempt: col::<u32>(r, 2)?,
                                max_attempts: col::<u32>(r, 3)?,
                                execution: rows::execution_from(&col::<String>(r, 4)?)?,
                                cancel_requested: col::<i64>(r, 7)? != 0,
                                never_started: kairos_core::lease::never_started(
                                    rows::execution_from(&col::<String>(r, 4)?)?,
                                    col::<i64>(r, 9)? != 0,
                                    rows::opt_instant(started)?,
                                    rows::instant(now)?,
                                ),
                            },
                        })
                    },
                )?;
                let mut report = RescueReport::default();
                for run in expired {
                    let decision = rescue_decision(&run.run);
                    // Each write is fenced by the lease it rescues: a heartbeat or a finish that
                    // came first wins, and the run is left alone.
                    if decision == RescueDecision::Release {
                        let changed = exec(
                            tx,
                            "UPDATE runs SET state = 'queued', attempt = attempt - 1, node = NULL, \
                             lease_token = NULL, lease_expires_at = NULL, begun = 1, \
                             started_at = CASE WHEN attempt = 1 THEN NULL ELSE started_at END, \
                             reason = 'released: its node stopped before the attempt began' \
                             WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
                            params![run.id, run.token],
                        )?;
                        if changed == 1 {
                            report.requeued.push(run.id);
                        }
                        continue;
                    }
                    let (state, list) = match decision {
                        RescueDecision::Cancelled => ("cancelled", None),
                        RescueDecision::Lost => ("lost", Some(&mut report.lost)),
                        _ => ("queued", Some(&mut report.requeued)),
                    };
                    let finished = (state != "queued").then_some(now);
                    let changed = exec(
                        tx,
                        "UPDATE runs SET state = ?1, \
                         run_at = CASE WHEN ?1 = 'queued' THEN ?2 ELSE run_at END, \
                         finished_at = ?3, lease_token = NULL, lease_expires_at = NULL, begun = 1, \
                         reason = 'lease expired' \
                         WHERE id = ?4 AND lease_token = ?5 AND state = 'running'",
                        params![state, now, finished, run.id, run.token],
                    )?;
                    if changed != 1 {
                        continue;
                    }
                    exec(
                        tx,
                        "INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, \
                         status, error) VALUES (?1, ?2, ?3, ?4, ?5, 'lost', \
                         'lease expired: the worker stopped heartbeating') \
                         ON CONFLICT (run_id, attempt) DO NOTHING",
                        params![
                            run.id,
                            run.run.attempt,
                            run.node.unwrap_or_default(),
                            run.started.unwrap_or(now),
                            now
                        ],
                    )?;
                    if let Some(list) = list {
                        list.push(run.id);
                    }
                    if run.parent.is_none() && state != "queued" {
                        crate::dependency::run_ended(tx, run.id)?;
                    }
                    // A step that ended moves its workflow run on.
                    if let Some(parent) = run.parent
                        && state != "queued"
                    {
                        crate::workflow::settle(tx, parent, instant(now)?)?;
                    }
                }
                Ok(report)
            })
            .await
    }

    async fn run_cancel(&self, p: RunCancelParams) -> StoreResult<Run> {
        let at = now_or(p.now);
        let now = micros(at);
        self.db
            .write(move |tx| {
                let run = fetch_run(tx, p.run_id)?.ok_or(StoreError::RunNotFound(p.run_id))?;
                let changed = match run.state {
                    // A workflow run's step waiting for its upstream steps is not cancelled on
                    // its own: cancel the workflow run.
                    RunState::Scheduled if run.parent_id.is_some() => {
                        return Err(StoreError::InvalidRunState {
                            run_id: p.run_id,
                            state: "waiting for its upstream steps".into(),
                            action: "cancelled",
                        });
                    }
                    RunState::Scheduled | RunState::Queued => {
                        let changed = exec(
                            tx,
                            "UPDATE runs SET state = 'cancelled', finished_at = ?1, \
                             reason = 'cancelled' WHERE id = ?2 AND state = ?3",
                            params![now, p.run_id, run.state.as_str()],
                        )?;
                        if changed == 1 && run.parent_id.is_none() {
                            crate::dependency::run_ended(tx, p.run_id)?;
                        }
                        changed
                    }
                    RunState::Running => exec(
                        tx,
                        "UPDATE runs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
                        [p.run_id],
                    )?,
                    state => {
                        return Err(StoreError::InvalidRunState {
                            run_id: p.run_id,
                            state: state.to_string(),
                            action: "cancelled",
                        });
                    }
                };
                // Fenced by the state read: a run that moved on meanwhile was not cancelled.
                if changed != 1 {
                    let state = fetch_run(tx, p.run_id)?.map_or(run.state, |r| r.state);
                    return Err(StoreError::InvalidRunState {
                        run_id: p.run_id,
                        state: state.to_string(),
                        action: "cancelled",
                    });
                }
                if run.state == RunState::Running && run.parent_id.is_none() {
                    // A workflow run (nothing for a plain run).
                    crate::workflow::cancel(tx, p.run_id, at)?;
                }
                if let Some(parent) = run.parent_id {
                    crate::workflow::settle(tx, parent, at)?;
                }
                let change = Change::job(
                    &p.actor,
                    AuditAction::RunCancel,
                    &run.namespace,
                    &run.job_name,
                );
                audit(tx, change.run(run.id), at)?;
                fetch_run(tx, p.run_id)?.ok_or(StoreError::RunNotFound(p.run_id))
            })
            .await
    }

    async fn workflow_start(&self, p: WorkflowStartParams) -> StoreResult<bool> {
        self.db
            .write(move |tx| crate::workflow::start(tx, &p, now_or(p.now)))
            .await
    }

    async fn run_steps(&self, p: RunStepsParams) -> StoreResult<Vec<Run>> {
        self.db
            .read(move |conn| crate::workflow::steps(conn, p.run_id))
            .await
    }

    async fn workflow_control(&self, p: WorkflowControlParams) -> StoreResult<Run> {
        self.db
            .write(move |tx| crate::workflow::control(tx, &p, now_or(p.now)))
            .await
    }

    async fn run_step_results(
        &self,
        p: RunStepResultsParams,
    ) -> StoreResult<Vec<(String, Option<String>)>> {
        let names =
            serde_json::to_string(&p.steps).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.db
            .read(move |conn| {
                all(
                    conn,
                    "SELECT step, result FROM runs WHERE parent_id = ?1 \
                     AND step IN (SELECT value FROM json_each(?2))",
                    params![p.run_id, names],
                    |r| Ok((col(r, 0)?, col(r, 1)?)),
                )
            })
            .await
    }

    async fn run_document(&self, p: RunStepsParams) -> StoreResult<Option<kairos_core::JobSpec>> {
        self.db
            .read(move |conn| {
                let json: Option<String> = first(
                    conn,
                    "SELECT spec FROM runs WHERE id = ?1 AND spec IS NOT NULL",
                    [p.run_id],
                    |r| col(r, 0),
                )?;
                json.as_deref()
                    .map(kairos_store::workflow::parse_spec)
                    .transpose()
            })
            .await
    }

    async fn run_cancel_requested(&self, ids: &[RunId]) -> StoreResult<Vec<RunId>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let ids = serde_json::to_string(ids).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.db
            .read(move |conn| {
                all(
                    conn,
                    "SELECT id FROM runs WHERE id IN (SELECT value FROM json_each(?1)) \
                     AND state = 'running' AND cancel_requested = 1 ORDER BY id",
                    params![ids],
                    |row| col(row, 0),
                )
            })
            .await
    }

    async fn run_get(&self, p: RunGetParams) -> StoreResult<Option<Run>> {
        self.db.read(move |conn| fetch_run(conn, p.id)).await
    }

    async fn run_list(&self, p: RunListParams) -> StoreResult<Vec<Run>> {
        let limit = if p.limit == 0 {
            100
        } else {
            i64::from(p.limit)
        };
        self.db
            .read(move |conn| {
                all(
                    conn,
                    &format!(
                        "{RUN_SELECT} WHERE r.parent_id IS NULL AND (?1 IS NULL OR r.job_id = ?1) \
                         AND (?2 IS NULL OR j.namespace IN (SELECT value FROM json_each(?2))) \
                         AND (?3 IS NULL OR r.state = ?3) \
                         AND (?4 IS NULL OR r.id < ?4) ORDER BY r.id DESC LIMIT ?5"
                    ),
                    params![
                        p.job_id,
                        namespaces_json(p.namespaces.as_deref())?,
                        p.state.map(|s| s.as_str()),
                        p.before_id,
                        limit
                    ],
                    rows::run,
                )
            })
            .await
    }

    async fn run_recent(&self, p: RunRecentParams) -> StoreResult<Vec<RecentRun>> {
        let per_job = i64::from(p.per_job);
        self.db
            .read(move |conn| {
                all(
                    conn,
                    "SELECT r.job_id, r.id, r.state, r.scheduled_for, r.started_at, r.finished_at \
                     FROM jobs j JOIN runs r ON r.id IN (SELECT x.id FROM runs x \
                       WHERE x.job_id = j.id AND x.parent_id IS NULL \
                       AND x.finished_at IS NOT NULL AND x.state <> 'skipped' ORDER BY x.id DESC LIMIT ?3) \
                     WHERE (?1 IS NULL OR j.id = ?1) \
                     AND (?2 IS NULL OR j.namespace IN (SELECT value FROM json_each(?2))) \
                     ORDER BY j.id, r.id DESC",
                    params![p.job_id, namespaces_json(p.namespaces.as_deref())?, per_job],
                    |row| {
                        Ok(RecentRun {
                            job_id: rows::col(row, 0)?,
                            run_id: rows::col(row, 1)?,
                            state: rows::col::<String>(row, 2)?
                                .parse()
                                .map_err(StoreError::Internal)?,
                            scheduled_for: rows::instant(rows::col(row, 3)?)?,
                            started_at: rows::opt_instant(rows::col(row, 4)?)?,
                            finished_at: rows::instant(rows::col(row, 5)?)?,
                        })
                    },
                )
            })
            .await
    }

    async fn run_active_brief(&self, p: RunActiveBriefParams) -> StoreResult<Vec<ActiveRun>> {
        self.db
            .read(move |conn| {
                all(
                    conn,
                    "SELECT id, state, origin, scheduled_for, started_at FROM runs \
                     WHERE job_id = ?1 AND parent_id IS NULL \
                     AND (state = 'scheduled' OR state = 'queued' OR state = 'running') \
                     ORDER BY scheduled_for, id LIMIT ?2",
                    params![p.job_id, i64::from(p.limit)],
                    |row| {
                        Ok(ActiveRun {
                            run_id: rows::col(row, 0)?,
                            state: rows::col::<String>(row, 1)?
                                .parse()
                                .map_err(StoreError::Internal)?,
                            origin: rows::col::<String>(row, 2)?
                                .parse()
                                .map_err(StoreError::Internal)?,
                            scheduled_for: rows::instant(rows::col(row, 3)?)?,
                            started_at: rows::opt_instant(rows::col(row, 4)?)?,
                        })
                    },
                )
            })
            .await
    }

    async fn attempt_list(&self, p: AttemptListParams) -> StoreResult<Vec<Attempt>> {
        self.db
            .read(move |conn| {
                all(
                    conn,
                    &format!(
                        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ?1 ORDER BY attempt"
                    ),
                    [p.run_id],
                    rows::attempt,
                )
            })
            .await
    }

    async fn run_count_by_state(&self) -> StoreResult<Vec<(RunState, u64)>> {
        self.db
            .read(|conn| {
                all(
                    conn,
                    "SELECT state, COUNT(*) FROM runs GROUP BY state",
                    [],
                    |r| {
                        let state: String = col(r, 0)?;
                        let n: i64 = col(r, 1)?;
                        Ok((state.parse().map_err(StoreError::Internal)?, n as u64))
                    },
                )
            })
            .await
    }

    async fn run_totals(&self) -> StoreResult<RunTotals> {
        self.db
            .read(|conn| {
                // Each count reads one partial index (`runs_queued`, `runs_leases`).
                let (queued, running): (i64, i64) = first(
                    conn,
                    "SELECT (SELECT COUNT(*) FROM runs WHERE state = 'queued'), \
                     (SELECT COUNT(*) FROM runs WHERE state = 'running')",
                    [],
                    |r| Ok((col(r, 0)?, col(r, 1)?)),
                )?
                .unwrap_or_default();
                Ok(RunTotals {
                    queued: queued.unsigned_abs(),
                    running: running.unsigned_abs(),
                })
            })
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db
            .read(|conn| {
                first(conn, "SELECT 1", [], |r| col::<i64>(r, 0))?;
                Ok(())
            })
            .await
    }

    async fn job_import(&self, p: JobImportParams) -> StoreResult<Job> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| crate::import::job_import(tx, &p, now))
            .await
    }

    async fn run_import(&self, p: RunImportParams) -> StoreResult<u64> {
        self.db
            .write(move |tx| crate::import::run_import(tx, &p))
            .await
    }

    async fn token_create(&self, p: TokenCreateParams) -> StoreResult<Token> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| auth::token_create(tx, &p, now))
            .await
    }

    async fn token_list(&self, p: TokenListParams) -> StoreResult<Vec<Token>> {
        self.db.read(move |conn| auth::token_list(conn, &p)).await
    }

    async fn token_revoke(&self, p: TokenRevokeParams) -> StoreResult<Token> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| auth::token_revoke(tx, &p, now))
            .await
    }

    async fn token_authenticate(&self, p: TokenAuthenticateParams) -> StoreResult<Option<Token>> {
        let now = now_or(p.now);
        self.db
            .read(move |conn| auth::token_authenticate(conn, &p, now))
            .await
    }

    async fn alert_enqueue(&self, p: AlertEnqueueParams) -> StoreResult<Vec<Option<i64>>> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| crate::alert::enqueue(tx, &p, now))
            .await
    }

    async fn alert_claim(&self, p: AlertClaimParams) -> StoreResult<Vec<AlertDelivery>> {
        let now = now_or(p.now);
        let expires = now
            .checked_add(p.lease)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.db
            .write(move |tx| crate::alert::claim(tx, &p, &token, now, expires))
            .await
    }

    async fn alert_finish(&self, p: AlertFinishParams) -> StoreResult<bool> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| crate::alert::finish(tx, &p, now))
            .await
    }

    async fn alert_list(&self, p: AlertListParams) -> StoreResult<Vec<AlertDelivery>> {
        self.db.read(move |conn| crate::alert::list(conn, &p)).await
    }

    async fn alert_prune(&self, p: AlertPruneParams) -> StoreResult<u64> {
        self.db.write(move |tx| crate::alert::prune(tx, p)).await
    }

    async fn alert_cursor(&self) -> StoreResult<Option<ActivityCursor>> {
        self.db.read(crate::alert::cursor).await
    }

    async fn alert_cursor_set(&self, p: AlertCursorParams) -> StoreResult<bool> {
        self.db
            .write(move |tx| crate::alert::cursor_set(tx, &p))
            .await
    }

    async fn session_create(&self, p: SessionCreateParams) -> StoreResult<bool> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| auth::session_create(tx, &p, now))
            .await
    }

    async fn session_authenticate(&self, p: SessionParams) -> StoreResult<Option<Token>> {
        let now = now_or(p.now);
        self.db
            .read(move |conn| auth::session_authenticate(conn, &p, now))
            .await
    }

    async fn session_delete(&self, p: SessionParams) -> StoreResult<bool> {
        self.db
            .write(move |tx| {
                Ok(exec(tx, "DELETE FROM sessions WHERE id_hash = ?1", [&p.id_hash])? == 1)
            })
            .await
    }

    async fn audit_list(&self, p: AuditListParams) -> StoreResult<Vec<AuditEntry>> {
        self.db.read(move |conn| auth::audit_list(conn, &p)).await
    }

    async fn activity_append(&self, records: Vec<ActivityRecord>) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.activity
            .write(move |tx| crate::activity::append(tx, &records))
            .await
    }

    async fn activity_read(&self, p: ActivityReadParams) -> StoreResult<Vec<ActivityEntry>> {
        self.activity
            .read(move |conn| crate::activity::read(conn, &p))
            .await
    }

    async fn activity_head(&self) -> StoreResult<ActivityCursor> {
        self.activity.read(crate::activity::head).await
    }

    async fn activity_contains(&self, cursor: ActivityCursor) -> StoreResult<bool> {
        self.activity
            .read(move |conn| crate::activity::contains(conn, cursor))
            .await
    }

    async fn activity_prune(&self, p: ActivityPruneParams) -> StoreResult<u64> {
        self.activity
            .write(move |tx| crate::activity::prune(tx, p))
            .await
    }

    async fn calendar_put(&self, p: CalendarPutParams) -> StoreResult<StoredCalendar> {
        let at = now_or(p.now);
        self.db
            .write(move |tx| crate::calendar::put(tx, &p, at))
            .await
    }

    async fn calendar_get(&self, p: CalendarGetParams) -> StoreResult<Option<StoredCalendar>> {
        self.db
            .read(move |conn| crate::calendar::fetch(conn, &p.namespace, &p.name))
            .await
    }

    async fn calendar_list(&self, p: CalendarListParams) -> StoreResult<Vec<StoredCalendar>> {
        self.db
            .read(move |conn| crate::calendar::list(conn, &p))
            .await
    }

    async fn calendar_jobs(&self, p: CalendarGetParams) -> StoreResult<Vec<Job>> {
        self.db
            .read(move |conn| crate::calendar::users(conn, &p.namespace, &p.name))
            .await
    }

    async fn calendar_delete(&self, p: CalendarDeleteParams) -> StoreResult<()> {
        let at = now_or(p.now);
        self.db
            .write(move |tx| crate::calendar::delete(tx, &p, at))
            .await
    }

    async fn leader_elect(&self, p: LeaderElectParams) -> StoreResult<Leader> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| cluster::leader_elect(tx, &p, now))
            .await
    }

    async fn leader_resign(&self, p: LeaderResignParams) -> StoreResult<bool> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| cluster::leader_resign(tx, &p, now))
            .await
    }

    async fn leader_get(&self) -> StoreResult<Option<Leader>> {
        self.db.read(cluster::leader_get).await
    }

    async fn node_heartbeat(&self, p: NodeHeartbeatParams) -> StoreResult<()> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| cluster::node_heartbeat(tx, &p, now))
            .await
    }

    async fn node_list(&self) -> StoreResult<Vec<NodeInfo>> {
        self.db.read(cluster::node_list).await
    }

    async fn node_expire(&self, p: NodeExpireParams) -> StoreResult<Vec<String>> {
        let now = now_or(p.now);
        self.db
            .write(move |tx| cluster::node_expire(tx, &p, now))
            .await
    }

    async fn node_leave(&self, p: NodeLeaveParams) -> StoreResult<()> {
        self.db
            .write(move |tx| cluster::node_leave(tx, &p.id))
            .await
    }
}

/// A namespace filter as a JSON array for `json_each` (`None`: no filter).
pub(crate) fn namespaces_json(namespaces: Option<&[String]>) -> StoreResult<Option<String>> {
    namespaces
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Internal(e.to_string()))
}

/// The instant a `SELECT MIN(...)` over microseconds returns, if any row matched.
fn earliest(conn: &Connection, sql: &str) -> StoreResult<Option<Timestamp>> {
    let next: Option<i64> = first(conn, sql, [], |r| col(r, 0))?.flatten();
    next.map(instant).transpose()
}

pub(crate) fn active_count(conn: &Connection, job_id: JobId) -> StoreResult<u64> {
    let n: i64 = first(
        conn,
        // The condition of the `runs_job_active` index, word for word, so the planner uses it.
        "SELECT COUNT(*) FROM runs WHERE job_id = ?1 \
         AND parent_id IS NULL AND (state = 'scheduled' OR state = 'queued' OR state = 'running')",
        [job_id],
        |r| col(r, 0),
    )?
    .unwrap_or(0);
    Ok(n as u64)
}
