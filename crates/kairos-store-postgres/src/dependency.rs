//! Dependency triggers: the `job_deps` rows kept with each job's document, and the checks a
//! job write makes against its namespace (see `kairos_store::dependency`).
//!
//! Concurrency: a write whose document has `after` triggers takes a transaction advisory lock
//! on its namespace's dependencies before it reads them, so that two writes that would close
//! a cycle together (a after b, b after a) see each other; and it share-locks the upstream
//! jobs' rows it found, so that a delete of one of them (which locks the row for update, then
//! looks for dependents) either waits and then finds the new dependent, or goes first and the
//! write finds no upstream.

use deadpool_postgres::GenericClient;
use kairos_core::JobSpec;
use kairos_core::run::JobId;
use kairos_store::{StoreError, StoreResult};

use crate::rows::{col, execute, int, query};

/// Takes the lock on the namespace's dependencies if the job's document has `after` triggers.
/// First in the transaction, before any row lock: a write that holds the lock then waits for
/// rows, never the other way round.
pub(crate) async fn lock(c: &impl GenericClient, schema: &str, spec: &JobSpec) -> StoreResult<()> {
    if !spec.triggers.iter().any(|t| t.after.is_some()) {
        return Ok(());
    }
    let key = crate::connect::fnv1a(&format!("kairos.deps.{schema}.{}", spec.namespace)) as i64;
    execute(c, "SELECT pg_advisory_xact_lock($1)", &[&key]).await?;
    Ok(())
}

/// Locks the row of job `name` and the rows of the jobs its new document runs after, together
/// in id order (jobs are locked in id order, see `crate::batch`), when it has `after`
/// triggers. Before the write locks the job's row on its own.
pub(crate) async fn lock_rows(
    c: &impl GenericClient,
    namespace: &str,
    name: &str,
    spec: &JobSpec,
) -> StoreResult<()> {
    let upstreams = kairos_core::dependency::upstreams(spec);
    if upstreams.is_empty() {
        return Ok(());
    }
    query(
        c,
        "SELECT id FROM jobs WHERE (namespace = $1 AND name = $2) \
           OR (namespace = $3 AND name = ANY($4)) ORDER BY id FOR UPDATE",
        &[&namespace, &name, &spec.namespace, &upstreams],
    )
    .await?;
    Ok(())
}

/// Checks the job's `after` triggers: every upstream job exists in its namespace and none
/// closes a cycle. Run in the transaction that writes the job, after [`lock`].
pub(crate) async fn check(c: &impl GenericClient, spec: &JobSpec) -> StoreResult<()> {
    let upstreams = kairos_core::dependency::upstreams(spec);
    if upstreams.is_empty() {
        return Ok(());
    }
    let existing: Vec<String> = query(
        c,
        "SELECT name FROM jobs WHERE namespace = $1 AND name = ANY($2) ORDER BY id FOR SHARE",
        &[&spec.namespace, &upstreams],
    )
    .await?
    .iter()
    .map(|r| col(r, 0))
    .collect::<StoreResult<_>>()?;
    let edges: Vec<(String, String)> = query(
        c,
        "SELECT DISTINCT j.name, d.upstream FROM job_deps d JOIN jobs j ON j.id = d.job_id \
         WHERE j.namespace = $1",
        &[&spec.namespace],
    )
    .await?
    .iter()
    .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
    .collect::<StoreResult<_>>()?;
    kairos_store::dependency::check(spec, &existing, &edges)
}

/// Replaces the job's `job_deps` rows with those of its document.
pub(crate) async fn set(c: &impl GenericClient, job_id: JobId, spec: &JobSpec) -> StoreResult<()> {
    execute(c, "DELETE FROM job_deps WHERE job_id = $1", &[&job_id]).await?;
    let rows = kairos_store::dependency::rows(spec);
    if rows.is_empty() {
        return Ok(());
    }
    let upstream: Vec<&str> = rows.iter().map(|r| r.upstream.as_str()).collect();
    let state: Vec<&str> = rows.iter().map(|r| r.state).collect();
    let exclusive: Vec<bool> = rows.iter().map(|r| r.exclusive).collect();
    let max_attempts: Vec<i32> = rows.iter().map(|r| int(r.max_attempts)).collect();
    let execution: Vec<&str> = rows
        .iter()
        .map(|r| crate::rows::execution_str(r.execution))
        .collect();
    execute(
        c,
        "INSERT INTO job_deps (job_id, upstream, state, exclusive, max_attempts, execution) \
         SELECT $1, u.upstream, u.state, u.exclusive, u.max_attempts, u.execution \
         FROM unnest($2::text[], $3::text[], $4::boolean[], $5::integer[], $6::text[]) \
           AS u (upstream, state, exclusive, max_attempts, execution)",
        &[
            &job_id,
            &upstream,
            &state,
            &exclusive,
            &max_attempts,
            &execution,
        ],
    )
    .await?;
    Ok(())
}

/// Locks, in job id order, the rows of the jobs that run after the jobs of runs `ids` (whose
/// runs [`runs_ended`] may create), before the statements that lock the runs: jobs before runs,
/// the order of `crate::batch`, so that a delete of a dependent job (its row, then its runs)
/// never waits in a circle with a batch of finishes. The lock is `FOR SHARE`, which a fire's
/// `UPDATE jobs` waits for and makes wait: a fire counts its job's active runs once it holds
/// the job (the overlap fence of `forbid` and `max_concurrent`), so a dependency run is either
/// counted by it or created after it, as a trigger-now's run is (`ensure_job_exists`). (The
/// foreign key check alone, `FOR KEY SHARE`, does not conflict with an update of other columns.)
/// Nothing to lock while no job runs after another.
pub(crate) async fn lock_dependents(
    c: &impl GenericClient,
    ids: &[kairos_core::run::RunId],
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    query(c, LOCK_DEPENDENTS, &[&ids]).await?;
    Ok(())
}

/// The jobs that run after jobs `replacing` (whose runs an `overlap: replace` fire or event
/// cancels, which may create their runs), the jobs of `wave` among them: read without a lock,
/// for the fire to share-lock them with its own jobs' rows, in one id order ([`share`]), before
/// it counts active runs or touches any run. A fire of such a job holds its row while it
/// counts that job's active runs (the overlap fence of `forbid` and `max_concurrent`), so the
/// dependency runs a replacement creates are either counted by that fire or created after it.
/// (A job that starts to run after one of them between this read and the lock is left to
/// [`lock_dependents_of_jobs`].) Prepares the statements of the lock pipeline (`fence`, the
/// caller's, and [`share`]'s) when there is one to share-lock, so that they are sent in the
/// order they are polled.
pub(crate) async fn dependents_to_share(
    c: &impl GenericClient,
    replacing: &[JobId],
    fence: &str,
) -> StoreResult<Vec<JobId>> {
    if replacing.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<JobId> = query(c, DEPENDENTS_OF_JOBS, &[&replacing])
        .await?
        .iter()
        .map(|r| col(r, 0))
        .collect::<StoreResult<_>>()?;
    // A job of the wave is share-locked too, right after its fence: a fence that does not
    // apply (a due time moved, a version changed, a pause) locks nothing.
    if !ids.is_empty() {
        for sql in [fence, SHARE] {
            c.prepare_cached(sql).await.map_err(crate::rows::pg_error)?;
        }
    }
    Ok(ids)
}

/// Share-locks job `id`'s row (see [`dependents_to_share`]).
pub(crate) async fn share(c: &impl GenericClient, id: JobId) -> StoreResult<()> {
    query(c, SHARE, &[&id]).await?;
    Ok(())
}

/// The statement of [`share`].
const SHARE: &str = "SELECT 1 FROM jobs WHERE id = $1 FOR SHARE";

/// The dependents of jobs `$1`, in id order, without a lock.
const DEPENDENTS_OF_JOBS: &str = "SELECT DISTINCT j.id FROM jobs u \
     JOIN job_deps d ON d.upstream = u.name \
     JOIN jobs j ON j.id = d.job_id AND j.namespace = u.namespace \
     WHERE u.id = ANY($1) AND EXISTS (SELECT 1 FROM job_deps) ORDER BY j.id";

/// [`lock_dependents`] for the runs of jobs `job_ids` (the runs `overlap: replace` cancels).
///
/// The dependents known before the fire's locks are share-locked with them already
/// ([`dependents_to_share`]). This catches a job that started to run after one of them
/// meanwhile, with `FOR KEY SHARE` only (what the inserts' foreign key checks take): the fire
/// holds its own jobs' rows already, so a lock here that a fire of the dependent job waits for,
/// and that waits for it, would be taken out of order and could deadlock with that fire. Such
/// a job's dependency run is not serialized with a concurrent fire of it (only when its
/// dependency was written while the replacing fire ran).
pub(crate) async fn lock_dependents_of_jobs(
    c: &impl GenericClient,
    job_ids: &[JobId],
) -> StoreResult<()> {
    if job_ids.is_empty() {
        return Ok(());
    }
    query(
        c,
        "SELECT j.id FROM jobs u \
         JOIN job_deps d ON d.upstream = u.name \
         JOIN jobs j ON j.id = d.job_id AND j.namespace = u.namespace \
         WHERE u.id = ANY($1) ORDER BY j.id FOR KEY SHARE OF j",
        &[&job_ids],
    )
    .await?;
    Ok(())
}

/// The statement of [`lock_dependents`].
const LOCK_DEPENDENTS: &str = "SELECT j.id FROM runs r \
     JOIN jobs u ON u.id = r.job_id \
     JOIN job_deps d ON d.upstream = u.name \
     JOIN jobs j ON j.id = d.job_id AND j.namespace = u.namespace \
     WHERE r.id = ANY($1) AND EXISTS (SELECT 1 FROM job_deps) \
     ORDER BY j.id FOR SHARE OF j";

/// Prepares the statements of [`lock_dependents`] and [`runs_ended`] on the connection (once
/// per connection), so that sent in a pipeline they go out in the order they are polled.
pub(crate) async fn prepare(c: &impl GenericClient) -> StoreResult<()> {
    c.prepare_cached(LOCK_DEPENDENTS)
        .await
        .map_err(crate::rows::pg_error)?;
    c.prepare_cached(RUNS_ENDED)
        .await
        .map_err(crate::rows::pg_error)?;
    Ok(())
}

/// The statement of [`runs_ended`].
const RUNS_ENDED: &str = "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, \
       max_attempts, execution, exclusive, created_at, upstream_run_id) \
     SELECT d.job_id, r.finished_at, r.finished_at, 'queued', 'dependency', d.max_attempts, \
       d.execution, d.exclusive, r.finished_at, r.id \
     FROM runs r \
     JOIN jobs u ON u.id = r.job_id \
     JOIN job_deps d ON d.upstream = u.name AND d.state = r.state \
     JOIN jobs j ON j.id = d.job_id AND j.namespace = u.namespace AND NOT j.paused \
     WHERE r.id = ANY($1) AND r.parent_id IS NULL AND r.finished_at IS NOT NULL \
       AND EXISTS (SELECT 1 FROM job_deps) \
     ORDER BY r.id, d.job_id \
     ON CONFLICT DO NOTHING RETURNING 1";

/// Creates the runs of the jobs that run after the jobs of runs `ids`, for those of the runs
/// that are top-level runs ended in a state the dependents wait for: one per dependent job
/// (not paused) and upstream run, whatever happens to the run afterwards (`runs_upstream` is
/// unique; an existing one is left alone, so a run seen twice is harmless). Send it in the
/// transaction that ended the runs, after the statements that did (it may be pipelined
/// behind them). Notes `Runs` when it queued any. While no job runs after another it costs
/// one look at an empty table.
pub(crate) async fn runs_ended(
    c: &impl GenericClient,
    ids: &[kairos_core::run::RunId],
    notices: &mut crate::changes::Notices,
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let queued = query(c, RUNS_ENDED, &[&ids]).await?;
    notices.add_if(!queued.is_empty(), kairos_store::Change::Runs);
    Ok(())
}

/// `HasDependents` if other jobs of the namespace run after job `name` (`job_id`, whose row
/// the caller has locked).
pub(crate) async fn refuse_if_depended_on(
    c: &impl GenericClient,
    job_id: JobId,
    namespace: &str,
    name: &str,
) -> StoreResult<()> {
    let dependents: Vec<String> = query(
        c,
        "SELECT DISTINCT j.name FROM job_deps d JOIN jobs j ON j.id = d.job_id \
         WHERE d.upstream = $1 AND j.namespace = $2 AND j.id <> $3 ORDER BY j.name",
        &[&name, &namespace, &job_id],
    )
    .await?
    .iter()
    .map(|r| col(r, 0))
    .collect::<StoreResult<_>>()?;
    if dependents.is_empty() {
        return Ok(());
    }
    Err(StoreError::HasDependents {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        dependents,
    })
}
