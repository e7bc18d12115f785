//! Row mapping between SQLite and the store model, and the statement helpers every query uses.

use jiff::Timestamp;
use kairos_core::spec::{ExecutionMode, JobSpec};
use kairos_store::{Attempt, Job, Run, StoreError, StoreResult};
use rusqlite::{Connection, ErrorCode, Params, Row};

pub(crate) fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

pub(crate) fn instant(us: i64) -> StoreResult<Timestamp> {
    Timestamp::from_microsecond(us)
        .map_err(|e| StoreError::Internal(format!("bad instant {us}: {e}")))
}

pub(crate) fn opt_instant(us: Option<i64>) -> StoreResult<Option<Timestamp>> {
    us.map(instant).transpose()
}

pub(crate) fn execution_str(e: ExecutionMode) -> &'static str {
    match e {
        ExecutionMode::AtLeastOnce => "at_least_once",
        ExecutionMode::AtMostOnce => "at_most_once",
    }
}

pub(crate) fn execution_from(s: &str) -> StoreResult<ExecutionMode> {
    match s {
        "at_least_once" => Ok(ExecutionMode::AtLeastOnce),
        "at_most_once" => Ok(ExecutionMode::AtMostOnce),
        other => Err(StoreError::Internal(format!(
            "unknown execution mode `{other}`"
        ))),
    }
}

/// Every row of a cached statement, mapped by `f`.
pub(crate) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    mut f: impl FnMut(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(internal)?;
    let mut rows = stmt.query(params).map_err(internal)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(internal)? {
        out.push(f(row)?);
    }
    Ok(out)
}

/// The first row of a cached statement, if any, mapped by `f`. The statement runs to its end
/// (an `UPDATE … RETURNING` applies to every row it matches).
pub(crate) fn first<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    mut f: impl FnMut(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(internal)?;
    let mut rows = stmt.query(params).map_err(internal)?;
    let mut out = None;
    while let Some(row) = rows.next().map_err(internal)? {
        if out.is_none() {
            out = Some(f(row)?);
        }
    }
    Ok(out)
}

/// Runs a cached statement that returns no rows; the number of rows changed.
pub(crate) fn exec(conn: &Connection, sql: &str, params: impl Params) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .map_err(internal)?
        .execute(params)
        .map_err(internal)
}

/// Column `i` of a row.
pub(crate) fn col<T: rusqlite::types::FromSql>(row: &Row<'_>, i: usize) -> StoreResult<T> {
    row.get(i).map_err(internal)
}

/// `SELECT {JOB_COLUMNS}` rows map with [`job`].
pub(crate) const JOB_COLUMNS: &str =
    "id, spec, version, paused, next_fire_at, created_at, updated_at";

pub(crate) fn job(row: &Row<'_>) -> StoreResult<Job> {
    let spec = row.get_ref(1).map_err(internal)?;
    let spec = spec
        .as_str()
        .map_err(|e| StoreError::Internal(format!("stored job spec is not text: {e}")))?;
    let mut spec: JobSpec = serde_json::from_str(spec)
        .map_err(|e| StoreError::Internal(format!("stored job spec does not parse: {e}")))?;
    spec.paused = col::<i64>(row, 3)? != 0;
    Ok(Job {
        id: col(row, 0)?,
        spec,
        version: col(row, 2)?,
        next_fire_at: opt_instant(col(row, 4)?)?,
        created_at: instant(col(row, 5)?)?,
        updated_at: instant(col(row, 6)?)?,
    })
}

/// `{RUN_SELECT} WHERE …` rows map with [`run`].
pub(crate) const RUN_SELECT: &str = "SELECT r.id, r.job_id, j.namespace, j.name, \
     r.scheduled_for, r.run_at, r.state, r.origin, r.attempt, r.max_attempts, r.execution, \
     r.exclusive, r.reason, r.node, r.lease_expires_at, r.cancel_requested, r.created_at, \
     r.started_at, r.finished_at, r.exit_code, r.parent_id, r.step, r.result, r.params, \
     r.event_id, r.event_topic, r.event_payload, r.upstream_run_id, r.progress, \
     r.progress_message, r.checkpoint, r.reported_at, r.begun \
     FROM runs r JOIN jobs j ON j.id = r.job_id";

fn text<'r>(row: &'r Row<'_>, i: usize) -> StoreResult<&'r str> {
    row.get_ref(i)
        .map_err(internal)?
        .as_str()
        .map_err(|e| StoreError::Internal(format!("column {i}: {e}")))
}

pub(crate) fn run(row: &Row<'_>) -> StoreResult<Run> {
    Ok(Run {
        id: col(row, 0)?,
        job_id: col(row, 1)?,
        namespace: col(row, 2)?,
        job_name: col(row, 3)?,
        scheduled_for: instant(col(row, 4)?)?,
        run_at: instant(col(row, 5)?)?,
        state: text(row, 6)?.parse().map_err(StoreError::Internal)?,
        origin: text(row, 7)?.parse().map_err(StoreError::Internal)?,
        attempt: col::<i64>(row, 8)? as u32,
        max_attempts: col::<i64>(row, 9)? as u32,
        execution: execution_from(text(row, 10)?)?,
        exclusive: col::<i64>(row, 11)? != 0,
        reason: col(row, 12)?,
        node: col(row, 13)?,
        lease_expires_at: opt_instant(col(row, 14)?)?,
        cancel_requested: col::<i64>(row, 15)? != 0,
        created_at: instant(col(row, 16)?)?,
        started_at: opt_instant(col(row, 17)?)?,
        finished_at: opt_instant(col(row, 18)?)?,
        exit_code: col(row, 19)?,
        parent_id: col(row, 20)?,
        step: col(row, 21)?,
        result: col(row, 22)?,
        params: col(row, 23)?,
        event: match col::<Option<String>>(row, 24)? {
            Some(id) => Some(kairos_store::RunEvent {
                id,
                topic: col::<Option<String>>(row, 25)?.unwrap_or_default(),
                payload: col::<Option<String>>(row, 26)?.unwrap_or_default(),
            }),
            None => None,
        },
        upstream_run_id: col(row, 27)?,
        report: match col::<Option<i64>>(row, 31)? {
            Some(at) => Some(kairos_store::RunReport {
                progress: col(row, 28)?,
                message: col(row, 29)?,
                checkpoint: col(row, 30)?,
                at: instant(at)?,
            }),
            None => None,
        },
        begun: col::<i64>(row, 32)? != 0,
    })
}

/// `SELECT {ATTEMPT_COLUMNS}` rows map with [`attempt`].
pub(crate) const ATTEMPT_COLUMNS: &str = "run_id, attempt, node, started_at, finished_at, status, \
     exit_code, http_status, error, output, output_truncated, max_rss_kib, user_cpu_us, sys_cpu_us";

pub(crate) fn attempt(row: &Row<'_>) -> StoreResult<Attempt> {
    Ok(Attempt {
        run_id: col(row, 0)?,
        attempt: col::<i64>(row, 1)? as u32,
        node: col(row, 2)?,
        started_at: instant(col(row, 3)?)?,
        finished_at: instant(col(row, 4)?)?,
        status: col(row, 5)?,
        exit_code: col(row, 6)?,
        http_status: col::<Option<i64>>(row, 7)?.map(|s| s as u16),
        error: col(row, 8)?,
        output: col(row, 9)?,
        output_truncated: col::<i64>(row, 10)? != 0,
        max_rss_kib: col(row, 11)?,
        user_cpu_us: col(row, 12)?,
        sys_cpu_us: col(row, 13)?,
    })
}

/// Whether an error is a violated UNIQUE (or primary key) constraint.
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Maps a SQLite error: a damaged, unwritable or unreachable file is `Unavailable` (the node
/// cannot work; the message says why), anything else `Internal`.
pub(crate) fn internal(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            let msg = msg.clone().unwrap_or_else(|| f.to_string());
            match f.code {
                ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                    StoreError::Unavailable(format!("the database file is corrupt: {msg}"))
                }
                ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
                    StoreError::Unavailable(format!("the database cannot be written: {msg}"))
                }
                ErrorCode::SystemIoFailure | ErrorCode::DiskFull => {
                    StoreError::Unavailable(format!("database I/O error: {msg}"))
                }
                _ => StoreError::Internal(e.to_string()),
            }
        }
        _ => StoreError::Internal(e.to_string()),
    }
}
