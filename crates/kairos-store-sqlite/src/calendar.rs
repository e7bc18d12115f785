//! Calendars: the documents, the `job_calendars` index kept with each job write, the fence a
//! job write planned with calendars carries, and a calendar change that re-plans its jobs.

use jiff::Timestamp;
use kairos_core::JobSpec;
use kairos_core::auth::AuditAction;
use kairos_core::calendar::CalendarSpec;
use kairos_core::run::JobId;
use kairos_store::*;
use rusqlite::{Connection, Row, params};

use crate::auth::{Change, audit};
use crate::rows::{all, col, exec, first, instant, internal, is_unique_violation, micros};

const CALENDAR_COLUMNS: &str = "id, spec, version, created_at, updated_at";

fn calendar(row: &Row<'_>) -> StoreResult<StoredCalendar> {
    let spec: String = col(row, 1)?;
    let spec: CalendarSpec = serde_json::from_str(&spec)
        .map_err(|e| StoreError::Internal(format!("stored calendar does not parse: {e}")))?;
    Ok(StoredCalendar {
        id: col(row, 0)?,
        spec,
        version: col(row, 2)?,
        created_at: instant(col(row, 3)?)?,
        updated_at: instant(col(row, 4)?)?,
    })
}

pub(crate) fn fetch(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> StoreResult<Option<StoredCalendar>> {
    first(
        conn,
        &format!("SELECT {CALENDAR_COLUMNS} FROM calendars WHERE namespace = ?1 AND name = ?2"),
        params![namespace, name],
        calendar,
    )
}

pub(crate) fn list(conn: &Connection, p: &CalendarListParams) -> StoreResult<Vec<StoredCalendar>> {
    let json = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Internal(e.to_string()))
    };
    all(
        conn,
        &format!(
            "SELECT {CALENDAR_COLUMNS} FROM calendars \
             WHERE (?1 IS NULL OR namespace IN (SELECT value FROM json_each(?1))) \
               AND (?2 IS NULL OR name IN (SELECT value FROM json_each(?2))) \
             ORDER BY namespace, name"
        ),
        params![json(&p.namespaces)?, json(&p.names)?],
        calendar,
    )
}

/// The jobs that name the calendar, by name.
pub(crate) fn users(conn: &Connection, namespace: &str, name: &str) -> StoreResult<Vec<Job>> {
    all(
        conn,
        &format!(
            "SELECT {} FROM jobs WHERE id IN (SELECT job_id FROM job_calendars \
             WHERE namespace = ?1 AND calendar = ?2) ORDER BY name",
            crate::rows::JOB_COLUMNS
        ),
        params![namespace, name],
        crate::rows::job,
    )
}

/// The fence of a job write: every calendar the document names exists in its namespace, at
/// the version the write was planned with. Otherwise `CalendarChanged`, before anything is
/// written.
pub(crate) fn check(
    conn: &Connection,
    spec: &JobSpec,
    planned: &[CalendarVersion],
) -> StoreResult<()> {
    let names = kairos_core::calendar::used_by(spec);
    if names.is_empty() {
        return Ok(());
    }
    let names = serde_json::to_string(&names).map_err(|e| StoreError::Internal(e.to_string()))?;
    let found: Vec<(String, i64)> = all(
        conn,
        "SELECT name, version FROM calendars WHERE namespace = ?1 \
         AND name IN (SELECT value FROM json_each(?2))",
        params![spec.namespace, names],
        |r| Ok((col(r, 0)?, col(r, 1)?)),
    )?;
    kairos_store::calendar::fence(spec, &found, planned)
}

/// Replaces the job's `job_calendars` rows with the calendars of its document.
pub(crate) fn set(conn: &Connection, job_id: JobId, spec: &JobSpec) -> StoreResult<()> {
    exec(
        conn,
        "DELETE FROM job_calendars WHERE job_id = ?1",
        [job_id],
    )?;
    for name in kairos_core::calendar::used_by(spec) {
        exec(
            conn,
            "INSERT INTO job_calendars (job_id, namespace, calendar) VALUES (?1, ?2, ?3)",
            params![job_id, spec.namespace, name],
        )?;
    }
    Ok(())
}

fn spec_json(spec: &CalendarSpec) -> StoreResult<String> {
    serde_json::to_string(spec).map_err(|e| StoreError::Internal(e.to_string()))
}

fn version_conflict(conn: &Connection, ns: &str, name: &str, expected: i64) -> StoreError {
    match fetch(conn, ns, name) {
        Ok(Some(c)) => StoreError::CalendarVersionConflict {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            expected,
            actual: c.version,
        },
        Ok(None) => StoreError::CalendarNotFound {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        },
        Err(e) => e,
    }
}

/// `calendar_put` in the caller's transaction.
pub(crate) fn put(
    conn: &Connection,
    p: &CalendarPutParams,
    at: Timestamp,
) -> StoreResult<StoredCalendar> {
    let now = micros(at);
    let (ns, name) = (p.spec.namespace.as_str(), p.spec.name.as_str());
    let spec = spec_json(&p.spec)?;
    // The calendar first (the lock order of every writer: calendars, then jobs).
    match p.expected_version {
        None => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO calendars (namespace, name, spec, version, created_at, \
                     updated_at) VALUES (?1, ?2, ?3, 1, ?4, ?4)",
                )
                .and_then(|mut s| s.execute(params![ns, name, spec, now]));
            match inserted {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::CalendarExists {
                        namespace: ns.to_owned(),
                        name: name.to_owned(),
                    });
                }
                Err(e) => return Err(internal(e)),
                Ok(_) => {}
            }
        }
        Some(expected) => {
            let changed = exec(
                conn,
                "UPDATE calendars SET spec = ?1, version = version + 1, updated_at = ?2 \
                 WHERE namespace = ?3 AND name = ?4 AND version = ?5",
                params![spec, now, ns, name, expected],
            )?;
            if changed != 1 {
                return Err(version_conflict(conn, ns, name, expected));
            }
        }
    }
    // Exactly the jobs that use it, each at the version its new plan was made for.
    let users: Vec<(JobId, String, i64)> = all(
        conn,
        "SELECT j.id, j.name, j.version FROM job_calendars c JOIN jobs j ON j.id = c.job_id \
         WHERE c.namespace = ?1 AND c.calendar = ?2 ORDER BY j.id",
        params![ns, name],
        |r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)),
    )?;
    let mut planned: Vec<JobId> = p.replans.iter().map(|r| r.job_id).collect();
    planned.sort_unstable();
    let changed = || StoreError::CalendarChanged {
        namespace: ns.to_owned(),
        name: name.to_owned(),
    };
    if planned != users.iter().map(|u| u.0).collect::<Vec<_>>() {
        return Err(changed());
    }
    for r in &p.replans {
        let (keep, next) = match r.next_fire_at {
            NextFire::Keep => (true, None),
            NextFire::Set(next) => (false, next),
        };
        if !keep {
            crate::store::withdraw_early_runs_after(conn, r.job_id, micros(r.after), now)?;
        }
        let applied = exec(
            conn,
            // A re-plan is not a change of the job's document: `updated_at` stays (it is
            // when a dead-man switch starts counting, among others).
            "UPDATE jobs SET next_fire_at = CASE WHEN ?1 THEN next_fire_at ELSE ?2 END, \
             version = version + 1 WHERE id = ?3 AND version = ?4",
            params![keep, next.map(micros), r.job_id, r.expected_version],
        )?;
        if applied != 1 {
            return Err(changed());
        }
        let job = users
            .iter()
            .find(|u| u.0 == r.job_id)
            .map_or("", |u| u.1.as_str());
        let change = Change::job(&p.actor, AuditAction::JobReplan, ns, job)
            .versions(Some(r.expected_version), Some(r.expected_version + 1))
            .detail(format!("calendar `{name}` changed"));
        audit(conn, change, at)?;
    }
    let stored = fetch(conn, ns, name)?
        .ok_or_else(|| StoreError::Internal("written calendar vanished".into()))?;
    let action = if p.expected_version.is_none() {
        AuditAction::CalendarCreate
    } else {
        AuditAction::CalendarUpdate
    };
    let change = Change::calendar(&p.actor, action, ns, name)
        .versions(p.expected_version, Some(stored.version));
    audit(conn, change, at)?;
    Ok(stored)
}

/// `calendar_delete` in the caller's transaction.
pub(crate) fn delete(
    conn: &Connection,
    p: &CalendarDeleteParams,
    at: Timestamp,
) -> StoreResult<()> {
    let (ns, name) = (p.namespace.as_str(), p.name.as_str());
    let current = fetch(conn, ns, name)?.ok_or_else(|| StoreError::CalendarNotFound {
        namespace: ns.to_owned(),
        name: name.to_owned(),
    })?;
    if let Some(expected) = p.expected_version
        && expected != current.version
    {
        return Err(version_conflict(conn, ns, name, expected));
    }
    let jobs: Vec<String> = users(conn, ns, name)?
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
    let deleted = exec(
        conn,
        "DELETE FROM calendars WHERE id = ?1 AND version = ?2",
        params![current.id, current.version],
    )?;
    if deleted != 1 {
        return Err(version_conflict(conn, ns, name, current.version));
    }
    let change = Change::calendar(&p.actor, AuditAction::CalendarDelete, ns, name)
        .versions(Some(current.version), None);
    audit(conn, change, at)
}
