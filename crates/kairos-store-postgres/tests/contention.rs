//! Many writers at once on the same jobs and runs (firing with `replace`, claiming, heartbeats,
//! batched finishes, rescues, updates, pauses): every call either applies or reports a fence
//! or conflict; none fails with a deadlock or another internal error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{AttemptOutcome, AttemptStatus, JobId, RunOrigin, RunState};
use kairos_core::spec::ExecutionMode;
use kairos_store::*;
use kairos_testkit::postgres::temp_postgres;

const ROUNDS: usize = 60;

fn t0() -> Timestamp {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

fn insert(at: Timestamp, exclusive: bool) -> RunInsert {
    RunInsert {
        scheduled_for: at,
        run_at: at,
        origin: RunOrigin::Schedule,
        skip: None,
        exclusive,
        max_attempts: 2,
        execution: ExecutionMode::AtLeastOnce,
    }
}

/// Only fences and conflicts are expected; anything else fails the test.
fn expected<T>(r: StoreResult<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(StoreError::VersionConflict { .. } | StoreError::InvalidRunState { .. }) => None,
        Err(e) => panic!("unexpected store error: {e}"),
    }
}

async fn scheduler(store: Arc<dyn Store>, jobs: Vec<JobId>) {
    for round in 0..ROUNDS {
        let mut fires = Vec::new();
        for (k, id) in jobs.iter().enumerate() {
            let job = store
                .job_get_by_id(JobGetByIdParams { id: *id })
                .await
                .unwrap()
                .unwrap();
            let Some(at) = job.next_fire_at else { continue };
            let next = at + SignedDuration::from_secs(1);
            fires.push(JobFireParams {
                job_id: *id,
                expected_next_fire_at: at,
                runs: (0..3)
                    .map(|i| insert(at + SignedDuration::from_millis(i), k == 1))
                    .collect(),
                cancel_active: round % 4 == 3,
                max_active: None,
                next_fire_at: Some(next),
                now: Some(at),
            });
        }
        // Reversed every other round: the store orders the locks itself.
        if round % 2 == 1 {
            fires.reverse();
        }
        expected(store.job_fire_many(&fires).await);
        tokio::task::yield_now().await;
    }
}

async fn worker(store: Arc<dyn Store>, n: usize) {
    let now = t0() + SignedDuration::from_hours(1);
    for round in 0..ROUNDS {
        let claimed = store
            .run_claim(RunClaimParams {
                node: format!("w{n}"),
                limit: 4,
                lease: SignedDuration::from_secs(30),
                ahead: SignedDuration::ZERO,
                now: Some(now),
            })
            .await
            .unwrap();
        let leases: Vec<_> = claimed
            .iter()
            .rev()
            .map(|c| (c.run.id, c.lease_token.clone()))
            .collect();
        store
            .run_heartbeat(RunHeartbeatParams {
                leases,
                lease: SignedDuration::from_secs(30),
                now: Some(now),
            })
            .await
            .unwrap();
        let finishes: Vec<_> = claimed
            .iter()
            .rev()
            .enumerate()
            .map(|(i, c)| RunFinishParams {
                run_id: c.run.id,
                lease_token: c.lease_token.clone(),
                attempt: c.run.attempt,
                node: format!("w{n}"),
                started_at: now,
                outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
                next: match (i + round) % 3 {
                    0 => RunNext::Retry { run_at: now },
                    1 => RunNext::Release,
                    _ => RunNext::Finish(RunState::Succeeded),
                },
                now: Some(now),
            })
            .collect();
        store.run_finish_many(&finishes).await.unwrap();
    }
}

async fn meddler(store: Arc<dyn Store>, names: Vec<String>) {
    let later = t0() + SignedDuration::from_hours(2);
    for round in 0..ROUNDS {
        let name = &names[round % names.len()];
        let job = store
            .job_get(JobGetParams {
                namespace: "default".into(),
                name: name.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        match round % 3 {
            0 => {
                let mut spec = job.spec.clone();
                spec.description = Some(format!("round {round}"));
                expected(
                    store
                        .job_update(JobUpdateParams {
                            namespace: "default".into(),
                            name: name.clone(),
                            expected_version: job.version,
                            spec,
                            next_fire_at: NextFire::Set(job.next_fire_at),
                            actor: "test".into(),
                            now: Some(t0()),
                        })
                        .await,
                );
            }
            1 => {
                expected(
                    store
                        .job_set_paused(JobSetPausedParams {
                            namespace: "default".into(),
                            name: name.clone(),
                            paused: !job.spec.paused,
                            next_fire_at: job.next_fire_at,
                            actor: "test".into(),
                            now: Some(t0()),
                        })
                        .await,
                );
            }
            _ => {
                store
                    .run_rescue(RunRescueParams {
                        limit: 20,
                        orphaned_node: None,
                        now: Some(later),
                    })
                    .await
                    .unwrap();
                let runs = store
                    .run_list(RunListParams {
                        job_id: Some(job.id),
                        limit: 3,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                for run in runs {
                    let cancelled = store
                        .run_cancel(RunCancelParams {
                            run_id: run.id,
                            actor: "test".into(),
                            now: Some(t0()),
                        })
                        .await;
                    expected(cancelled);
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Jobs created, fired and deleted while workers hold their runs.
async fn churn(store: Arc<dyn Store>) {
    for i in 0..ROUNDS / 3 {
        let name = format!("d{i}");
        let job = store
            .job_create(JobCreateParams {
                spec: kairos_store::conformance::spec(&name),
                next_fire_at: Some(t0()),
                actor: "test".into(),
                now: Some(t0()),
            })
            .await
            .unwrap();
        store
            .job_fire(JobFireParams {
                job_id: job.id,
                expected_next_fire_at: t0(),
                runs: (0..5)
                    .map(|i| insert(t0() + SignedDuration::from_millis(i), false))
                    .collect(),
                cancel_active: false,
                max_active: None,
                next_fire_at: None,
                now: Some(t0()),
            })
            .await
            .unwrap();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        store
            .job_delete(JobDeleteParams {
                namespace: "default".into(),
                name,
                expected_version: None,
                actor: "test".into(),
                now: Some(t0()),
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_deadlock() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    let names = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let mut jobs = Vec::new();
    for name in &names {
        let job = store
            .job_create(JobCreateParams {
                spec: kairos_store::conformance::spec(name),
                next_fire_at: Some(t0()),
                actor: "test".into(),
                now: Some(t0()),
            })
            .await
            .unwrap();
        jobs.push(job.id);
    }
    let mut tasks = vec![
        tokio::spawn(scheduler(store.clone(), jobs.clone())),
        tokio::spawn(scheduler(
            store.clone(),
            jobs.iter().rev().copied().collect(),
        )),
        tokio::spawn(meddler(store.clone(), names.clone())),
        tokio::spawn(churn(store.clone())),
    ];
    for n in 0..4 {
        tasks.push(tokio::spawn(worker(store.clone(), n)));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // The last job goes with all its runs, whatever state they are in.
    store
        .job_delete(JobDeleteParams {
            namespace: "default".into(),
            name: "c".into(),
            expected_version: None,
            actor: "test".into(),
            now: Some(t0()),
        })
        .await
        .unwrap();
}

/// The fire's unique check on a due time that has its run already waits for whoever changed
/// that run; a heartbeat that changed it and then waits for a run the fire holds must not close
/// a circle. Run X (due time repeated by the fire) is changed and held by another transaction;
/// the fire (with `replace`, which also ends run Y) must lock X before Y, so that the other
/// transaction can still take Y and finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_due_time_does_not_deadlock_with_a_heartbeat() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    let job = store
        .job_create(JobCreateParams {
            spec: kairos_store::conformance::spec("repeat"),
            next_fire_at: Some(t0()),
            actor: "test".into(),
            now: Some(t0()),
        })
        .await
        .unwrap();
    let second = t0() + SignedDuration::from_secs(1);
    let first = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: t0(),
            runs: vec![
                insert(t0(), false),
                insert(t0() + SignedDuration::from_millis(1), false),
            ],
            cancel_active: false,
            max_active: None,
            next_fire_at: Some(second),
            now: Some(t0()),
        })
        .await
        .unwrap();
    let [(x, _), (y, _)] = first.inserted[..] else {
        panic!("two runs: {:?}", first.inserted);
    };
    assert!(x < y);
    let claimed = store
        .run_claim(RunClaimParams {
            node: "w".into(),
            limit: 2,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::ZERO,
            now: Some(second),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);

    let url = pg.schema.config().url;
    let (mut other, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (watch, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let runs = format!("{}.runs", pg.schema.name);
    let touch = format!("UPDATE {runs} SET lease_expires_at = lease_expires_at WHERE id = $1");
    let tx = other.transaction().await.unwrap();
    tx.execute(&touch, &[&x]).await.unwrap();

    let fire = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .job_fire(JobFireParams {
                    job_id: job.id,
                    expected_next_fire_at: second,
                    runs: vec![
                        insert(t0(), false),
                        insert(t0() + SignedDuration::from_millis(5), false),
                    ],
                    cancel_active: true,
                    max_active: None,
                    next_fire_at: Some(second + SignedDuration::from_secs(1)),
                    now: Some(second),
                })
                .await
        }
    });
    // Until the fire waits for the other transaction.
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE application_name = $1 AND wait_event_type = 'Lock'";
    let mut polls = 0;
    while watch
        .query_one(waiting, &[&pg.schema.name])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        polls += 1;
        assert!(polls < 1000, "the fire never waited for the held run");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The other transaction goes on to the second run: not held by the fire yet.
    tx.execute(&touch, &[&y]).await.unwrap();
    tx.commit().await.unwrap();

    let fired = fire.await.unwrap().expect("the fire waits, then applies");
    assert!(fired.applied);
    assert_eq!(
        fired.inserted.len(),
        1,
        "the repeated due time keeps its run"
    );
    let y_run = store
        .run_get(RunGetParams { id: y })
        .await
        .unwrap()
        .unwrap();
    assert!(
        y_run.cancel_requested,
        "replace asks the running run to stop"
    );
}
