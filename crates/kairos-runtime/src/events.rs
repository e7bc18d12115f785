//! Events posted to topics. Each unpaused job with an `event` trigger for the topic (whose
//! filter matches the payload) gets one run per event id, created with the job's overlap
//! policy applied as for a due time. The store's key `(job_id, event_id)` makes that at most
//! one, whichever nodes the event is posted to and however often.

use std::collections::HashSet;
use std::sync::Arc;

use kairos_core::ValidationErrors;
use kairos_core::event::{MAX_EVENT_BYTES, validate_event_id, validate_topic};
use kairos_core::policy::{OverlapDecision, decide_overlap};
use kairos_core::run::{JobId, RunId, RunOrigin, RunState, SkipReason};
use kairos_core::spec::OverlapPolicy;
use kairos_store::*;

use crate::jobs::{JobError, JobService};
use crate::telemetry::Event;

/// Rounds of reading and writing before an event gives up on a job that keeps changing under
/// it (each round that loses a fence reads the job again). The last rounds drop the overlap
/// count's fence (see [`count_fence`]), so only a job edited or paused again and again can
/// run out of rounds: the post is then refused as a conflict, to be posted again.
const MAX_ROUNDS: usize = 16;
/// Rounds with the overlap count's fence.
const COUNTED_ROUNDS: usize = 8;

/// The overlap count under which a decision still holds, as a fence for its write: `Start`
/// holds while the job has fewer active runs than it allows (`forbid`: none; `allow`: below
/// `max_concurrent`), whatever other events queued meanwhile; a `Skip` needs no fence (an
/// active run that ended meanwhile makes it early, not wrong); `queue` and `replace` do not
/// depend on the count.
fn count_fence(
    decision: OverlapDecision,
    overlap: OverlapPolicy,
    max_concurrent: u32,
) -> Option<u64> {
    match (decision, overlap) {
        (OverlapDecision::Start, OverlapPolicy::Forbid) => Some(0),
        (OverlapDecision::Start, OverlapPolicy::Allow) => {
            Some(u64::from(max_concurrent).saturating_sub(1))
        }
        _ => None,
    }
}

/// An event to post.
#[derive(Debug, Clone)]
pub struct EventRequest {
    pub topic: String,
    /// The idempotency key; `None`: the event is new, and gets an id of its own.
    pub id: Option<String>,
    pub payload: serde_json::Value,
    /// Only jobs in these namespaces (a token's scope, or one asked for); `None`: all.
    pub namespaces: Option<Vec<String>>,
}

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub id: String,
    pub topic: String,
    /// One run per subscribed job, in job id order: created now, or the one an earlier post of
    /// the same event id created.
    pub runs: Vec<EventRun>,
}

/// A job's run for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRun {
    pub run_id: RunId,
    pub job_id: JobId,
    pub namespace: String,
    pub job: String,
    /// `queued`, or `skipped` when the overlap policy skipped it; for an earlier run, its state
    /// now.
    pub state: RunState,
    /// False: the run an earlier post of the event created.
    pub created: bool,
}

/// A new, random id: 128 bits as 32 hex digits (event ids, attempt tokens).
pub(crate) fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl EventRequest {
    /// Checks the topic, the id and the payload's size; the payload as JSON text.
    fn validate(&self) -> Result<String, ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if let Err(e) = validate_topic(&self.topic) {
            errs.push("topic", e);
        }
        if let Some(id) = &self.id
            && let Err(e) = validate_event_id(id)
        {
            errs.push("id", e);
        }
        let payload = self.payload.to_string();
        if payload.len() > MAX_EVENT_BYTES {
            errs.push(
                "payload",
                format!(
                    "is {} bytes as JSON; at most {MAX_EVENT_BYTES}",
                    payload.len()
                ),
            );
        }
        errs.into_result(payload)
    }
}

impl JobService {
    /// Posts an event: a run for each subscribed, unpaused job whose filter matches, at most
    /// one per job and event id. `Invalid` (nothing written) for a bad topic, id or payload.
    pub async fn emit(&self, req: EventRequest) -> Result<Emitted, JobError> {
        let payload = req.validate().map_err(JobError::Invalid)?;
        let id = req.id.clone().unwrap_or_else(random_id);
        let event = Arc::new(RunEvent {
            id: id.clone(),
            topic: req.topic.clone(),
            payload,
        });
        let ctx = self.context();
        let mut runs: Vec<EventRun> = Vec::new();
        // Jobs still to decide (`None`: every subscribed job).
        let mut pending: Option<HashSet<JobId>> = None;
        for round in 0..MAX_ROUNDS {
            let targets = ctx
                .store
                .event_targets(EventTargetsParams {
                    topic: req.topic.clone(),
                    event_id: id.clone(),
                    namespaces: req.namespaces.clone(),
                })
                .await?;
            let now = ctx.clock.now();
            let mut fires = Vec::new();
            let mut fired: Vec<Job> = Vec::new();
            for target in targets {
                if pending
                    .as_ref()
                    .is_some_and(|p| !p.contains(&target.job.id))
                {
                    continue;
                }
                if let Some(run) = target.existing {
                    runs.push(EventRun {
                        run_id: run.id,
                        job_id: run.job_id,
                        namespace: run.namespace,
                        job: run.job_name,
                        state: run.state,
                        created: false,
                    });
                    continue;
                }
                let plan = match ctx.plans.get(&*ctx.store, &target.job).await {
                    Ok(plan) => plan,
                    Err(crate::context::PlanError::Store(e)) => return Err(e.into()),
                    Err(crate::context::PlanError::Invalid(e)) => {
                        tracing::warn!(job = target.job.name(), error = %e,
                            "a stored job no longer validates; it gets no run for the event");
                        continue;
                    }
                };
                if !plan.schedule.subscribes(&req.topic, &req.payload, now) {
                    continue;
                }
                let mut run = RunInsert {
                    scheduled_for: now,
                    run_at: now,
                    origin: RunOrigin::Event,
                    skip: None,
                    exclusive: false,
                    max_attempts: plan.retry.max_attempts,
                    execution: plan.execution,
                    event: Some(event.clone()),
                };
                let decision = decide_overlap(plan.overlap, plan.max_concurrent, target.active);
                match decision {
                    OverlapDecision::Start | OverlapDecision::Replace => {}
                    OverlapDecision::Serialize => run.exclusive = true,
                    OverlapDecision::Skip => run.skip = Some(SkipReason::Overlap),
                }
                // `replace` cancels what is active even when the count found nothing: as for a
                // fire, the store decides on the rows it locks (a run added meanwhile).
                let cancel_active = matches!(plan.overlap, OverlapPolicy::Replace);
                // As for a fire: a decision resting on the count is fenced by it, for as many
                // rounds as it takes to hold under a steady stream of events.
                let max_active = count_fence(decision, plan.overlap, plan.max_concurrent)
                    .filter(|_| round < COUNTED_ROUNDS);
                fires.push(EventFireParams {
                    job_id: target.job.id,
                    expected_version: target.job.version,
                    run,
                    cancel_active,
                    max_active,
                    now: ctx.clock.store_now(),
                });
                fired.push(target.job);
            }
            if fires.is_empty() {
                break;
            }
            let created = ctx.store.event_fire_many(&fires).await?;
            let mut again = HashSet::new();
            for ((p, job), created) in fires.iter().zip(&fired).zip(created) {
                let Some(run_id) = created else {
                    again.insert(job.id);
                    continue;
                };
                let state = if p.run.skip.is_some() {
                    RunState::Skipped
                } else {
                    RunState::Queued
                };
                self.report_event_run(job, p, run_id);
                runs.push(EventRun {
                    run_id,
                    job_id: job.id,
                    namespace: job.namespace().to_owned(),
                    job: job.name().to_owned(),
                    state,
                    created: true,
                });
            }
            if fires.iter().any(|p| p.cancel_active) {
                ctx.heartbeat_wake.notify_one();
            }
            if again.is_empty() {
                break;
            }
            tracing::debug!(
                jobs = again.len(),
                "jobs changed while an event was posted; they are read again"
            );
            if round + 1 == MAX_ROUNDS {
                // Only jobs changed (edited, paused, resumed) in every one of the rounds.
                return Err(JobError::Store(StoreError::EventContended {
                    id,
                    jobs: again.len(),
                }));
            }
            pending = Some(again);
        }
        if runs
            .iter()
            .any(|r| r.created && r.state == RunState::Queued)
        {
            ctx.worker_wake.notify_one();
        }
        runs.sort_by_key(|r| r.job_id);
        Ok(Emitted {
            id,
            topic: req.topic,
            runs,
        })
    }

    fn report_event_run(&self, job: &Job, p: &EventFireParams, run_id: RunId) {
        let telemetry = &self.context().telemetry;
        match p.run.skip {
            Some(reason) => telemetry.emit(Event::RunSkipped {
                namespace: job.namespace().into(),
                job: job.name().into(),
                scheduled_for: p.run.scheduled_for,
                reason,
            }),
            None => telemetry.emit(Event::RunQueued {
                run_id,
                namespace: job.namespace().into(),
                job: job.name().into(),
                scheduled_for: p.run.scheduled_for,
            }),
        }
    }
}
