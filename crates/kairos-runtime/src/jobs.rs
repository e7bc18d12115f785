//! Changing jobs at run time: every write is validated first, fenced by version, and wakes the
//! scheduler so that it takes effect at once.

use std::sync::Arc;

use jiff::Timestamp;
use kairos_core::ValidationErrors;
use kairos_core::job::JobPlan;
use kairos_core::policy::{MAX_BACKFILL_RUNS, due_times_between};
use kairos_core::run::{MAX_RESULT_BYTES, RunOrigin, RunState};
use kairos_core::spec::{JobSpec, OverlapPolicy};
use kairos_store::*;

use crate::context::{NodeContext, PlanError};
use crate::telemetry::Event;

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid job: {0}")]
    Invalid(ValidationErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PlanError> for JobError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Invalid(e) => JobError::Invalid(e),
            PlanError::Store(e) => JobError::Store(e),
        }
    }
}

/// Times a write planned with calendars is planned again when a calendar (or, for a calendar
/// change, one of its jobs) changed under it, before the caller gets `CalendarChanged`.
pub(crate) const CALENDAR_ROUNDS: usize = 16;

/// `CalendarChanged` for a write to job or calendar `name` of `namespace` that kept racing.
pub(crate) fn contended(namespace: &str, name: &str) -> JobError {
    JobError::Store(StoreError::CalendarChanged {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// Job operations of one node (API, CLI and library all use these). Every change is written to
/// the audit log under the service's actor ([`JobService::acting_as`]).
#[derive(Clone)]
pub struct JobService {
    ctx: NodeContext,
    actor: Arc<str>,
}

/// The actor of changes made through the library (not through the API).
pub const SYSTEM_ACTOR: &str = "system";

/// How many times a trigger-now or a backfill reads its job again when the job changed between
/// the read and the write; then the conflict is the answer (`409`, try again).
const TRIGGER_ROUNDS: u32 = 8;

/// What round `round` of a write fenced by the job's version (trigger-now, backfill) came to:
/// its result, `None` to read the job again (it changed since it was read), or the error, a
/// job deleted meanwhile being one that does not exist.
fn fenced_round<T>(
    done: Result<T, StoreError>,
    round: u32,
    namespace: &str,
    name: &str,
) -> Result<Option<T>, JobError> {
    match done {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::VersionConflict { .. }) if round < TRIGGER_ROUNDS => Ok(None),
        Err(StoreError::JobGone(_)) => Err(StoreError::JobNotFound {
            namespace: namespace.into(),
            name: name.into(),
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

fn next_fire(plan: &JobPlan, after: Timestamp) -> Option<Timestamp> {
    plan.schedule.next_after(after).map(|f| f.at)
}

impl JobService {
    pub fn new(ctx: NodeContext) -> Self {
        Self {
            ctx,
            actor: Arc::from(SYSTEM_ACTOR),
        }
    }

    /// The same service, recording its changes as made by `actor` (a token's name).
    pub fn acting_as(&self, actor: &str) -> Self {
        Self {
            ctx: self.ctx.clone(),
            actor: Arc::from(actor),
        }
    }

    pub(crate) fn context(&self) -> &NodeContext {
        &self.ctx
    }

    /// Who the changes are recorded as made by.
    pub(crate) fn actor(&self) -> &str {
        &self.actor
    }

    fn changed(&self, job: &Job, change: &'static str) {
        self.ctx.scheduler_wake.notify_one();
        // A pause or a new schedule may have asked a run claimed ahead of its due time to stop.
        self.ctx.heartbeat_wake.notify_one();
        self.ctx.telemetry.emit(Event::JobChanged {
            namespace: job.namespace().to_owned(),
            job: job.name().to_owned(),
            change,
            version: job.version,
        });
    }

    /// Validates and creates a job; its first due time is the first one after now (that its
    /// calendars allow: the calendars it names must exist, and the write is fenced by their
    /// versions).
    pub async fn create(&self, spec: JobSpec) -> Result<Job, JobError> {
        let mut errs = ValidationErrors::default();
        if let Err(e) = spec.validate() {
            errs.extend(e);
        }
        self.check_channels(&spec, &mut errs);
        if !errs.is_empty() {
            return Err(JobError::Invalid(errs));
        }
        let mut last = None;
        for _ in 0..CALENDAR_ROUNDS {
            let (plan, calendars) = self.ctx.plans.plan_spec(&*self.ctx.store, &spec).await?;
            let now = self.ctx.clock.now();
            let created = self
                .ctx
                .store
                .job_create(JobCreateParams {
                    actor: self.actor.to_string(),
                    next_fire_at: next_fire(&plan, now),
                    spec: spec.clone(),
                    now: self.ctx.clock.store_now(),
                    calendars,
                })
                .await;
            match created {
                Err(e @ StoreError::CalendarChanged { .. }) => last = Some(e),
                created => {
                    let job = created?;
                    self.changed(&job, "created");
                    return Ok(job);
                }
            }
        }
        Err(last.map_or_else(|| contended(&spec.namespace, &spec.name), JobError::Store))
    }

    /// Every channel a job's `notify` names must be one of this node's configuration.
    fn check_channels(&self, spec: &JobSpec, errs: &mut ValidationErrors) {
        let known = &self.ctx.alert_channels;
        for (i, rule) in spec.notify.iter().enumerate() {
            for (j, name) in rule.channels.iter().enumerate() {
                if known.contains(name) {
                    continue;
                }
                let field = format!("notify[{i}].channels[{j}]");
                if known.is_empty() {
                    errs.push(
                        field,
                        format!(
                            "no channel `{name}`: this server has no alert channels configured"
                        ),
                    );
                } else {
                    errs.push(
                        field,
                        format!(
                            "no channel `{name}` in this server's configuration (channels: {})",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
    }

    pub async fn get(&self, namespace: &str, name: &str) -> Result<Job, JobError> {
        self.ctx
            .store
            .job_get(JobGetParams {
                namespace: namespace.into(),
                name: name.into(),
            })
            .await?
            .ok_or_else(|| {
                StoreError::JobNotFound {
                    namespace: namespace.into(),
                    name: name.into(),
                }
                .into()
            })
    }

    /// Jobs of these namespaces (`None`: all), by namespace and name.
    pub async fn list(&self, namespaces: Option<Vec<String>>) -> Result<Vec<Job>, JobError> {
        Ok(self
            .ctx
            .store
            .job_list(JobListParams {
                namespaces,
                limit: 0,
            })
            .await?)
    }

    /// Full replace, fenced by `expected_version`. The spec's namespace and name must be the
    /// job's own (renaming is delete + create). When the triggers are unchanged the pending due
    /// time is kept, so an update never drops or repeats a due time; otherwise the next due
    /// time is recomputed from now.
    pub async fn update(
        &self,
        namespace: &str,
        name: &str,
        expected_version: i64,
        spec: JobSpec,
    ) -> Result<Job, JobError> {
        let mut errs = ValidationErrors::default();
        if spec.namespace != namespace {
            errs.push(
                "namespace",
                format!("must be `{namespace}`, the job's namespace"),
            );
        }
        if spec.name != name {
            errs.push(
                "name",
                format!("must be `{name}`, the job's name; to rename, delete and create"),
            );
        }
        if let Err(e) = spec.validate() {
            errs.extend(e);
        }
        self.check_channels(&spec, &mut errs);
        if !errs.is_empty() {
            return Err(JobError::Invalid(errs));
        }
        let current = self.get(namespace, name).await?;
        let mut last = None;
        for _ in 0..CALENDAR_ROUNDS {
            let (plan, calendars) = self.ctx.plans.plan_spec(&*self.ctx.store, &spec).await?;
            // Same triggers on a running job: keep the pending due time (nothing dropped or
            // repeated). New triggers, or a resume through the update: the next due time after
            // now (a resume never replays the pause).
            let resumes = current.spec.paused && !spec.paused;
            let next_fire_at = if current.spec.triggers == spec.triggers && !resumes {
                // As stored when the update is written: a fire in between is not rewound.
                NextFire::Keep
            } else {
                NextFire::Set(next_fire(&plan, self.ctx.clock.now()))
            };
            let updated = self
                .ctx
                .store
                .job_update(JobUpdateParams {
                    actor: self.actor.to_string(),
                    namespace: namespace.into(),
                    name: name.into(),
                    expected_version,
                    spec: spec.clone(),
                    next_fire_at,
                    now: self.ctx.clock.store_now(),
                    calendars,
                })
                .await;
            match updated {
                Err(e @ StoreError::CalendarChanged { .. }) => last = Some(e),
                updated => {
                    let job = updated?;
                    self.changed(&job, "updated");
                    return Ok(job);
                }
            }
        }
        Err(last.map_or_else(|| contended(namespace, name), JobError::Store))
    }

    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        expected_version: Option<i64>,
        force: bool,
    ) -> Result<(), JobError> {
        self.ctx
            .store
            .job_delete(JobDeleteParams {
                actor: self.actor.to_string(),
                now: self.ctx.clock.store_now(),
                namespace: namespace.into(),
                name: name.into(),
                expected_version,
                force,
            })
            .await?;
        self.ctx.scheduler_wake.notify_one();
        // A run of the job claimed ahead of its due time is gone with it: stop it now.
        self.ctx.heartbeat_wake.notify_one();
        self.ctx.telemetry.emit(Event::JobChanged {
            namespace: namespace.into(),
            job: name.into(),
            change: "deleted",
            version: 0,
        });
        Ok(())
    }

    /// Pauses (no runs while paused) or resumes (the next due time after now: a resume does not
    /// replay the pause).
    pub async fn set_paused(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
    ) -> Result<Job, JobError> {
        let mut last = None;
        for _ in 0..CALENDAR_ROUNDS {
            let current = self.get(namespace, name).await?;
            // A resume's next due time is planned with this version (its triggers and
            // calendars): the write applies only at it.
            let (next_fire_at, expected_version) = if paused {
                (None, None)
            } else {
                let plan = self.ctx.plans.get(&*self.ctx.store, &current).await?;
                (
                    next_fire(&plan, self.ctx.clock.now()),
                    Some(current.version),
                )
            };
            let written = self
                .ctx
                .store
                .job_set_paused(JobSetPausedParams {
                    actor: self.actor.to_string(),
                    namespace: namespace.into(),
                    name: name.into(),
                    paused,
                    next_fire_at,
                    now: self.ctx.clock.store_now(),
                    expected_version,
                })
                .await;
            match written {
                Err(e @ StoreError::VersionConflict { .. }) if !paused => last = Some(e),
                written => {
                    let job = written?;
                    self.changed(&job, if paused { "paused" } else { "resumed" });
                    return Ok(job);
                }
            }
        }
        Err(last.map_or_else(|| contended(namespace, name), JobError::Store))
    }

    /// A backfill: one run for each due time of the job's triggers from `from` to `to` (both
    /// included) that has no run yet, or on a dry run only which due times would get one. The
    /// runs are held (`scheduled`) and join the queue as the job's overlap policy allows:
    /// up to `max_concurrent` at once with `overlap: allow`, else one at a time (the scheduler
    /// releases them, see `kairos_core::policy::backfill_release`). At most
    /// [`MAX_BACKFILL_RUNS`] due times per call.
    pub async fn backfill(
        &self,
        namespace: &str,
        name: &str,
        from: Timestamp,
        to: Timestamp,
        dry_run: bool,
    ) -> Result<RunBackfillResult, JobError> {
        if to < from {
            return Err(JobError::Invalid(ValidationErrors::single(
                "to",
                format!("{to} is before `from` ({from})"),
            )));
        }
        // The due times and the runs' fields come from the job as read; the store writes them
        // only at that version, so a job changed meanwhile is read again.
        let mut round = 0;
        let result = loop {
            round += 1;
            let job = self.get(namespace, name).await?;
            let plan = self.ctx.plans.get(&*self.ctx.store, &job).await?;
            if plan.schedule.triggers.is_empty() {
                return Err(JobError::Invalid(ValidationErrors::single(
                    "triggers",
                    format!("job `{name}` has no triggers: it has no due times to backfill"),
                )));
            }
            let due_times = due_times_between(&plan.schedule, from, to, MAX_BACKFILL_RUNS)
                .map_err(|_| {
                    JobError::Invalid(ValidationErrors::single(
                        "to",
                        format!(
                            "the range holds more than {MAX_BACKFILL_RUNS} due times of \
                             `{name}`; backfill it in parts"
                        ),
                    ))
                })?;
            let done = self
                .ctx
                .store
                .run_backfill(RunBackfillParams {
                    job_id: job.id,
                    expected_version: Some(job.version),
                    due_times,
                    max_attempts: plan.retry.max_attempts,
                    execution: plan.execution,
                    dry_run,
                    actor: self.actor.to_string(),
                    now: self.ctx.clock.store_now(),
                })
                .await;
            if let Some(result) = fenced_round(done, round, namespace, name)? {
                break result;
            }
        };
        if !result.created.is_empty() && !dry_run {
            self.ctx.scheduler_wake.notify_one();
        }
        Ok(result)
    }

    /// Queues a run now, whatever the triggers say (also for paused jobs, as with
    /// `kubectl create job --from=cronjob`). Overlap `queue` still serializes it.
    pub async fn trigger(&self, namespace: &str, name: &str) -> Result<Run, JobError> {
        self.trigger_with(namespace, name, None).await
    }

    /// [`JobService::trigger`] with parameters for the run's tasks (`KAIROS_PARAMS`): a JSON
    /// object of at most [`MAX_RESULT_BYTES`] bytes; a larger one is `Invalid` at `params`.
    pub async fn trigger_with(
        &self,
        namespace: &str,
        name: &str,
        params: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Run, JobError> {
        let params = params.map(|p| serde_json::Value::Object(p).to_string());
        if let Some(p) = &params
            && p.len() > MAX_RESULT_BYTES
        {
            return Err(JobError::Invalid(kairos_core::ValidationErrors::single(
                "params",
                format!("is {} bytes as JSON; at most {MAX_RESULT_BYTES}", p.len()),
            )));
        }
        // The run's fields come from the job as read; the insert is fenced by its version, so
        // a job changed meanwhile (say, to `overlap: queue`) is read again.
        let mut round = 0;
        let run = loop {
            round += 1;
            let job = self.get(namespace, name).await?;
            let plan = job.spec.validate().map_err(JobError::Invalid)?;
            let now = self.ctx.clock.now();
            let inserted = self
                .ctx
                .store
                .run_insert(RunInsertParams {
                    actor: self.actor.to_string(),
                    job_id: job.id,
                    expected_version: Some(job.version),
                    run: RunInsert {
                        scheduled_for: now,
                        run_at: now,
                        origin: RunOrigin::Manual,
                        skip: None,
                        exclusive: plan.overlap == OverlapPolicy::Queue,
                        max_attempts: plan.retry.max_attempts,
                        execution: plan.execution,
                        event: None,
                    },
                    params: params.clone(),
                    now: self.ctx.clock.store_now(),
                })
                .await;
            if let Some(run) = fenced_round(inserted, round, namespace, name)? {
                break run;
            }
        };
        if run.state == RunState::Queued {
            self.ctx.worker_wake.notify_one();
            self.ctx.telemetry.emit(Event::RunQueued {
                run_id: run.id,
                namespace: namespace.into(),
                job: name.into(),
                scheduled_for: run.scheduled_for,
            });
        }
        Ok(run)
    }
}
