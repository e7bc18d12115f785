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
