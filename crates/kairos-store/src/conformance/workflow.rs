//! Workflow runs: started from a claimed run, their steps created and the roots queued; each
//! step's end moves the run on in the same transaction (dependents queued, steps whose rule
//! cannot hold ended, the run ended with its last step); cancel and rescue do the same.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunState};
use kairos_core::spec::JobSpec;

use super::{T0, begin, claim, t};
use crate::*;

/// A workflow job `name` from its `steps` JSON array.
fn flow_spec(name: &str, steps: &str, extra: &str) -> JobSpec {
    JobSpec::from_json(&format!(
        r#"{{"name":"{name}","triggers":[{{"interval":"1m"}}],{extra}"steps":{steps}}}"#
    ))
    .expect("valid workflow")
}

fn step(name: &str, depends_on: &[&str], rule: &str) -> String {
    let deps: Vec<String> = depends_on.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"{{"name":"{name}","depends_on":[{}],"trigger_rule":"{rule}","task":{{"kind":"shell","script":"true"}}}}"#,
        deps.join(",")
    )
}

/// Creates the job, fires one run at T0 and claims it: the claimed workflow run.
async fn fired(store: &Arc<dyn Store>, spec: JobSpec) -> ClaimedRun {
    let at = t(T0);
    let execution = spec.execution;
    let job = store
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec,
            next_fire_at: Some(at),
            now: Some(at),
            calendars: vec![],
        })
        .await
        .unwrap();
    let fired = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: at,
            runs: vec![RunInsert {
                execution,
                ..super::insert(at)
            }],
            cancel_active: false,
            max_active: None,
            next_fire_at: None,
            now: Some(at),
            expected_version: None,
        })
        .await
        .unwrap();
    assert!(fired.applied);
    let mut claimed = claim(store, "n1", 10, at).await;
    assert_eq!(claimed.len(), 1);
    claimed.remove(0)
}

async fn start(store: &Arc<dyn Store>, c: &ClaimedRun, now: Timestamp) -> bool {
    store
        .workflow_start(WorkflowStartParams {
            run_id: c.run.id,
            lease_token: c.lease_token.clone(),
            spec: c.job.spec.clone(),
            now: Some(now),
        })
        .await
        .unwrap()
}

/// Fires, claims and starts a workflow run; returns it.
async fn started(store: &Arc<dyn Store>, spec: JobSpec) -> Run {
    let c = fired(store, spec).await;
    assert!(start(store, &c, t(T0)).await);
    c.run
}

/// Each step's name and state, in step order.
async fn states(store: &Arc<dyn Store>, run: &Run) -> Vec<(String, RunState)> {
    store
        .run_steps(RunStepsParams { run_id: run.id })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.step.unwrap_or_default(), r.state))
        .collect()
}

fn expect(pairs: &[(&str, RunState)]) -> Vec<(String, RunState)> {
    pairs.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
}

async fn get(store: &Arc<dyn Store>, id: i64) -> Run {
    store
        .run_get(RunGetParams { id })
        .await
        .unwrap()
        .expect("run exists")
}

/// Claims the queued steps (at `now`), by step name.
async fn claim_steps(store: &Arc<dyn Store>, now: Timestamp) -> Vec<ClaimedRun> {
    let mut claimed = claim(store, "n1", 100, now).await;
    claimed.sort_by(|a, b| a.run.step.cmp(&b.run.step));
    claimed
}

async fn end(
    store: &Arc<dyn Store>,
    c: &ClaimedRun,
    status: AttemptStatus,
    now: Timestamp,
) -> bool {
    let state = status.final_state();
    store
        .run_finish(RunFinishParams {
            run_id: c.run.id,
            parent_id: c.run.parent_id,
            lease_token: c.lease_token.clone(),
            attempt: c.run.attempt,
            node: "n1".into(),
            started_at: now,
            outcome: AttemptOutcome::from_status(status),
            next: RunNext::Finish(state),
            now: Some(now),
        })
        .await
        .unwrap()
}

fn diamond() -> JobSpec {
    let steps = [
        step("a", &[], "all_success"),
        step("b", &["a"], "all_success"),
        step("c", &["a"], "all_success"),
        step("d", &["b", "c"], "all_success"),
        step("e", &["d"], "all_done"),
    ];
    flow_spec("flow", &format!("[{}]", steps.join(",")), "")
}

pub async fn workflow_start_creates_steps_and_queues_the_roots(store: Arc<dyn Store>) {
    let c = fired(&store, diamond()).await;
    assert!(c.run.parent_id.is_none() && c.run.step.is_none());
    assert!(start(&store, &c, t(T0)).await);
    // Once: the lease it was fenced by is gone.
    assert!(!start(&store, &c, t(T0)).await);
    use RunState::*;
    assert_eq!(
        states(&store, &c.run).await,
        expect(&[
            ("a", Queued),
            ("b", Scheduled),
            ("c", Scheduled),
            ("d", Scheduled),
            ("e", Scheduled)
        ])
    );
    let run = get(&store, c.run.id).await;
    assert_eq!(run.state, Running);
    assert_eq!(run.lease_expires_at, None, "a workflow run holds no lease");
    // Steps are the run's, not the job's: one active run, one run listed.
    assert_eq!(
        store
            .run_active_count(RunActiveCountParams {
                job_id: c.run.job_id
            })
            .await
            .unwrap(),
        1
    );
    let listed = store
        .run_list(RunListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![c.run.id]
    );
    // A step is claimed with the workflow's document, and knows its run and name.
    let steps = claim_steps(&store, t(T0)).await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].run.parent_id, Some(c.run.id));
    assert_eq!(steps[0].run.step.as_deref(), Some("a"));
    assert_eq!(steps[0].run.scheduled_for, c.run.scheduled_for);
    assert_eq!(steps[0].workflow.as_ref().map(|w| w.steps.len()), Some(5));
    assert!(steps[0].job.spec.steps.is_empty() && steps[0].job.spec.task.is_some());
    // A waiting step is not cancelled on its own.
    let b = store
        .run_steps(RunStepsParams { run_id: c.run.id })
        .await
        .unwrap()[1]
        .clone();
    let refused = store
        .run_cancel(RunCancelParams {
            run_id: b.id,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidRunState { .. })),
        "{refused:?}"
    );
}

pub async fn workflow_step_ends_move_the_run_on(store: Arc<dyn Store>) {
    use RunState::*;
    let run = started(&store, diamond()).await;
    let t1 = t(T0) + SignedDuration::from_secs(1);
    let a = claim_steps(&store, t1).await;
    assert!(end(&store, &a[0], AttemptStatus::Succeeded, t1).await);
    // Both dependents are queued by a's finish itself.
    assert_eq!(
        states(&store, &run).await,
        expect(&[
            ("a", Succeeded),
            ("b", Queued),
            ("c", Queued),
            ("d", Scheduled),
            ("e", Scheduled)
        ])
    );
    let t2 = t1 + SignedDuration::from_secs(1);
    let bc = claim_steps(&store, t2).await;
    assert_eq!(bc.len(), 2);
    assert!(end(&store, &bc[0], AttemptStatus::Succeeded, t2).await);
    assert_eq!(states(&store, &run).await[3], ("d".to_owned(), Scheduled));
    assert!(end(&store, &bc[1], AttemptStatus::ExitCode { code: 1 }, t2).await);
    // c failed: d cannot run (all_success), e runs anyway (all_done).
    let after = states(&store, &run).await;
    assert_eq!(
        after,
        expect(&[
            ("a", Succeeded),
            ("b", Succeeded),
            ("c", Failed),
            ("d", UpstreamFailed),
            ("e", Queued)
        ])
    );
    let d = &store
        .run_steps(RunStepsParams { run_id: run.id })
        .await
        .unwrap()[3];
    assert!(
        d.reason.as_deref().unwrap_or("").contains("upstream"),
        "{d:?}"
    );
    assert_eq!(get(&store, run.id).await.state, Running);
    let t3 = t2 + SignedDuration::from_secs(1);
    let e = claim_steps(&store, t3).await;
    assert_eq!(e.len(), 1);
    assert!(end(&store, &e[0], AttemptStatus::Succeeded, t3).await);
    // The last step ended the run, failed (c failed), in the same transaction.
    let ended = get(&store, run.id).await;
    assert_eq!(ended.state, Failed);
    assert_eq!(ended.finished_at, Some(t3));
}

pub async fn workflow_run_succeeds_when_every_step_succeeds_or_is_skipped(store: Arc<dyn Store>) {
    use RunState::*;
    let steps = [
        step("a", &[], "all_success"),
        step("alert", &["a"], "one_failed"),
    ];
    let run = started(
        &store,
        flow_spec("flow", &format!("[{}]", steps.join(",")), ""),
    )
    .await;
    let a = claim_steps(&store, t(T0)).await;
    assert!(end(&store, &a[0], AttemptStatus::Succeeded, t(T0)).await);
    assert_eq!(
        states(&store, &run).await,
        expect(&[("a", Succeeded), ("alert", Skipped)])
    );
    assert_eq!(get(&store, run.id).await.state, Succeeded);
}

pub async fn workflow_max_concurrent_steps_holds_ready_steps_back(store: Arc<dyn Store>) {
    use RunState::*;
    let steps = [
        step("a", &[], "all_success"),
        step("b", &[], "all_success"),
        step("c", &[], "all_success"),
    ];
    let run = started(
        &store,
        flow_spec(
            "flow",
            &format!("[{}]", steps.join(",")),
            r#""max_concurrent_steps":2,"#,
        ),
    )
    .await;
    assert_eq!(
        states(&store, &run).await,
        expect(&[("a", Queued), ("b", Queued), ("c", Scheduled)])
    );
    let ab = claim_steps(&store, t(T0)).await;
    assert_eq!(ab.len(), 2);
    assert!(end(&store, &ab[0], AttemptStatus::Succeeded, t(T0)).await);
    assert_eq!(
        states(&store, &run).await,
        expect(&[("a", Succeeded), ("b", Running), ("c", Queued)])
    );
}

pub async fn workflow_concurrent_step_ends_queue_the_join_once(store: Arc<dyn Store>) {
    // a and b end at once in two transactions (separate connections on PostgreSQL); c waits for
    // both. Whatever the interleaving, exactly one of the two finishes sees both ended and
    // queues c: neither may miss the other (c stuck) and c is queued once.
    let steps = [
        step("a", &[], "all_success"),
        step("b", &[], "all_success"),
        step("c", &["a", "b"], "all_success"),
    ];
    let steps = format!("[{}]", steps.join(","));
    for round in 0..15 {
        let run = started(&store, flow_spec(&format!("flow{round}"), &steps, "")).await;
        let ab = claim_steps(&store, t(T0)).await;
        assert_eq!(ab.len(), 2, "round {round}");
        let mut tasks = Vec::new();
        for c in ab {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                end(&store, &c, AttemptStatus::Succeeded, t(T0)).await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap(), "round {round}");
        }
        use RunState::*;
        assert_eq!(
            states(&store, &run).await,
            expect(&[("a", Succeeded), ("b", Succeeded), ("c", Queued)]),
            "round {round}"
        );
        let c = claim_steps(&store, t(T0)).await;
        assert_eq!(c.len(), 1, "round {round}");
        assert!(end(&store, &c[0], AttemptStatus::Succeeded, t(T0)).await);
        assert_eq!(get(&store, run.id).await.state, Succeeded, "round {round}");
    }
}

pub async fn workflow_cancel_stops_its_steps_and_ends_with_the_last(store: Arc<dyn Store>) {
    use RunState::*;
    let run = started(&store, diamond()).await;
    let a = claim_steps(&store, t(T0)).await;
    let cancelled = store
        .run_cancel(RunCancelParams {
            run_id: run.id,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    // a is still running: the run waits for it, and nothing else will start.
    assert_eq!(cancelled.state, Running);
    assert!(cancelled.cancel_requested);
    assert_eq!(
        states(&store, &run).await,
        expect(&[
            ("a", Running),
            ("b", Cancelled),
            ("c", Cancelled),
            ("d", Cancelled),
            ("e", Cancelled)
        ])
    );
    let beat = store
        .run_heartbeat(RunHeartbeatParams {
            leases: vec![(a[0].run.id, a[0].lease_token.clone())],
            lease: SignedDuration::from_secs(30),
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    assert!(
        beat[0].cancel_requested,
        "the running step is asked to stop"
    );
    assert!(end(&store, &a[0], AttemptStatus::Cancelled, t(T0)).await);
    assert_eq!(get(&store, run.id).await.state, Cancelled);
    assert!(claim_steps(&store, t(T0)).await.is_empty());
}

pub async fn workflow_rescued_step_moves_the_run_on(store: Arc<dyn Store>) {
    use RunState::*;
    let steps = [
        step("a", &[], "all_success"),
        step("b", &["a"], "all_success"),
        step("cleanup", &["a"], "all_failed"),
    ];
    let spec = flow_spec(
        "flow",
        &format!("[{}]", steps.join(",")),
        r#""execution":"at_most_once","#,
    );
    let run = started(&store, spec).await;
    let a = claim_steps(&store, t(T0)).await;
    assert_eq!(a.len(), 1);
    assert!(begin(&store, &a[0]).await);
    // Its worker died once the step began: the lease expires, and at most once means lost.
    let later = t(T0) + SignedDuration::from_mins(5);
    let report = store
        .run_rescue(RunRescueParams {
            limit: 100,
            orphaned_node: None,
            now: Some(later),
        })
        .await
        .unwrap();
    assert_eq!(report.lost, vec![a[0].run.id]);
    assert_eq!(
        states(&store, &run).await,
        expect(&[("a", Lost), ("b", UpstreamFailed), ("cleanup", Queued)])
    );
    let cleanup = claim_steps(&store, later).await;
    assert!(end(&store, &cleanup[0], AttemptStatus::Succeeded, later).await);
    assert_eq!(get(&store, run.id).await.state, Failed);
}

pub async fn workflow_cancelled_before_its_start_leaves_no_step_waiting(store: Arc<dyn Store>) {
    // Cancelled while its worker held it, before the worker started it: the start still
    // applies (the lease holds), and ends the run at once with every step cancelled.
    let c = fired(&store, diamond()).await;
    let asked = store
        .run_cancel(RunCancelParams {
            run_id: c.run.id,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    assert!(asked.cancel_requested);
    assert!(start(&store, &c, t(T0)).await);
    assert_eq!(get(&store, c.run.id).await.state, RunState::Cancelled);
    let states = states(&store, &c.run).await;
    assert_eq!(states.len(), 5);
    assert!(
        states.iter().all(|(_, s)| *s == RunState::Cancelled),
        "{states:?}"
    );
    assert!(claim_steps(&store, t(T0)).await.is_empty());
}

pub async fn workflow_step_retry_after_a_cancel_request_ends_it(store: Arc<dyn Store>) {
    // A step fails while its workflow run is being cancelled: it is not queued for another
    // attempt (which would start only to be stopped), it ends cancelled, and so does the run.
    let run = started(&store, diamond()).await;
    let a = claim_steps(&store, t(T0)).await;
    store
        .run_cancel(RunCancelParams {
            run_id: run.id,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    let later = t(T0) + SignedDuration::from_secs(1);
    let applied = store
        .run_finish(RunFinishParams {
            run_id: a[0].run.id,
            parent_id: a[0].run.parent_id,
            lease_token: a[0].lease_token.clone(),
            attempt: a[0].run.attempt,
            node: "n1".into(),
            started_at: t(T0),
            outcome: AttemptOutcome::from_status(AttemptStatus::ExitCode { code: 1 }),
            next: RunNext::Retry {
                run_at: later + SignedDuration::from_secs(10),
            },
            now: Some(later),
        })
        .await
        .unwrap();
    assert!(applied);
    let a_now = get(&store, a[0].run.id).await;
    assert_eq!(a_now.state, RunState::Cancelled);
    assert_eq!(a_now.finished_at, Some(later));
    assert_eq!(get(&store, run.id).await.state, RunState::Cancelled);
    assert!(
        claim_steps(&store, later + SignedDuration::from_mins(1))
            .await
            .is_empty()
    );
}

async fn act(store: &Arc<dyn Store>, run: &Run, action: StepControl) -> StoreResult<Run> {
    store
        .workflow_control(WorkflowControlParams {
            run_id: run.id,
            action,
            actor: "alice".into(),
            now: Some(t(T0) + SignedDuration::from_mins(1)),
        })
        .await
}

/// Claims every queued step and ends each as `status` says (by step name), until none is
/// queued.
async fn drain(store: &Arc<dyn Store>, fail: &[&str]) {
    loop {
        let claimed = claim_steps(store, t(T0) + SignedDuration::from_mins(2)).await;
        if claimed.is_empty() {
            return;
        }
        for c in &claimed {
            let step = c.run.step.clone().unwrap_or_default();
            let status = if fail.contains(&step.as_str()) {
                AttemptStatus::ExitCode { code: 1 }
            } else {
                AttemptStatus::Succeeded
            };
            assert!(end(store, c, status, t(T0) + SignedDuration::from_mins(2)).await);
        }
    }
}

pub async fn workflow_rerun_failed_completes_the_run(store: Arc<dyn Store>) {
    use RunState::*;
    let run = started(&store, diamond()).await;
    drain(&store, &["c"]).await;
    assert_eq!(get(&store, run.id).await.state, Failed);
    assert_eq!(
        states(&store, &run).await,
        expect(&[
            ("a", Succeeded),
            ("b", Succeeded),
            ("c", Failed),
            ("d", UpstreamFailed),
            ("e", Succeeded)
        ])
    );
    let reopened = act(&store, &run, StepControl::RerunFailed).await.unwrap();
    assert_eq!(reopened.state, Running);
    assert_eq!(reopened.finished_at, None);
    // c is queued at once (a succeeded); d waits for it; the others keep their results.
    assert_eq!(
        states(&store, &run).await,
        expect(&[
            ("a", Succeeded),
            ("b", Succeeded),
            ("c", Queued),
            ("d", Scheduled),
            ("e", Succeeded)
        ])
    );
    drain(&store, &[]).await;
    assert_eq!(get(&store, run.id).await.state, Succeeded);
    let c = &store
        .run_steps(RunStepsParams { run_id: run.id })
        .await
        .unwrap()[2];
    assert_eq!(
        (c.attempt, c.max_attempts),
        (2, 2),
        "a new attempt, with a budget of its own"
    );
    assert_eq!(
        store
            .attempt_list(AttemptListParams { run_id: c.id })
            .await
            .unwrap()
            .len(),
        2
    );
    // Nothing failed any more.
    let refused = act(&store, &run, StepControl::RerunFailed).await;
    assert!(
        matches!(refused, Err(StoreError::WorkflowConflict { .. })),
        "{refused:?}"
    );
    let audit = store
        .audit_list(AuditListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit.iter().any(
            |e| e.action == kairos_core::auth::AuditAction::RunRerunFailed
                && e.run_id == Some(run.id)
                && e.actor == "alice"
        ),
        "{audit:?}"
    );
}

pub async fn workflow_skip_and_mark_succeeded_decide_steps_by_hand(store: Arc<dyn Store>) {
    use RunState::*;
    let run = started(&store, diamond()).await;
    // a has not started: marked succeeded, its dependents are queued.
    act(&store, &run, StepControl::MarkSucceeded("a".into()))
        .await
        .unwrap();
    // c is queued: skipped; d (all_success) is skipped with it, and e (all_done after d) runs.
    act(&store, &run, StepControl::Skip("c".into()))
        .await
        .unwrap();
    assert_eq!(
        states(&store, &run).await,
        expect(&[
            ("a", Succeeded),
            ("b", Queued),
            ("c", Skipped),
            ("d", Skipped),
            ("e", Queued)
        ])
    );
    let b = claim_steps(&store, t(T0) + SignedDuration::from_mins(1)).await;
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].run.step.as_deref(), Some("b"));
    // A running step is neither skipped nor marked; unknown steps and ended steps are refused.
    for action in [
        StepControl::Skip("b".into()),
        StepControl::MarkSucceeded("b".into()),
        StepControl::Skip("a".into()),
        StepControl::Rerun("a".into()),
    ] {
        let refused = act(&store, &run, action.clone()).await;
        assert!(
            matches!(refused, Err(StoreError::WorkflowConflict { .. })),
            "{action:?}: {refused:?}"
        );
    }
    let missing = act(&store, &run, StepControl::Skip("zzz".into())).await;
    assert!(
        matches!(missing, Err(StoreError::StepNotFound { .. })),
        "{missing:?}"
    );
    for c in &b {
        assert!(end(&store, c, AttemptStatus::Succeeded, t(T0)).await);
    }
    drain(&store, &[]).await;
    assert_eq!(
        states(&store, &run).await,
        expect(&[
            ("a", Succeeded),
            ("b", Succeeded),
            ("c", Skipped),
            ("d", Skipped),
            ("e", Succeeded)
        ])
    );
    assert_eq!(get(&store, run.id).await.state, Succeeded);
    // A step of the run is not a workflow run.
    let b_run = get(&store, b[0].run.id).await;
    let refused = act(&store, &b_run, StepControl::RerunFailed).await;
    assert!(
        matches!(refused, Err(StoreError::WorkflowConflict { .. })),
        "{refused:?}"
    );
}

pub async fn workflow_rerun_a_step_runs_it_and_its_downstream_again(store: Arc<dyn Store>) {
    use RunState::*;
    let run = started(&store, diamond()).await;
    drain(&store, &[]).await;
    assert_eq!(get(&store, run.id).await.state, Succeeded);
    act(&store, &run, StepControl::Rerun("b".into()))
        .await
        .unwrap();
    assert_eq!(
        states(&store, &run).await,
        expect(&[
            ("a", Succeeded),
            ("b", Queued),
            ("c", Succeeded),
            ("d", Scheduled),
            ("e", Scheduled)
        ])
    );
    assert_eq!(get(&store, run.id).await.state, Running);
    // While b runs again, rerunning a (whose downstream includes b) is refused.
    let refused = act(&store, &run, StepControl::Rerun("a".into())).await;
    assert!(
        matches!(refused, Err(StoreError::WorkflowConflict { .. })),
        "{refused:?}"
    );
    drain(&store, &[]).await;
    assert_eq!(get(&store, run.id).await.state, Succeeded);
    let steps = store
        .run_steps(RunStepsParams { run_id: run.id })
        .await
        .unwrap();
    let attempts: Vec<u32> = steps.iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 1, 2, 2]);
}

pub async fn workflow_params_reach_every_step_and_results_are_kept(store: Arc<dyn Store>) {
    let at = t(T0);
    let job = store
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec: diamond(),
            next_fire_at: None,
            now: Some(at),
            calendars: vec![],
        })
        .await
        .unwrap();
    let run = store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id: job.id,
            run: RunInsert {
                origin: kairos_core::run::RunOrigin::Manual,
                ..super::insert(at)
            },
            params: Some(r#"{"day":"2026-03-01"}"#.into()),
            actor: "test".into(),
            now: Some(at),
        })
        .await
        .unwrap();
    assert_eq!(run.params.as_deref(), Some(r#"{"day":"2026-03-01"}"#));
    let c = claim(&store, "n1", 10, at).await.remove(0);
    assert!(start(&store, &c, at).await);
    let a = claim_steps(&store, at).await.remove(0);
    assert_eq!(
        a.run.params.as_deref(),
        Some(r#"{"day":"2026-03-01"}"#),
        "a step reads its workflow run's params"
    );
    let applied = store
        .run_finish(RunFinishParams {
            run_id: a.run.id,
            parent_id: a.run.parent_id,
            lease_token: a.lease_token.clone(),
            attempt: a.run.attempt,
            node: "n1".into(),
            started_at: at,
            outcome: AttemptOutcome {
                result: Some(r#"{"rows":3}"#.into()),
                ..AttemptOutcome::from_status(AttemptStatus::Succeeded)
            },
            next: RunNext::Finish(RunState::Succeeded),
            now: Some(at),
        })
        .await
        .unwrap();
    assert!(applied);
    assert_eq!(
        get(&store, a.run.id).await.result.as_deref(),
        Some(r#"{"rows":3}"#)
    );
    let mut results = store
        .run_step_results(RunStepResultsParams {
            run_id: run.id,
            steps: vec!["a".into(), "b".into(), "nope".into()],
        })
        .await
        .unwrap();
    results.sort();
    assert_eq!(
        results,
        vec![
            ("a".to_owned(), Some(r#"{"rows":3}"#.to_owned())),
            ("b".to_owned(), None)
        ]
    );
}
