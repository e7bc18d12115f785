//! The alert evaluator on a real store of each backend, under a manual clock: runs are created
//! and ended with the store's own calls (claim and finish, cancel, rescue of an expired lease,
//! a workflow's steps), the activity log gets the entries the node would have written for them
//! (each one the serialized [`Event`], as the activity recorder writes it), and the evaluator's
//! `pass()` (the log) and `watch()` (silences and late runs) are called directly. What it
//! raised is read back from the store's deliveries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::JobSpec;
use kairos_core::alert::{AlertRule, When};
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunOrigin, RunState, SkipReason};
use kairos_core::spec::ExecutionMode;
use kairos_runtime::alerts::evaluator::Evaluator;
use kairos_runtime::alerts::{AlertDoc, AlertsConfig, GlobalRule};
use kairos_runtime::{Clock as _, Event, ManualClock, NodeContext};
use kairos_store::{
    ActivityCursor, ActivityPruneParams, ActivityRecord, AlertCursorParams, AlertDelivery,
    AlertListParams, ClaimedRun, Job, JobCreateParams, JobSetPausedParams, Run, RunCancelParams,
    RunClaimParams, RunFinishParams, RunGetParams, RunInsert, RunInsertParams, RunNext,
    RunRescueParams, RunStepsParams, Store, WorkflowStartParams,
};
use kairos_testkit::{Backend, TestStore, node_context_on};
use tokio::sync::Notify;

kairos_testkit::backend_tests! {
    failures_timeouts_and_lost_runs_raise_on_their_channels,
    a_streak_raises_at_its_count_once_and_again_after_a_success,
    a_success_after_a_failure_is_a_recovery,
    streaks_and_recoveries_look_past_many_cancels_and_later_runs,
    entries_read_again_queue_nothing_new,
    a_skipped_due_time_raises_once_per_job_and_due_time,
    global_rules_apply_to_their_namespaces_and_share_keys_with_job_rules,
    a_silent_job_raises_once_per_silence,
    late_runs_raise_their_sla_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_backfill_is_late_on_purpose_and_has_no_sla,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    two_switches_of_different_lengths_are_two_alerts,
    a_workflow_raises_for_its_run_not_its_steps,
    a_pruned_position_goes_on_from_the_end_of_the_log,
}

const START: &str = "2026-03-01T00:00:00Z";
/// How long a claim holds a run.
const LEASE: SignedDuration = SignedDuration::from_secs(30);

fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Setup.

struct Setup {
    ctx: NodeContext,
    clock: ManualClock,
    store: Arc<dyn Store>,
    /// An evaluator without global rules.
    evaluator: Evaluator,
    _temp: TestStore,
}

async fn setup(backend: Backend) -> Option<Setup> {
    setup_with(backend, Vec::new()).await
}

async fn setup_with(backend: Backend, rules: Vec<GlobalRule>) -> Option<Setup> {
    let (ctx, clock, temp) = node_context_on(backend, START).await?;
    let evaluator = evaluator(&ctx, rules);
    Some(Setup {
        store: temp.store.clone(),
        ctx,
        clock,
        evaluator,
        _temp: temp,
    })
}

fn evaluator(ctx: &NodeContext, rules: Vec<GlobalRule>) -> Evaluator {
    let config = AlertsConfig {
        rules,
        ui_url: Some("https://kairos.example".into()),
        ..AlertsConfig::default()
    };
    Evaluator::new(ctx.clone(), Arc::new(config), Arc::new(Notify::new()))
}

/// A shell job of `namespace` with these `notify` rules (JSON array) and extra fields.
fn job_spec(namespace: &str, name: &str, notify: &str, extra: &str) -> JobSpec {
    JobSpec::from_json(&format!(
        r#"{{"name":"{name}","namespace":"{namespace}","triggers":[{{"interval":"1h"}}],
            "task":{{"kind":"shell","script":"true"}},"notify":{notify}{extra}}}"#
    ))
    .unwrap()
}

/// A key's shape in the assertions: (alert, channel, key, run).
type Raised = (String, String, String, Option<i64>);

fn raised(alert: &str, channel: &str, key: &str, run: Option<i64>) -> Raised {
    (alert.into(), channel.into(), key.into(), run)
}

impl Setup {
    async fn create(&self, spec: JobSpec) -> Job {
        self.store
            .job_create(JobCreateParams {
                spec,
                next_fire_at: None,
                calendars: vec![],
                actor: "test".into(),
                now: self.clock.store_now(),
            })
            .await
            .unwrap()
    }

    async fn job(&self, name: &str, notify: &str) -> Job {
        self.create(job_spec("default", name, notify, "")).await
    }

    /// A queued run of `job` due now.
    async fn queue(&self, job: &Job) -> Run {
        self.queue_at(job, self.clock.now()).await
    }

    async fn queue_at(&self, job: &Job, due: Timestamp) -> Run {
        let run = self
            .store
            .run_insert(RunInsertParams {
                expected_version: None,
                job_id: job.id,
                run: RunInsert {
                    scheduled_for: due,
                    run_at: due,
                    origin: RunOrigin::Schedule,
                    skip: None,
                    exclusive: false,
                    max_attempts: 1,
                    execution: job.spec.execution,
                    event: None,
                },
                params: None,
                actor: "test".into(),
                now: self.clock.store_now(),
            })
            .await
            .unwrap();
        assert_eq!(run.state, RunState::Queued);
        run
    }

    /// Claims the one run that is due now (as node `node`).
    async fn claim(&self, node: &str) -> ClaimedRun {
        let mut claimed = self
            .store
            .run_claim(RunClaimParams {
                node: node.into(),
                limit: 10,
                lease: LEASE,
                ahead: SignedDuration::ZERO,
                now: self.clock.store_now(),
            })
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "one run is due");
        claimed.remove(0)
    }

    /// Ends a claimed attempt with `status` now, as the worker does, and appends the
    /// `run.finished` entry it would have written. The run as stored after it.
    async fn finish(&self, c: &ClaimedRun, status: AttemptStatus) -> Run {
        let state = status.final_state();
        let exit_code = match status {
            AttemptStatus::ExitCode { code } => Some(code),
            AttemptStatus::Succeeded => Some(0),
            _ => None,
        };
        let started = c.run.started_at.unwrap();
        let applied = self
            .store
            .run_finish(RunFinishParams {
                run_id: c.run.id,
                parent_id: c.run.parent_id,
                lease_token: c.lease_token.clone(),
                attempt: c.run.attempt,
                node: self.ctx.node.clone(),
                started_at: started,
                outcome: AttemptOutcome {
                    exit_code,
                    ..AttemptOutcome::from_status(status.clone())
                },
                next: RunNext::Finish(state),
                now: self.clock.store_now(),
            })
            .await
            .unwrap();
        assert!(applied, "the lease held");
        self.append(vec![Event::RunFinished {
            run_id: c.run.id,
            namespace: c.run.namespace.clone(),
            job: c.run.job_name.clone(),
            attempt: c.run.attempt,
            state,
            outcome: status.label(),
            duration_ms: i64::try_from(self.clock.now().duration_since(started).as_millis())
                .unwrap(),
        }])
        .await;
        self.get(c.run.id).await
    }

    /// A run of `job` due now, claimed, ended with `status` a second later; the clock then
    /// moves on a minute (so that the next run has a due time of its own).
    async fn run(&self, job: &Job, status: AttemptStatus) -> Run {
        self.queue(job).await;
        let c = self.claim("node-a").await;
        self.clock.advance(secs(1));
        let run = self.finish(&c, status).await;
        self.clock.advance(secs(59));
        run
    }

    /// Cancels a queued run as the API does, with its `run.changed` entry.
    async fn cancel(&self, run: &Run) -> Run {
        let run = self
            .store
            .run_cancel(RunCancelParams {
                run_id: run.id,
                actor: "test".into(),
                now: self.clock.store_now(),
            })
            .await
            .unwrap();
        assert_eq!(run.state, RunState::Cancelled);
        self.append(vec![Event::RunChanged {
            run_id: run.id,
            namespace: run.namespace.clone(),
            job: run.job_name.clone(),
            change: "run.cancel",
            state: run.state,
        }])
        .await;
        run
    }

    /// A run of `job` (`execution: at_most_once`) claimed by a node that dies once its attempt
    /// began: its lease expires, the rescuer marks it `lost`, with its `runs.rescued` entry.
    async fn lose(&self, job: &Job) -> Run {
        assert_eq!(job.spec.execution, ExecutionMode::AtMostOnce);
        self.queue(job).await;
        let c = self.claim("node-dead").await;
        assert!(
            self.store
                .run_begin(kairos_store::RunBeginParams {
                    run_id: c.run.id,
                    lease_token: c.lease_token.clone(),
                })
                .await
                .unwrap()
        );
        self.clock.advance(LEASE + secs(1));
        let report = self
            .store
            .run_rescue(RunRescueParams {
                limit: 10,
                orphaned_node: None,
                now: self.clock.store_now(),
            })
            .await
            .unwrap();
        assert_eq!(report.lost, vec![c.run.id]);
        self.append(vec![Event::RunsRescued {
            requeued: report.requeued,
            lost: report.lost,
        }])
        .await;
        self.clock.advance(secs(29));
        self.get(c.run.id).await
    }

    async fn get(&self, id: i64) -> Run {
        self.store
            .run_get(RunGetParams { id })
            .await
            .unwrap()
            .expect("the run exists")
    }

    /// Appends one batch of entries to the activity log, as the node's activity recorder
    /// writes them (`ActivityRecorder::record`).
    async fn append(&self, events: Vec<Event>) {
        let records = events
            .iter()
            .map(|event| ActivityRecord {
                at: self.clock.now(),
                node: self.ctx.node.clone(),
                kind: event.kind().to_owned(),
                namespace: event.namespace().map(str::to_owned),
                job: event.job().map(str::to_owned),
                run_id: event.run_id(),
                data: serde_json::to_string(event).unwrap(),
            })
            .collect();
        self.store.activity_append(records).await.unwrap();
    }

    async fn pass(&self) -> usize {
        self.evaluator.pass().await.unwrap()
    }

    async fn watch(&self) {
        self.evaluator.watch().await.unwrap();
    }

    /// Every delivery, oldest first.
    async fn deliveries(&self) -> Vec<AlertDelivery> {
        let mut all = self
            .store
            .alert_list(AlertListParams {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        all.reverse();
        all
    }

    /// What was raised, as a set of (alert, channel, key, run).
    async fn raised(&self) -> BTreeSet<Raised> {
        self.deliveries()
            .await
            .into_iter()
            .map(|d| (d.alert, d.channel, d.key, d.run_id))
            .collect()
    }

    /// The document of the delivery with `key`.
    async fn doc(&self, key: &str) -> AlertDoc {
        let d = self
            .deliveries()
            .await
            .into_iter()
            .find(|d| d.key == key)
            .unwrap_or_else(|| panic!("a delivery {key}"));
        serde_json::from_str(&d.payload).unwrap()
    }

    async fn cursor(&self) -> ActivityCursor {
        self.store
            .alert_cursor()
            .await
            .unwrap()
            .expect("a position")
    }
}

fn set(items: &[Raised]) -> BTreeSet<Raised> {
    items.iter().cloned().collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

async fn failures_timeouts_and_lost_runs_raise_on_their_channels(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let rules = r#"[{"on":"failure","channels":["ops"]},
                    {"on":"timeout","channels":["pager"]},
                    {"on":"lost","channels":["pager","chat"]}]"#;
    let job = s
        .create(job_spec(
            "default",
            "export",
            rules,
            r#","execution":"at_most_once""#,
        ))
        .await;
    // History raises nothing: the first pass only notes where the log is.
    s.run(&job, AttemptStatus::ExitCode { code: 9 }).await;
    assert_eq!(s.pass().await, 0);
    assert!(s.raised().await.is_empty());

    let failed = s.run(&job, AttemptStatus::ExitCode { code: 3 }).await;
    let timed_out = s.run(&job, AttemptStatus::TimedOut).await;
    let lost = s.lose(&job).await;
    let succeeded = s.run(&job, AttemptStatus::Succeeded).await;
    let cancelled = s.cancel(&s.queue(&job).await).await;
    assert_eq!(
        [failed.state, timed_out.state, lost.state, succeeded.state],
        [
            RunState::Failed,
            RunState::TimedOut,
            RunState::Lost,
            RunState::Succeeded
        ]
    );
    assert_eq!(s.pass().await, 5);

    let key = |run: &Run, what: &str, channel: &str| format!("run:{}:{what}:{channel}", run.id);
    assert_eq!(
        s.raised().await,
        set(&[
            raised(
                "failure",
                "ops",
                &key(&failed, "failure", "ops"),
                Some(failed.id)
            ),
            raised(
                "failure",
                "ops",
                &key(&timed_out, "failure", "ops"),
                Some(timed_out.id)
            ),
            raised(
                "timeout",
                "pager",
                &key(&timed_out, "timeout", "pager"),
                Some(timed_out.id)
            ),
            raised(
                "failure",
                "ops",
                &key(&lost, "failure", "ops"),
                Some(lost.id)
            ),
            raised("lost", "pager", &key(&lost, "lost", "pager"), Some(lost.id)),
            raised("lost", "chat", &key(&lost, "lost", "chat"), Some(lost.id)),
        ]),
        "nothing for {succeeded:?} nor {cancelled:?}"
    );

    // The documents.
    let doc = s.doc(&key(&failed, "failure", "ops")).await;
    assert_eq!(doc.alert, "failure");
    assert_eq!(doc.namespace, "default");
    assert_eq!(doc.job, "export");
    assert_eq!(doc.rule, "notify[0]");
    assert_eq!(
        doc.summary,
        format!("Job `export` (default): run {} failed: exit 3", failed.id)
    );
    assert_eq!(doc.at, s.clock.now());
    let run = doc.run.expect("the run");
    assert_eq!(run.id, failed.id);
    assert_eq!(run.state, "failed");
    assert_eq!(run.scheduled_for, failed.scheduled_for);
    assert_eq!(run.started_at, failed.started_at);
    assert_eq!(run.finished_at, failed.finished_at);
    assert_eq!(run.exit_code, Some(3));
    assert_eq!(run.node.as_deref(), Some("node-a"), "the node that ran it");
    assert_eq!(doc.links.job, "https://kairos.example/jobs/default/export");
    assert_eq!(
        doc.links.run,
        Some(format!("https://kairos.example/runs/{}", failed.id))
    );
    assert_eq!(doc.count, None);
    let doc = s.doc(&key(&timed_out, "timeout", "pager")).await;
    assert_eq!(doc.rule, "notify[1]");
    assert_eq!(doc.run.unwrap().state, "timed_out");
    let doc = s.doc(&key(&lost, "lost", "chat")).await;
    assert_eq!(doc.rule, "notify[2]");
    assert_eq!(doc.run.unwrap().state, "lost");
}

async fn a_streak_raises_at_its_count_once_and_again_after_a_success(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s
        .job(
            "flaky",
            r#"[{"on":"failures","count":3,"channels":["pager"]}]"#,
        )
        .await;
    s.pass().await;
    let fail = AttemptStatus::ExitCode { code: 1 };

    // Each end is evaluated as it comes, as the leader does.
    let mut ends = Vec::new();
    ends.push(s.run(&job, fail.clone()).await);
    s.pass().await;
    let cancelled = s.cancel(&s.queue(&job).await).await;
    s.clock.advance(secs(60));
    s.pass().await;
    ends.push(s.run(&job, AttemptStatus::TimedOut).await);
    s.pass().await;
    assert!(
        s.raised().await.is_empty(),
        "two failures, a cancel between"
    );
    let third = s.run(&job, fail.clone()).await;
    s.pass().await;
    let at_third = set(&[raised(
        "failures",
        "pager",
        &format!("run:{}:failures:pager", third.id),
        Some(third.id),
    )]);
    assert_eq!(s.raised().await, at_third, "{cancelled:?} did not break it");
    let doc = s.doc(&format!("run:{}:failures:pager", third.id)).await;
    assert_eq!(doc.alert, "failures");
    assert_eq!(doc.count, Some(3));
    assert_eq!(doc.run.unwrap().id, third.id);
    assert!(
        doc.summary.contains("3 failures in a row"),
        "{}",
        doc.summary
    );

    // The 4th and 5th: the same streak.
    s.run(&job, fail.clone()).await;
    s.run(&job, fail.clone()).await;
    s.pass().await;
    assert_eq!(s.raised().await, at_third, "once per streak");

    // A success ends it; the next 3rd failure raises again (read in one pass this time).
    s.run(&job, AttemptStatus::Succeeded).await;
    s.run(&job, fail.clone()).await;
    s.run(&job, fail.clone()).await;
    s.pass().await;
    assert_eq!(s.raised().await, at_third, "two failures after the success");
    let again = s.run(&job, fail.clone()).await;
    s.pass().await;
    let mut both = at_third.clone();
    both.insert(raised(
        "failures",
        "pager",
        &format!("run:{}:failures:pager", again.id),
        Some(again.id),
    ));
    assert_eq!(s.raised().await, both);
}

async fn a_success_after_a_failure_is_a_recovery(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s
        .job("backup", r#"[{"on":"recovery","channels":["ops"]}]"#)
        .await;
    s.pass().await;

    let first = s.run(&job, AttemptStatus::Succeeded).await;
    let failed = s.run(&job, AttemptStatus::ExitCode { code: 2 }).await;
    s.cancel(&s.queue(&job).await).await;
    s.clock.advance(secs(60));
    let recovered = s.run(&job, AttemptStatus::Succeeded).await;
    let again = s.run(&job, AttemptStatus::Succeeded).await;
    s.pass().await;
    let key = format!("run:{}:recovery:ops", recovered.id);
    assert_eq!(
        s.raised().await,
        set(&[raised("recovery", "ops", &key, Some(recovered.id))]),
        "not {first:?} (nothing before it), not {failed:?}, not {again:?} (after a success)"
    );
    let doc = s.doc(&key).await;
    assert_eq!(doc.alert, "recovery");
    assert_eq!(doc.run.unwrap().state, "succeeded");
    assert_eq!(
        doc.summary,
        format!(
            "Job `backup` (default): run {} succeeded after failures",
            recovered.id
        )
    );
}

async fn streaks_and_recoveries_look_past_many_cancels_and_later_runs(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s
        .job(
            "every-minute",
            r#"[{"on":"failures","count":3,"channels":["pager"]},
                {"on":"recovery","channels":["ops"]}]"#,
        )
        .await;
    s.pass().await;
    let fail = AttemptStatus::ExitCode { code: 1 };
    let cancels = |n: usize| {
        let s = &s;
        let job = &job;
        async move {
            for _ in 0..n {
                s.cancel(&s.queue(job).await).await;
                s.clock.advance(secs(60));
            }
        }
    };
    let key = |run: &Run, what: &str, channel: &str| format!("run:{}:{what}:{channel}", run.id);

    // Many cancels inside a streak, and before a recovery: neither breaks nor hides anything.
    s.run(&job, fail.clone()).await;
    s.run(&job, fail.clone()).await;
    cancels(30).await;
    let third = s.run(&job, fail.clone()).await;
    s.pass().await;
    let mut expected = set(&[raised(
        "failures",
        "pager",
        &key(&third, "failures", "pager"),
        Some(third.id),
    )]);
    assert_eq!(
        s.raised().await,
        expected,
        "the 3rd failure, 30 cancels after the 2nd"
    );
    cancels(30).await;
    let recovered = s.run(&job, AttemptStatus::Succeeded).await;
    s.pass().await;
    expected.insert(raised(
        "recovery",
        "ops",
        &key(&recovered, "recovery", "ops"),
        Some(recovered.id),
    ));
    assert_eq!(
        s.raised().await,
        expected,
        "a recovery 30 cancels after the failure"
    );

    // An evaluator that fell behind (a new leader after a while): many runs ended after the
    // ones it reads first, and it judges each one by the runs before it.
    s.run(&job, fail.clone()).await;
    s.run(&job, fail.clone()).await;
    let behind = s.run(&job, fail.clone()).await;
    let back = s.run(&job, AttemptStatus::Succeeded).await;
    for _ in 0..30 {
        s.run(&job, AttemptStatus::Succeeded).await;
    }
    s.pass().await;
    expected.insert(raised(
        "failures",
        "pager",
        &key(&behind, "failures", "pager"),
        Some(behind.id),
    ));
    expected.insert(raised(
        "recovery",
        "ops",
        &key(&back, "recovery", "ops"),
        Some(back.id),
    ));
    assert_eq!(s.raised().await, expected);
}

async fn entries_read_again_queue_nothing_new(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s
        .job(
            "export",
            r#"[{"on":"failure","channels":["ops","chat"]},{"on":"recovery","channels":["ops"]}]"#,
        )
        .await;
    s.pass().await;
    let start = s.cursor().await;
    s.run(&job, AttemptStatus::ExitCode { code: 1 }).await;
    s.run(&job, AttemptStatus::Succeeded).await;
    assert_eq!(s.pass().await, 2);
    let first = s.deliveries().await;
    assert_eq!(first.len(), 3);
    let end = s.cursor().await;
    assert!(end > start);

    // The same evaluator, its position set back (a leader that crashed before moving it).
    s.clock.advance(secs(10));
    assert!(
        s.store
            .alert_cursor_set(AlertCursorParams {
                expected: Some(end),
                to: start,
            })
            .await
            .unwrap()
    );
    assert_eq!(s.pass().await, 2, "read again");
    assert_eq!(s.deliveries().await, first, "nothing new, nothing changed");
    assert_eq!(s.cursor().await, end);

    // Another evaluator (a second leader for a moment) reading the same entries.
    assert!(
        s.store
            .alert_cursor_set(AlertCursorParams {
                expected: Some(end),
                to: start,
            })
            .await
            .unwrap()
    );
    let other = evaluator(&s.ctx, Vec::new());
    assert_eq!(other.pass().await.unwrap(), 2);
    assert_eq!(s.deliveries().await, first);
    // And the watch raises nothing for runs that ended.
    other.watch().await.unwrap();
    assert_eq!(s.deliveries().await, first);
}

async fn a_skipped_due_time_raises_once_per_job_and_due_time(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s
        .job("tick", r#"[{"on":"skipped","channels":["ops"]}]"#)
        .await;
    let quiet = s
        .job("quiet", r#"[{"on":"failure","channels":["ops"]}]"#)
        .await;
    s.pass().await;

    let due = t("2026-03-01T00:05:00Z");
    let later = t("2026-03-01T00:06:00Z");
    s.clock.set(later);
    let skipped = |job: &Job, at: Timestamp, reason: SkipReason| Event::RunSkipped {
        namespace: job.namespace().into(),
        job: job.name().into(),
        scheduled_for: at,
        reason,
    };
    s.append(vec![
        skipped(&job, due, SkipReason::Overlap),
        // The same due time again (another node's scheduler, a round repeated): once.
        skipped(&job, due, SkipReason::Overlap),
        skipped(&quiet, due, SkipReason::Overlap),
    ])
    .await;
    s.append(vec![skipped(&job, later, SkipReason::Misfire)])
        .await;
    assert_eq!(s.pass().await, 4);

    let key = |at: Timestamp| format!("skip:{}:{}:ops", job.id, at.as_microsecond());
    assert_eq!(
        s.raised().await,
        set(&[
            raised("skipped", "ops", &key(due), None),
            raised("skipped", "ops", &key(later), None),
        ])
    );
    let doc = s.doc(&key(due)).await;
    assert_eq!(doc.alert, "skipped");
    assert_eq!(doc.job, "tick");
    assert_eq!(doc.rule, "notify[0]");
    assert_eq!(doc.run, None);
    assert_eq!(doc.scheduled_for, Some(due));
    assert_eq!(doc.reason.as_deref(), Some("overlap"));
    assert_eq!(doc.links.run, None);
    assert_eq!(s.doc(&key(later)).await.reason.as_deref(), Some("misfire"));
}

async fn global_rules_apply_to_their_namespaces_and_share_keys_with_job_rules(backend: Backend) {
    let rule = |when: When, channels: &[&str]| AlertRule {
        when,
        channels: channels.iter().map(|c| (*c).to_owned()).collect(),
    };
    let Some(s) = setup_with(
        backend,
        vec![
            GlobalRule {
                namespaces: Some(vec!["team-a".into()]),
                rule: rule(When::Failure, &["ops", "chat"]),
            },
            GlobalRule {
                namespaces: None,
                rule: rule(When::Timeout, &["pager"]),
            },
        ],
    )
    .await
    else {
        return;
    };
    // a1 has its own rule on the same condition and channel as the global one.
    let a1 = s
        .create(job_spec(
            "team-a",
            "a1",
            r#"[{"on":"failure","channels":["ops"]}]"#,
            "",
        ))
        .await;
    let a2 = s.create(job_spec("team-a", "a2", "[]", "")).await;
    let b = s.create(job_spec("team-b", "b", "[]", "")).await;
    s.pass().await;

    let fail = AttemptStatus::ExitCode { code: 1 };
    let a1_run = s.run(&a1, fail.clone()).await;
    let a2_run = s.run(&a2, fail.clone()).await;
    let b_failed = s.run(&b, fail.clone()).await;
    let b_timed_out = s.run(&b, AttemptStatus::TimedOut).await;
    s.pass().await;

    let key = |run: &Run, what: &str, channel: &str| format!("run:{}:{what}:{channel}", run.id);
    assert_eq!(
        s.raised().await,
        set(&[
            raised(
                "failure",
                "ops",
                &key(&a1_run, "failure", "ops"),
                Some(a1_run.id)
            ),
            raised(
                "failure",
                "chat",
                &key(&a1_run, "failure", "chat"),
                Some(a1_run.id)
            ),
            raised(
                "failure",
                "ops",
                &key(&a2_run, "failure", "ops"),
                Some(a2_run.id)
            ),
            raised(
                "failure",
                "chat",
                &key(&a2_run, "failure", "chat"),
                Some(a2_run.id)
            ),
            raised(
                "timeout",
                "pager",
                &key(&b_timed_out, "timeout", "pager"),
                Some(b_timed_out.id)
            ),
        ]),
        "team-b's failure {b_failed:?} has no rule"
    );
    // One delivery per key; the job's own rule comes first.
    assert_eq!(s.deliveries().await.len(), 5);
    assert_eq!(
        s.doc(&key(&a1_run, "failure", "ops")).await.rule,
        "notify[0]"
    );
    assert_eq!(
        s.doc(&key(&a1_run, "failure", "chat")).await.rule,
        "alerts[0]"
    );
    let doc = s.doc(&key(&a2_run, "failure", "ops")).await;
    assert_eq!(doc.rule, "alerts[0]");
    assert_eq!(doc.namespace, "team-a");
    assert_eq!(doc.links.job, "https://kairos.example/jobs/team-a/a2");
    assert_eq!(
        s.doc(&key(&b_timed_out, "timeout", "pager")).await.rule,
        "alerts[1]"
    );
}

async fn a_silent_job_raises_once_per_silence(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let rules = r#"[{"on":"no_success","within":"1m","channels":["pager"]}]"#;
    let job = s.job("heartbeat", rules).await;
    let paused = s.job("paused", rules).await;
    s.store
        .job_set_paused(JobSetPausedParams {
            namespace: "default".into(),
            name: "paused".into(),
            paused: true,
            expected_version: None,
            next_fire_at: None,
            actor: "test".into(),
            now: s.clock.store_now(),
        })
        .await
        .unwrap();
    let created = s.clock.now();

    // Before the deadline, and at it: nothing.
    s.clock.advance(secs(30));
    s.watch().await;
    s.clock.set(created + secs(60));
    s.watch().await;
    assert!(s.raised().await.is_empty());

    // After it: one alert, however often it is watched.
    s.clock.advance(secs(1));
    s.watch().await;
    s.clock.advance(secs(30));
    s.watch().await;
    let first_key = format!("silent:{}:{}:60:pager", job.id, created.as_microsecond());
    let first = set(&[raised("no_success", "pager", &first_key, None)]);
    assert_eq!(s.raised().await, first, "{paused:?} is not watched");
    let doc = s.doc(&first_key).await;
    assert_eq!(doc.alert, "no_success");
    assert_eq!(doc.job, "heartbeat");
    assert_eq!(doc.silent_since, Some(created));
    assert_eq!(doc.run, None);
    assert_eq!(doc.at, created + secs(61));

    // A success ends the silence; the next one raises again, under another key.
    s.queue(&job).await;
    let c = s.claim("node-a").await;
    s.clock.advance(secs(5));
    let success = s.finish(&c, AttemptStatus::Succeeded).await;
    let since = success.finished_at.unwrap();
    s.clock.set(since + secs(60));
    s.watch().await;
    assert_eq!(s.raised().await, first, "within a minute of the success");
    s.clock.set(since + secs(61));
    s.watch().await;
    s.watch().await;
    let second_key = format!("silent:{}:{}:60:pager", job.id, since.as_microsecond());
    let mut both = first.clone();
    both.insert(raised("no_success", "pager", &second_key, None));
    assert_eq!(s.raised().await, both);
    assert_eq!(s.doc(&second_key).await.silent_since, Some(since));
}

async fn late_runs_raise_their_sla_once(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s
        .job(
            "report",
            r#"[{"on":"sla","start_within":"1m","finish_within":"5m","channels":["ops"]}]"#,
        )
        .await;
    s.pass().await;
    // An SLA alert's key names its deadline (start 1m, finish 5m after the due time).
    let key = |run: &Run, what: &str| {
        let within = if what == "sla_start" { 60 } else { 300 };
        let deadline = run.scheduled_for + secs(within);
        format!("run:{}:{what}:{}:ops", run.id, deadline.as_microsecond())
    };
    let t0 = s.clock.now();

    // A queued run not started by its deadline: raised by the watch.
    let waiting = s.queue(&job).await;
    s.clock.set(t0 + secs(60));
    s.watch().await;
    assert!(s.raised().await.is_empty(), "at the deadline: in time");
    s.clock.set(t0 + secs(61));
    s.watch().await;
    s.watch().await;
    let start_key = key(&waiting, "sla_start");
    let mut expected = set(&[raised("sla_start", "ops", &start_key, Some(waiting.id))]);
    assert_eq!(s.raised().await, expected);
    let doc = s.doc(&start_key).await;
    assert_eq!(doc.deadline, Some(t0 + secs(60)));
    assert_eq!(doc.run.unwrap().state, "queued");
    // It starts late and ends in time: its end raises the start SLA again, queued once.
    let c = s.claim("node-a").await;
    s.clock.advance(secs(10));
    s.finish(&c, AttemptStatus::Succeeded).await;
    s.pass().await;
    assert_eq!(s.raised().await, expected);

    // A run that started in time and runs past its finish deadline: raised by the watch, and
    // once only when it ends late.
    let t1 = t0 + secs(600);
    s.clock.set(t1);
    let running = s.queue(&job).await;
    let c = s.claim("node-a").await;
    s.clock.set(t1 + secs(300));
    s.watch().await;
    assert_eq!(s.raised().await, expected, "at the deadline: in time");
    s.clock.set(t1 + secs(301));
    s.watch().await;
    let finish_key = key(&running, "sla_finish");
    expected.insert(raised("sla_finish", "ops", &finish_key, Some(running.id)));
    assert_eq!(s.raised().await, expected);
    let doc = s.doc(&finish_key).await;
    assert_eq!(doc.deadline, Some(t1 + secs(300)));
    assert_eq!(doc.run.as_ref().unwrap().state, "running");
    assert_eq!(doc.run.unwrap().finished_at, None);
    s.clock.advance(secs(60));
    s.finish(&c, AttemptStatus::Succeeded).await;
    s.pass().await;
    s.watch().await;
    assert_eq!(s.raised().await, expected, "its late end: the same alert");

    // A run that ended late between two watches: raised from its `run.finished` entry.
    let t2 = t0 + secs(1200);
    s.clock.set(t2);
    let quick = s.queue(&job).await;
    let c = s.claim("node-a").await;
    s.clock.set(t2 + secs(310));
    let ended = s.finish(&c, AttemptStatus::ExitCode { code: 1 }).await;
    s.pass().await;
    let late_key = key(&quick, "sla_finish");
    expected.insert(raised("sla_finish", "ops", &late_key, Some(quick.id)));
    assert_eq!(s.raised().await, expected);
    let doc = s.doc(&late_key).await;
    assert_eq!(doc.deadline, Some(t2 + secs(300)));
    let run = doc.run.unwrap();
    assert_eq!(run.state, "failed");
    assert_eq!(run.finished_at, ended.finished_at);
    s.watch().await;
    assert_eq!(s.raised().await, expected);

    // A run that started and ended in time raises nothing.
    s.clock.set(t0 + secs(1800));
    s.run(&job, AttemptStatus::Succeeded).await;
    s.pass().await;
    s.watch().await;
    assert_eq!(s.raised().await, expected);
}

async fn a_workflow_raises_for_its_run_not_its_steps(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let step = |name: &str, deps: &str| {
        format!(
            r#"{{"name":"{name}","depends_on":[{deps}],"task":{{"kind":"shell","script":"true"}}}}"#
        )
    };
    let spec = JobSpec::from_json(&format!(
        r#"{{"name":"pipeline","triggers":[{{"interval":"1h"}}],
            "notify":[{{"on":"failure","channels":["ops"]}}],
            "steps":[{},{},{}]}}"#,
        step("extract", ""),
        step("load", r#""extract""#),
        step("publish", r#""load""#),
    ))
    .unwrap();
    let job = s.create(spec).await;
    s.pass().await;

    // The workflow run, queued, claimed and started as a worker does.
    let workflow = s.queue(&job).await;
    let c = s.claim("node-a").await;
    assert_eq!(c.run.id, workflow.id);
    assert!(
        s.store
            .workflow_start(WorkflowStartParams {
                run_id: c.run.id,
                lease_token: c.lease_token.clone(),
                spec: c.job.spec.clone(),
                now: s.clock.store_now(),
            })
            .await
            .unwrap()
    );

    // A step succeeds, the next fails: the workflow run fails with it (its last step cannot
    // run), each step's end written as the worker writes it.
    s.clock.advance(secs(1));
    let extract = s.claim("node-a").await;
    assert_eq!(extract.run.step.as_deref(), Some("extract"));
    assert_eq!(extract.run.parent_id, Some(workflow.id));
    s.finish(&extract, AttemptStatus::Succeeded).await;
    s.pass().await;
    assert!(s.raised().await.is_empty(), "the workflow run goes on");
    s.clock.advance(secs(1));
    let load = s.claim("node-a").await;
    assert_eq!(load.run.step.as_deref(), Some("load"));
    s.finish(&load, AttemptStatus::ExitCode { code: 4 }).await;
    let ended = s.get(workflow.id).await;
    assert_eq!(ended.state, RunState::Failed);
    let steps = s
        .store
        .run_steps(RunStepsParams {
            run_id: workflow.id,
        })
        .await
        .unwrap();
    assert_eq!(steps[2].state, RunState::UpstreamFailed);
    s.pass().await;

    let key = format!("run:{}:failure:ops", workflow.id);
    assert_eq!(
        s.raised().await,
        set(&[raised("failure", "ops", &key, Some(workflow.id))]),
        "not for the step run {}",
        load.run.id
    );
    let doc = s.doc(&key).await;
    let run = doc.run.unwrap();
    assert_eq!(run.id, workflow.id);
    assert_eq!(run.state, "failed");
    assert_eq!(run.finished_at, ended.finished_at);
    assert_eq!(doc.job, "pipeline");
}

async fn a_pruned_position_goes_on_from_the_end_of_the_log(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s
        .job("export", r#"[{"on":"failure","channels":["ops"]}]"#)
        .await;
    let fail = AttemptStatus::ExitCode { code: 1 };
    // A log with an entry in it; the evaluator starts at its end.
    s.run(&job, fail.clone()).await;
    s.pass().await;
    let start = s.cursor().await;
    assert_ne!(start.id, 0);

    // The evaluator is away: failures are written, and the log is pruned past its position.
    let missed = s.run(&job, fail.clone()).await;
    s.clock.advance(secs(3600));
    let kept = s.run(&job, fail.clone()).await;
    let pruned = s
        .store
        .activity_prune(ActivityPruneParams {
            before: s.clock.now() - secs(1800),
            keep_at_most: 1000,
            keep_from: None,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 2, "the evaluator's batch and the one after it");
    assert!(!s.store.activity_contains(start).await.unwrap());

    // It goes on from the log's end, raising nothing for what it missed.
    assert_eq!(s.pass().await, 0);
    let end = s.cursor().await;
    assert_eq!(end, s.store.activity_head().await.unwrap());
    assert!(end > start);
    assert!(
        s.raised().await.is_empty(),
        "neither {missed:?} (pruned) nor {kept:?} (before the end)"
    );

    // What comes next is raised.
    let next = s.run(&job, fail.clone()).await;
    assert_eq!(s.pass().await, 1);
    assert_eq!(
        s.raised().await,
        set(&[raised(
            "failure",
            "ops",
            &format!("run:{}:failure:ops", next.id),
            Some(next.id)
        )])
    );
}

/// A backfill runs past due times on purpose: neither the watch nor its end raises an SLA,
/// while a scheduled run as late does.
async fn a_backfill_is_late_on_purpose_and_has_no_sla(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s
        .job(
            "report",
            r#"[{"on":"sla","start_within":"1m","finish_within":"5m","channels":["ops"]}]"#,
        )
        .await;
    s.pass().await;
    let hour_ago = s.clock.now() - secs(3600);
    let backfill = s
        .store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id: job.id,
            run: RunInsert {
                scheduled_for: hour_ago,
                run_at: hour_ago,
                origin: RunOrigin::Backfill,
                skip: None,
                exclusive: false,
                max_attempts: 1,
                execution: job.spec.execution,
                event: None,
            },
            params: None,
            actor: "test".into(),
            now: s.clock.store_now(),
        })
        .await
        .unwrap();
    s.watch().await;
    assert!(s.raised().await.is_empty(), "a waiting backfill run");
    let c = s.claim("node-a").await;
    assert_eq!(c.run.id, backfill.id);
    s.clock.advance(secs(5));
    s.finish(&c, AttemptStatus::Succeeded).await;
    s.pass().await;
    s.watch().await;
    assert!(s.raised().await.is_empty(), "an ended backfill run");
    // The same lateness on a scheduled run is an SLA breach.
    let late = s.queue_at(&job, hour_ago - secs(1)).await;
    s.watch().await;
    let raised_now = s.raised().await;
    assert!(
        raised_now
            .iter()
            .any(|r| r.0 == "sla_start" && r.3 == Some(late.id)),
        "{raised_now:?}"
    );
}

/// A short and a long dead-man switch on one channel (an escalation): each raises its own
/// alert, the long one later.
async fn two_switches_of_different_lengths_are_two_alerts(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s
        .job(
            "heartbeat",
            r#"[{"on":"no_success","within":"1m","channels":["pager"]},
                {"on":"no_success","within":"2m","channels":["pager"]}]"#,
        )
        .await;
    let created = s.clock.now();
    let key = |within: u64| {
        format!(
            "silent:{}:{}:{within}:pager",
            job.id,
            created.as_microsecond()
        )
    };
    s.clock.set(created + secs(61));
    s.watch().await;
    assert_eq!(
        s.raised().await,
        set(&[raised("no_success", "pager", &key(60), None)])
    );
    s.clock.set(created + secs(121));
    s.watch().await;
    assert_eq!(
        s.raised().await,
        set(&[
            raised("no_success", "pager", &key(60), None),
            raised("no_success", "pager", &key(120), None)
        ])
    );
}
