//! Dependency triggers: the `job_deps` rows kept with each job's document, and the checks a
//! job write makes against its namespace (see `kairos_store::dependency`).

use kairos_core::JobSpec;
use kairos_core::run::JobId;
use kairos_store::{StoreError, StoreResult};
use rusqlite::{Connection, params};

use crate::rows::{all, col, exec};

/// Checks the job's `after` triggers: every upstream job exists in its namespace and none
/// closes a cycle. Run in the transaction that writes the job.
pub(crate) fn check(conn: &Connection, spec: &JobSpec) -> StoreResult<()> {
    let upstreams = kairos_core::dependency::upstreams(spec);
    if upstreams.is_empty() {
        return Ok(());
    }
    let names =
        serde_json::to_string(&upstreams).map_err(|e| StoreError::Internal(e.to_string()))?;
    let existing = all(
        conn,
        "SELECT name FROM jobs WHERE namespace = ?1 AND name IN (SELECT value FROM json_each(?2))",
        params![spec.namespace, names],
        |r| col::<String>(r, 0),
    )?;
    let edges = edges(conn, &spec.namespace)?;
    kairos_store::dependency::check(spec, &existing, &edges)
}

/// `(job, job it runs after)` for every dependency of the namespace.
fn edges(conn: &Connection, namespace: &str) -> StoreResult<Vec<(String, String)>> {
    all(
        conn,
        "SELECT DISTINCT j.name, d.upstream FROM job_deps d JOIN jobs j ON j.id = d.job_id \
         WHERE j.namespace = ?1",
        [namespace],
        |r| Ok((col(r, 0)?, col(r, 1)?)),
    )
}

/// Replaces the job's `job_deps` rows with those of its document.
pub(crate) fn set(conn: &Connection, job_id: JobId, spec: &JobSpec) -> StoreResult<()> {
    exec(conn, "DELETE FROM job_deps WHERE job_id = ?1", [job_id])?;
    for row in kairos_store::dependency::rows(spec) {
        exec(
            conn,
            "INSERT INTO job_deps (job_id, upstream, state, exclusive, max_attempts, execution) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                job_id,
                row.upstream,
                row.state,
                row.exclusive,
                row.max_attempts,
                crate::rows::execution_str(row.execution)
            ],
        )?;
    }
    Ok(())
}

/// Creates the runs of the jobs that run after run `run_id`'s job, if the run is a top-level
/// run that has just ended in a state they wait for: one per dependent job (not paused) and
/// upstream run, whatever happens to the run afterwards (`runs_upstream` is unique, and the
/// insert leaves an existing one alone). Call it in the transaction that ended the run,
/// wherever a run ends. Costs one look at an empty table while no job runs after another.
pub(crate) fn run_ended(conn: &Connection, run_id: kairos_core::run::RunId) -> StoreResult<()> {
    // First the one look, on its own: the insert below is planned from the run.
    if crate::rows::first(conn, "SELECT 1 FROM job_deps LIMIT 1", [], |r| {
        col::<i64>(r, 0)
    })?
    .is_none()
    {
        return Ok(());
    }
    exec(
        conn,
        "INSERT OR IGNORE INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
           execution, exclusive, created_at, upstream_run_id) \
         SELECT d.job_id, r.finished_at, r.finished_at, 'queued', 'dependency', d.max_attempts, \
           d.execution, d.exclusive, r.finished_at, r.id \
         FROM runs r \
         JOIN jobs u ON u.id = r.job_id \
         JOIN job_deps d ON d.upstream = u.name AND d.state = r.state \
         JOIN jobs j ON j.id = d.job_id AND j.namespace = u.namespace AND j.paused = 0 \
         WHERE r.id = ?1 AND r.parent_id IS NULL AND r.finished_at IS NOT NULL \
         ORDER BY d.job_id",
        [run_id],
    )?;
    Ok(())
}

/// `HasDependents` if other jobs of the namespace run after job `name` (`job_id`).
pub(crate) fn refuse_if_depended_on(
    conn: &Connection,
    job_id: JobId,
    namespace: &str,
    name: &str,
) -> StoreResult<()> {
    let dependents = all(
        conn,
        "SELECT DISTINCT j.name FROM job_deps d JOIN jobs j ON j.id = d.job_id \
         WHERE d.upstream = ?1 AND j.namespace = ?2 AND j.id <> ?3 ORDER BY j.name",
        params![name, namespace, job_id],
        |r| col::<String>(r, 0),
    )?;
    if dependents.is_empty() {
        return Ok(());
    }
    Err(StoreError::HasDependents {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        dependents,
    })
}
