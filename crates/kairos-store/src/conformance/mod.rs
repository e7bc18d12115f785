//! Behaviour every store backend must have.
//!
//! A backend's test file only calls [`conformance_tests!`](crate::conformance_tests) with a
//! factory that returns a fresh, empty store. Every case uses explicit instants (`now: Some`),
//! never the wall clock.

#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a failed step panics with its location"
)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::auth::{AuditAction, Role, Scope};
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunOrigin, RunState, SkipReason};
use kairos_core::spec::{ExecutionMode, JobSpec};

use crate::*;

mod cluster;
pub use cluster::*;

/// Generates one `#[tokio::test]` per conformance case. `$make` is an expression evaluating to
/// an async closure (or fn) returning `Arc<dyn Store>`.
///
/// `conformance_tests!(optional $make)` is for a backend that needs a service which may be
/// absent: `$make` returns `Option<G>`, where `G` is the store (`Arc<dyn Store>`) or a guard
/// that lends it (`G: Borrow<Arc<dyn Store>>`) and is dropped when the case ends. `None` skips
/// the case (the factory says why).
#[macro_export]
macro_rules! conformance_tests {
    (@cases $($mode:ident)?; $make:expr) => {
        $crate::__conformance_cases!($($mode)? $make;
            job_create_get_list, job_update_is_fenced_by_version, job_delete_removes_runs,
            job_pause_resume, job_due_reads_next_fire_at, job_fire_is_exactly_once,
            job_fire_concurrent_applies_once, job_fire_replace_cancels_active,
            run_claim_lease_and_finish, run_retry_waits_for_run_at, run_rescue_expired_leases,
            run_exclusive_runs_one_at_a_time, run_cancel_states, run_list_filters_and_counts,
            run_insert_is_idempotent, run_insert_many_skips_existing_due_times, run_finish_many_fences_each_lease, job_fire_many_and_active_counts, ids_are_never_reused, run_rescue_gives_up_on_runs_that_keep_losing_their_lease, run_claim_concurrent_never_doubles, run_release_keeps_attempt,
            early_runs_are_withdrawn_by_pause_and_reschedule, run_insert_for_a_deleted_job_is_job_gone,
            token_create_authenticate_revoke, audit_records_every_change_with_its_change,
            leader_terms_are_fenced, leader_concurrent_candidates_agree_on_one_per_term,
            nodes_join_refresh_leave_and_expire, the_store_clock_rules_without_now
        );
    };
    (optional $make:expr) => {
        $crate::conformance_tests!(@cases optional; $make);
    };
    ($make:expr) => {
        $crate::conformance_tests!(@cases; $make);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (optional $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(made) = ($make)().await else {
                    return;
                };
                let store: ::std::sync::Arc<dyn $crate::Store> = ::std::sync::Arc::clone(
                    ::std::borrow::Borrow::<::std::sync::Arc<dyn $crate::Store>>::borrow(&made),
                );
                $crate::conformance::$name(store).await;
                drop(made);
            }
        )*
    };
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::Store> = ($make)().await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

fn t(s: &str) -> Timestamp {
    s.parse().expect("test instant")
}

const T0: &str = "2026-03-01T00:00:00Z";

/// A minimal valid job spec.
pub fn spec(name: &str) -> JobSpec {
    JobSpec::from_json(&format!(
        r#"{{"name":"{name}","triggers":[{{"interval":"1m"}}],"task":{{"kind":"shell","script":"true"}}}}"#
    ))
    .expect("valid spec")
}

async fn create(store: &Arc<dyn Store>, name: &str, next: Option<Timestamp>) -> Job {
    store
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec: spec(name),
            next_fire_at: next,
            now: Some(t(T0)),
        })
        .await
        .expect("create job")
}

fn insert(at: Timestamp) -> RunInsert {
    RunInsert {
        scheduled_for: at,
        run_at: at,
        origin: RunOrigin::Schedule,
        skip: None,
        exclusive: false,
        max_attempts: 3,
        execution: ExecutionMode::AtLeastOnce,
    }
}

async fn fire(
    store: &Arc<dyn Store>,
    job: &Job,
    at: Timestamp,
    next: Option<Timestamp>,
) -> JobFireResult {
    store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: at,
            runs: vec![insert(at)],
            cancel_active: false,
            next_fire_at: next,
            now: Some(at),
        })
        .await
        .expect("fire")
}

async fn claim(store: &Arc<dyn Store>, node: &str, limit: u32, now: Timestamp) -> Vec<ClaimedRun> {
    store
        .run_claim(RunClaimParams {
            node: node.into(),
            limit,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::ZERO,
            now: Some(now),
        })
        .await
        .expect("claim")
}

/// Pauses or resumes job `name` of the default namespace (`next_fire_at` on resume).
async fn set_paused(
    store: &Arc<dyn Store>,
    name: &str,
    paused: bool,
    next_fire_at: Option<Timestamp>,
    now: Timestamp,
) -> Job {
    store
        .job_set_paused(JobSetPausedParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: name.into(),
            paused,
            next_fire_at,
            now: Some(now),
        })
        .await
        .expect("pause or resume")
}

async fn finish(store: &Arc<dyn Store>, c: &ClaimedRun, next: RunNext, now: Timestamp) -> bool {
    store
        .run_finish(RunFinishParams {
            run_id: c.run.id,
            lease_token: c.lease_token.clone(),
            attempt: c.run.attempt,
            node: "n1".into(),
            started_at: now,
            outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
            next,
            now: Some(now),
        })
        .await
        .expect("finish")
}

pub async fn job_create_get_list(store: Arc<dyn Store>) {
    let job = create(&store, "b-job", Some(t("2026-03-01T00:01:00Z"))).await;
    assert_eq!(job.version, 1);
    assert_eq!(job.name(), "b-job");
    assert_eq!(job.namespace(), "default");
    assert_eq!(job.created_at, t(T0));
    assert_eq!(job.next_fire_at, Some(t("2026-03-01T00:01:00Z")));
    let got = store
        .job_get(JobGetParams {
            namespace: "default".into(),
            name: "b-job".into(),
        })
        .await
        .unwrap()
        .expect("found");
    assert_eq!(got, job);
    assert_eq!(
        store
            .job_get_by_id(JobGetByIdParams { id: job.id })
            .await
            .unwrap(),
        Some(job.clone())
    );
    let dup = store
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec: spec("b-job"),
            next_fire_at: None,
            now: Some(t(T0)),
        })
        .await;
    assert!(matches!(dup, Err(StoreError::JobExists { .. })), "{dup:?}");
    create(&store, "a-job", None).await;
    let names: Vec<_> = store
        .job_list(JobListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|j| j.name().to_owned())
        .collect();
    assert_eq!(names, ["a-job", "b-job"]);
    let missing = store
        .job_get(JobGetParams {
            namespace: "default".into(),
            name: "nope".into(),
        })
        .await
        .unwrap();
    assert!(missing.is_none());
}

pub async fn job_update_is_fenced_by_version(store: Arc<dyn Store>) {
    let job = create(&store, "j", None).await;
    let mut new_spec = job.spec.clone();
    new_spec.description = Some("changed".into());
    let updated = store
        .job_update(JobUpdateParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: 1,
            spec: new_spec.clone(),
            next_fire_at: Some(t("2026-03-01T00:05:00Z")),
            now: Some(t("2026-03-01T00:00:10Z")),
        })
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.spec.description.as_deref(), Some("changed"));
    assert_eq!(updated.updated_at, t("2026-03-01T00:00:10Z"));
    assert_eq!(updated.created_at, t(T0));
    assert_eq!(updated.next_fire_at, Some(t("2026-03-01T00:05:00Z")));

    let mut stale_spec = new_spec;
    stale_spec.description = Some("stale".into());
    let stale = store
        .job_update(JobUpdateParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: 1,
            spec: stale_spec,
            next_fire_at: None,
            now: None,
        })
        .await;
    match stale {
        Err(StoreError::VersionConflict {
            expected: 1,
            actual: 2,
            ..
        }) => {}
        other => panic!("expected a version conflict, got {other:?}"),
    }
    let after = store
        .job_get_by_id(JobGetByIdParams { id: job.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, updated, "a stale write changes nothing");

    let missing = store
        .job_update(JobUpdateParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: "nope".into(),
            expected_version: 1,
            spec: spec("nope"),
            next_fire_at: None,
            now: None,
        })
        .await;
    assert!(matches!(missing, Err(StoreError::JobNotFound { .. })));
}

pub async fn job_delete_removes_runs(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", Some(at)).await;
    let fired = fire(&store, &job, at, None).await;
    assert_eq!(fired.inserted.len(), 1);
    let stale = store
        .job_delete(JobDeleteParams {
            actor: "test".into(),
            now: Some(t(T0)),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: Some(7),
        })
        .await;
    assert!(matches!(stale, Err(StoreError::VersionConflict { .. })));
    store
        .job_delete(JobDeleteParams {
            actor: "test".into(),
            now: Some(t(T0)),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: Some(1),
        })
        .await
        .unwrap();
    assert!(
        store
            .job_get_by_id(JobGetByIdParams { id: job.id })
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .run_get(RunGetParams {
                id: fired.inserted[0].0
            })
            .await
            .unwrap()
            .is_none()
    );
    let again = store
        .job_delete(JobDeleteParams {
            actor: "test".into(),
            now: Some(t(T0)),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: None,
        })
        .await;
    assert!(matches!(again, Err(StoreError::JobNotFound { .. })));
}

pub async fn job_pause_resume(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    create(&store, "j", Some(at)).await;
    let paused = set_paused(&store, "j", true, None, t(T0)).await;
    assert!(paused.spec.paused);
    assert_eq!(paused.version, 2);
    let due = store
        .job_due(JobDueParams {
            before: t("2026-03-02T00:00:00Z"),
            limit: 10,
        })
        .await
        .unwrap();
    assert!(due.is_empty(), "a paused job is never due");
    assert_eq!(store.job_next_fire_at().await.unwrap(), None);
    let resumed = set_paused(&store, "j", false, Some(t("2026-03-01T05:00:00Z")), t(T0)).await;
    assert!(!resumed.spec.paused);
    assert_eq!(resumed.version, 3);
    assert_eq!(resumed.next_fire_at, Some(t("2026-03-01T05:00:00Z")));
    // Resuming a running job is a no-op that keeps the version.
    let again = set_paused(&store, "j", false, None, t(T0)).await;
    assert_eq!(again.version, 3);
}

pub async fn job_due_reads_next_fire_at(store: Arc<dyn Store>) {
    create(&store, "late", Some(t("2026-03-01T00:03:00Z"))).await;
    create(&store, "early", Some(t("2026-03-01T00:01:00Z"))).await;
    create(&store, "never", None).await;
    create(&store, "future", Some(t("2026-03-09T00:00:00Z"))).await;
    let due = store
        .job_due(JobDueParams {
            before: t("2026-03-01T00:05:00Z"),
            limit: 10,
        })
        .await
        .unwrap();
    let names: Vec<_> = due.iter().map(|j| j.name()).collect();
    assert_eq!(names, ["early", "late"]);
    let one = store
        .job_due(JobDueParams {
            before: t("2026-03-01T00:05:00Z"),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        store.job_next_fire_at().await.unwrap(),
        Some(t("2026-03-01T00:01:00Z"))
    );
}

pub async fn job_fire_is_exactly_once(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let next = t("2026-03-01T00:02:00Z");
    let job = create(&store, "j", Some(at)).await;
    let first = fire(&store, &job, at, Some(next)).await;
    assert!(first.applied);
    assert_eq!(first.inserted.len(), 1);
    let after = store
        .job_get_by_id(JobGetByIdParams { id: job.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.next_fire_at,
        Some(next),
        "next_fire_at advances in the same transaction"
    );
    assert_eq!(after.version, 1, "firing is not a definition change");

    // A second scheduler with the old view: the fence holds, nothing is written.
    let second = fire(&store, &job, at, Some(next)).await;
    assert_eq!(
        second,
        JobFireResult {
            applied: false,
            inserted: vec![]
        }
    );

    // Even with a matching fence, an existing due time is never inserted twice.
    let dup = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: next,
            runs: vec![insert(at), insert(next)],
            cancel_active: false,
            next_fire_at: None,
            now: Some(next),
        })
        .await
        .unwrap();
    assert!(dup.applied);
    assert_eq!(dup.inserted.len(), 1, "the run for {at} exists already");
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].scheduled_for, next, "newest first");
    assert_eq!(runs[1].scheduled_for, at);
    assert!(
        runs.iter()
            .all(|r| r.state == RunState::Queued && r.attempt == 0)
    );
    assert_eq!(runs[0].job_name, "j");

    // Skipped runs carry their reason and are finished at once.
    let job2 = create(&store, "k", Some(at)).await;
    let mut skipped = insert(at);
    skipped.skip = Some(SkipReason::Overlap);
    store
        .job_fire(JobFireParams {
            job_id: job2.id,
            expected_next_fire_at: at,
            runs: vec![skipped],
            cancel_active: false,
            next_fire_at: Some(next),
            now: Some(at),
        })
        .await
        .unwrap();
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job2.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs[0].state, RunState::Skipped);
    assert_eq!(runs[0].reason.as_deref(), Some("overlap"));
    assert_eq!(runs[0].finished_at, Some(at));
    assert!(
        claim(&store, "n1", 10, next)
            .await
            .iter()
            .all(|c| c.run.job_id != job2.id)
    );
}

pub async fn job_fire_concurrent_applies_once(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", Some(at)).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            fire(&store, &job, at, Some(t("2026-03-01T00:02:00Z"))).await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        if task.await.unwrap().applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
}

pub async fn job_fire_replace_cancels_active(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let b = t("2026-03-01T00:02:00Z");
    let c = t("2026-03-01T00:03:00Z");
    let job = create(&store, "j", Some(a)).await;
    fire(&store, &job, a, Some(b)).await;
    let running = claim(&store, "n1", 1, a).await;
    assert_eq!(running.len(), 1);
    fire(&store, &job, b, Some(c)).await; // queued behind
    let replaced = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: c,
            runs: vec![insert(c)],
            cancel_active: true,
            next_fire_at: None,
            now: Some(c),
        })
        .await
        .unwrap();
    assert!(replaced.applied);
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            ..Default::default()
        })
        .await
        .unwrap();
    let by_time = |ts| runs.iter().find(|r| r.scheduled_for == ts).unwrap();
    assert_eq!(by_time(c).state, RunState::Queued);
    assert_eq!(by_time(b).state, RunState::Cancelled);
    assert_eq!(by_time(b).reason.as_deref(), Some("replaced"));
    assert_eq!(by_time(a).state, RunState::Running);
    assert!(
        by_time(a).cancel_requested,
        "the running one is asked to stop"
    );
}

pub async fn run_claim_lease_and_finish(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", Some(at)).await;
    fire(&store, &job, at, None).await;
    assert!(
        claim(&store, "n1", 10, t(T0)).await.is_empty(),
        "not before run_at"
    );
    let claimed = claim(&store, "n1", 10, at).await;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.run.state, RunState::Running);
    assert_eq!(c.run.attempt, 1);
    assert_eq!(c.run.node.as_deref(), Some("n1"));
    assert_eq!(c.run.started_at, Some(at));
    assert_eq!(c.run.lease_expires_at, Some(t("2026-03-01T00:01:30Z")));
    assert_eq!(c.job.id, job.id);
    assert_eq!(
        (c.run.namespace.as_str(), c.run.job_name.as_str()),
        ("default", "j")
    );
    assert_eq!(c.run.scheduled_for, at);
    assert_eq!(c.run.max_attempts, 3);
    assert_eq!(
        store
            .run_active_count(RunActiveCountParams { job_id: job.id })
            .await
            .unwrap(),
        1
    );
    assert!(
        claim(&store, "n2", 10, at).await.is_empty(),
        "a running run is not claimed twice"
    );

    let hb = store
        .run_heartbeat(RunHeartbeatParams {
            leases: vec![
                (c.run.id, c.lease_token.clone()),
                (c.run.id, "wrong".into()),
            ],
            lease: SignedDuration::from_secs(60),
            now: Some(t("2026-03-01T00:01:20Z")),
        })
        .await
        .unwrap();
    assert!(hb[0].held && !hb[0].cancel_requested);
    assert!(!hb[1].held);
    let run = store
        .run_get(RunGetParams { id: c.run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.lease_expires_at, Some(t("2026-03-01T00:02:20Z")));

    let mut wrong = c.clone();
    wrong.lease_token = "not-the-token".into();
    assert!(!finish(&store, &wrong, RunNext::Finish(RunState::Succeeded), at).await);
    let done_at = t("2026-03-01T00:01:40Z");
    let mut outcome = AttemptOutcome::from_status(AttemptStatus::ExitCode { code: 3 });
    outcome.exit_code = Some(3);
    outcome.output = "line\n".into();
    assert!(
        store
            .run_finish(RunFinishParams {
                run_id: c.run.id,
                lease_token: c.lease_token.clone(),
                attempt: c.run.attempt,
                node: "n1".into(),
                started_at: at,
                outcome,
                next: RunNext::Finish(RunState::Failed),
                now: Some(done_at),
            })
            .await
            .unwrap()
    );
    let run = store
        .run_get(RunGetParams { id: c.run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.finished_at, Some(done_at));
    assert_eq!(run.exit_code, Some(3));
    assert_eq!(run.lease_expires_at, None);
    let attempts = store
        .attempt_list(AttemptListParams { run_id: c.run.id })
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, "exit:3");
    assert_eq!(attempts[0].output, "line\n");
    assert_eq!(attempts[0].finished_at, done_at);
    assert!(
        !finish(&store, c, RunNext::Finish(RunState::Succeeded), at).await,
        "finished once"
    );
    assert_eq!(
        store
            .run_active_count(RunActiveCountParams { job_id: job.id })
            .await
            .unwrap(),
        0
    );
}

pub async fn run_retry_waits_for_run_at(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let retry_at = t("2026-03-01T00:05:00Z");
    let job = create(&store, "j", Some(at)).await;
    fire(&store, &job, at, None).await;
    let c = claim(&store, "n1", 1, at).await.remove(0);
    assert!(finish(&store, &c, RunNext::Retry { run_at: retry_at }, at).await);
    let run = store
        .run_get(RunGetParams { id: c.run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.run_at, retry_at);
    assert!(
        claim(&store, "n1", 1, t("2026-03-01T00:04:59Z"))
            .await
            .is_empty()
    );
    let again = claim(&store, "n1", 1, retry_at).await;
    assert_eq!(again[0].run.attempt, 2);
    assert_eq!(
        again[0].run.started_at,
        Some(at),
        "started_at is the first attempt's start"
    );
    assert_ne!(again[0].lease_token, c.lease_token);
    assert!(
        finish(
            &store,
            &again[0],
            RunNext::Finish(RunState::Succeeded),
            retry_at
        )
        .await
    );
    assert_eq!(
        store
            .attempt_list(AttemptListParams { run_id: c.run.id })
            .await
            .unwrap()
            .len(),
        2
    );
}

pub async fn run_rescue_expired_leases(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", Some(at)).await;
    let mut most = insert(at);
    most.execution = ExecutionMode::AtMostOnce;
    let mut least = insert(t("2026-03-01T00:00:30Z"));
    least.execution = ExecutionMode::AtLeastOnce;
    store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: at,
            runs: vec![most, least],
            cancel_active: false,
            next_fire_at: None,
            now: Some(at),
        })
        .await
        .unwrap();
    let claimed = claim(&store, "dead-node", 10, at).await;
    assert_eq!(claimed.len(), 2);
    let none = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: None,
            now: Some(t("2026-03-01T00:01:29Z")),
        })
        .await
        .unwrap();
    assert_eq!(none, RescueReport::default(), "leases still valid");
    let later = t("2026-03-01T00:02:00Z");
    let report = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: None,
            now: Some(later),
        })
        .await
        .unwrap();
    let least_id = claimed
        .iter()
        .find(|c| c.run.execution == ExecutionMode::AtLeastOnce)
        .unwrap()
        .run
        .id;
    let most_id = claimed
        .iter()
        .find(|c| c.run.execution == ExecutionMode::AtMostOnce)
        .unwrap()
        .run
        .id;
    assert_eq!(report.requeued, vec![least_id]);
    assert_eq!(report.lost, vec![most_id]);
    assert_eq!(
        store
            .run_get(RunGetParams { id: most_id })
            .await
            .unwrap()
            .unwrap()
            .state,
        RunState::Lost
    );
    let requeued = store
        .run_get(RunGetParams { id: least_id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(requeued.state, RunState::Queued);
    let lost_attempts = store
        .attempt_list(AttemptListParams { run_id: least_id })
        .await
        .unwrap();
    assert_eq!(lost_attempts.len(), 1);
    assert_eq!(lost_attempts[0].status, "lost");
    // The dead worker's late writes are refused.
    for c in &claimed {
        assert!(!finish(&store, c, RunNext::Finish(RunState::Succeeded), later).await);
    }
    let hb = store
        .run_heartbeat(RunHeartbeatParams {
            leases: claimed
                .iter()
                .map(|c| (c.run.id, c.lease_token.clone()))
                .collect(),
            lease: SignedDuration::from_secs(30),
            now: Some(later),
        })
        .await
        .unwrap();
    assert!(hb.iter().all(|h| !h.held));
    // Rescued once: a second pass finds nothing.
    let again = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: None,
            now: Some(later),
        })
        .await
        .unwrap();
    assert_eq!(again, RescueReport::default());
    let retried = claim(&store, "n2", 10, later).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].run.attempt, 2);
    // A restarting node recovers what it held at once, before the lease runs out.
    let report = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: Some("n2".into()),
            now: Some(later),
        })
        .await
        .unwrap();
    assert_eq!(report.requeued, vec![retried[0].run.id]);
}

pub async fn run_exclusive_runs_one_at_a_time(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let b = t("2026-03-01T00:02:00Z");
    let job = create(&store, "j", Some(a)).await;
    let mut ra = insert(a);
    ra.exclusive = true;
    let mut rb = insert(b);
    rb.exclusive = true;
    store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: a,
            runs: vec![ra, rb],
            cancel_active: false,
            next_fire_at: None,
            now: Some(b),
        })
        .await
        .unwrap();
    let first = claim(&store, "n1", 10, b).await;
    assert_eq!(first.len(), 1, "only the earliest exclusive run starts");
    assert_eq!(first[0].run.scheduled_for, a);
    assert!(
        claim(&store, "n1", 10, b).await.is_empty(),
        "the next waits while one runs"
    );
    assert!(finish(&store, &first[0], RunNext::Finish(RunState::Succeeded), b).await);
    let second = claim(&store, "n1", 10, b).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].run.scheduled_for, b);
}

pub async fn run_cancel_states(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let b = t("2026-03-01T00:02:00Z");
    let job = create(&store, "j", Some(a)).await;
    store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: a,
            runs: vec![insert(a), insert(b)],
            cancel_active: false,
            next_fire_at: None,
            now: Some(a),
        })
        .await
        .unwrap();
    let running = claim(&store, "n1", 1, a).await.remove(0);
    let queued_id = store
        .run_list(RunListParams {
            state: Some(RunState::Queued),
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id;
    let cancelled = store
        .run_cancel(RunCancelParams {
            actor: "test".into(),
            run_id: queued_id,
            now: Some(a),
        })
        .await
        .unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    assert_eq!(cancelled.finished_at, Some(a));
    let asked = store
        .run_cancel(RunCancelParams {
            actor: "test".into(),
            run_id: running.run.id,
            now: Some(a),
        })
        .await
        .unwrap();
    assert_eq!(asked.state, RunState::Running);
    assert!(asked.cancel_requested);
    let hb = store
        .run_heartbeat(RunHeartbeatParams {
            leases: vec![(running.run.id, running.lease_token.clone())],
            lease: SignedDuration::from_secs(30),
            now: Some(a),
        })
        .await
        .unwrap();
    assert!(hb[0].held && hb[0].cancel_requested);
    let again = store
        .run_cancel(RunCancelParams {
            actor: "test".into(),
            run_id: queued_id,
            now: Some(a),
        })
        .await;
    assert!(matches!(again, Err(StoreError::InvalidRunState { .. })));
    let missing = store
        .run_cancel(RunCancelParams {
            actor: "test".into(),
            run_id: 999_999,
            now: Some(a),
        })
        .await;
    assert!(matches!(missing, Err(StoreError::RunNotFound(999_999))));
}

pub async fn run_list_filters_and_counts(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let j1 = create(&store, "one", Some(a)).await;
    let j2 = create(&store, "two", Some(a)).await;
    let times: Vec<Timestamp> = (0..5).map(|i| a + SignedDuration::from_secs(i)).collect();
    store
        .job_fire(JobFireParams {
            job_id: j1.id,
            expected_next_fire_at: a,
            runs: times.iter().copied().map(insert).collect(),
            cancel_active: false,
            next_fire_at: None,
            now: Some(a),
        })
        .await
        .unwrap();
    fire(&store, &j2, a, None).await;
    let all = store.run_list(RunListParams::default()).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let j1_runs = store
        .run_list(RunListParams {
            job_id: Some(j1.id),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(j1_runs.len(), 2);
    let page = store
        .run_list(RunListParams {
            job_id: Some(j1.id),
            before_id: Some(j1_runs[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    claim(&store, "n1", 2, a + SignedDuration::from_secs(10)).await;
    let running = store
        .run_list(RunListParams {
            state: Some(RunState::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
    let mut counts = store.run_count_by_state().await.unwrap();
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(counts, vec![(RunState::Queued, 4), (RunState::Running, 2)]);
    let other_ns = store
        .run_list(RunListParams {
            namespaces: Some(vec!["elsewhere".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(other_ns.is_empty());
    store.ping().await.unwrap();
}

pub async fn run_insert_is_idempotent(store: Arc<dyn Store>) {
    let job = create(&store, "j", None).await;
    let at = t("2026-03-01T00:01:00Z");
    let mut manual = insert(at);
    manual.origin = RunOrigin::Manual;
    let first = store
        .run_insert(RunInsertParams {
            actor: "test".into(),
            job_id: job.id,
            run: manual.clone(),
            now: Some(at),
        })
        .await
        .unwrap();
    assert_eq!(first.origin, RunOrigin::Manual);
    assert_eq!(first.state, RunState::Queued);
    let second = store
        .run_insert(RunInsertParams {
            actor: "test".into(),
            job_id: job.id,
            run: manual,
            now: Some(at),
        })
        .await
        .unwrap();
    assert_eq!(first.id, second.id);
    assert_eq!(
        store
            .run_active_count(RunActiveCountParams { job_id: job.id })
            .await
            .unwrap(),
        1
    );
}

/// Trigger-now racing a delete: the run's job is gone, which is a clear error, never a
/// constraint failure, and nothing is written.
pub async fn run_insert_for_a_deleted_job_is_job_gone(store: Arc<dyn Store>) {
    let job = create(&store, "j", None).await;
    store
        .job_delete(JobDeleteParams {
            actor: "test".into(),
            now: Some(t(T0)),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    let at = t("2026-03-01T00:01:00Z");
    let err = store
        .run_insert(RunInsertParams {
            actor: "test".into(),
            job_id: job.id,
            run: insert(at),
            now: Some(at),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::JobGone(id) if id == job.id),
        "{err:?}"
    );
    let err = store
        .run_insert_many(RunInsertManyParams {
            job_id: job.id,
            runs: vec![insert(at)],
            now: Some(at),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::JobGone(_)), "{err:?}");
    let runs = store
        .run_list(RunListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(runs.is_empty());
}

pub async fn run_claim_concurrent_never_doubles(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", Some(a)).await;
    let runs: Vec<_> = (0..40)
        .map(|i| insert(a + SignedDuration::from_millis(i)))
        .collect();
    store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: a,
            runs,
            cancel_active: false,
            next_fire_at: None,
            now: Some(a),
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for n in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = claim(
                    &store,
                    &format!("n{n}"),
                    3,
                    a + SignedDuration::from_secs(1),
                )
                .await;
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|c| c.run.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, 40);
    assert_eq!(all.len(), 40, "no run was claimed twice");
}

pub async fn run_release_keeps_attempt(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", Some(a)).await;
    fire(&store, &job, a, None).await;
    let c = claim(&store, "n1", 1, a).await.remove(0);
    assert!(finish(&store, &c, RunNext::Release, a).await);
    let run = store
        .run_get(RunGetParams { id: c.run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.attempt, 0, "a released attempt does not count");
    assert!(
        store
            .attempt_list(AttemptListParams { run_id: c.run.id })
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn run_insert_many_skips_existing_due_times(store: Arc<dyn Store>) {
    let job = create(&store, "bulk", None).await;
    let a = t("2026-03-01T00:01:00Z");
    let runs: Vec<_> = (0..500)
        .map(|i| insert(a + SignedDuration::from_millis(i)))
        .collect();
    let ids = store
        .run_insert_many(RunInsertManyParams {
            job_id: job.id,
            runs: runs.clone(),
            now: Some(a),
        })
        .await
        .unwrap();
    assert_eq!(ids.len(), 500);
    let mut more = runs[490..].to_vec();
    more.push(insert(a + SignedDuration::from_secs(10)));
    let again = store
        .run_insert_many(RunInsertManyParams {
            job_id: job.id,
            runs: more,
            now: Some(a),
        })
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "only the new due time is created");
    assert_eq!(
        store
            .run_active_count(RunActiveCountParams { job_id: job.id })
            .await
            .unwrap(),
        501
    );
}

pub async fn run_finish_many_fences_each_lease(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "batch", None).await;
    let runs: Vec<_> = (0..3)
        .map(|i| insert(a + SignedDuration::from_secs(i)))
        .collect();
    store
        .run_insert_many(RunInsertManyParams {
            job_id: job.id,
            runs,
            now: Some(a),
        })
        .await
        .unwrap();
    let claimed = claim(&store, "n1", 10, a + SignedDuration::from_secs(5)).await;
    assert_eq!(claimed.len(), 3);
    assert!(
        claimed
            .iter()
            .all(|c| c.job.id == job.id && c.job.name() == "batch")
    );
    let params = |c: &ClaimedRun, token: &str, next: RunNext| RunFinishParams {
        run_id: c.run.id,
        lease_token: token.into(),
        attempt: c.run.attempt,
        node: "n1".into(),
        started_at: a,
        outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
        next,
        now: Some(a + SignedDuration::from_secs(6)),
    };
    let results = store
        .run_finish_many(&[
            params(
                &claimed[0],
                &claimed[0].lease_token,
                RunNext::Finish(RunState::Succeeded),
            ),
            params(
                &claimed[1],
                "stale-token",
                RunNext::Finish(RunState::Succeeded),
            ),
            params(
                &claimed[2],
                &claimed[2].lease_token,
                RunNext::Retry {
                    run_at: a + SignedDuration::from_secs(60),
                },
            ),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![true, false, true]);
    assert_eq!(
        store
            .run_get(RunGetParams {
                id: claimed[0].run.id
            })
            .await
            .unwrap()
            .unwrap()
            .state,
        RunState::Succeeded
    );
    assert_eq!(
        store
            .run_get(RunGetParams {
                id: claimed[1].run.id
            })
            .await
            .unwrap()
            .unwrap()
            .state,
        RunState::Running
    );
    assert_eq!(
        store
            .run_get(RunGetParams {
                id: claimed[2].run.id
            })
            .await
            .unwrap()
            .unwrap()
            .state,
        RunState::Queued
    );
    assert_eq!(
        store
            .attempt_list(AttemptListParams {
                run_id: claimed[0].run.id
            })
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .attempt_list(AttemptListParams {
                run_id: claimed[1].run.id
            })
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn job_fire_many_and_active_counts(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let b = t("2026-03-01T00:02:00Z");
    let one = create(&store, "one", Some(a)).await;
    let two = create(&store, "two", Some(a)).await;
    let three = create(&store, "three", Some(b)).await;
    let next_at = |after: Timestamp| {
        let store = store.clone();
        async move { store.run_next_at(RunNextAtParams { after }).await.unwrap() }
    };
    assert_eq!(next_at(a).await, NextQueued::default());
    let fire = |job: &Job, expected: Timestamp| JobFireParams {
        job_id: job.id,
        expected_next_fire_at: expected,
        runs: vec![insert(a)],
        cancel_active: false,
        next_fire_at: Some(b),
        now: Some(a),
    };
    // `three` is fenced out: its next_fire_at is not `a`.
    let results = store
        .job_fire_many(&[fire(&one, a), fire(&two, a), fire(&three, a)])
        .await
        .unwrap();
    assert_eq!(
        results.iter().map(|r| r.applied).collect::<Vec<_>>(),
        vec![true, true, false]
    );
    assert_eq!(results[0].inserted.len(), 1);
    assert!(results[2].inserted.is_empty());
    assert_eq!(
        store
            .job_get_by_id(JobGetByIdParams { id: one.id })
            .await
            .unwrap()
            .unwrap()
            .next_fire_at,
        Some(b)
    );
    assert_eq!(
        store
            .job_get_by_id(JobGetByIdParams { id: three.id })
            .await
            .unwrap()
            .unwrap()
            .next_fire_at,
        Some(b)
    );
    let mut counts = store
        .run_active_counts(RunActiveCountsParams {
            job_ids: vec![one.id, two.id, three.id],
        })
        .await
        .unwrap();
    counts.sort();
    assert_eq!(counts, vec![(one.id, 1), (two.id, 1)]);
    assert!(
        store
            .run_active_counts(RunActiveCountsParams::default())
            .await
            .unwrap()
            .is_empty()
    );
    // Queued runs at `a` (two) and, for `three`, a retry-like run at `b`.
    store
        .run_insert(RunInsertParams {
            actor: "test".into(),
            job_id: three.id,
            run: insert(b),
            now: Some(a),
        })
        .await
        .unwrap();
    let before_a = t("2026-03-01T00:00:59Z");
    assert_eq!(
        next_at(before_a).await,
        NextQueued {
            earliest: Some(a),
            earliest_after: Some(a)
        }
    );
    assert_eq!(
        next_at(a).await,
        NextQueued {
            earliest: Some(a),
            earliest_after: Some(b)
        },
        "`after` is exclusive"
    );
    assert_eq!(
        next_at(b).await,
        NextQueued {
            earliest: Some(a),
            earliest_after: None
        }
    );
}

pub async fn ids_are_never_reused(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let first = create(&store, "first", Some(a)).await;
    let fired = fire(&store, &first, a, None).await;
    store
        .job_delete(JobDeleteParams {
            actor: "test".into(),
            now: Some(t(T0)),
            namespace: "default".into(),
            name: "first".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    let second = create(&store, "second", Some(a)).await;
    assert_ne!(
        second.id, first.id,
        "a new job never takes a deleted job's id"
    );
    let refired = fire(&store, &second, a, None).await;
    assert_ne!(
        refired.inserted[0].0, fired.inserted[0].0,
        "nor a new run a deleted run's id"
    );
}

pub async fn run_rescue_gives_up_on_runs_that_keep_losing_their_lease(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "crashy", Some(a)).await;
    let mut run = insert(a);
    run.max_attempts = 1;
    store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: a,
            runs: vec![run],
            cancel_active: false,
            next_fire_at: None,
            now: Some(a),
        })
        .await
        .unwrap();
    // max_attempts 1 plus 2 rescues: the first three leases lost requeue, the third gives up.
    let mut now = a;
    for round in 1..=3 {
        let claimed = claim(&store, "dying-node", 1, now).await;
        assert_eq!(claimed.len(), 1, "round {round}");
        assert_eq!(
            claimed[0].run.reason, None,
            "a claimed run carries no old reason"
        );
        now += SignedDuration::from_secs(60);
        let report = store
            .run_rescue(RunRescueParams {
                limit: 10,
                orphaned_node: None,
                now: Some(now),
            })
            .await
            .unwrap();
        if round < 3 {
            assert_eq!(report.requeued.len(), 1, "round {round}");
        } else {
            assert_eq!(report.lost.len(), 1, "given up after max_attempts + 2");
        }
    }
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs[0].state, RunState::Lost);
    assert_eq!(
        store
            .attempt_list(AttemptListParams { run_id: runs[0].id })
            .await
            .unwrap()
            .len(),
        3
    );
}

/// Runs fired ahead of their due time (look-ahead) are taken back by a pause and by an update
/// that moves the next due time; runs that are due, started or manual stay.
pub async fn early_runs_are_withdrawn_by_pause_and_reschedule(store: Arc<dyn Store>) {
    let now = t("2026-03-01T00:00:59.800Z");
    let due = t("2026-03-01T00:01:00Z");
    let next = t("2026-03-01T00:02:00Z");
    let job = create(&store, "j", Some(due)).await;
    let fire_early = |job_id| JobFireParams {
        job_id,
        expected_next_fire_at: due,
        runs: vec![insert(due)],
        cancel_active: false,
        next_fire_at: Some(next),
        now: Some(now),
    };
    assert!(
        store
            .job_fire(fire_early(job.id))
            .await
            .expect("fire")
            .applied
    );
    // Not due yet: not claimable.
    assert!(claim(&store, "n1", 10, now).await.is_empty());
    // An update that keeps the next due time keeps the early run.
    let kept = store
        .job_update(JobUpdateParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: 1,
            spec: spec("j"),
            next_fire_at: Some(next),
            now: Some(now),
        })
        .await
        .expect("update");
    let runs = |store: Arc<dyn Store>| async move {
        store
            .run_list(RunListParams {
                job_id: Some(job.id),
                ..Default::default()
            })
            .await
            .expect("list")
    };
    assert_eq!(runs(store.clone()).await.len(), 1);
    // Pausing withdraws it; resuming before the due time lets it fire again (no conflict with a
    // leftover row).
    set_paused(&store, "j", true, None, now).await;
    assert!(
        runs(store.clone()).await.is_empty(),
        "pause withdraws the early run"
    );
    set_paused(&store, "j", false, Some(due), now).await;
    let refired = store
        .job_fire(fire_early(job.id))
        .await
        .expect("fire again");
    assert_eq!(
        refired.inserted.len(),
        1,
        "the due time fires again after the resume"
    );
    // An update that moves the next due time withdraws it.
    let current = store
        .job_get(JobGetParams {
            namespace: "default".into(),
            name: "j".into(),
        })
        .await
        .expect("get")
        .expect("job");
    assert!(current.version > kept.version);
    store
        .job_update(JobUpdateParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: current.version,
            spec: spec("j"),
            next_fire_at: Some(t("2026-03-01T00:00:59.900Z")),
            now: Some(now),
        })
        .await
        .expect("reschedule");
    assert!(
        runs(store.clone()).await.is_empty(),
        "a new schedule withdraws the early run"
    );
    // Due runs are never withdrawn: at the due time the run stays through a pause.
    let job2 = create(&store, "k", Some(due)).await;
    store
        .job_fire(JobFireParams {
            now: Some(due),
            ..fire_early(job2.id)
        })
        .await
        .expect("fire when due");
    // The wall clock has stepped back before the due time: the run was still fired when due,
    // not early, and stays.
    set_paused(&store, "k", true, None, t("2026-03-01T00:00:59.500Z")).await;
    let k_runs = store
        .run_list(RunListParams {
            job_id: Some(job2.id),
            ..Default::default()
        })
        .await
        .expect("list k");
    assert_eq!(k_runs.len(), 1, "a due run stays queued through a pause");
    assert!(!k_runs[0].cancel_requested);
    // A run claimed ahead of its due time (waiting to start) is asked to cancel by a pause.
    let job3 = create(&store, "m", Some(due)).await;
    store
        .job_fire(fire_early(job3.id))
        .await
        .expect("fire m early");
    let claimed = store
        .run_claim(RunClaimParams {
            node: "n1".into(),
            limit: 10,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::from_millis(250),
            now: Some(now),
        })
        .await
        .expect("claim ahead");
    let claimed: Vec<_> = claimed.iter().filter(|c| c.run.job_id == job3.id).collect();
    assert_eq!(claimed.len(), 1, "claimed ahead within the window");
    assert_eq!(
        claimed[0].run.started_at,
        Some(due),
        "starts at its due time"
    );
    set_paused(&store, "m", true, None, now).await;
    let m_run = store
        .run_get(RunGetParams {
            id: claimed[0].run.id,
        })
        .await
        .expect("get m run");
    assert!(m_run.is_none(), "a pause withdraws a run claimed ahead");
    // Its lease is gone: the worker's heartbeat and result are refused.
    let hb = store
        .run_heartbeat(RunHeartbeatParams {
            leases: vec![(claimed[0].run.id, claimed[0].lease_token.clone())],
            lease: SignedDuration::from_secs(30),
            now: Some(now),
        })
        .await
        .expect("heartbeat");
    assert!(!hb[0].held);
    // Resumed before the due time, the due time fires again.
    set_paused(&store, "m", false, Some(due), now).await;
    let again = store
        .job_fire(fire_early(job3.id))
        .await
        .expect("fire m again");
    assert_eq!(again.inserted.len(), 1);
    // A run claimed ahead whose node stopped before the due time goes back to the queue
    // uncounted, even for at_most_once (nothing ran).
    let reclaimed = store
        .run_claim(RunClaimParams {
            node: "n1".into(),
            limit: 10,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::from_millis(250),
            now: Some(now),
        })
        .await
        .expect("claim again");
    let id = reclaimed
        .iter()
        .find(|c| c.run.job_id == job3.id)
        .expect("claimed m again")
        .run
        .id;
    let report = store
        .run_rescue(RunRescueParams {
            limit: 100,
            orphaned_node: Some("n1".into()),
            now: Some(now),
        })
        .await
        .expect("rescue");
    assert!(report.requeued.contains(&id));
    let after = store
        .run_get(RunGetParams { id })
        .await
        .expect("get")
        .expect("run");
    assert_eq!((after.state, after.attempt), (RunState::Queued, 0));
    assert_eq!(after.run_at, due, "still waits for its due time");
}

fn token_params(name: &str, hash: &str, expires_at: Option<Timestamp>) -> TokenCreateParams {
    TokenCreateParams {
        name: name.into(),
        role: Role::Operator,
        scope: Scope::parse(&["team-a".into(), "team-b".into()]).unwrap(),
        hash: hash.into(),
        expires_at,
        actor: "root".into(),
        now: Some(t(T0)),
    }
}

async fn revoke(store: &Arc<dyn Store>, id: i64, now: &str) -> StoreResult<Token> {
    store
        .token_revoke(TokenRevokeParams {
            id,
            actor: "root".into(),
            now: Some(t(now)),
        })
        .await
}

async fn authenticate(store: &Arc<dyn Store>, hash: &str, now: &str) -> Option<Token> {
    store
        .token_authenticate(TokenAuthenticateParams {
            hash: hash.into(),
            now: Some(t(now)),
        })
        .await
        .unwrap()
}

pub async fn token_create_authenticate_revoke(store: Arc<dyn Store>) {
    let ci = store
        .token_create(token_params("ci", "aa", None))
        .await
        .unwrap();
    assert_eq!(ci.name, "ci");
    assert_eq!(ci.role, Role::Operator);
    assert!(ci.scope.allows("team-b") && !ci.scope.allows("team-c"));
    assert_eq!(ci.created_by, "root");
    assert_eq!(ci.created_at, t(T0));
    let err = store
        .token_create(token_params("ci", "bb", None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TokenExists(ref n) if n == "ci"),
        "{err:?}"
    );
    let found = authenticate(&store, "aa", "2026-03-02T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(found, ci);
    assert!(
        authenticate(&store, "zz", "2026-03-02T00:00:00Z")
            .await
            .is_none()
    );

    // Expiry is judged by the clock of the request.
    store
        .token_create(token_params("short", "cc", Some(t("2026-03-01T01:00:00Z"))))
        .await
        .unwrap();
    assert!(
        authenticate(&store, "cc", "2026-03-01T00:59:59Z")
            .await
            .is_some()
    );
    assert!(
        authenticate(&store, "cc", "2026-03-01T01:00:00Z")
            .await
            .is_none()
    );

    // Revoked: refused at once, revoked once, and the name is free again.
    let revoked = revoke(&store, ci.id, "2026-03-01T00:10:00Z").await.unwrap();
    assert_eq!(revoked.revoked_at, Some(t("2026-03-01T00:10:00Z")));
    assert!(
        authenticate(&store, "aa", "2026-03-01T00:10:00Z")
            .await
            .is_none()
    );
    let again = revoke(&store, ci.id, "2026-03-01T00:11:00Z")
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::TokenNotFound(_)), "{again:?}");
    let successor = store
        .token_create(token_params("ci", "dd", None))
        .await
        .unwrap();
    // Revoking the old id again never touches the token that took its name.
    revoke(&store, ci.id, "2026-03-01T00:12:00Z")
        .await
        .unwrap_err();
    assert!(
        authenticate(&store, "dd", "2026-03-01T00:12:00Z")
            .await
            .is_some()
    );
    assert_ne!(successor.id, ci.id);
    let names = |tokens: Vec<Token>| tokens.into_iter().map(|t| t.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.token_list(TokenListParams::default()).await.unwrap()),
        ["ci", "short"]
    );
    assert_eq!(
        names(
            store
                .token_list(TokenListParams {
                    include_revoked: true
                })
                .await
                .unwrap()
        ),
        ["ci", "ci", "short"]
    );
}

pub async fn audit_records_every_change_with_its_change(store: Arc<dyn Store>) {
    let job = create(&store, "j", None).await;
    let updated = store
        .job_update(JobUpdateParams {
            actor: "alice".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: 1,
            spec: spec("j"),
            next_fire_at: None,
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    // A stale write changes nothing and records nothing.
    store
        .job_update(JobUpdateParams {
            actor: "mallory".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: 1,
            spec: spec("j"),
            next_fire_at: None,
            now: Some(t(T0)),
        })
        .await
        .unwrap_err();
    set_paused(&store, "j", true, None, t(T0)).await;
    set_paused(&store, "j", false, None, t(T0)).await;
    let at = t("2026-03-01T00:05:00Z");
    let run = store
        .run_insert(RunInsertParams {
            actor: "bob".into(),
            job_id: job.id,
            run: insert(at),
            now: Some(at),
        })
        .await
        .unwrap();
    // The same due time again: no new run, no entry.
    store
        .run_insert(RunInsertParams {
            actor: "bob".into(),
            job_id: job.id,
            run: insert(at),
            now: Some(at),
        })
        .await
        .unwrap();
    store
        .run_cancel(RunCancelParams {
            actor: "carol".into(),
            run_id: run.id,
            now: Some(at),
        })
        .await
        .unwrap();
    store
        .token_create(token_params("ci", "aa", None))
        .await
        .unwrap();
    store
        .job_delete(JobDeleteParams {
            actor: "dave".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: None,
            now: Some(at),
        })
        .await
        .unwrap();

    let all = store
        .audit_list(AuditListParams {
            include_global: true,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let seen: Vec<(&str, AuditAction, Option<i64>, Option<i64>)> = all
        .iter()
        .rev()
        .map(|e| {
            (
                e.actor.as_str(),
                e.action,
                e.version_before,
                e.version_after,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("test", AuditAction::JobCreate, None, Some(1)),
            (
                "alice",
                AuditAction::JobUpdate,
                Some(1),
                Some(updated.version)
            ),
            ("test", AuditAction::JobPause, Some(2), Some(3)),
            ("test", AuditAction::JobResume, Some(3), Some(4)),
            ("bob", AuditAction::JobTrigger, None, None),
            ("carol", AuditAction::RunCancel, None, None),
            ("root", AuditAction::TokenCreate, None, None),
            ("dave", AuditAction::JobDelete, Some(4), None),
        ]
    );
    let trigger = all
        .iter()
        .find(|e| e.action == AuditAction::JobTrigger)
        .unwrap();
    assert_eq!(trigger.run_id, Some(run.id));
    assert_eq!(trigger.namespace.as_deref(), Some("default"));
    assert_eq!(trigger.job.as_deref(), Some("j"));
    assert_eq!(trigger.at, at);
    let token = all
        .iter()
        .find(|e| e.action == AuditAction::TokenCreate)
        .unwrap();
    assert_eq!(token.namespace, None);
    assert!(token.detail.as_deref().unwrap().contains("ci"), "{token:?}");
    assert!(
        !token.detail.as_deref().unwrap().contains("aa"),
        "no hash in the log"
    );

    // Filters: by namespace (no global entries unless asked), and paging.
    let scoped = store
        .audit_list(AuditListParams {
            namespaces: Some(vec!["default".into()]),
            include_global: false,
            limit: 100,
            before_id: None,
        })
        .await
        .unwrap();
    assert_eq!(scoped.len(), 7);
    let elsewhere = store
        .audit_list(AuditListParams {
            namespaces: Some(vec!["other".into()]),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(elsewhere.is_empty());
    let page = store
        .audit_list(AuditListParams {
            include_global: true,
            limit: 2,
            before_id: Some(all[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        [all[2].id, all[3].id]
    );
}
