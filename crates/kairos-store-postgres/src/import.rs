//! `kairos store copy`: jobs and run history copied in as they were, except runs that were
//! running (settled by `kairos_store::imported_run`).

use kairos_core::auth::AuditAction;
use kairos_core::run::RunState;
use kairos_store::{
    Change as Notice, Job, JobImportParams, RunImportParams, StoreError, StoreResult,
};

use crate::auth::{Change, audit};
use crate::changes::Notices;
use crate::connect::PostgresStore;
use crate::rows::{execute, pg_error, query_opt, query_opt_unique};

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl PostgresStore {
    pub(crate) async fn job_import_tx(&self, p: JobImportParams) -> StoreResult<Job> {
        let j = &p.job;
        let spec =
            serde_json::to_string(&j.spec).map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let row = query_opt_unique(
            &tx,
            "INSERT INTO jobs (namespace, name, spec, version, paused, next_fire_at, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &j.spec.namespace,
                &j.spec.name,
                &spec,
                &j.version,
                &j.spec.paused,
                &j.next_fire_at,
                &j.created_at,
                &j.updated_at,
            ],
        )
        .await?
        .map_err(|_| StoreError::JobExists {
            namespace: j.spec.namespace.clone(),
            name: j.spec.name.clone(),
        })?
        .ok_or_else(|| StoreError::Internal("imported job vanished".into()))?;
        let id: i64 = row.try_get(0).map_err(pg_error)?;
        crate::event::set_topics(&tx, id, &j.spec).await?;
        crate::dependency::set(&tx, id, &j.spec).await?;
        crate::calendar::set(&tx, id, &j.spec).await?;
        let change = Change::job(&p.actor, AuditAction::JobCreate, j.namespace(), j.name());
        audit(&tx, change.versions(None, Some(j.version)), &p.now).await?;
        self.commit(tx, Notices::of(Notice::Jobs)).await?;
        Ok(Job { id, ..j.clone() })
    }

    pub(crate) async fn run_import_tx(&self, p: RunImportParams) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut copied = 0;
        let mut queued = false;
        for (run, attempts) in &p.runs {
            // A run whose node is gone is settled as a rescue would (see `imported_run`).
            let settled = kairos_store::imported_run(run, attempts.len() as u32, p.now);
            let (state, attempt) = (settled.state, settled.attempt);
            queued |= state == RunState::Queued;
            let row = query_opt(
                &tx,
                "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, attempt, \
                 max_attempts, execution, exclusive, reason, node, cancel_requested, created_at, \
                 started_at, finished_at, exit_code) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT DO NOTHING RETURNING id",
                &[
                    &p.job_id,
                    &run.scheduled_for,
                    &run.run_at,
                    &state.as_str(),
                    &run.origin.as_str(),
                    &int(attempt),
                    &int(run.max_attempts),
                    &crate::rows::execution_str(run.execution),
                    &run.exclusive,
                    &settled.reason,
                    &settled.node,
                    &run.cancel_requested,
                    &run.created_at,
                    &settled.started_at,
                    &settled.finished_at,
                    &run.exit_code,
                ],
            )
            .await?;
            let Some(row) = row else { continue };
            copied += 1;
            let id: i64 = row.try_get(0).map_err(pg_error)?;
            for a in attempts.iter().chain(&settled.lost) {
                execute(
                    &tx,
                    "INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, \
                     status, exit_code, http_status, error, output, output_truncated, \
                     max_rss_kib, user_cpu_us, sys_cpu_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT (run_id, attempt) DO NOTHING",
                    &[
                        &id,
                        &int(a.attempt),
                        &a.node,
                        &a.started_at,
                        &a.finished_at,
                        &a.status,
                        &a.exit_code,
                        &a.http_status.map(i32::from),
                        &a.error.as_deref().map(crate::batch::text),
                        &crate::batch::text(&a.output),
                        &a.output_truncated,
                        &a.max_rss_kib,
                        &a.user_cpu_us,
                        &a.sys_cpu_us,
                    ],
                )
                .await?;
            }
        }
        let notices = if queued {
            Notices::of(Notice::Runs)
        } else {
            Notices::default()
        };
        self.commit(tx, notices).await?;
        Ok(copied)
    }
}
