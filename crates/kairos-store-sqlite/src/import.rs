//! `kairos store copy`: jobs and run history copied in as they were, except runs that were
//! running (settled by `kairos_store::imported_run`).

use jiff::Timestamp;
use kairos_core::auth::AuditAction;
use kairos_store::{Job, JobImportParams, RunImportParams, StoreError, StoreResult};
use rusqlite::{Connection, params};

use crate::auth::{Change, audit};
use crate::rows::{self, exec, micros};

pub(crate) fn job_import(
    conn: &Connection,
    p: &JobImportParams,
    now: Timestamp,
) -> StoreResult<Job> {
    let j = &p.job;
    let spec = serde_json::to_string(&j.spec).map_err(|e| StoreError::Internal(e.to_string()))?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (namespace, name, spec, version, paused, next_fire_at, created_at, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                j.spec.namespace,
                j.spec.name,
                spec,
                j.version,
                j.spec.paused,
                j.next_fire_at.map(micros),
                micros(j.created_at),
                micros(j.updated_at)
            ])
        });
    match inserted {
        Err(e) if rows::is_unique_violation(&e) => {
            return Err(StoreError::JobExists {
                namespace: j.spec.namespace.clone(),
                name: j.spec.name.clone(),
            });
        }
        Err(e) => return Err(rows::internal(e)),
        Ok(_) => {}
    }
    let id = conn.last_insert_rowid();
    crate::event::set_topics(conn, id, &j.spec)?;
    crate::dependency::set(conn, id, &j.spec)?;
    crate::calendar::set(conn, id, &j.spec)?;
    let change = Change::job(&p.actor, AuditAction::JobCreate, j.namespace(), j.name());
    audit(conn, change.versions(None, Some(j.version)), now)?;
    Ok(Job { id, ..j.clone() })
}

pub(crate) fn run_import(conn: &Connection, p: &RunImportParams) -> StoreResult<u64> {
    let mut copied = 0;
    for (run, attempts) in &p.runs {
        // A run whose node is gone is settled as a rescue would (see `imported_run`).
        let settled = kairos_store::imported_run(run, attempts.len() as u32, p.now);
        let (state, attempt) = (settled.state, settled.attempt);
        let changed = exec(
            conn,
            "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, attempt, \
             max_attempts, execution, exclusive, reason, node, cancel_requested, created_at, \
             started_at, finished_at, exit_code) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT DO NOTHING",
            params![
                p.job_id,
                micros(run.scheduled_for),
                micros(run.run_at),
                state.as_str(),
                run.origin.as_str(),
                attempt,
                run.max_attempts,
                rows::execution_str(run.execution),
                run.exclusive,
                settled.reason,
                settled.node,
                run.cancel_requested,
                micros(run.created_at),
                settled.started_at.map(micros),
                settled.finished_at.map(micros),
                run.exit_code,
            ],
        )?;
        if changed == 0 {
            continue;
        }
        copied += 1;
        let id = conn.last_insert_rowid();
        for a in attempts.iter().chain(&settled.lost) {
            exec(
                conn,
                "INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, status, \
                 exit_code, http_status, error, output, output_truncated, max_rss_kib, \
                 user_cpu_us, sys_cpu_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                 ON CONFLICT (run_id, attempt) DO NOTHING",
                params![
                    id,
                    a.attempt,
                    a.node,
                    micros(a.started_at),
                    micros(a.finished_at),
                    a.status,
                    a.exit_code,
                    a.http_status,
                    a.error,
                    a.output,
                    a.output_truncated,
                    a.max_rss_kib,
                    a.user_cpu_us,
                    a.sys_cpu_us
                ],
            )?;
        }
    }
    Ok(copied)
}
