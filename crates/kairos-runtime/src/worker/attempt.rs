//! One attempt of one claimed run: wait for its due time if claimed ahead, execute, decide what
//! follows (retry, finish, release) and record it, fenced by the lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kairos_core::policy::RetryDecision;
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunState};
use kairos_core::spec::ExecutionMode;
use kairos_exec::{ExecRequest, Executor, OutputBuffer, RunContext};
use kairos_store::{
    ClaimedRun, RunFinishParams, RunNext, RunStepResultsParams, StoreError, WorkflowStartParams,
};

use super::completer::Completer;
use super::leases::{Lease, Leases, StopCause};
use super::starts::Waiting;
use crate::context::NodeContext;
use crate::telemetry::{Event, millis_between};

/// An execution slot; dropping it frees the slot and wakes the worker to claim again.
pub(super) struct Slot {
    pub executing: Arc<AtomicUsize>,
    pub wake: Arc<tokio::sync::Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.executing.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
    }
}

/// Releases an attempt's lease and live output when dropped.
struct Held {
    ctx: NodeContext,
    leases: Arc<Leases>,
    lease: Arc<Lease>,
    output: Arc<OutputBuffer>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.ctx.live.remove(self.lease.run_id, &self.output);
        self.leases.remove(&self.lease);
    }
}

/// One attempt of one claimed run.
pub(super) struct Attempt {
    pub ctx: NodeContext,
    pub completer: Completer,
    pub executor: Arc<dyn Executor>,
    pub output_limit: usize,
    pub leases: Arc<Leases>,
    pub slot_wake: Arc<tokio::sync::Notify>,
}

impl Attempt {
    /// Records in the store that the attempt of `c` begins (see [`Attempt::run`]). False, with
    /// the lease stopped for the cause, when it could not be: the lease was lost, the store
    /// failed, or the attempt was stopped meanwhile (its cause already given).
    async fn record_begin(&self, c: &ClaimedRun, lease: &Lease) -> bool {
        let begin = self.ctx.store.run_begin(kairos_store::RunBeginParams {
            run_id: c.run.id,
            lease_token: c.lease_token.clone(),
        });
        let cause = tokio::select! {
            biased;
            _ = lease.cancel.cancelled() => return false,
            begun = begin => match begun {
                Ok(true) => return true,
                Ok(false) => StopCause::LeaseLost,
                Err(e) => {
                    tracing::warn!(
                        run_id = c.run.id, error = %e,
                        "cannot record that the attempt begins; it does not start"
                    );
                    StopCause::LeaseExpired
                }
            },
        };
        lease.stop(cause);
        false
    }

    pub(super) async fn run(
        self,
        c: ClaimedRun,
        lease: Arc<Lease>,
        slot: Slot,
        waiting: Option<Waiting>,
    ) {
        let run = &c.run;
        // Claimed ahead of its due time: wait for it (a cancel, lease loss or shutdown meanwhile
        // ends the attempt before it starts).
        if run.run_at > self.ctx.clock.now() {
            tokio::select! {
                _ = self.ctx.clock.sleep_until(run.run_at) => {}
                _ = lease.cancel.cancelled() => {}
            }
        }
        // An `at_most_once` task starts only once the store knows it begins: a rescue then tells
        // a run whose node died before that (put back: nothing ran) from one that may have run
        // (`lost`). Recorded before the attempt counts as begun here, so that a shutdown or a
        // cancel meanwhile still finds it unstarted. Not for a workflow run: starting it records
        // its start (and gives its lease up) in one write.
        let flow = run.parent_id.is_none() && !c.job.spec.steps.is_empty();
        let refused = run.execution == kairos_core::spec::ExecutionMode::AtMostOnce
            && !flow
            && !lease.cancel.is_cancelled()
            && !self.record_begin(&c, &lease).await;
        // Stopped before it began (or its lease is no longer safe): nothing of the task runs.
        let never_started = !lease.begin(self.ctx.clock.now()) || refused;
        let started = self.ctx.clock.now();
        if let Some(waiting) = waiting {
            waiting.begun(started);
        }
        let (ns, job) = (run.namespace.clone(), run.job_name.clone());
        self.ctx.telemetry.emit(Event::RunStarted {
            run_id: run.id,
            namespace: ns.clone(),
            job: job.clone(),
            attempt: run.attempt,
            lag_ms: millis_between(run.run_at.max(run.scheduled_for), started),
        });
        let output = Arc::new(OutputBuffer::new(self.output_limit));
        self.ctx.live.insert(run.id, output.clone());
        // Whatever happens from here (a panic included), the lease and the live output are
        // released: a lease left behind would be heartbeated forever and its run never rescued.
        let held = Held {
            ctx: self.ctx.clone(),
            leases: self.leases.clone(),
            lease: lease.clone(),
            output: output.clone(),
        };
        // A workflow run is not executed here: its steps are queued, to run on any worker.
        if run.parent_id.is_none() && !c.job.spec.steps.is_empty() && !never_started {
            self.start_workflow(&c, &lease).await;
            drop(held);
            drop(slot);
            self.ctx.worker_wake.notify_one();
            return;
        }
        // A step runs as the plain job its step makes of the workflow's document (the claim
        // made it); its plan is not cached, since it shares the job's id and version.
        let planned = if run.step.is_some() {
            c.job
                .spec
                .validate()
                .map(|plan| (Arc::new(plan), &c.job.spec))
        } else {
            self.ctx
                .plans
                .for_attempt(&c.job)
                .map(|plan| (plan, &c.job.spec))
        };
        let (outcome, plan) = match planned {
            // Stopped while waiting for its due time: it never starts.
            Ok((plan, _)) if never_started => (
                AttemptOutcome::from_status(AttemptStatus::Cancelled),
                Some(plan),
            ),
            Ok((plan, spec)) => match (spec.task.clone(), self.inputs(&c).await) {
                // A workflow's document without steps cannot validate; kept for safety.
                (None, _) => (
                    AttemptOutcome::error("the job has no task".to_owned()),
                    None,
                ),
                (_, Err(e)) => (
                    AttemptOutcome::error(format!(
                        "cannot read the results of the upstream runs: {e}"
                    )),
                    Some(plan),
                ),
                (Some(task), Ok((upstream_results, upstream_result))) => {
                    let req = ExecRequest {
                        task,
                        hooks: spec.hooks.clone(),
                        timeout: plan.timeout,
                        kill_grace: plan.kill_grace,
                        expected_exit_codes: spec.expected_exit_codes.clone(),
                        context: RunContext {
                            job: job.clone(),
                            namespace: ns.clone(),
                            run_id: run.id,
                            attempt: run.attempt,
                            scheduled_for: run.scheduled_for,
                            step: run.step.clone(),
                            params: run.params.clone(),
                            upstream_results,
                            event: run.event.as_ref().map(|e| kairos_exec::EventInput {
                                id: e.id.clone(),
                                topic: e.topic.clone(),
                                payload: e.payload.clone(),
                            }),
                            upstream_run_id: run.upstream_run_id,
                            upstream_result,
                            checkpoint: run.report.as_ref().and_then(|r| r.checkpoint.clone()),
                            run_token: None,
                            api_url: self.ctx.api_url.clone(),
                        },
                        output: output.clone(),
                        cancel: lease.cancel.clone(),
                        kill: lease.kill.clone(),
                        reports: None,
                        run_vars: true,
                    };
                    let (req, recorder) = self.record_reports(req, &c);
                    let outcome = self.executor.execute(req).await;
                    // What the task reported last is written before its end (which drops the
                    // lease that fences the reports).
                    recorder.finish().await;
                    (outcome, Some(plan))
                }
            },
            Err(e) => (
                AttemptOutcome::error(format!("job no longer validates: {e}")),
                None,
            ),
        };
        output.close();
        // The slot is free for the next claim while the result is being recorded.
        drop(slot);
        let stop = lease.cause();
        let now = self.ctx.clock.now();
        let next = match (&outcome.status, stop) {
            // Stopped by shutdown, or for its lease, while it waited for its due time: it never
            // ran, so it goes back to the queue whatever its execution mode (if the lease still
            // holds: the release is fenced by it like every result).
            (_, Some(StopCause::Shutdown | StopCause::LeaseLost | StopCause::LeaseExpired))
                if never_started =>
            {
                Some(RunNext::Release)
            }
            // The lease is, or may soon be, someone else's: the result is dropped, and the run
            // is rescued after its lease expires.
            (_, Some(cause)) if cause.lost_lease() => None,
            // Stopped by shutdown: run it again later, unless the job must never run twice.
            (AttemptStatus::Cancelled, Some(StopCause::Shutdown)) => {
                match plan.as_ref().map(|p| p.execution) {
                    Some(ExecutionMode::AtMostOnce) => Some(RunNext::Finish(RunState::Cancelled)),
                    _ => Some(RunNext::Release),
                }
            }
            (AttemptStatus::Cancelled, _) => Some(RunNext::Finish(RunState::Cancelled)),
            (status, _) if status.is_success() => Some(RunNext::Finish(RunState::Succeeded)),
            (status, _) => {
                let decision = plan
                    .as_ref()
                    .map(|p| p.retry.decide(run.attempt, status, rand::random::<f64>()))
                    .unwrap_or(RetryDecision::Finish);
                Some(match decision {
                    RetryDecision::Retry { delay } => RunNext::Retry {
                        run_at: now.checked_add(delay).unwrap_or(now),
                    },
                    RetryDecision::Finish => RunNext::Finish(status.final_state()),
                })
            }
        };
        let requeued = matches!(next, Some(RunNext::Retry { .. } | RunNext::Release));
        if let Some(next) = next {
            let applied = self
                .completer
                .finish(RunFinishParams {
                    run_id: run.id,
                    parent_id: run.parent_id,
                    lease_token: c.lease_token.clone(),
                    attempt: run.attempt,
                    node: self.ctx.node.clone(),
                    started_at: started,
                    outcome: outcome.clone(),
                    next: next.clone(),
                    now: self.ctx.clock.store_now(),
                })
                .await;
            if applied {
                self.report(&c, &outcome, &next, started, now);
            }
        }
        drop(held);
        if requeued || run.parent_id.is_some() {
            // The run is queued again: a new run as far as the worker is concerned. A step's
            // end may have queued the steps after it.
            self.ctx.worker_wake.notify_one();
        } else {
            // A run behind this one (an exclusive run) may be claimable now.
            self.slot_wake.notify_one();
        }
    }

    /// For a step with upstream steps: a JSON object of their results by step name (`null`
    /// for a step that recorded none), read from the store.
    /// Gives a `command` or `shell` task a checkpoint file and records what it reports there
    /// (progress, message, checkpoint) with the run while it runs, fenced by the lease.
    fn record_reports(&self, mut req: ExecRequest, c: &ClaimedRun) -> (ExecRequest, Recorder) {
        use kairos_core::spec::TaskSpec;
        if !matches!(req.task, TaskSpec::Command(_) | TaskSpec::Shell(_)) {
            return (
                req,
                Recorder {
                    task: None,
                    tokens: None,
                },
            );
        }
        let (sink, mut reports) = tokio::sync::mpsc::unbounded_channel::<kairos_exec::TaskReport>();
        req.reports = Some(sink);
        // The attempt's own token: the task may report over the API with it.
        let token = crate::events::random_id();
        self.ctx
            .run_tokens
            .insert(c.run.id, token.clone(), c.lease_token.clone());
        req.context.run_token = Some(token.clone());
        let store = self.ctx.store.clone();
        let clock = self.ctx.clock.clone();
        let (run_id, lease_token) = (c.run.id, c.lease_token.clone());
        let task = tokio::spawn(async move {
            // Whatever arrived while the last write ran goes in the next one: the latest value
            // of each field.
            while let Some(mut merged) = reports.recv().await {
                while let Ok(next) = reports.try_recv() {
                    merged.progress = next.progress.or(merged.progress);
                    merged.message = next.message.or(merged.message);
                    merged.checkpoint = next.checkpoint.or(merged.checkpoint);
                }
                let written = store
                    .run_report(kairos_store::RunReportParams {
                        run_id,
                        lease_token: lease_token.clone(),
                        progress: merged.progress,
                        message: merged.message,
                        checkpoint: merged.checkpoint,
                        now: clock.store_now(),
                    })
                    .await;
                match written {
                    Ok(true) => {}
                    // The lease is gone: the attempt is being stopped.
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(run_id, error = %e, "a task's report was not recorded")
                    }
                }
            }
        });
        let tokens = (self.ctx.run_tokens.clone(), c.run.id, token);
        (
            req,
            Recorder {
                task: Some(task),
                tokens: Some(tokens),
            },
        )
    }

    /// What the run's tasks read from other runs: its upstream steps' results (a workflow
    /// step), and the result of the run whose end created it (a dependency's run).
    async fn inputs(&self, c: &ClaimedRun) -> Result<(Option<String>, Option<String>), StoreError> {
        let upstream_result = match c.run.upstream_run_id {
            Some(id) => self
                .ctx
                .store
                .run_get(kairos_store::RunGetParams { id })
                .await?
                .and_then(|r| r.result),
            None => None,
        };
        Ok((self.upstream_results(c).await?, upstream_result))
    }

    async fn upstream_results(&self, c: &ClaimedRun) -> Result<Option<String>, StoreError> {
        let (Some(parent), Some(step)) = (c.run.parent_id, c.run.step.as_deref()) else {
            return Ok(None);
        };
        let Some(spec) = c
            .workflow
            .as_ref()
            .and_then(|w| w.steps.iter().find(|s| s.name == step))
        else {
            return Ok(None);
        };
        if spec.depends_on.is_empty() {
            return Ok(None);
        }
        let results = self
            .ctx
            .store
            .run_step_results(RunStepResultsParams {
                run_id: parent,
                steps: spec.depends_on.clone(),
            })
            .await?;
        let mut by_step = serde_json::Map::new();
        for name in &spec.depends_on {
            let value = results
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, r)| r.as_deref())
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(serde_json::Value::Null);
            by_step.insert(name.clone(), value);
        }
        Ok(Some(serde_json::Value::Object(by_step).to_string()))
    }

    /// Starts a claimed workflow run: its steps are created and the first ones queued, and its
    /// lease is dropped (the workflow run ends with its last step, in the store). A store error
    /// is tried again a few times while the lease is safe; after that the lease is left to
    /// expire and the run is rescued (and started again) like any run whose worker failed.
    async fn start_workflow(&self, c: &ClaimedRun, lease: &Lease) {
        let mut delay = std::time::Duration::from_millis(50);
        for _ in 0..4 {
            let started = self.ctx.store.workflow_start(WorkflowStartParams {
                run_id: c.run.id,
                lease_token: c.lease_token.clone(),
                spec: c.job.spec.clone(),
                now: self.ctx.clock.store_now(),
            });
            match started.await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        run_id = c.run.id,
                        "workflow run not started: its lease was lost"
                    );
                    return;
                }
                Err(e) => {
                    tracing::error!(run_id = c.run.id, error = %e, "starting a workflow run failed");
                }
            }
            if lease.cause().is_some() {
                break;
            }
            tokio::time::sleep(delay).await;
            delay *= 4;
        }
        tracing::error!(
            run_id = c.run.id,
            "workflow run not started; it runs again once its lease expires"
        );
    }

    fn report(
        &self,
        c: &ClaimedRun,
        outcome: &AttemptOutcome,
        next: &RunNext,
        started: jiff::Timestamp,
        now: jiff::Timestamp,
    ) {
        let run = &c.run;
        let (namespace, job) = (run.namespace.clone(), run.job_name.clone());
        match next {
            RunNext::Finish(state) => self.ctx.telemetry.emit(Event::RunFinished {
                run_id: run.id,
                namespace,
                job,
                attempt: run.attempt,
                state: *state,
                outcome: outcome.status.label(),
                duration_ms: millis_between(started, now),
            }),
            RunNext::Retry { run_at } => self.ctx.telemetry.emit(Event::RunRetrying {
                run_id: run.id,
                namespace,
                job,
                attempt: run.attempt,
                run_at: *run_at,
            }),
            RunNext::Release => self.ctx.telemetry.emit(Event::RunReleased {
                run_id: run.id,
                namespace,
                job,
            }),
        }
    }
}

/// The task that records a task's reports (it ends once they are all written), and the
/// attempt's token, forgotten when the attempt ends.
struct Recorder {
    task: Option<tokio::task::JoinHandle<()>>,
    tokens: Option<(crate::context::RunTokens, kairos_core::run::RunId, String)>,
}

impl Recorder {
    async fn finish(self) {
        if let Some((tokens, run, token)) = &self.tokens {
            tokens.remove(*run, token);
        }
        if let Some(task) = self.task {
            // Bounded: a store that hangs does not hold the attempt's end.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
    }
}
