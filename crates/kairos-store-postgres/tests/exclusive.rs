//! Claims on PostgreSQL. The exclusive rule (`overlap: queue`) across claimers on different
//! connections: never two exclusive runs of one job running at once, while runs are inserted
//! ahead of waiting ones. And under a backlog, where claims walk the queue from the last full
//! batch's position: a run behind it is not left waiting for the backlog to end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunOrigin, RunState};
use kairos_core::spec::ExecutionMode;
use kairos_store::*;
use kairos_testkit::postgres::temp_postgres;

const RUNS: i64 = 150;
const CLAIMERS: usize = 6;

fn exclusive(at: Timestamp) -> RunInsert {
    RunInsert {
        scheduled_for: at,
        run_at: at,
        origin: RunOrigin::Manual,
        skip: None,
        exclusive: true,
        max_attempts: 1,
        execution: ExecutionMode::AtLeastOnce,
        event: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exclusive_runs_never_overlap_across_concurrent_claimers() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    let t0: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    let later = t0 + SignedDuration::from_hours(1);
    let job = store
        .job_create(JobCreateParams {
            spec: kairos_store::conformance::spec("serial"),
            next_fire_at: None,
            actor: "test".into(),
            now: Some(t0),
            calendars: vec![],
        })
        .await
        .unwrap();
    // Each new run is due before the ones already waiting: it becomes the job's next
    // exclusive run, which a claimer whose snapshot predates it does not know about.
    let inserting = Arc::new(AtomicBool::new(true));
    let inserter = {
        let (store, inserting) = (store.clone(), inserting.clone());
        tokio::spawn(async move {
            for i in 0..RUNS {
                let at = t0 - SignedDuration::from_millis(i);
                store
                    .run_insert(RunInsertParams {
                        expected_version: None,
                        job_id: job.id,
                        run: exclusive(at),
                        params: None,
                        actor: "test".into(),
                        now: Some(t0),
                    })
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
            inserting.store(false, Ordering::SeqCst);
        })
    };
    let overlaps = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut claimers = Vec::new();
    for n in 0..CLAIMERS {
        let (store, inserting) = (store.clone(), inserting.clone());
        let (overlaps, finished) = (overlaps.clone(), finished.clone());
        claimers.push(tokio::spawn(async move {
            // Bounded: every round either finishes a run or finds none claimable.
            for _ in 0..20 * RUNS {
                let claimed = store
                    .run_claim(RunClaimParams {
                        node: format!("n{n}"),
                        limit: 3,
                        lease: SignedDuration::from_secs(60),
                        ahead: SignedDuration::ZERO,
                        now: Some(later),
                    })
                    .await
                    .unwrap();
                if claimed.is_empty() && !inserting.load(Ordering::SeqCst) {
                    let active = store
                        .run_active_count(RunActiveCountParams { job_id: job.id })
                        .await
                        .unwrap();
                    if active == 0 {
                        return;
                    }
                }
                assert!(claimed.len() <= 1, "one claim took {} runs", claimed.len());
                for c in claimed {
                    let running = store
                        .run_list(RunListParams {
                            job_id: Some(job.id),
                            state: Some(RunState::Running),
                            limit: 10,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    if running.len() > 1 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    let done = store
                        .run_finish(RunFinishParams {
                            run_id: c.run.id,
                            parent_id: None,
                            lease_token: c.lease_token.clone(),
                            attempt: c.run.attempt,
                            node: format!("n{n}"),
                            started_at: later,
                            outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
                            next: RunNext::Finish(RunState::Succeeded),
                            now: Some(later),
                        })
                        .await
                        .unwrap();
                    assert!(done, "the lease held");
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            }
            panic!("claimer n{n} did not see the queue drain");
        }));
    }
    inserter.await.unwrap();
    for c in claimers {
        c.await.unwrap();
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "exclusive runs overlapped"
    );
    assert_eq!(finished.load(Ordering::SeqCst), RUNS as usize);
}

/// Under a backlog every claim is full, and each moves the position it started from on; the
/// walk from a position must still give way to a claim from the head after a while, or a run
/// queued behind the position (here a released one) would wait until the backlog ends.
#[tokio::test]
async fn a_run_behind_the_walk_is_claimed_while_the_backlog_lasts() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    let t0: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    let now = t0 + SignedDuration::from_hours(1);
    let job = store
        .job_create(JobCreateParams {
            spec: kairos_store::conformance::spec("backlog"),
            next_fire_at: None,
            actor: "test".into(),
            now: Some(t0),
            calendars: vec![],
        })
        .await
        .unwrap();
    const BACKLOG: i64 = 3_000;
    store
        .run_insert_many(RunInsertManyParams {
            job_id: job.id,
            runs: (0..BACKLOG)
                .map(|i| RunInsert {
                    exclusive: false,
                    ..exclusive(t0 + SignedDuration::from_millis(i))
                })
                .collect(),
            now: Some(t0),
        })
        .await
        .unwrap();
    let claim = |limit| {
        let store = store.clone();
        async move {
            store
                .run_claim(RunClaimParams {
                    node: "n1".into(),
                    limit,
                    lease: SignedDuration::from_secs(60),
                    ahead: SignedDuration::ZERO,
                    now: Some(now),
                })
                .await
                .unwrap()
        }
    };
    let first = claim(2).await;
    assert_eq!(first.len(), 2);
    let released = &first[0];
    let given_back = store
        .run_finish(RunFinishParams {
            run_id: released.run.id,
            parent_id: None,
            lease_token: released.lease_token.clone(),
            attempt: released.run.attempt,
            node: "n1".into(),
            started_at: now,
            outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
            next: RunNext::Release,
            now: Some(now),
        })
        .await
        .unwrap();
    assert!(given_back);
    let mut claimed = 2;
    loop {
        let batch = claim(2).await;
        assert!(
            !batch.is_empty(),
            "the backlog ran out before the released run was claimed"
        );
        claimed += batch.len();
        if batch.iter().any(|c| c.run.id == released.run.id) {
            break;
        }
    }
    let left = BACKLOG as usize + 1 - claimed;
    assert!(
        left > BACKLOG as usize / 2,
        "the released run was claimed only with {left} runs left of {BACKLOG}"
    );
}
