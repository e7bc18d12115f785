//! The scheduler: turns due times into runs, exactly once.
//!
//! It never scans every job: [`Scheduler::run_once`] reads only jobs whose `next_fire_at` has
//! come (through the store's index), plans each job's round with the pure
//! [`kairos_core::policy::plan_fires`] and [`kairos_core::policy::decide_overlap`], and writes the
//! round with `job_fire`, which inserts the runs and advances `next_fire_at` in one transaction
//! fenced by the old `next_fire_at`. The loop then sleeps until the earliest `next_fire_at`,
//! woken early when a job changes (with a polling fallback).

use jiff::{SignedDuration, Timestamp};
use kairos_core::policy::{OverlapDecision, decide_overlap, plan_fires};
use kairos_core::run::{RunOrigin, SkipReason};
use kairos_store::{Job, JobDueParams, JobFireParams, RunInsert, StoreError};
use tokio_util::sync::CancellationToken;

use crate::context::NodeContext;
use crate::telemetry::Event;

/// Jobs handled per store read; more are handled in the next pass without sleeping.
const DUE_BATCH: u32 = 512;
/// Longest sleep without looking at the store (fallback for missed notifications).
const POLL_FALLBACK: SignedDuration = SignedDuration::from_secs(5);

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SchedulerReport {
    pub jobs_fired: usize,
    pub runs_queued: usize,
    pub runs_skipped: usize,
    /// A full batch was read: call again at once.
    pub more: bool,
}

pub struct Scheduler {
    ctx: NodeContext,
}

impl Scheduler {
    pub fn new(ctx: NodeContext) -> Self {
        Self { ctx }
    }

    /// Fires every job due at `now`.
    pub async fn run_once(&self) -> Result<SchedulerReport, StoreError> {
        let now = self.ctx.clock.now();
        let due = self
            .ctx
            .store
            .job_due(JobDueParams {
                before: now,
                limit: DUE_BATCH,
            })
            .await?;
        let mut report = SchedulerReport {
            more: due.len() == DUE_BATCH as usize,
            ..Default::default()
        };
        for job in due {
            match self.fire_job(&job, now).await {
                Ok((queued, skipped)) => {
                    report.jobs_fired += 1;
                    report.runs_queued += queued;
                    report.runs_skipped += skipped;
                }
                Err(e) => tracing::error!(job = job.name(), error = %e, "firing a job failed"),
            }
        }
        if report.runs_queued > 0 {
            self.ctx.worker_wake.notify_one();
        }
        Ok(report)
    }

    async fn fire_job(&self, job: &Job, now: Timestamp) -> Result<(usize, usize), StoreError> {
        let Some(expected) = job.next_fire_at else {
            return Ok((0, 0));
        };
        let plan = match self.ctx.plans.get(job) {
            Ok(plan) => plan,
            Err(e) => {
                // Stored specs were validated on write; a spec that no longer validates (e.g. a
                // time zone removed from the database) stops firing instead of looping.
                tracing::error!(job = job.name(), error = %e, "stored job no longer validates; it will not fire");
                self.ctx
                    .store
                    .job_fire(JobFireParams {
                        job_id: job.id,
                        expected_next_fire_at: expected,
                        runs: vec![],
                        cancel_active: false,
                        next_fire_at: None,
                        now: self.ctx.clock.store_now(),
                    })
                    .await?;
                return Ok((0, 0));
            }
        };
        let fires = plan_fires(
            &plan.schedule,
            expected,
            now,
            plan.catchup,
            plan.catchup_window,
        );
        let mut runs = Vec::with_capacity(fires.fire.len() + fires.skip.len());
        let mut cancel_active = false;
        if !fires.fire.is_empty() {
            let mut active = self.ctx.store.run_active_count(job.id).await?;
            for fire in &fires.fire {
                let decision = decide_overlap(plan.overlap, plan.max_concurrent, active);
                let jitter =
                    plan.schedule.triggers[fire.trigger].jitter_for(job.id as u64, fire.at);
                let mut insert = RunInsert {
                    scheduled_for: fire.at,
                    run_at: fire.at.checked_add(jitter).unwrap_or(fire.at),
                    origin: RunOrigin::Schedule,
                    skip: None,
                    exclusive: false,
                    max_attempts: plan.retry.max_attempts,
                    execution: plan.execution,
                };
                match decision {
                    OverlapDecision::Start => active += 1,
                    OverlapDecision::Serialize => {
                        insert.exclusive = true;
                        active += 1;
                    }
                    OverlapDecision::Skip => insert.skip = Some(SkipReason::Overlap),
                    OverlapDecision::Replace => {
                        // Replace everything queued in this round too: only the newest survives.
                        cancel_active = true;
                        runs.retain(|r: &RunInsert| r.skip.is_some());
                        active = 1;
                    }
                }
                runs.push(insert);
            }
        }
        for (fire, reason) in &fires.skip {
            runs.push(RunInsert {
                scheduled_for: fire.at,
                run_at: fire.at,
                origin: RunOrigin::Schedule,
                skip: Some(*reason),
                exclusive: false,
                max_attempts: plan.retry.max_attempts,
                execution: plan.execution,
            });
        }
        if fires.dropped > 0 {
            tracing::info!(
                job = job.name(),
                dropped = fires.dropped,
                "missed due times coalesced or beyond the catch-up caps"
            );
        }
        let result = self
            .ctx
            .store
            .job_fire(JobFireParams {
                job_id: job.id,
                expected_next_fire_at: expected,
                runs: runs.clone(),
                cancel_active,
                next_fire_at: fires.next_fire_at,
                now: self.ctx.clock.store_now(),
            })
            .await?;
        if !result.applied {
            tracing::debug!(
                job = job.name(),
                "job changed while firing; it is read again next pass"
            );
            return Ok((0, 0));
        }
        let (mut queued, mut skipped) = (0, 0);
        for run in &runs {
            match run.skip {
                Some(reason) => {
                    skipped += 1;
                    self.ctx.telemetry.emit(Event::RunSkipped {
                        namespace: job.namespace().into(),
                        job: job.name().into(),
                        scheduled_for: run.scheduled_for,
                        reason,
                    });
                }
                None => queued += 1,
            }
        }
        for (run_id, scheduled_for) in &result.inserted {
            if runs
                .iter()
                .any(|r| r.scheduled_for == *scheduled_for && r.skip.is_none())
            {
                self.ctx.telemetry.emit(Event::RunQueued {
                    run_id: *run_id,
                    namespace: job.namespace().into(),
                    job: job.name().into(),
                    scheduled_for: *scheduled_for,
                });
            }
        }
        Ok((queued, skipped))
    }

    /// Runs until `shutdown`: a pass, then sleep until the next due time or a change.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let mut more = false;
            match self.run_once().await {
                Ok(report) => more = report.more,
                Err(e) => tracing::error!(error = %e, "scheduler pass failed; retrying"),
            }
            if more {
                tokio::task::yield_now().await;
                continue;
            }
            let now = self.ctx.clock.now();
            let fallback = now.checked_add(POLL_FALLBACK).unwrap_or(now);
            let wake = match self.ctx.store.job_next_fire_at().await {
                Ok(Some(next)) => next.min(fallback),
                Ok(None) => fallback,
                Err(e) => {
                    tracing::error!(error = %e, "reading the next due time failed");
                    fallback
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.ctx.scheduler_wake.notified() => {}
                _ = self.ctx.clock.sleep_until(wake) => {}
            }
        }
    }
}
