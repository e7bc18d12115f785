//! The scheduler: turns due times into runs, exactly once.
//!
//! It never scans every job: [`Scheduler::run_once`] reads only jobs whose `next_fire_at` has
//! come (through the store's index), plans each job's round with the pure
//! [`kairos_core::policy::plan_fires`] and [`kairos_core::policy::decide_overlap`], and writes the
//! round with `job_fire`, which inserts the runs and advances `next_fire_at` in one transaction
//! fenced by the old `next_fire_at`. The loop then sleeps until the earliest `next_fire_at`,
//! woken early when a job changes (with a polling fallback).
//!
//! **Look-ahead.** A job whose next due time is less than [`SchedulerConfig::lookahead`] away is
//! fired *early* (the scheduler wakes when the earliest due time is half the look-ahead away, so
//! a pass takes half a window of due times at once): its run is created `queued` with `run_at`
//! at the due time, and the worker
//! (which sleeps until the earliest queued `run_at`) starts it then. Writing the run is thus off
//! the critical path, and runs due in the same instant start together instead of after one
//! another's store writes. Only the single next due time of a job with **no active runs** is
//! fired early, so the overlap decision is the one the due time would have got; a job that has
//! active runs waits for its due time and is fired then, as without look-ahead. Until the due
//! time comes the early run can be withdrawn: pausing the job, or an update that changes its next
//! due time, deletes it (see `Store::job_set_paused`, `Store::job_update`).
//!
//! The look-ahead grows with the work: many jobs due in one instant (a herd of `* * * * *`
//! jobs) take a while to fire, and their runs must be in the store before the instant comes.
//! After each round of passes that fired something, the scheduler sets its look-ahead to four
//! times what the round took (it wakes half the look-ahead early, which leaves the round's own
//! time again for the workers to claim), never below the configured value and at most
//! [`MAX_ADAPTIVE_LOOKAHEAD`]; it shrinks back by a quarter per round once rounds are quick
//! ([`adapt_lookahead`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};
use kairos_core::job::JobPlan;
use kairos_core::policy::{
    FirePlan, OverlapDecision, backfill_release, decide_overlap, plan_fires,
};
use kairos_core::run::{JobId, RunOrigin, SkipReason};
use kairos_core::spec::OverlapPolicy;
use kairos_store::{Job, JobDueParams, JobFireParams, JobFireResult, RunInsert, StoreError};
use tokio_util::sync::CancellationToken;

use crate::context::NodeContext;
use crate::telemetry::Event;

/// Jobs handled per store read; more are handled in the next pass without sleeping.
const DUE_BATCH: u32 = 512;
/// Longest sleep without looking at the store (fallback for missed notifications).
const POLL_FALLBACK: SignedDuration = SignedDuration::from_secs(1);
/// How soon a pass that failed (or could not plan a due job) is tried again: soon, but not in
/// a tight loop while the job stays overdue.
pub const RETRY_AFTER_FAILURE: SignedDuration = SignedDuration::from_millis(200);
/// The longest look-ahead the scheduler grows to on its own (a configured one may be longer).
pub const MAX_ADAPTIVE_LOOKAHEAD: SignedDuration = SignedDuration::from_secs(2);

/// The look-ahead after a round of passes that fired jobs and took `round`: four times the
/// round, or, when that is less than `current`, a quarter less than `current` (not below four
/// times the round); never below `base` nor above [`MAX_ADAPTIVE_LOOKAHEAD`] (or `base`, if
/// longer). A zero `base` (look-ahead off) stays off.
pub fn adapt_lookahead(
    base: SignedDuration,
    current: SignedDuration,
    round: SignedDuration,
) -> SignedDuration {
    if base.is_zero() {
        return base;
    }
    let target = round.saturating_mul(4);
    let next = if target >= current {
        target
    } else {
        target.max(current - current / 4)
    };
    next.clamp(base, MAX_ADAPTIVE_LOOKAHEAD.max(base))
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SchedulerReport {
    pub jobs_fired: usize,
    pub runs_queued: usize,
    pub runs_skipped: usize,
    /// A full batch was read: call again at once.
    pub more: bool,
    /// Jobs fired early (look-ahead), among `jobs_fired`.
    pub jobs_fired_early: usize,
    /// Held runs of backfills moved to the queue.
    pub runs_released: usize,
    /// The earliest due time of a job in the look-ahead window that was not fired early because
    /// it has active runs: it is fired when due.
    pub deferred_until: Option<jiff::Timestamp>,
    /// Due jobs that could not be planned (their calendars could not be read): the pass is
    /// tried again after [`RETRY_AFTER_FAILURE`].
    pub plan_failures: usize,
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How long before its due time a job's run may be created (see the module docs). Zero turns
    /// look-ahead off. Default 250 ms.
    pub lookahead: SignedDuration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lookahead: SignedDuration::from_millis(250),
        }
    }
}

pub struct Scheduler {
    ctx: NodeContext,
    config: SchedulerConfig,
    /// The look-ahead in use, in microseconds (see [`adapt_lookahead`]).
    lookahead_us: AtomicI64,
}

impl Scheduler {
    /// A scheduler with the default settings.
    pub fn new(ctx: NodeContext) -> Self {
        Self::with_config(ctx, SchedulerConfig::default())
    }

    pub fn with_config(ctx: NodeContext, config: SchedulerConfig) -> Self {
        let lookahead_us = AtomicI64::new(micros(config.lookahead));
        Self {
            ctx,
            config,
            lookahead_us,
        }
    }

    /// The look-ahead in use: the configured one, or longer after slow rounds.
    pub fn lookahead(&self) -> SignedDuration {
        SignedDuration::from_micros(self.lookahead_us.load(Ordering::Relaxed))
    }

    /// One pass: queues held backfill runs the overlap policy now allows, then fires every job
    /// due at `now`: plans each one (pure), reads the active-run counts that overlap decisions
    /// need in one query, and writes the whole pass in one transaction.
    pub async fn run_once(&self) -> Result<SchedulerReport, StoreError> {
        let runs_released = self.release_held().await?;
        let mut report = self.fire_due().await?;
        report.runs_released = runs_released;
        Ok(report)
    }

    /// Moves held runs of backfills to the queue as each job's overlap policy allows
    /// ([`backfill_release`]), fenced by the count the decision rests on.
    async fn release_held(&self) -> Result<usize, StoreError> {
        let held = self.ctx.store.run_held().await?;
        let mut released = 0;
        for h in held {
            let Some(job) = self
                .ctx
                .store
                .job_get_by_id(kairos_store::JobGetByIdParams { id: h.job_id })
                .await?
            else {
                continue;
            };
            let Ok(plan) = self.ctx.plans.get(&*self.ctx.store, &job).await else {
                continue;
            };
            let count = backfill_release(plan.overlap, plan.max_concurrent, h.active).min(h.held);
            if count == 0 {
                continue;
            }
            let ids = self
                .ctx
                .store
                .run_release(kairos_store::RunReleaseParams {
                    job_id: job.id,
                    count: u32::try_from(count).unwrap_or(u32::MAX),
                    expected_active: h.active,
                    now: self.ctx.clock.store_now(),
                })
                .await?;
            if !ids.is_empty() {
                tracing::debug!(job = job.name(), runs = ids.len(), "backfill runs queued");
                released += ids.len();
                self.ctx.worker_wake.notify_one();
            }
        }
        Ok(released)
    }

    async fn fire_due(&self) -> Result<SchedulerReport, StoreError> {
        let now = self.ctx.clock.now();
        let store_now = self.ctx.clock.store_now();
        let horizon = now.checked_add(self.lookahead()).unwrap_or(now);
        let due = self
            .ctx
            .store
            .job_due(JobDueParams {
                before: horizon,
                limit: DUE_BATCH,
            })
            .await?;
        let mut report = SchedulerReport {
            more: due.len() == DUE_BATCH as usize,
            ..Default::default()
        };
        let mut params = Vec::with_capacity(due.len());
        let mut planned = Vec::with_capacity(due.len());
        let jobs: Vec<&Job> = due.iter().collect();
        let plans = self.ctx.plans.get_many(&*self.ctx.store, &jobs).await;
        for (job, plan) in due.iter().zip(plans) {
            let Some(expected) = job.next_fire_at else {
                continue;
            };
            // Not due yet (look-ahead): only this one due time, planned as if it were now.
            let early = expected > now;
            match plan {
                Ok(plan) => {
                    let fires = plan_fires(
                        &plan.schedule,
                        expected,
                        if early { expected } else { now },
                        plan.catchup,
                        plan.catchup_window,
                    );
                    if fires.dropped > 0 {
                        tracing::info!(
                            job = job.name(),
                            dropped = fires.dropped,
                            "missed due times coalesced or beyond the catch-up caps"
                        );
                    }
                    planned.push((job, plan, fires, expected, early));
                }
                // Its calendars could not be read: this job waits, the others fire; the pass
                // is tried again shortly.
                Err(crate::context::PlanError::Store(e)) => {
                    tracing::warn!(job = job.name(), error = %e, "cannot plan the job now; it fires when its calendars can be read");
                    report.plan_failures += 1;
                }
                Err(crate::context::PlanError::Invalid(e)) => {
                    // Stored specs were validated on write; one that no longer validates (e.g. a
                    // time zone removed from the database) stops firing instead of looping.
                    tracing::error!(job = job.name(), error = %e, "stored job no longer validates; it will not fire");
                    params.push(JobFireParams {
                        job_id: job.id,
                        expected_next_fire_at: expected,
                        runs: vec![],
                        cancel_active: false,
                        max_active: None,
                        next_fire_at: None,
                        now: store_now,
                        expected_version: Some(job.version),
                    });
                }
            }
        }
        let firing: Vec<JobId> = planned
            .iter()
            .filter(|(_, _, fires, ..)| !fires.fire.is_empty())
            .map(|(job, ..)| job.id)
            .collect();
        let active: HashMap<JobId, u64> = self
            .ctx
            .store
            .run_active_counts(kairos_store::RunActiveCountsParams { job_ids: firing })
            .await?
            .into_iter()
            .collect();
        // An early job with active runs waits for its due time.
        planned.retain(|(job, _, _, expected, early)| {
            let defer = *early && active.contains_key(&job.id);
            if defer {
                report.deferred_until = Some(
                    report
                        .deferred_until
                        .map_or(*expected, |t| t.min(*expected)),
                );
            }
            !defer
        });
        let first_planned = params.len();
        for (job, plan, fires, expected, _) in &planned {
            let active = active.get(&job.id).copied().unwrap_or(0);
            let (runs, cancel_active) = round_runs(job.id, plan, fires, active);
            // The decisions of `forbid` and `allow` rest on the count read above: the store
            // applies the round only if no run was added since (a trigger-now on any node).
            let counted = matches!(plan.overlap, OverlapPolicy::Forbid | OverlapPolicy::Allow);
            params.push(JobFireParams {
                job_id: job.id,
                expected_next_fire_at: *expected,
                runs,
                cancel_active,
                max_active: counted.then_some(active),
                next_fire_at: fires.next_fire_at,
                now: store_now,
                expected_version: Some(job.version),
            });
        }
        if params.is_empty() {
            return Ok(report);
        }
        let results = self.ctx.store.job_fire_many(&params).await?;
        let rounds = params[first_planned..]
            .iter()
            .zip(&results[first_planned..]);
        for ((job, .., early), (p, result)) in planned.iter().zip(rounds) {
            if !result.applied {
                tracing::debug!(
                    job = job.name(),
                    "job changed while firing; it is read again at once"
                );
                // Its due time has come (or is within the window): the next pass, at once.
                report.more = true;
                continue;
            }
            report.jobs_fired += 1;
            report.jobs_fired_early += usize::from(*early);
            self.report_round(job, p, result, &mut report);
        }
        if report.runs_queued > 0 {
            self.ctx.worker_wake.notify_one();
        }
        if params.iter().any(|p| p.cancel_active) {
            self.ctx.heartbeat_wake.notify_one();
        }
        Ok(report)
    }

    fn report_round(
        &self,
        job: &Job,
        p: &JobFireParams,
        result: &JobFireResult,
        report: &mut SchedulerReport,
    ) {
        // Only what was written: a due time that already had its run (fired again after an
        // update) is neither skipped nor queued again.
        let written = |at: Timestamp| result.inserted.iter().any(|(_, t)| *t == at);
        for run in p.runs.iter().filter(|r| written(r.scheduled_for)) {
            match run.skip {
                Some(reason) => {
                    report.runs_skipped += 1;
                    self.ctx.telemetry.emit(Event::RunSkipped {
                        namespace: job.namespace().into(),
                        job: job.name().into(),
                        scheduled_for: run.scheduled_for,
                        reason,
                    });
                }
                None => report.runs_queued += 1,
            }
        }
        for (run_id, scheduled_for) in &result.inserted {
            if p.runs
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
    }

    /// Runs until `shutdown`: a pass, then sleep until the next due time or a change.
    pub async fn run(&self, shutdown: CancellationToken) {
        // The round of passes under way: when it began and whether it fired anything.
        let mut round: Option<(Timestamp, bool)> = None;
        loop {
            let mut report = SchedulerReport::default();
            let (began, fired) = *round.get_or_insert((self.ctx.clock.now(), false));
            let failed = match self.run_once().await {
                Ok(r) => {
                    report = r;
                    report.plan_failures > 0
                }
                Err(e) => {
                    tracing::error!(error = %e, "scheduler pass failed; retrying");
                    true
                }
            };
            round = Some((began, fired || report.jobs_fired > 0));
            if !report.more {
                if fired || report.jobs_fired > 0 {
                    let took = self.ctx.clock.now().duration_since(began);
                    let next = adapt_lookahead(self.config.lookahead, self.lookahead(), took);
                    self.lookahead_us.store(micros(next), Ordering::Relaxed);
                }
                round = None;
            }
            if report.more {
                // More to do at once, unless the term (or the node) is ending.
                if shutdown.is_cancelled() {
                    return;
                }
                tokio::task::yield_now().await;
                continue;
            }
            let now = self.ctx.clock.now();
            let next = match self.ctx.store.job_next_fire_at().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "reading the next due time failed");
                    None
                }
            };
            let mut wake = next_wake(now, next, self.lookahead());
            if failed {
                wake = wake.max(now.checked_add(RETRY_AFTER_FAILURE).unwrap_or(now));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.ctx.scheduler_wake.notified() => {}
                _ = self.ctx.clock.sleep_until(wake) => {}
            }
        }
    }
}

fn micros(d: SignedDuration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// When the scheduler looks at the store next: half the look-ahead before the earliest due time
/// `next`, at the latest after the polling fallback. A pass fires everything due within the
/// whole look-ahead, so waking when the earliest due time is half of it away lets one pass take
/// every due time of the next half window: with due times spread out (a steady rate of fires),
/// passes come every `lookahead / 2`, not once per due time. When that moment has already come
/// (the earliest job in the window was not fired early: it has active runs), wait for its due
/// time itself instead of passing again and again until then; it is then fired as due.
pub fn next_wake(
    now: jiff::Timestamp,
    next: Option<jiff::Timestamp>,
    lookahead: SignedDuration,
) -> jiff::Timestamp {
    let fallback = now.checked_add(POLL_FALLBACK).unwrap_or(now);
    let Some(next) = next else { return fallback };
    let wake = next.checked_sub(lookahead / 2).unwrap_or(next);
    if wake > now { wake } else { next.max(now) }.min(fallback)
}

/// The runs of one job's round: its due times with the overlap decision applied (given `active`
/// unfinished runs), then the due times the catch-up policy skipped. Also whether the job's
/// active runs are to be cancelled first (`overlap: replace`).
pub fn round_runs(
    job_id: JobId,
    plan: &JobPlan,
    fires: &FirePlan,
    mut active: u64,
) -> (Vec<RunInsert>, bool) {
    let mut runs = Vec::with_capacity(fires.fire.len() + fires.skip.len());
    let mut cancel_active = false;
    for fire in &fires.fire {
        let jitter = plan.schedule.triggers[fire.trigger].jitter_for(job_id as u64, fire.at);
        let mut insert = RunInsert {
            scheduled_for: fire.at,
            run_at: fire.at.checked_add(jitter).unwrap_or(fire.at),
            origin: RunOrigin::Schedule,
            skip: None,
            exclusive: false,
            max_attempts: plan.retry.max_attempts,
            execution: plan.execution,
            event: None,
        };
        match decide_overlap(plan.overlap, plan.max_concurrent, active) {
            OverlapDecision::Start => {
                // `replace` with nothing active in the count: a run another node added since
                // (a trigger-now, an event, a dependency) is still replaced, since the store
                // decides which runs to cancel on the rows it locks, not on this count.
                cancel_active |= matches!(plan.overlap, OverlapPolicy::Replace);
                active += 1;
            }
            OverlapDecision::Serialize => {
                insert.exclusive = true;
                active += 1;
            }
            OverlapDecision::Skip => insert.skip = Some(SkipReason::Overlap),
            OverlapDecision::Replace => {
                // Replace what this round queued too: only the newest runs; the others are
                // recorded as skipped (their due times are not lost without a trace).
                cancel_active = true;
                for earlier in runs
                    .iter_mut()
                    .filter(|r: &&mut RunInsert| r.skip.is_none())
                {
                    earlier.skip = Some(SkipReason::Overlap);
                }
                active = 1;
            }
        }
        runs.push(insert);
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
            event: None,
        });
    }
    (runs, cancel_active)
}

#[cfg(test)]
mod tests {
    use kairos_core::JobSpec;
    use kairos_core::policy::FirePlan;
    use kairos_core::trigger::Fire;

    use super::round_runs;

    fn round(overlap: &str, active: u64) -> bool {
        let spec = JobSpec::from_json(&format!(
            r#"{{"name":"j","triggers":[{{"interval":"1m"}}],"overlap":"{overlap}","task":{{"kind":"shell","script":"true"}}}}"#
        ))
        .unwrap();
        let plan = spec.validate().unwrap();
        let fires = FirePlan {
            fire: vec![Fire {
                at: "2026-03-01T00:01:00Z".parse().unwrap(),
                trigger: 0,
            }],
            skip: vec![],
            dropped: 0,
            next_fire_at: None,
        };
        let (runs, cancel_active) = round_runs(1, &plan, &fires, active);
        assert_eq!(runs.len(), 1);
        cancel_active
    }

    /// `replace` asks the store to cancel the job's active runs even when the count read
    /// before the fire found none: a run another node adds meanwhile is replaced too (the
    /// store decides on the rows it locks). The other policies never cancel.
    #[test]
    fn a_replace_fire_cancels_what_is_active_whatever_the_count_said() {
        assert!(round("replace", 0));
        assert!(round("replace", 2));
        for policy in ["forbid", "allow", "queue"] {
            assert!(!round(policy, 0), "{policy}");
        }
    }
}
