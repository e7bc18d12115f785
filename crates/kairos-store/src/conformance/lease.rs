//! Leases: heartbeats and finishes are fenced by the lease token and report whether they
//! applied; a retry or a release queues the run again.

use std::sync::Arc;

use jiff::SignedDuration;
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunState};

use super::{T0, claim, create, finish, fire, insert, t};
use crate::*;

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
                parent_id: None,
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

/// A run given back unstarted (shutdown, an unsafe lease) after someone asked to cancel it
/// ends `cancelled`, not queued again: the cancel is not lost in the give-back.
pub async fn run_release_after_a_cancel_request_ends_cancelled(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "jc", Some(a)).await;
    fire(&store, &job, a, None).await;
    let c = claim(&store, "n1", 1, a).await.remove(0);
    store
        .run_cancel(RunCancelParams {
            run_id: c.run.id,
            actor: "test".into(),
            now: Some(a),
        })
        .await
        .unwrap();
    assert!(finish(&store, &c, RunNext::Release, a).await);
    let run = store
        .run_get(RunGetParams { id: c.run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(run.attempt, 0, "the attempt given back does not count");
    assert!(run.finished_at.is_some());
    assert!(
        claim(&store, "n2", 1, a).await.is_empty(),
        "never claimed again"
    );
}

/// Output a task printed is stored whatever bytes it holds (a NUL character included, which
/// some databases' text types refuse): the attempt is recorded, not the whole batch lost.
pub async fn run_finish_stores_any_output(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "nul", Some(a)).await;
    fire(&store, &job, a, None).await;
    let c = claim(&store, "n1", 1, a).await.remove(0);
    let outcome = AttemptOutcome {
        output: "before\0after\n".into(),
        ..AttemptOutcome::from_status(AttemptStatus::Error {
            message: "bad \0 byte".into(),
        })
    };
    let applied = store
        .run_finish(RunFinishParams {
            run_id: c.run.id,
            parent_id: None,
            lease_token: c.lease_token.clone(),
            attempt: c.run.attempt,
            node: "n1".into(),
            started_at: a,
            outcome,
            next: RunNext::Finish(RunState::Failed),
            now: Some(a),
        })
        .await
        .unwrap();
    assert!(applied);
    let attempts = store
        .attempt_list(AttemptListParams { run_id: c.run.id })
        .await
        .unwrap();
    assert!(
        attempts[0].output.starts_with("before"),
        "{:?}",
        attempts[0].output
    );
    assert!(
        attempts[0].output.contains("after"),
        "{:?}",
        attempts[0].output
    );
}

/// A batch may name a run twice and come in any order: the first finish of the run holds, the
/// second finds the lease given up; each is reported where it was given.
pub async fn run_finish_many_takes_each_run_once(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "twice", None).await;
    let runs: Vec<_> = (0..2)
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
    assert_eq!(claimed.len(), 2);
    let params = |c: &ClaimedRun, state: RunState| RunFinishParams {
        run_id: c.run.id,
        parent_id: None,
        lease_token: c.lease_token.clone(),
        attempt: c.run.attempt,
        node: "n1".into(),
        started_at: a,
        outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
        next: RunNext::Finish(state),
        now: Some(a + SignedDuration::from_secs(6)),
    };
    // Highest id first, and the lower run twice.
    let (low, high) = if claimed[0].run.id < claimed[1].run.id {
        (&claimed[0], &claimed[1])
    } else {
        (&claimed[1], &claimed[0])
    };
    let results = store
        .run_finish_many(&[
            params(high, RunState::Succeeded),
            params(low, RunState::Succeeded),
            params(low, RunState::Failed),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![true, true, false]);
    for c in [low, high] {
        let run = store
            .run_get(RunGetParams { id: c.run.id })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(run.state, RunState::Succeeded, "run {}", c.run.id);
        let attempts = store
            .attempt_list(AttemptListParams { run_id: c.run.id })
            .await
            .unwrap();
        assert_eq!(attempts.len(), 1, "run {}", c.run.id);
    }
}

/// An attempt whose lease was lost and the run's next attempt may end in one batch, the stale
/// one first: each is fenced on its own token, so the current attempt's result is recorded.
pub async fn run_finish_many_fences_each_token_of_a_run(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "again", None).await;
    store
        .run_insert_many(RunInsertManyParams {
            job_id: job.id,
            runs: vec![insert(a)],
            now: Some(a),
        })
        .await
        .unwrap();
    let first = claim(&store, "n1", 1, a).await;
    assert_eq!(first.len(), 1);
    // The first attempt's lease (30 s) runs out: the run is queued again and claimed anew.
    let later = a + SignedDuration::from_secs(60);
    let rescued = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: None,
            now: Some(later),
        })
        .await
        .unwrap();
    assert_eq!(rescued.requeued, vec![first[0].run.id]);
    let second = claim(&store, "n1", 1, later).await;
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].lease_token, second[0].lease_token);
    let params = |c: &ClaimedRun| RunFinishParams {
        run_id: c.run.id,
        parent_id: None,
        lease_token: c.lease_token.clone(),
        attempt: c.run.attempt,
        node: "n1".into(),
        started_at: later,
        outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
        next: RunNext::Finish(RunState::Succeeded),
        now: Some(later + SignedDuration::from_secs(1)),
    };
    let results = store
        .run_finish_many(&[params(&first[0]), params(&second[0])])
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![false, true],
        "the stale lease fails, the current one holds"
    );
    let run = store
        .run_get(RunGetParams {
            id: second[0].run.id,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempt, second[0].run.attempt);
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
        parent_id: None,
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

/// A lease never moves back: a node may have several renewals in flight, and one that waited
/// for a row lock may commit after a later one; the store keeps the later end, as the node does.
pub async fn run_heartbeat_never_shortens_a_lease(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", None).await;
    super::queue(&store, job.id, insert(a), a).await;
    let c = claim(&store, "n1", 1, a).await.remove(0);
    let minute = SignedDuration::from_secs(60);
    let later = a + SignedDuration::from_secs(40);
    assert!(super::heartbeat(&store, &c, minute, later).await.held);
    let earlier = a + SignedDuration::from_secs(20);
    assert!(super::heartbeat(&store, &c, minute, earlier).await.held);
    let run = store
        .run_get(RunGetParams { id: c.run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        run.lease_expires_at,
        Some(later + minute),
        "the later renewal's end"
    );
}
