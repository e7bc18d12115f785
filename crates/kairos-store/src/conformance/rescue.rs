//! Rescue: runs whose lease expired are requeued (`at_least_once`) or marked `lost`
//! (`at_most_once`), exactly once, and given up on when they keep losing their lease.

use std::sync::Arc;

use jiff::SignedDuration;
use kairos_core::run::RunState;
use kairos_core::spec::ExecutionMode;

use super::{T0, begin, claim, create, finish, insert, queue, t};
use crate::*;

/// An `at_most_once` run whose node died after the claim and before the attempt began (its
/// worker never recorded the start) is put back as it was, not ended `lost`: nothing ran. One
/// whose start was recorded is `lost`. The record is fenced by the lease.
pub async fn run_rescue_puts_back_at_most_once_runs_that_never_began(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", None).await;
    let at_most_once = |at| RunInsert {
        execution: ExecutionMode::AtMostOnce,
        ..insert(at)
    };
    let inserted = queue(&store, job.id, at_most_once(at), at).await;
    let rescue = |now| {
        let store = store.clone();
        async move {
            store
                .run_rescue(RunRescueParams {
                    limit: 10,
                    orphaned_node: None,
                    now: Some(now),
                })
                .await
                .unwrap()
        }
    };
    let first = claim(&store, "dead-node", 10, at).await;
    assert_eq!(first.len(), 1);
    let expired = at + SignedDuration::from_secs(31);
    assert_eq!(rescue(expired).await.requeued, vec![inserted.id]);
    let run = store
        .run_get(RunGetParams { id: inserted.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (run.state, run.attempt),
        (RunState::Queued, 0),
        "put back as it was"
    );
    assert!(
        !begin(&store, &first[0]).await,
        "the old lease records nothing"
    );

    let second = claim(&store, "n2", 10, expired).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].run.attempt, 1);
    assert!(begin(&store, &second[0]).await);
    let later = expired + SignedDuration::from_secs(31);
    assert_eq!(rescue(later).await.lost, vec![inserted.id]);

    // Claimed well ahead and begun: its record decides, not its start dated after now.
    let due = later + SignedDuration::from_secs(45);
    let ahead = queue(&store, job.id, at_most_once(due), later).await;
    let claimed = store
        .run_claim(RunClaimParams {
            node: "n3".into(),
            limit: 10,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::from_secs(60),
            now: Some(later),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(begin(&store, &claimed[0]).await);
    let report = rescue(later + SignedDuration::from_secs(31)).await;
    assert_eq!(report.lost, vec![ahead.id], "{report:?}");
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
            max_active: None,
            next_fire_at: None,
            now: Some(at),
            expected_version: None,
        })
        .await
        .unwrap();
    let claimed = claim(&store, "dead-node", 10, at).await;
    assert_eq!(claimed.len(), 2);
    // The at-most-once attempt began (its worker said so before starting the task).
    for c in claimed
        .iter()
        .filter(|c| c.run.execution == ExecutionMode::AtMostOnce)
    {
        assert!(begin(&store, c).await);
    }
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
            max_active: None,
            next_fire_at: None,
            now: Some(a),
            expected_version: None,
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
/// A lease that just expired, raced on separate connections by the rescuer, the worker's
/// heartbeat and the worker's finish. The lease token is the only identity they share, so
/// exactly one of rescue and finish takes the run, whatever the order:
/// - the rescue came first: it requeued the run (or marked it `lost`, at most once) and recorded
///   one `lost` attempt; the heartbeat reports the lease lost and the finish is refused;
/// - the heartbeat came first: it renewed the lease (an expired lease nobody rescued yet is
///   still held), so the rescue finds nothing to rescue and the finish applies;
/// - the finish came first: it recorded the attempt; the heartbeat reports the lease gone and
///   the rescue finds nothing.
///
/// Never both: a heartbeat that held implies the finish applied and the rescue did not take
/// the run, and the attempts table has one row for the attempt, `lost` only if rescued.
pub async fn run_rescue_vs_heartbeat(store: Arc<dyn Store>) {
    const ROUNDS: i64 = 36;
    let job = create(&store, "flaky", None).await;
    // [rescued, heartbeat held, finished first]
    let mut seen = [0u32; 3];
    for round in 0..ROUNDS {
        let at = t(T0) + SignedDuration::from_mins(10 * round);
        let mut run = insert(at);
        run.execution = if round % 2 == 0 {
            ExecutionMode::AtLeastOnce
        } else {
            ExecutionMode::AtMostOnce
        };
        store
            .run_insert_many(RunInsertManyParams {
                job_id: job.id,
                runs: vec![run],
                now: Some(at),
            })
            .await
            .unwrap();
        let c = claim(&store, "worker", 1, at).await.remove(0);
        assert_eq!(c.run.scheduled_for, at, "round {round}");
        // Its attempt began (an at-most-once one says so before its task starts).
        assert!(begin(&store, &c).await);
        // The lease (30 s) ran out a second ago.
        let late = at + SignedDuration::from_secs(31);
        let rescue = {
            let store = store.clone();
            async move {
                store
                    .run_rescue(RunRescueParams {
                        limit: 10,
                        orphaned_node: None,
                        now: Some(late),
                    })
                    .await
                    .unwrap()
            }
        };
        let heartbeat = {
            let (store, c) = (store.clone(), c.clone());
            async move { super::heartbeat(&store, &c, SignedDuration::from_secs(30), late).await }
        };
        let finish = {
            let store = store.clone();
            let c = c.clone();
            async move { finish(&store, &c, RunNext::Finish(RunState::Succeeded), late).await }
        };
        // Vary which is spawned first.
        let (report, beat, finished) = match round % 3 {
            0 => {
                let r = tokio::spawn(rescue);
                let h = tokio::spawn(heartbeat);
                let f = tokio::spawn(finish);
                (r.await.unwrap(), h.await.unwrap(), f.await.unwrap())
            }
            1 => {
                let h = tokio::spawn(heartbeat);
                let r = tokio::spawn(rescue);
                let f = tokio::spawn(finish);
                (r.await.unwrap(), h.await.unwrap(), f.await.unwrap())
            }
            _ => {
                let f = tokio::spawn(finish);
                let h = tokio::spawn(heartbeat);
                let r = tokio::spawn(rescue);
                (r.await.unwrap(), h.await.unwrap(), f.await.unwrap())
            }
        };
        let ctx = format!("round {round} ({:?})", c.run.execution);
        let id = c.run.id;
        let rescued = report.requeued.contains(&id) || report.lost.contains(&id);
        assert!(
            report.requeued.iter().chain(&report.lost).all(|r| *r == id),
            "{ctx}: nothing else to rescue: {report:?}"
        );
        assert!(
            rescued != finished,
            "{ctx}: exactly one of rescue and finish takes the run: rescued {rescued}, \
             finished {finished}, heartbeat {beat:?}"
        );
        assert_eq!(beat.run_id, id);
        if beat.held {
            assert!(
                finished && !rescued,
                "{ctx}: a lease renewed is not rescued"
            );
        }
        if rescued {
            assert!(!beat.held, "{ctx}: a rescued lease is lost");
        }
        let stored = store.run_get(RunGetParams { id }).await.unwrap().unwrap();
        let attempts = store
            .attempt_list(AttemptListParams { run_id: id })
            .await
            .unwrap();
        let statuses: Vec<(u32, &str)> = attempts
            .iter()
            .map(|a| (a.attempt, a.status.as_str()))
            .collect();
        if rescued {
            let (state, listed) = match c.run.execution {
                ExecutionMode::AtLeastOnce => (RunState::Queued, &report.requeued),
                ExecutionMode::AtMostOnce => (RunState::Lost, &report.lost),
            };
            assert_eq!(listed, &[id], "{ctx}");
            assert_eq!(stored.state, state, "{ctx}");
            assert_eq!(statuses, [(1, "lost")], "{ctx}: one lost attempt");
        } else {
            assert_eq!(stored.state, RunState::Succeeded, "{ctx}");
            assert_eq!(
                statuses,
                [(1, "succeeded")],
                "{ctx}: the finished attempt only"
            );
        }
        assert_eq!(stored.lease_expires_at, None, "{ctx}: no lease left behind");
        // Decided once: a second rescue finds nothing, a late heartbeat holds nothing.
        let again = store
            .run_rescue(RunRescueParams {
                limit: 10,
                orphaned_node: None,
                now: Some(late + SignedDuration::from_mins(5)),
            })
            .await
            .unwrap();
        assert_eq!(again, RescueReport::default(), "{ctx}");
        let hb = store
            .run_heartbeat(RunHeartbeatParams {
                leases: vec![(id, c.lease_token.clone())],
                lease: SignedDuration::from_secs(30),
                now: Some(late),
            })
            .await
            .unwrap();
        assert!(!hb[0].held, "{ctx}");
        if stored.state == RunState::Queued {
            // Out of the next round's way.
            store
                .run_cancel(RunCancelParams {
                    run_id: id,
                    actor: "test".into(),
                    now: Some(late),
                })
                .await
                .unwrap();
        }
        let slot = if rescued {
            0
        } else if beat.held {
            1
        } else {
            2
        };
        seen[slot] += 1;
    }
    eprintln!("run_rescue_vs_heartbeat: [rescued, heartbeat held, finished first] = {seen:?}");
}
