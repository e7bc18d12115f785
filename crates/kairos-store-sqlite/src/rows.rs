//! Row mapping between SQLite and the store model.

use jiff::Timestamp;
use kairos_core::spec::{ExecutionMode, JobSpec};
use kairos_store::{Attempt, Job, Run, StoreError, StoreResult};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

pub(crate) fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

pub(crate) fn instant(us: i64) -> StoreResult<Timestamp> {
    Timestamp::from_microsecond(us)
        .map_err(|e| StoreError::Internal(format!("bad instant {us}: {e}")))
}

fn opt_instant(us: Option<i64>) -> StoreResult<Option<Timestamp>> {
    us.map(instant).transpose()
}

pub(crate) fn execution_str(e: ExecutionMode) -> &'static str {
    match e {
        ExecutionMode::AtLeastOnce => "at_least_once",
        ExecutionMode::AtMostOnce => "at_most_once",
    }
}

fn execution_from(s: &str) -> StoreResult<ExecutionMode> {
    match s {
        "at_least_once" => Ok(ExecutionMode::AtLeastOnce),
        "at_most_once" => Ok(ExecutionMode::AtMostOnce),
        other => Err(StoreError::Internal(format!(
            "unknown execution mode `{other}`"
        ))),
    }
}

pub(crate) const JOB_COLUMNS: &str =
    "id, spec, version, paused, next_fire_at, created_at, updated_at";

pub(crate) fn job(row: &SqliteRow) -> StoreResult<Job> {
    let spec: String = row.try_get("spec").map_err(internal)?;
    let mut spec: JobSpec = serde_json::from_str(&spec)
        .map_err(|e| StoreError::Internal(format!("stored job spec does not parse: {e}")))?;
    spec.paused = row.try_get::<i64, _>("paused").map_err(internal)? != 0;
    Ok(Job {
        id: row.try_get("id").map_err(internal)?,
        spec,
        version: row.try_get("version").map_err(internal)?,
        next_fire_at: opt_instant(row.try_get("next_fire_at").map_err(internal)?)?,
        created_at: instant(row.try_get("created_at").map_err(internal)?)?,
        updated_at: instant(row.try_get("updated_at").map_err(internal)?)?,
    })
}

pub(crate) const RUN_SELECT: &str = "SELECT r.id, r.job_id, j.namespace, j.name AS job_name, \
     r.scheduled_for, r.run_at, r.state, r.origin, r.attempt, r.max_attempts, r.execution, \
     r.exclusive, r.reason, r.node, r.lease_expires_at, r.cancel_requested, r.created_at, \
     r.started_at, r.finished_at, r.exit_code FROM runs r JOIN jobs j ON j.id = r.job_id";

pub(crate) fn run(row: &SqliteRow) -> StoreResult<Run> {
    let state: String = row.try_get("state").map_err(internal)?;
    let origin: String = row.try_get("origin").map_err(internal)?;
    let execution: String = row.try_get("execution").map_err(internal)?;
    Ok(Run {
        id: row.try_get("id").map_err(internal)?,
        job_id: row.try_get("job_id").map_err(internal)?,
        namespace: row.try_get("namespace").map_err(internal)?,
        job_name: row.try_get("job_name").map_err(internal)?,
        scheduled_for: instant(row.try_get("scheduled_for").map_err(internal)?)?,
        run_at: instant(row.try_get("run_at").map_err(internal)?)?,
        state: state.parse().map_err(StoreError::Internal)?,
        origin: origin.parse().map_err(StoreError::Internal)?,
        attempt: row.try_get::<i64, _>("attempt").map_err(internal)? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts").map_err(internal)? as u32,
        execution: execution_from(&execution)?,
        exclusive: row.try_get::<i64, _>("exclusive").map_err(internal)? != 0,
        reason: row.try_get("reason").map_err(internal)?,
        node: row.try_get("node").map_err(internal)?,
        lease_expires_at: opt_instant(row.try_get("lease_expires_at").map_err(internal)?)?,
        cancel_requested: row
            .try_get::<i64, _>("cancel_requested")
            .map_err(internal)?
            != 0,
        created_at: instant(row.try_get("created_at").map_err(internal)?)?,
        started_at: opt_instant(row.try_get("started_at").map_err(internal)?)?,
        finished_at: opt_instant(row.try_get("finished_at").map_err(internal)?)?,
        exit_code: row.try_get("exit_code").map_err(internal)?,
    })
}

pub(crate) fn attempt(row: &SqliteRow) -> StoreResult<Attempt> {
    Ok(Attempt {
        run_id: row.try_get("run_id").map_err(internal)?,
        attempt: row.try_get::<i64, _>("attempt").map_err(internal)? as u32,
        node: row.try_get("node").map_err(internal)?,
        started_at: instant(row.try_get("started_at").map_err(internal)?)?,
        finished_at: instant(row.try_get("finished_at").map_err(internal)?)?,
        status: row.try_get("status").map_err(internal)?,
        exit_code: row.try_get("exit_code").map_err(internal)?,
        http_status: row
            .try_get::<Option<i64>, _>("http_status")
            .map_err(internal)?
            .map(|s| s as u16),
        error: row.try_get("error").map_err(internal)?,
        output: row.try_get("output").map_err(internal)?,
        output_truncated: row
            .try_get::<i64, _>("output_truncated")
            .map_err(internal)?
            != 0,
        max_rss_kib: row.try_get("max_rss_kib").map_err(internal)?,
        user_cpu_us: row.try_get("user_cpu_us").map_err(internal)?,
        sys_cpu_us: row.try_get("sys_cpu_us").map_err(internal)?,
    })
}

pub(crate) fn internal(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let msg = db.message();
            if msg.contains("not a database") || msg.contains("malformed") {
                StoreError::Unavailable(format!("the database file is corrupt: {msg}"))
            } else if msg.contains("readonly") || msg.contains("unable to open") {
                StoreError::Unavailable(format!("the database cannot be written: {msg}"))
            } else {
                StoreError::Internal(e.to_string())
            }
        }
        sqlx::Error::Io(io) => StoreError::Unavailable(format!("database I/O error: {io}")),
        _ => StoreError::Internal(e.to_string()),
    }
}
