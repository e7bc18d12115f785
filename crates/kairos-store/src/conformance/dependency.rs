//! Dependency triggers: a job's runs created in the transaction that ends a run of a job it
//! runs after (every way a run ends), once per upstream run; the checks on job writes (unknown
//! upstream, cycles, deleting a job others run after), also under concurrent writes.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunOrigin, RunState};
use kairos_core::spec::{ExecutionMode, JobSpec};

use super::{T0, begin, claim, t};
use crate::*;

/// A job `name` that runs after each of `after` (`(job, on)`), with extra fields.
fn dependent(name: &str, after: &[(&str, &str)], extra: &str) -> JobSpec {
    let triggers: Vec<String> = after
        .iter()
        .map(|(job, on)| format!(r#"{{"after":{{"job":"{job}","on":"{on}"}}}}"#))
        .collect();
    JobSpec::from_json(&format!(
        r#"{{"name":"{name}","triggers":[{}],{extra}"task":{{"kind":"shell","script":"true"}}}}"#,
        triggers.join(",")
    ))
    .expect("valid dependent job")
}

async fn create(store: &Arc<dyn Store>, spec: JobSpec) -> StoreResult<Job> {
    store
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec,
            next_fire_at: None,
            now: Some(t(T0)),
            calendars: vec![],
        })
        .await
}

/// Queues a manual run of `job` at `at`.
async fn trigger(store: &Arc<dyn Store>, job: &Job, at: Timestamp) -> Run {
    store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id: job.id,
            run: RunInsert {
                origin: RunOrigin::Manual,
                ..super::insert(at)
            },
            params: None,
            actor: "test".into(),
            now: Some(at),
        })
        .await
        .unwrap()
}

/// Claims every queued run due at `at`, by id.
async fn claim_all(store: &Arc<dyn Store>, at: Timestamp) -> Vec<ClaimedRun> {
    let mut claimed = claim(store, "n1", 100, at).await;
    claimed.sort_by_key(|c| c.run.id);
    claimed
}

async fn end(store: &Arc<dyn Store>, c: &ClaimedRun, state: RunState, at: Timestamp) {
    let status = match state {
        RunState::Succeeded => AttemptStatus::Succeeded,
        RunState::TimedOut => AttemptStatus::TimedOut,
        _ => AttemptStatus::ExitCode { code: 1 },
    };
    let applied = store
        .run_finish(RunFinishParams {
            run_id: c.run.id,
            parent_id: c.run.parent_id,
            lease_token: c.lease_token.clone(),
            attempt: c.run.attempt,
            node: "n1".into(),
            started_at: at,
            outcome: AttemptOutcome {
                result: (state == RunState::Succeeded).then(|| r#"{"rows":3}"#.to_owned()),
                ..AttemptOutcome::from_status(status)
            },
            next: RunNext::Finish(state),
            now: Some(at),
        })
        .await
        .unwrap();
    assert!(applied);
}

/// The runs of `job` created by dependency, as `(upstream run, state)`, by id.
async fn dependency_runs(store: &Arc<dyn Store>, job: &Job) -> Vec<(i64, RunState)> {
    let mut runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            namespaces: None,
            state: None,
            limit: 1000,
            before_id: None,
        })
        .await
        .unwrap();
    runs.sort_by_key(|r| r.id);
    runs.into_iter()
        .filter(|r| r.origin == RunOrigin::Dependency)
        .map(|r| {
            (
                r.upstream_run_id.expect("a dependency run's upstream"),
                r.state,
            )
        })
        .collect()
}

fn invalid_field(e: StoreError) -> (String, String) {
    match e {
        StoreError::Invalid(errs) => (errs.errors[0].field.clone(), errs.errors[0].message.clone()),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

pub async fn dependency_runs_follow_each_matching_end(store: Arc<dyn Store>) {
    let at = t(T0);
    // Due at T0 (it is fired once below, replacing its active run).
    let a = store
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec: super::spec("a"),
            next_fire_at: Some(at),
            now: Some(at),
            calendars: vec![],
        })
        .await
        .unwrap();
    let b = create(
        &store,
        dependent("b", &[("a", "success")], r#""overlap":"allow","#),
    )
    .await
    .unwrap();
    let c = create(&store, dependent("c", &[("b", "success")], ""))
        .await
        .unwrap();
    let on_failure = create(&store, dependent("f", &[("a", "failure")], ""))
        .await
        .unwrap();
    let on_done = create(
        &store,
        dependent("d", &[("a", "done")], r#""execution":"at_most_once","#),
    )
    .await
    .unwrap();
    let paused = create(
        &store,
        dependent("p", &[("a", "success")], r#""paused":true,"#),
    )
    .await
    .unwrap();

    // A succeeds: b and d run once, with what their documents ask for; f and p do not.
    let a1 = trigger(&store, &a, at).await;
    let claimed = claim_all(&store, at).await;
    assert_eq!(claimed.len(), 1);
    end(&store, &claimed[0], RunState::Succeeded, at).await;
    assert_eq!(
        dependency_runs(&store, &b).await,
        [(a1.id, RunState::Queued)]
    );
    assert_eq!(
        dependency_runs(&store, &on_done).await,
        [(a1.id, RunState::Queued)]
    );
    assert!(dependency_runs(&store, &on_failure).await.is_empty());
    assert!(dependency_runs(&store, &paused).await.is_empty());
    let later = at + SignedDuration::from_secs(1);
    let claimed = claim_all(&store, later).await;
    assert_eq!(claimed.len(), 2);
    let b1 = claimed.iter().find(|c| c.run.job_id == b.id).unwrap();
    assert_eq!(b1.run.origin, RunOrigin::Dependency);
    assert_eq!(b1.run.upstream_run_id, Some(a1.id));
    assert!(!b1.run.exclusive, "`overlap: allow` runs side by side");
    let d1 = claimed.iter().find(|c| c.run.job_id == on_done.id).unwrap();
    assert!(
        d1.run.exclusive,
        "dependency runs wait for each other otherwise"
    );
    assert_eq!(d1.run.execution, ExecutionMode::AtMostOnce);
    // B's end starts C: a chain.
    end(&store, b1, RunState::Succeeded, later).await;
    assert_eq!(
        dependency_runs(&store, &c).await,
        [(b1.run.id, RunState::Queued)]
    );
    end(&store, d1, RunState::Succeeded, later).await;
    let _ = claim_all(&store, later).await;

    // A fails (timed out): f and d.
    let a2 = trigger(&store, &a, later).await;
    let claimed = claim_all(&store, later).await;
    let a2c = claimed.iter().find(|c| c.run.id == a2.id).unwrap();
    end(&store, a2c, RunState::TimedOut, later).await;
    assert_eq!(
        dependency_runs(&store, &on_failure).await,
        [(a2.id, RunState::Queued)]
    );
    assert_eq!(dependency_runs(&store, &on_done).await.len(), 2);
    assert_eq!(dependency_runs(&store, &b).await.len(), 1, "not on failure");

    // A cancelled run is `done` only; a lost one is a failure.
    let later = later + SignedDuration::from_secs(1);
    let a3 = trigger(&store, &a, later).await;
    store
        .run_cancel(RunCancelParams {
            run_id: a3.id,
            actor: "test".into(),
            now: Some(later),
        })
        .await
        .unwrap();
    assert_eq!(dependency_runs(&store, &on_done).await.len(), 3);
    assert_eq!(dependency_runs(&store, &on_failure).await.len(), 1);
    let a4 = store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id: a.id,
            run: RunInsert {
                origin: RunOrigin::Manual,
                max_attempts: 1,
                execution: ExecutionMode::AtMostOnce,
                ..super::insert(later + SignedDuration::from_millis(500))
            },
            params: None,
            actor: "test".into(),
            now: Some(later),
        })
        .await
        .unwrap();
    let until = later + SignedDuration::from_secs(1);
    let claimed = claim_all(&store, until).await;
    let a4_claimed = claimed.iter().find(|c| c.run.id == a4.id).unwrap();
    // It began (its worker said so), then its node died.
    assert!(begin(&store, a4_claimed).await);
    let report = store
        .run_rescue(RunRescueParams {
            limit: 100,
            orphaned_node: Some("n1".into()),
            now: Some(until),
        })
        .await
        .unwrap();
    assert!(report.lost.contains(&a4.id), "{report:?}");
    assert!(
        dependency_runs(&store, &on_failure)
            .await
            .contains(&(a4.id, RunState::Queued)),
        "a lost run is a failure"
    );

    // A run that `overlap: replace` cancels (a fire with `cancel_active`) is done too.
    let later = until + SignedDuration::from_secs(1);
    let a5 = trigger(&store, &a, later).await;
    let done_before = dependency_runs(&store, &on_done).await.len();
    let fire_at = later + SignedDuration::from_secs(1);
    store
        .job_fire(JobFireParams {
            job_id: a.id,
            expected_next_fire_at: at,
            runs: vec![super::insert(fire_at)],
            cancel_active: true,
            max_active: None,
            next_fire_at: None,
            now: Some(fire_at),
            expected_version: None,
        })
        .await
        .unwrap();
    let replaced = store
        .run_get(RunGetParams { id: a5.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replaced.state, RunState::Cancelled);
    let done = dependency_runs(&store, &on_done).await;
    assert_eq!(done.len(), done_before + 1);
    assert!(done.contains(&(a5.id, RunState::Queued)), "{done:?}");

    // A run given back at a shutdown after it was asked to stop ends `cancelled`: done too.
    let later = fire_at + SignedDuration::from_secs(1);
    let a6 = trigger(&store, &a, later).await;
    let c6 = claim_all(&store, later)
        .await
        .into_iter()
        .find(|c| c.run.id == a6.id)
        .expect("a6 claimed");
    store
        .run_cancel(RunCancelParams {
            run_id: a6.id,
            actor: "test".into(),
            now: Some(later),
        })
        .await
        .unwrap();
    let released = store
        .run_finish(RunFinishParams {
            run_id: a6.id,
            parent_id: None,
            lease_token: c6.lease_token.clone(),
            attempt: c6.run.attempt,
            node: "n1".into(),
            started_at: later,
            outcome: AttemptOutcome::from_status(AttemptStatus::Cancelled),
            next: RunNext::Release,
            now: Some(later),
        })
        .await
        .unwrap();
    assert!(released);
    let ended = store
        .run_get(RunGetParams { id: a6.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, RunState::Cancelled);
    assert!(
        dependency_runs(&store, &on_done)
            .await
            .contains(&(a6.id, RunState::Queued)),
        "a release that ends the run starts its dependents"
    );
}

pub async fn dependency_runs_are_once_per_upstream_run(store: Arc<dyn Store>) {
    let at = t(T0);
    let flow = JobSpec::from_json(
        r#"{"name":"flow","steps":[{"name":"a","task":{"kind":"shell","script":"true"}}]}"#,
    )
    .unwrap();
    let flow = create(&store, flow).await.unwrap();
    let after = create(&store, dependent("after", &[("flow", "done")], ""))
        .await
        .unwrap();
    let run = trigger(&store, &flow, at).await;
    let c = claim_all(&store, at).await.remove(0);
    assert!(
        store
            .workflow_start(WorkflowStartParams {
                run_id: c.run.id,
                lease_token: c.lease_token.clone(),
                spec: c.job.spec.clone(),
                now: Some(at),
            })
            .await
            .unwrap()
    );
    // The step's end ends the workflow run: its dependent runs once.
    let step = claim_all(&store, at).await.remove(0);
    end(&store, &step, RunState::Failed, at).await;
    assert_eq!(
        dependency_runs(&store, &after).await,
        [(run.id, RunState::Queued)]
    );
    // Rerun by hand: the workflow run ends again, its dependent does not run again.
    store
        .workflow_control(WorkflowControlParams {
            run_id: run.id,
            action: StepControl::RerunFailed,
            actor: "test".into(),
            now: Some(at),
        })
        .await
        .unwrap();
    let again = claim_all(&store, at)
        .await
        .into_iter()
        .find(|c| c.run.parent_id == Some(run.id))
        .expect("the step again");
    end(&store, &again, RunState::Succeeded, at).await;
    let ended = store
        .run_get(RunGetParams { id: run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, RunState::Succeeded);
    assert_eq!(dependency_runs(&store, &after).await.len(), 1);
}

pub async fn dependency_checks_refuse_unknown_jobs_cycles_and_deletes(store: Arc<dyn Store>) {
    let at = t(T0);
    // An upstream that does not exist: nothing written.
    let (field, message) = invalid_field(
        create(&store, dependent("b", &[("nope", "success")], ""))
            .await
            .unwrap_err(),
    );
    assert_eq!(field, "triggers[0].after.job");
    assert!(message.contains("no job `nope`"), "{message}");
    let listed = store
        .job_list(JobListParams {
            namespaces: None,
            limit: 0,
        })
        .await
        .unwrap();
    assert!(listed.is_empty());
    // Another namespace's job of that name does not count.
    let mut other = super::spec("a");
    other.namespace = "other".into();
    create(&store, other).await.unwrap();
    assert!(
        create(&store, dependent("b", &[("a", "success")], ""))
            .await
            .is_err()
    );

    let a = create(&store, super::spec("a")).await.unwrap();
    create(&store, dependent("b", &[("a", "success")], ""))
        .await
        .unwrap();
    create(&store, dependent("c", &[("b", "done")], ""))
        .await
        .unwrap();
    // a after c closes a → c → b → a; a after itself, a → a.
    let update = |spec: JobSpec, version: i64| {
        let store = store.clone();
        async move {
            store
                .job_update(JobUpdateParams {
                    actor: "test".into(),
                    namespace: "default".into(),
                    name: spec.name.clone(),
                    expected_version: version,
                    spec,
                    next_fire_at: NextFire::Keep,
                    now: Some(at),
                    calendars: vec![],
                })
                .await
        }
    };
    let (field, message) = invalid_field(
        update(dependent("a", &[("c", "success")], ""), a.version)
            .await
            .unwrap_err(),
    );
    assert_eq!(field, "triggers[0].after.job");
    assert!(message.contains("a → c → b → a"), "{message}");
    let (_, message) = invalid_field(
        update(dependent("a", &[("a", "failure")], ""), a.version)
            .await
            .unwrap_err(),
    );
    assert!(message.contains("a → a"), "{message}");

    // Deleting a job others run after: refused, unless forced.
    let delete = |name: &str, force: bool| {
        let store = store.clone();
        let name = name.to_owned();
        async move {
            store
                .job_delete(JobDeleteParams {
                    actor: "test".into(),
                    namespace: "default".into(),
                    name,
                    expected_version: None,
                    force,
                    now: Some(at),
                })
                .await
        }
    };
    match delete("a", false).await {
        Err(StoreError::HasDependents { dependents, .. }) => assert_eq!(dependents, ["b"]),
        other => panic!("expected HasDependents, got {other:?}"),
    }
    // Renaming it would leave them too.
    let mut renamed = super::spec("a2");
    renamed.namespace = "default".into();
    let renaming = store
        .job_update(JobUpdateParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: "a".into(),
            expected_version: a.version,
            spec: renamed,
            next_fire_at: NextFire::Keep,
            now: Some(at),
            calendars: vec![],
        })
        .await;
    assert!(
        matches!(renaming, Err(StoreError::HasDependents { .. })),
        "{renaming:?}"
    );
    delete("c", false).await.unwrap();
    delete("a", true).await.unwrap();
    // A job created again under the name is followed again.
    let a = create(&store, super::spec("a")).await.unwrap();
    let b = store
        .job_get(JobGetParams {
            namespace: "default".into(),
            name: "b".into(),
        })
        .await
        .unwrap()
        .unwrap();
    let run = trigger(&store, &a, at).await;
    let c = claim_all(&store, at).await.remove(0);
    end(&store, &c, RunState::Succeeded, at).await;
    assert_eq!(
        dependency_runs(&store, &b).await,
        [(run.id, RunState::Queued)]
    );
}

/// Writes racing to close a cycle: whatever the interleaving, at most one of `x after y` and
/// `y after x` is stored. And a delete racing a new dependent: never both.
pub async fn dependency_concurrent_writes_never_close_a_cycle(store: Arc<dyn Store>) {
    let at = t(T0);
    for round in 0..15 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        let xj = create(&store, super::spec(&x)).await.unwrap();
        let yj = create(&store, super::spec(&y)).await.unwrap();
        let write = |job: Job, upstream: String| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .job_update(JobUpdateParams {
                        actor: "test".into(),
                        namespace: "default".into(),
                        name: job.name().to_owned(),
                        expected_version: job.version,
                        spec: dependent(job.name(), &[(&upstream, "success")], ""),
                        next_fire_at: NextFire::Keep,
                        now: Some(at),
                        calendars: vec![],
                    })
                    .await
            })
        };
        let one = write(xj, y.clone());
        let two = write(yj, x.clone());
        let (one, two) = (one.await.unwrap(), two.await.unwrap());
        assert!(
            !(one.is_ok() && two.is_ok()),
            "round {round}: both sides of a cycle were stored"
        );
        assert!(
            one.is_ok() || two.is_ok(),
            "round {round}: one of them holds"
        );
        for r in [one, two] {
            if let Err(e) = r {
                assert!(matches!(e, StoreError::Invalid(_)), "round {round}: {e:?}");
            }
        }

        // A delete of `u` racing a job created to run after it.
        let u = format!("u{round}");
        create(&store, super::spec(&u)).await.unwrap();
        let deleting = {
            let store = store.clone();
            let u = u.clone();
            tokio::spawn(async move {
                store
                    .job_delete(JobDeleteParams {
                        actor: "test".into(),
                        namespace: "default".into(),
                        name: u,
                        expected_version: None,
                        force: false,
                        now: Some(at),
                    })
                    .await
            })
        };
        let creating = {
            let store = store.clone();
            let spec = dependent(&format!("v{round}"), &[(&u, "success")], "");
            tokio::spawn(async move { create(&store, spec).await })
        };
        let (deleted, created) = (deleting.await.unwrap(), creating.await.unwrap());
        assert!(
            deleted.is_ok() != created.is_ok(),
            "round {round}: exactly one of the delete and the dependent holds: {deleted:?} / {created:?}"
        );
    }
}
