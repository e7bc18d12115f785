//! `kairos store copy`: grow from one node into a cluster (or move a cluster) without entering
//! anything again: calendars, jobs with their versions, state and next due times, and the run
//! history with attempts and output, copied from one store into an empty one.
//!
//! The source must not be in use (a SQLite store is locked by its running node, so the copy
//! refuses to start while it runs). A run that was running in the source (its node is gone)
//! is settled as a rescue would settle it (`kairos_store::imported_run`): it runs again, or
//! ends `lost` if it is `at_most_once` and began, or `cancelled` if it was asked to stop.
//! Tokens and the audit log are not copied: create tokens in the new store with
//! `kairos token create --store URL`.

use kairos_store::{JobImportParams, JobListParams, RunImportParams, RunListParams, Store};

use crate::cli::StoreCmd;
use crate::store_url::StoreUrl;

/// Runs copied per transaction.
const BATCH: usize = 500;

pub async fn run(cmd: StoreCmd) -> anyhow::Result<()> {
    let StoreCmd::Copy { from, to } = cmd;
    let (from, to) = (StoreUrl::parse(&from)?, StoreUrl::parse(&to)?);
    if from == to {
        anyhow::bail!("--from and --to are the same store");
    }
    let source = from.open().await?;
    let target = to.open().await?;
    let (calendars, jobs, runs) = copy(source.as_ref(), target.as_ref()).await?;
    eprintln!(
        "copied {jobs} jobs and {runs} runs (and {calendars} calendars) from {} to {}; tokens and the audit log are not copied",
        from.redacted(),
        to.redacted()
    );
    Ok(())
}

/// Copies every calendar, job and run of `source` into `target`, which must have none of its
/// jobs: the calendars first (the jobs name them), each at version 1. Counts of each copied.
pub async fn copy(source: &dyn Store, target: &dyn Store) -> anyhow::Result<(u64, u64, u64)> {
    let jobs = source
        .job_list(JobListParams {
            namespaces: None,
            limit: 0,
        })
        .await?;
    let taken = target
        .job_list(JobListParams {
            namespaces: None,
            limit: 0,
        })
        .await?;
    if !taken.is_empty() {
        let names: Vec<String> = taken
            .iter()
            .take(5)
            .map(|j| format!("{}/{}", j.namespace(), j.name()))
            .collect();
        anyhow::bail!(
            "the target store has jobs already ({}{}); copy into an empty store",
            names.join(", "),
            if taken.len() > 5 { ", …" } else { "" }
        );
    }
    let calendars = source
        .calendar_list(kairos_store::CalendarListParams::default())
        .await?;
    let taken = target
        .calendar_list(kairos_store::CalendarListParams::default())
        .await?;
    if !taken.is_empty() {
        anyhow::bail!(
            "the target store has calendars already ({}); copy into an empty store",
            taken
                .iter()
                .take(5)
                .map(|c| format!("{}/{}", c.spec.namespace, c.spec.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for calendar in &calendars {
        target
            .calendar_put(kairos_store::CalendarPutParams {
                spec: calendar.spec.clone(),
                expected_version: None,
                replans: Vec::new(),
                actor: "copy".into(),
                now: None,
            })
            .await?;
    }
    let (mut job_count, mut run_count) = (0u64, 0u64);
    for job in jobs {
        let source_id = job.id;
        let copied = target
            .job_import(JobImportParams {
                job,
                actor: "copy".into(),
                now: None,
            })
            .await?;
        job_count += 1;
        // Oldest first, so that the copies get ids in the same order (listings, paging).
        let mut runs = Vec::new();
        let mut before_id = None;
        loop {
            let page = source
                .run_list(RunListParams {
                    job_id: Some(source_id),
                    limit: BATCH as u32,
                    before_id,
                    ..RunListParams::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            before_id = Some(last.id);
            runs.extend(page);
        }
        runs.reverse();
        for chunk in runs.chunks(BATCH) {
            let mut batch = Vec::with_capacity(chunk.len());
            for run in chunk {
                let attempts = source
                    .attempt_list(kairos_store::AttemptListParams { run_id: run.id })
                    .await?;
                batch.push((run.clone(), attempts));
            }
            run_count += target
                .run_import(RunImportParams {
                    job_id: copied.id,
                    runs: batch,
                    now: kairos_runtime::Clock::now(&kairos_runtime::SystemClock),
                })
                .await?;
        }
    }
    Ok((calendars.len() as u64, job_count, run_count))
}
