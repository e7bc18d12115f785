//! Job definitions: create, read, update (fenced by version), delete, pause and resume, and
//! how a new schedule or a pause takes back runs fired ahead of their due time.

use std::sync::Arc;

use jiff::SignedDuration;
use kairos_core::auth::AuditAction;
use kairos_core::run::RunState;

use super::{T0, claim, create, fire, insert, set_paused, spec, t};
use crate::*;

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
            calendars: vec![],
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
            next_fire_at: NextFire::Set(Some(t("2026-03-01T00:05:00Z"))),
            now: Some(t("2026-03-01T00:00:10Z")),
            calendars: vec![],
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
            next_fire_at: NextFire::Set(None),
            now: None,
            calendars: vec![],
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
            next_fire_at: NextFire::Set(None),
            now: None,
            calendars: vec![],
        })
        .await;
    assert!(matches!(missing, Err(StoreError::JobNotFound { .. })));
}

/// Writers racing with one expected version, on separate connections: exactly one applies; the
/// others are `VersionConflict` reporting the version they expected and the one they found,
/// and change nothing. The version moves by exactly one per round, and the audit log has one
/// entry per round, the winner's.
pub async fn job_update_concurrent_one_wins(store: Arc<dyn Store>) {
    const ROUNDS: i64 = 25;
    const WRITERS: usize = 6;
    let job = create(&store, "contended", None).await;
    let mut winners = Vec::new();
    for round in 0..ROUNDS {
        let expected = job.version + round;
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                let mut new_spec = job.spec.clone();
                new_spec.description = Some(format!("round {round}, writer {w}"));
                tokio::spawn(async move {
                    store
                        .job_update(JobUpdateParams {
                            actor: format!("writer-{w}"),
                            namespace: "default".into(),
                            name: "contended".into(),
                            expected_version: expected,
                            spec: new_spec,
                            next_fire_at: NextFire::Set(None),
                            now: Some(t(T0)),
                            calendars: vec![],
                        })
                        .await
                })
            })
            .collect();
        let mut applied = Vec::new();
        for (w, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(updated) => applied.push((w, updated)),
                Err(StoreError::VersionConflict {
                    expected: e,
                    actual,
                    namespace,
                    name,
                }) => {
                    assert_eq!(
                        (e, actual, namespace.as_str(), name.as_str()),
                        (expected, expected + 1, "default", "contended"),
                        "round {round}, writer {w}: the conflict reports expected vs actual"
                    );
                }
                Err(other) => {
                    panic!("round {round}, writer {w}: a conflict, not {other:?}")
                }
            }
        }
        assert_eq!(
            applied.len(),
            1,
            "round {round}: exactly one write applies: {applied:?}"
        );
        let (w, updated) = applied.remove(0);
        assert_eq!(updated.version, expected + 1, "round {round}");
        let stored = store
            .job_get_by_id(JobGetByIdParams { id: job.id })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored, updated,
            "round {round}: the winner's write is stored"
        );
        winners.push(format!("writer-{w}"));
    }
    let entries = store
        .audit_list(AuditListParams {
            namespaces: Some(vec!["default".into()]),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let updates: Vec<(String, Option<i64>, Option<i64>)> = entries
        .into_iter()
        .rev()
        .filter(|e| e.action == AuditAction::JobUpdate && e.job.as_deref() == Some("contended"))
        .map(|e| (e.actor, e.version_before, e.version_after))
        .collect();
    let expected: Vec<_> = winners
        .into_iter()
        .zip(0..)
        .map(|(actor, r)| (actor, Some(job.version + r), Some(job.version + r + 1)))
        .collect();
    assert_eq!(updates, expected, "one audit entry per applied write");
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
            force: false,
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
            force: false,
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
            force: false,
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
            force: false,
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
        max_active: None,
        next_fire_at: Some(next),
        now: Some(now),
        expected_version: None,
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
            next_fire_at: NextFire::Set(Some(next)),
            now: Some(now),
            calendars: vec![],
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
            next_fire_at: NextFire::Set(Some(t("2026-03-01T00:00:59.900Z"))),
            now: Some(now),
            calendars: vec![],
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
            expected_version: None,
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
