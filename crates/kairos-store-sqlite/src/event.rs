//! Event triggers: the jobs an event is for, and the event's runs.

use jiff::Timestamp;
use kairos_core::run::{JobId, RunId};
use kairos_store::{EventFireParams, EventTarget, EventTargetsParams, StoreError, StoreResult};
use rusqlite::{Connection, params};

use crate::rows::{self, JOB_COLUMNS, RUN_SELECT, all, exec, first};

/// Replaces the job's rows in `job_topics` with the topics its document subscribes to.
pub(crate) fn set_topics(
    conn: &Connection,
    job_id: JobId,
    spec: &kairos_core::JobSpec,
) -> StoreResult<()> {
    exec(conn, "DELETE FROM job_topics WHERE job_id = ?1", [job_id])?;
    for topic in kairos_core::event::topics(spec) {
        exec(
            conn,
            "INSERT INTO job_topics (topic, job_id) VALUES (?1, ?2)",
            params![topic, job_id],
        )?;
    }
    Ok(())
}

/// `event_targets`: unpaused subscribed jobs, each with its run for the event and its count of
/// active runs.
pub(crate) fn targets(conn: &Connection, p: &EventTargetsParams) -> StoreResult<Vec<EventTarget>> {
    let jobs = all(
        conn,
        &format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE paused = 0 AND id IN \
             (SELECT job_id FROM job_topics WHERE topic = ?1) \
             AND (?2 IS NULL OR namespace IN (SELECT value FROM json_each(?2))) ORDER BY id"
        ),
        params![
            p.topic,
            crate::store::namespaces_json(p.namespaces.as_deref())?
        ],
        rows::job,
    )?;
    let existing_sql =
        format!("{RUN_SELECT} WHERE r.job_id = ?1 AND r.event_id = ?2 AND r.parent_id IS NULL");
    jobs.into_iter()
        .map(|job| {
            let existing = first(conn, &existing_sql, params![job.id, p.event_id], rows::run)?;
            let active = crate::store::active_count(conn, job.id)?;
            Ok(EventTarget {
                job,
                existing,
                active,
            })
        })
        .collect()
}

/// `event_fire_many` for one job: the fences (the job unchanged and not paused, no run for the
/// event yet, the overlap count), then the cancel `overlap: replace` asks for, then the run.
pub(crate) fn fire(
    conn: &Connection,
    p: &EventFireParams,
    now: Timestamp,
) -> StoreResult<Option<RunId>> {
    let Some(event) = &p.run.event else {
        return Err(StoreError::Internal(
            "an event's run without its event".into(),
        ));
    };
    let fenced = first(
        conn,
        "SELECT 1 FROM jobs WHERE id = ?1 AND version = ?2 AND paused = 0 \
         AND NOT EXISTS (SELECT 1 FROM runs WHERE job_id = ?1 AND event_id = ?3 \
           AND parent_id IS NULL)",
        params![p.job_id, p.expected_version, event.id],
        |r| rows::col::<i64>(r, 0),
    )?
    .is_some();
    if !fenced {
        return Ok(None);
    }
    if let Some(max) = p.max_active
        && crate::store::active_count(conn, p.job_id)? > max
    {
        return Ok(None);
    }
    if p.cancel_active {
        crate::store::cancel_active_runs(conn, p.job_id, now, &[])?;
    }
    // The fences above hold in this transaction: the insert cannot meet its key.
    crate::batch::insert_run(conn, p.job_id, &p.run, now)?
        .map(Some)
        .ok_or_else(|| StoreError::Internal("an event's run met its key after its fence".into()))
}
