//! Backfills: runs held as `scheduled` for the due times that have none, released to the queue
//! a few at a time, fenced by the job's count of queued and running runs.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::auth::AuditAction;
use kairos_core::run::{RunOrigin, RunState};
use kairos_core::spec::ExecutionMode;

use super::{T0, claim, create, insert, t};
use crate::*;

fn backfill(job_id: i64, due_times: Vec<Timestamp>, dry_run: bool) -> RunBackfillParams {
    RunBackfillParams {
        expected_version: None,
        job_id,
        due_times,
        max_attempts: 2,
        execution: ExecutionMode::AtLeastOnce,
        dry_run,
        actor: "alice".into(),
        now: Some(t(T0)),
    }
}

fn minutes(n: i64) -> Vec<Timestamp> {
    (0..n)
        .map(|i| t("2026-02-01T00:00:00Z") + SignedDuration::from_mins(i))
        .collect()
}

async fn runs_in(store: &Arc<dyn Store>, state: RunState) -> Vec<Run> {
    store
        .run_list(RunListParams {
            state: Some(state),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
}

pub async fn run_backfill_holds_runs_for_due_times_without_one(store: Arc<dyn Store>) {
    let job = create(&store, "j", None).await;
    let times = minutes(3);
    store
        .run_insert_many(RunInsertManyParams {
            job_id: job.id,
            runs: vec![insert(times[1])],
            now: Some(t(T0)),
        })
        .await
        .unwrap();

    // A dry run tells, and writes nothing.
    let dry = store
        .run_backfill(backfill(job.id, times.clone(), true))
        .await
        .unwrap();
    assert_eq!(
        dry.created,
        [times[0], times[2]].map(|at| BackfillRun {
            scheduled_for: at,
            run_id: None
        })
    );
    assert_eq!(dry.existing, [times[1]]);
    assert!(runs_in(&store, RunState::Scheduled).await.is_empty());

    // Given in any order, with a repeat: each due time once, earliest first.
    let mut given = times.clone();
    given.reverse();
    given.push(times[0]);
    let done = store
        .run_backfill(backfill(job.id, given, false))
        .await
        .unwrap();
    assert_eq!(
        done.created
            .iter()
            .map(|r| r.scheduled_for)
            .collect::<Vec<_>>(),
        [times[0], times[2]]
    );
    assert!(done.created.iter().all(|r| r.run_id.is_some()));
    assert_eq!(done.existing, [times[1]]);
    let held = runs_in(&store, RunState::Scheduled).await;
    assert_eq!(held.len(), 2);
    assert!(
        held.iter()
            .all(|r| r.origin == RunOrigin::Backfill && r.max_attempts == 2)
    );

    // Held runs are not claimed; the queued one is.
    let claimed = claim(&store, "n1", 10, t(T0)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].run.scheduled_for, times[1]);
    assert_eq!(
        store.run_held().await.unwrap(),
        [HeldRuns {
            job_id: job.id,
            held: 2,
            active: 1
        }]
    );

    // Again: nothing new, no audit entry.
    let again = store
        .run_backfill(backfill(job.id, times.clone(), false))
        .await
        .unwrap();
    assert!(again.created.is_empty());
    assert_eq!(again.existing, times);
    let audit = store
        .audit_list(AuditListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let backfills: Vec<_> = audit
        .iter()
        .filter(|e| e.action == AuditAction::JobBackfill)
        .collect();
    assert_eq!(backfills.len(), 1, "audited once, when runs were created");
    assert_eq!(backfills[0].actor, "alice");

    // A deleted job.
    let gone = store
        .run_backfill(backfill(job.id + 1000, times.clone(), false))
        .await;
    assert!(matches!(gone, Err(StoreError::JobGone(_))), "{gone:?}");

    // Decided on another version of the job: nothing written.
    let later = minutes(8)[6..].to_vec();
    let stale = store
        .run_backfill(RunBackfillParams {
            expected_version: Some(job.version - 1),
            ..backfill(job.id, later.clone(), false)
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::VersionConflict { expected, actual, .. })
            if expected == job.version - 1 && actual == job.version),
        "{stale:?}"
    );
    let current = store
        .run_backfill(RunBackfillParams {
            expected_version: Some(job.version),
            ..backfill(job.id, later.clone(), false)
        })
        .await
        .unwrap();
    assert_eq!(current.created.len(), later.len());
}

pub async fn run_release_is_fenced_by_the_active_count(store: Arc<dyn Store>) {
    let job = create(&store, "j", None).await;
    let times = minutes(4);
    store
        .run_backfill(backfill(job.id, times.clone(), false))
        .await
        .unwrap();
    let now = t(T0);
    let release = |count: u32, expected_active: u64| RunReleaseParams {
        job_id: job.id,
        count,
        expected_active,
        now: Some(now),
    };
    let first = store.run_release(release(1, 0)).await.unwrap();
    assert_eq!(first.len(), 1);
    let queued = runs_in(&store, RunState::Queued).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].scheduled_for, times[0], "earliest due time first");
    assert_eq!(queued[0].run_at, now, "queued to run now");

    // The count moved (one queued now): a release decided on 0 changes nothing.
    assert!(store.run_release(release(1, 0)).await.unwrap().is_empty());
    let two = store.run_release(release(2, 1)).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(
        store.run_held().await.unwrap(),
        [HeldRuns {
            job_id: job.id,
            held: 1,
            active: 3
        }]
    );
    // More than are held: only those.
    assert_eq!(store.run_release(release(5, 3)).await.unwrap().len(), 1);
    assert!(store.run_held().await.unwrap().is_empty());
    assert!(store.run_release(release(0, 4)).await.unwrap().is_empty());
}

/// Two releasers decide on the same count at once: only one of them releases (whichever
/// commits first moves the count the other is fenced on).
pub async fn run_release_concurrent_never_exceeds_the_decision(store: Arc<dyn Store>) {
    let job = create(&store, "j", None).await;
    for round in 0..15 {
        let times: Vec<Timestamp> = minutes(2)
            .into_iter()
            .map(|at| at + SignedDuration::from_hours(round))
            .collect();
        store
            .run_backfill(backfill(job.id, times, false))
            .await
            .unwrap();
        let release = || {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .run_release(RunReleaseParams {
                        job_id: job.id,
                        count: 1,
                        expected_active: 0,
                        now: Some(t(T0)),
                    })
                    .await
                    .unwrap()
            })
        };
        let (a, b) = (release(), release());
        let released = a.await.unwrap().len() + b.await.unwrap().len();
        assert_eq!(released, 1, "round {round}");
        // Finish the round: cancel what is queued or held.
        for run in runs_in(&store, RunState::Queued)
            .await
            .into_iter()
            .chain(runs_in(&store, RunState::Scheduled).await)
        {
            store
                .run_cancel(RunCancelParams {
                    actor: "test".into(),
                    run_id: run.id,
                    now: Some(t(T0)),
                })
                .await
                .unwrap();
        }
    }
}
