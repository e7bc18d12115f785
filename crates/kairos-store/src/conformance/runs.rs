//! Runs outside the scheduler: trigger-now and bulk inserts (idempotent per due time), cancel,
//! lists, filters and counts.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{RunOrigin, RunState};

use super::{T0, claim, create, finish, fire, insert, t};
use crate::*;

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
            max_active: None,
            next_fire_at: None,
            now: Some(a),
            expected_version: None,
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
    // What a worker polls: of the runs asked, the running ones asked to stop (the queued one
    // is cancelled already, an unknown id is none).
    assert_eq!(
        store
            .run_cancel_requested(&[999_999, queued_id, running.run.id])
            .await
            .unwrap(),
        vec![running.run.id]
    );
    assert!(store.run_cancel_requested(&[]).await.unwrap().is_empty());
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
            max_active: None,
            next_fire_at: None,
            now: Some(a),
            expected_version: None,
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
            expected_version: None,
            params: None,
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
            expected_version: None,
            params: None,
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

/// Trigger-now racing an update: the run's fields were decided on the job's version, and at
/// another version nothing is written (`VersionConflict`, the caller reads the job again).
pub async fn run_insert_is_fenced_by_the_jobs_version(store: Arc<dyn Store>) {
    let job = create(&store, "j", None).await;
    store
        .job_update(JobUpdateParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: job.version,
            spec: job.spec.clone(),
            next_fire_at: NextFire::Keep,
            now: Some(t(T0)),
            calendars: vec![],
        })
        .await
        .unwrap();
    let at = t("2026-03-01T00:01:00Z");
    let trigger = |version| RunInsertParams {
        expected_version: Some(version),
        params: None,
        actor: "test".into(),
        job_id: job.id,
        run: insert(at),
        now: Some(at),
    };
    let err = store.run_insert(trigger(job.version)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::VersionConflict { expected, actual, .. }
            if expected == job.version && actual == job.version + 1),
        "{err:?}"
    );
    let runs = store
        .run_list(RunListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(runs.is_empty(), "nothing written: {runs:?}");
    let run = store.run_insert(trigger(job.version + 1)).await.unwrap();
    assert_eq!(run.scheduled_for, at);
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
            force: false,
        })
        .await
        .unwrap();
    let at = t("2026-03-01T00:01:00Z");
    let err = store
        .run_insert(RunInsertParams {
            expected_version: None,
            params: None,
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

/// `run_recent`: each job's last ended top-level runs, newest first, within the namespaces and
/// the job asked; runs not yet ended, and skipped ones, are left out.
pub async fn run_recent_lists_each_jobs_last_ended_runs(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let j1 = create(&store, "one", Some(a)).await;
    let j2 = create(&store, "two", Some(a)).await;
    let times: Vec<Timestamp> = (0..5).map(|i| a + SignedDuration::from_secs(i)).collect();
    store
        .job_fire(JobFireParams {
            job_id: j1.id,
            expected_next_fire_at: a,
            runs: times
                .iter()
                .copied()
                .map(insert)
                .chain([RunInsert {
                    // A due time not run: no outcome, not listed.
                    skip: Some(kairos_core::run::SkipReason::Overlap),
                    ..insert(a + SignedDuration::from_secs(5))
                }])
                .collect(),
            cancel_active: false,
            max_active: None,
            next_fire_at: None,
            now: Some(a),
            expected_version: None,
        })
        .await
        .unwrap();
    let later = a + SignedDuration::from_secs(10);
    let claimed = claim(&store, "n1", 2, later).await;
    assert_eq!(claimed.len(), 2);
    assert!(
        finish(
            &store,
            &claimed[0],
            RunNext::Finish(RunState::Succeeded),
            later
        )
        .await
    );
    assert!(
        finish(
            &store,
            &claimed[1],
            RunNext::Finish(RunState::Failed),
            later
        )
        .await
    );
    // j2's run stays queued.
    fire(&store, &j2, a, None).await;
    let j1_runs = store
        .run_list(RunListParams {
            job_id: Some(j1.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(j1_runs[0].state, RunState::Skipped);
    let newest = j1_runs[1].id;
    store
        .run_cancel(RunCancelParams {
            actor: "test".into(),
            run_id: newest,
            now: Some(later),
        })
        .await
        .unwrap();
    let recent = store
        .run_recent(RunRecentParams {
            per_job: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ended: Vec<RunState> = recent.iter().map(|r| r.state).collect();
    assert_eq!(recent.len(), 3, "only ended runs: {recent:?}");
    assert!(recent.iter().all(|r| r.finished_at == later));
    assert_eq!(recent[0].run_id, newest, "newest first");
    assert!(recent.windows(2).all(|w| w[0].run_id > w[1].run_id));
    let claimed_ids: Vec<_> = claimed.iter().map(|c| c.run.id).collect();
    assert!(claimed_ids.contains(&recent[1].run_id) && claimed_ids.contains(&recent[2].run_id));
    assert_eq!(ended[0], RunState::Cancelled);
    assert!(ended.contains(&RunState::Succeeded) && ended.contains(&RunState::Failed));
    assert!(recent.iter().all(|r| r.job_id == j1.id));
    let claimed_run = recent.iter().find(|r| r.run_id == claimed_ids[0]).unwrap();
    assert_eq!(claimed_run.started_at, Some(later));
    assert_eq!(claimed_run.scheduled_for, claimed[0].run.scheduled_for);

    let two = store
        .run_recent(RunRecentParams {
            per_job: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        two.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        recent[..2].iter().map(|r| r.run_id).collect::<Vec<_>>()
    );
    let other_job = store
        .run_recent(RunRecentParams {
            per_job: 10,
            job_id: Some(j2.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(other_job.is_empty(), "j2's run has not ended");
    let other_ns = store
        .run_recent(RunRecentParams {
            per_job: 10,
            namespaces: Some(vec!["elsewhere".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(other_ns.is_empty());
}

/// `run_active_brief`: a job's runs that have not ended, the earliest due first.
pub async fn run_active_brief_lists_a_jobs_unended_runs_earliest_due_first(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let j1 = create(&store, "one", Some(a)).await;
    let j2 = create(&store, "two", Some(a)).await;
    let later = |s: i64| a + SignedDuration::from_secs(s);
    store
        .job_fire(JobFireParams {
            job_id: j1.id,
            expected_next_fire_at: a,
            // Inserted latest-due first: the order of ids is not that of due times.
            runs: vec![insert(later(2)), insert(later(1)), insert(a)],
            cancel_active: false,
            max_active: None,
            next_fire_at: None,
            now: Some(a),
            expected_version: None,
        })
        .await
        .unwrap();
    fire(&store, &j2, a, None).await;
    let claimed = claim(&store, "n1", 1, later(10)).await;
    assert_eq!(claimed[0].run.scheduled_for, a);
    let newest = store
        .run_list(RunListParams {
            job_id: Some(j1.id),
            state: Some(RunState::Queued),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.scheduled_for == later(2))
        .unwrap();
    store
        .run_cancel(RunCancelParams {
            actor: "test".into(),
            run_id: newest.id,
            now: Some(later(10)),
        })
        .await
        .unwrap();
    let brief = store
        .run_active_brief(RunActiveBriefParams {
            job_id: j1.id,
            limit: 10,
        })
        .await
        .unwrap();
    let seen: Vec<(Timestamp, RunState)> =
        brief.iter().map(|r| (r.scheduled_for, r.state)).collect();
    assert_eq!(
        seen,
        [(a, RunState::Running), (later(1), RunState::Queued)],
        "the cancelled run and the other job's are left out"
    );
    assert_eq!(brief[0].run_id, claimed[0].run.id);
    assert_eq!(brief[0].started_at, Some(later(10)));
    assert_eq!(brief[1].started_at, None);
    assert_eq!(brief[0].origin, RunOrigin::Schedule);
    let first = store
        .run_active_brief(RunActiveBriefParams {
            job_id: j1.id,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].scheduled_for, a);
}
