//! Row mapping between PostgreSQL and the store model, error mapping, and the statement helpers
//! every query goes through (each statement is prepared once per connection and cached).

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use kairos_core::spec::{ExecutionMode, JobSpec};
use kairos_store::{Attempt, Job, Run, StoreError, StoreResult};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};

/// Statement parameters.
pub(crate) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// `SELECT` list of a job (`job_at` maps it).
macro_rules! job_columns {
    () => {
        "j.id, j.spec, j.version, j.paused, j.next_fire_at, j.created_at, j.updated_at"
    };
}

/// `SELECT` list of a run, with its job's namespace and name (`run` maps it).
macro_rules! run_columns {
    () => {
        "r.id, r.job_id, j.namespace, j.name, r.scheduled_for, r.run_at, r.state, r.origin, \
         r.attempt, r.max_attempts, r.execution, r.exclusive, r.reason, r.node, \
         r.lease_expires_at, r.cancel_requested, r.created_at, r.started_at, r.finished_at, \
         r.exit_code, r.parent_id, r.step, r.result, r.params, r.event_id, r.event_topic, \
         r.event_payload, r.upstream_run_id, r.progress, r.progress_message, r.checkpoint, \
         r.reported_at, r.begun"
    };
}

pub(crate) use {job_columns, run_columns};

/// Number of columns in `run_columns!()`: a claim's job columns follow at this offset.
pub(crate) const RUN_WIDTH: usize = 33;

/// `{RUN_SELECT} WHERE …` rows map with [`run`].
pub(crate) const RUN_SELECT: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs r JOIN jobs j ON j.id = r.job_id"
);

/// `{JOB_SELECT} WHERE …` rows map with [`job`].
pub(crate) const JOB_SELECT: &str = concat!("SELECT ", job_columns!(), " FROM jobs j");

/// `SELECT {ATTEMPT_COLUMNS}` rows map with [`attempt`].
pub(crate) const ATTEMPT_COLUMNS: &str = "run_id, attempt, node, started_at, finished_at, status, \
     exit_code, http_status, error, output, output_truncated, max_rss_kib, user_cpu_us, sys_cpu_us";

/// Every row of a cached statement.
pub(crate) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> StoreResult<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.query(&stmt, params).await.map_err(pg_error)
}

/// The row of a cached statement that returns at most one.
pub(crate) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> StoreResult<Option<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.query_opt(&stmt, params).await.map_err(pg_error)
}

/// [`query_opt`], except that a violated unique constraint is `Ok(Err(constraint name))`, for
/// the caller to turn into `JobExists` or `TokenExists` (the transaction is then aborted: the
/// caller returns the error and drops it).
pub(crate) async fn query_opt_unique(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> StoreResult<Result<Option<Row>, String>> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    match c.query_opt(&stmt, params).await {
        Ok(row) => Ok(Ok(row)),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(Err(e
            .as_db_error()
            .and_then(|d| d.constraint())
            .unwrap_or_default()
            .to_owned())),
        Err(e) => Err(pg_error(e)),
    }
}

/// Runs a cached statement; the number of rows it changed.
pub(crate) async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> StoreResult<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.execute(&stmt, params).await.map_err(pg_error)
}

/// Column `i` of a row.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> StoreResult<T> {
    row.try_get(i)
        .map_err(|e| StoreError::Internal(format!("column {i}: {}", describe(&e))))
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

/// The job whose `job_columns!()` start at column `at`.
pub(crate) fn job_at(row: &Row, at: usize) -> StoreResult<Job> {
    let spec: &str = col(row, at + 1)?;
    let mut spec: JobSpec = serde_json::from_str(spec)
        .map_err(|e| StoreError::Internal(format!("stored job spec does not parse: {e}")))?;
    spec.paused = col(row, at + 3)?;
    Ok(Job {
        id: col(row, at)?,
        spec,
        version: col(row, at + 2)?,
        next_fire_at: col(row, at + 4)?,
        created_at: col(row, at + 5)?,
        updated_at: col(row, at + 6)?,
    })
}

pub(crate) fn job(row: &Row) -> StoreResult<Job> {
    job_at(row, 0)
}

fn count(row: &Row, i: usize) -> StoreResult<u32> {
    Ok(u32::try_from(col::<i32>(row, i)?).unwrap_or(0))
}

pub(crate) fn run(row: &Row) -> StoreResult<Run> {
    Ok(Run {
        id: col(row, 0)?,
        job_id: col(row, 1)?,
        namespace: col(row, 2)?,
        job_name: col(row, 3)?,
        scheduled_for: col(row, 4)?,
        run_at: col(row, 5)?,
        state: col::<&str>(row, 6)?.parse().map_err(StoreError::Internal)?,
        origin: col::<&str>(row, 7)?.parse().map_err(StoreError::Internal)?,
        attempt: count(row, 8)?,
        max_attempts: count(row, 9)?,
        execution: execution_from(col(row, 10)?)?,
        exclusive: col(row, 11)?,
        reason: col(row, 12)?,
        node: col(row, 13)?,
        lease_expires_at: col(row, 14)?,
        cancel_requested: col(row, 15)?,
        created_at: col(row, 16)?,
        started_at: col(row, 17)?,
        finished_at: col(row, 18)?,
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
        report: match col::<Option<jiff::Timestamp>>(row, 31)? {
            Some(at) => Some(kairos_store::RunReport {
                progress: col(row, 28)?,
                message: col(row, 29)?,
                checkpoint: col(row, 30)?,
                at,
            }),
            None => None,
        },
        begun: col(row, 32)?,
    })
}

pub(crate) fn attempt(row: &Row) -> StoreResult<Attempt> {
    Ok(Attempt {
        run_id: col(row, 0)?,
        attempt: count(row, 1)?,
        node: col(row, 2)?,
        started_at: col(row, 3)?,
        finished_at: col(row, 4)?,
        status: col(row, 5)?,
        exit_code: col(row, 6)?,
        http_status: col::<Option<i32>>(row, 7)?.and_then(|s| u16::try_from(s).ok()),
        error: col(row, 8)?,
        output: col(row, 9)?,
        output_truncated: col(row, 10)?,
        max_rss_kib: col(row, 11)?,
        user_cpu_us: col(row, 12)?,
        sys_cpu_us: col(row, 13)?,
    })
}

/// A count or attempt number as the `integer` column stores it.
pub(crate) fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A duration as whole microseconds (`$n::bigint * interval '1 microsecond'` in SQL).
pub(crate) fn micros(d: jiff::SignedDuration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(if d.is_negative() { i64::MIN } else { i64::MAX })
}

/// The instant a `SELECT min(...)` returned, if any row matched.
pub(crate) fn earliest(row: Option<Row>, i: usize) -> StoreResult<Option<Timestamp>> {
    match row {
        Some(row) => col(&row, i),
        None => Ok(None),
    }
}

/// An error and its causes, `: `-separated (tokio-postgres shows only the outermost by itself).
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Maps a driver error. A lost or refused connection, a server shutting down or out of
/// connections is `Unavailable` (the node cannot work; the message says why). A deadlock or
/// serialization failure is `Internal` with a message that says the write may be retried (the
/// statements lock rows in id order so that this does not happen). Unique violations that mean
/// something to the caller are caught before this ([`query_opt_unique`]).
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let msg = describe(&e);
    let Some(code) = e.code() else {
        let io = std::iter::successors(std::error::Error::source(&e), |c| c.source())
            .any(|c| c.is::<std::io::Error>());
        return if e.is_closed()
            || io
            || msg.starts_with("timeout")
            || msg.starts_with("error connecting")
        {
            StoreError::Unavailable(format!("PostgreSQL is unreachable: {msg}"))
        } else {
            StoreError::Internal(msg)
        };
    };
    if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE {
        return StoreError::Internal(format!(
            "a concurrent transaction conflicted with this write, which was rolled back and \
             may be retried: {msg}"
        ));
    }
    let unavailable = code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::DISK_FULL,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::INVALID_CATALOG_NAME,
        ]
        .contains(code);
    if unavailable {
        StoreError::Unavailable(format!("PostgreSQL refused the request: {msg}"))
    } else {
        StoreError::Internal(msg)
    }
}

/// Maps an error of the connection pool.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(kind) => StoreError::Unavailable(format!(
            "no PostgreSQL connection within the pool's timeout ({kind:?})"
        )),
        PoolError::Closed => StoreError::Unavailable("the store is closed".into()),
        other => StoreError::Unavailable(format!("PostgreSQL connection pool: {other}")),
    }
}
