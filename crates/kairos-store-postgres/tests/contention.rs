//! Many writers at once on the same jobs and runs (firing with `replace`, claiming, heartbeats,
//! batched finishes, rescues, updates, pauses, workflow runs and their steps): every call either
//! applies or reports a fence or conflict; none fails with a deadlock or another internal error.
//! Steps of one workflow run that end at once on two nodes never both miss the other; actions on
//! a workflow run's steps that race each other or a claim apply once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{AttemptOutcome, AttemptStatus, JobId, RunId, RunOrigin, RunState};
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
        event: None,
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
                expected_version: None,
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
                parent_id: None,
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
                            calendars: vec![],
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
                            expected_version: None,
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
                calendars: vec![],
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
                expected_version: None,
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
                force: false,
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
                calendars: vec![],
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
            force: false,
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
            calendars: vec![],
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
            expected_version: None,
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
                    expected_version: None,
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

/// A workflow job: `steps` are `(name, depends_on)`, each a shell task.
fn flow(name: &str, steps: &[(&str, &[&str])]) -> kairos_core::spec::JobSpec {
    let steps: Vec<String> = steps
        .iter()
        .map(|(step, deps)| {
            let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
            format!(
                r#"{{"name":"{step}","depends_on":[{}],"task":{{"kind":"shell","script":"true"}}}}"#,
                deps.join(",")
            )
        })
        .collect();
    kairos_core::spec::JobSpec::from_json(&format!(
        r#"{{"name":"{name}","triggers":[{{"interval":"1m"}}],"steps":[{}]}}"#,
        steps.join(",")
    ))
    .unwrap()
}

fn step_finish(c: &ClaimedRun, node: &str, next: RunNext, now: Timestamp) -> RunFinishParams {
    RunFinishParams {
        run_id: c.run.id,
        parent_id: c.run.parent_id,
        lease_token: c.lease_token.clone(),
        attempt: c.run.attempt,
        node: node.into(),
        started_at: now,
        outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
        next,
        now: Some(now),
    }
}

async fn claim_one(store: &dyn Store, node: &str, now: Timestamp) -> ClaimedRun {
    let mut claimed = store
        .run_claim(RunClaimParams {
            node: node.into(),
            limit: 1,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::ZERO,
            now: Some(now),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "one queued run to claim");
    claimed.remove(0)
}

/// Two upstream steps of a join end at once on two nodes (two stores, two pools): each finish
/// locks the workflow run before it reads the steps, so the second waits for the first and
/// sees its end. Without that lock each would read the other step still running and neither
/// would queue the join (and a finish that locked the steps first could deadlock with the
/// other).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_ending_both_upstream_steps_queue_the_join_once() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let one: Arc<dyn Store> = pg.store.clone();
    let two: Arc<dyn Store> = Arc::new(
        kairos_store_postgres::PostgresStore::connect(pg.schema.config_as("two"))
            .await
            .unwrap(),
    );
    let job = one
        .job_create(JobCreateParams {
            spec: flow("join", &[("a", &[]), ("b", &[]), ("c", &["a", "b"])]),
            next_fire_at: Some(t0()),
            actor: "test".into(),
            now: Some(t0()),
            calendars: vec![],
        })
        .await
        .unwrap();
    for round in 0..20 {
        let at = t0() + SignedDuration::from_secs(round);
        let fired = one
            .job_fire(JobFireParams {
                job_id: job.id,
                expected_next_fire_at: at,
                runs: vec![insert(at, false)],
                cancel_active: false,
                max_active: None,
                next_fire_at: Some(at + SignedDuration::from_secs(1)),
                now: Some(at),
                expected_version: None,
            })
            .await
            .unwrap();
        assert!(fired.applied, "round {round}");
        let flow_run = claim_one(&*one, "one", at).await;
        assert!(
            one.workflow_start(WorkflowStartParams {
                run_id: flow_run.run.id,
                lease_token: flow_run.lease_token.clone(),
                spec: flow_run.job.spec.clone(),
                now: Some(at),
            })
            .await
            .unwrap()
        );
        // a on one node, b on the other.
        let a = claim_one(&*one, "one", at).await;
        let b = claim_one(&*two, "two", at).await;
        assert_eq!(a.run.step.as_deref(), Some("a"));
        assert_eq!(b.run.step.as_deref(), Some("b"));
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let ends = [(one.clone(), a, "one"), (two.clone(), b, "two")].map(|(store, c, node)| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let finish = step_finish(&c, node, RunNext::Finish(RunState::Succeeded), at);
                store.run_finish(finish).await
            })
        });
        for end in ends {
            assert!(
                end.await.unwrap().expect("no deadlock, no error"),
                "round {round}: the lease held"
            );
        }
        let steps = one
            .run_steps(RunStepsParams {
                run_id: flow_run.run.id,
            })
            .await
            .unwrap();
        let states: Vec<_> = steps
            .iter()
            .map(|s| (s.step.clone().unwrap(), s.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("a".to_owned(), RunState::Succeeded),
                ("b".to_owned(), RunState::Succeeded),
                ("c".to_owned(), RunState::Queued),
            ],
            "round {round}: the join is queued"
        );
        // Once: exactly one run to claim, the join; its end ends the workflow run.
        let c = claim_one(&*two, "two", at).await;
        assert_eq!(c.run.step.as_deref(), Some("c"));
        let none = one
            .run_claim(RunClaimParams {
                node: "one".into(),
                limit: 10,
                lease: SignedDuration::from_secs(30),
                ahead: SignedDuration::ZERO,
                now: Some(at),
            })
            .await
            .unwrap();
        assert!(none.is_empty(), "round {round}: {none:?}");
        let finish = step_finish(&c, "two", RunNext::Finish(RunState::Succeeded), at);
        assert!(two.run_finish(finish).await.unwrap());
        let ended = one
            .run_get(RunGetParams {
                id: flow_run.run.id,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.state, RunState::Succeeded, "round {round}");
    }
}

/// A worker that runs workflows: starts the workflow runs it claims, heartbeats, and finishes
/// plain runs and steps in mixed batches (each step with its workflow run).
async fn flow_worker(store: Arc<dyn Store>, n: usize) {
    let now = t0() + SignedDuration::from_hours(1);
    let node = format!("f{n}");
    for round in 0..ROUNDS {
        let claimed = store
            .run_claim(RunClaimParams {
                node: node.clone(),
                limit: 6,
                lease: SignedDuration::from_secs(30),
                ahead: SignedDuration::ZERO,
                now: Some(now),
            })
            .await
            .unwrap();
        let (flows, work): (Vec<_>, Vec<_>) = claimed
            .into_iter()
            .partition(|c| c.run.parent_id.is_none() && !c.job.spec.steps.is_empty());
        for c in &flows {
            store
                .workflow_start(WorkflowStartParams {
                    run_id: c.run.id,
                    lease_token: c.lease_token.clone(),
                    spec: c.job.spec.clone(),
                    now: Some(now),
                })
                .await
                .unwrap();
        }
        let leases: Vec<_> = work
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
        let finishes: Vec<_> = work
            .iter()
            .rev()
            .enumerate()
            .map(|(i, c)| {
                let next = match (i + round + n) % 5 {
                    0 => RunNext::Retry { run_at: now },
                    1 => RunNext::Release,
                    2 => RunNext::Finish(RunState::Failed),
                    _ => RunNext::Finish(RunState::Succeeded),
                };
                step_finish(c, &node, next, now)
            })
            .collect();
        store.run_finish_many(&finishes).await.unwrap();
    }
}

/// Cancels workflow runs and steps, and rescues.
async fn flow_meddler(store: Arc<dyn Store>, jobs: Vec<JobId>) {
    let later = t0() + SignedDuration::from_hours(2);
    for round in 0..ROUNDS {
        if round % 4 == 0 {
            store
                .run_rescue(RunRescueParams {
                    limit: 20,
                    orphaned_node: None,
                    now: Some(later),
                })
                .await
                .unwrap();
        }
        let runs = store
            .run_list(RunListParams {
                job_id: Some(jobs[round % jobs.len()]),
                limit: 4,
                ..Default::default()
            })
            .await
            .unwrap();
        for run in runs {
            let target = if round % 3 == 0 {
                run.id
            } else {
                let steps = store
                    .run_steps(RunStepsParams { run_id: run.id })
                    .await
                    .unwrap();
                match steps.get(round % 4) {
                    Some(step) => step.id,
                    None => continue,
                }
            };
            expected(
                store
                    .run_cancel(RunCancelParams {
                        run_id: target,
                        actor: "test".into(),
                        now: Some(t0()),
                    })
                    .await,
            );
        }
        tokio::task::yield_now().await;
    }
}

/// Acts on the steps of workflow runs by hand (skip, mark succeeded, rerun, rerun the failed
/// ones), reopening ended runs: each action applies or is refused (`WorkflowConflict`).
async fn flow_controller(store: Arc<dyn Store>, jobs: Vec<JobId>) {
    const STEPS: [&str; 5] = ["a", "b", "c", "d", "e"];
    for round in 0..ROUNDS {
        let runs = store
            .run_list(RunListParams {
                job_id: Some(jobs[round % jobs.len()]),
                // Started ones (a run not started yet is refused), running or ended.
                state: Some(
                    [
                        RunState::Running,
                        RunState::Failed,
                        RunState::Succeeded,
                        RunState::Cancelled,
                    ][round % 4],
                ),
                limit: 4,
                ..Default::default()
            })
            .await
            .unwrap();
        for (i, run) in runs.iter().enumerate() {
            let step = STEPS[(round + i) % STEPS.len()].to_owned();
            let action = match (round + i) % 4 {
                0 => StepControl::RerunFailed,
                1 => StepControl::Skip(step),
                2 => StepControl::MarkSucceeded(step),
                _ => StepControl::Rerun(step),
            };
            let acted = store
                .workflow_control(WorkflowControlParams {
                    run_id: run.id,
                    action,
                    actor: "test".into(),
                    now: Some(t0()),
                })
                .await;
            match acted {
                Ok(_) | Err(StoreError::WorkflowConflict { .. }) => {}
                Err(e) => panic!("unexpected store error: {e}"),
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Workflows under every kind of writer at once (fires with `replace`, starts, claims,
/// heartbeats, batches that finish plain runs and steps of several workflow runs, cancels of
/// workflow runs and of steps, actions on steps by hand, rescues, a delete): no deadlock, no other error; and no
/// workflow run is left running with nothing left to run (a settle missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflow_writers_never_deadlock() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    let other: Arc<dyn Store> = Arc::new(
        kairos_store_postgres::PostgresStore::connect(pg.schema.config_as("other"))
            .await
            .unwrap(),
    );
    let diamond: &[(&str, &[&str])] = &[
        ("a", &[]),
        ("b", &["a"]),
        ("c", &["a"]),
        ("d", &["b", "c"]),
        ("e", &[]),
    ];
    let mut jobs = Vec::new();
    for spec in [
        flow("w1", diamond),
        kairos_store::conformance::spec("plain"),
        flow("w2", diamond),
    ] {
        let job = store
            .job_create(JobCreateParams {
                spec,
                next_fire_at: Some(t0()),
                actor: "test".into(),
                now: Some(t0()),
                calendars: vec![],
            })
            .await
            .unwrap();
        jobs.push(job.id);
    }
    let mut tasks = vec![
        tokio::spawn(scheduler(store.clone(), jobs.clone())),
        tokio::spawn(scheduler(
            other.clone(),
            jobs.iter().rev().copied().collect(),
        )),
        tokio::spawn(flow_meddler(store.clone(), jobs.clone())),
        tokio::spawn(flow_meddler(other.clone(), jobs.clone())),
        tokio::spawn(flow_controller(store.clone(), jobs.clone())),
        tokio::spawn(flow_controller(
            other.clone(),
            jobs.iter().rev().copied().collect(),
        )),
    ];
    for n in 0..4 {
        let store = if n % 2 == 0 { &store } else { &other };
        tasks.push(tokio::spawn(flow_worker(store.clone(), n)));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // A workflow run is running while (and only while) it has a step left to run: no settle
    // was missed, and none ended a workflow run under a step still waiting.
    for &job_id in &jobs {
        let runs = store
            .run_list(RunListParams {
                job_id: Some(job_id),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        for run in runs {
            let steps = store
                .run_steps(RunStepsParams { run_id: run.id })
                .await
                .unwrap();
            if steps.is_empty() {
                continue; // not a started workflow run
            }
            let left = steps.iter().any(|s| {
                matches!(
                    s.state,
                    RunState::Scheduled | RunState::Queued | RunState::Running
                )
            });
            assert_eq!(
                left,
                run.state == RunState::Running,
                "workflow run {} is {}: {steps:?}",
                run.id,
                run.state
            );
        }
    }
    // A workflow job goes with its runs and their steps, whatever state they are in.
    store
        .job_delete(JobDeleteParams {
            namespace: "default".into(),
            name: "w1".into(),
            expected_version: None,
            actor: "test".into(),
            now: Some(t0()),
            force: false,
        })
        .await
        .unwrap();
}

/// A batch that finishes a plain run R and a step S (of workflow run P) takes its locks in id
/// order, R < P < S, as a fire's `replace` of both jobs does: locking P first (before R) would
/// close a circle with a fire that holds R and waits for P. Run Q (R < Q < P) is held by
/// another transaction so that the fire stops between R and P; the batch starts then, and
/// must wait at R, holding nothing the fire needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_step_does_not_deadlock_with_a_replace() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    let mut jobs = Vec::new();
    for spec in [
        kairos_store::conformance::spec("plain"),
        flow("flow", &[("s", &[])]),
    ] {
        let job = store
            .job_create(JobCreateParams {
                spec,
                next_fire_at: Some(t0()),
                actor: "test".into(),
                now: Some(t0()),
                calendars: vec![],
            })
            .await
            .unwrap();
        jobs.push(job.id);
    }
    let next = t0() + SignedDuration::from_secs(1);
    let fire =
        |job_id: JobId, runs: Vec<RunInsert>, expected: Timestamp, cancel: bool| JobFireParams {
            job_id,
            expected_next_fire_at: expected,
            runs,
            cancel_active: cancel,
            max_active: None,
            next_fire_at: Some(expected + SignedDuration::from_secs(1)),
            now: Some(expected),
            expected_version: None,
        };
    // R (due now) and Q (not due for an hour), then P.
    let later = t0() + SignedDuration::from_hours(1);
    let plain = store
        .job_fire(fire(
            jobs[0],
            vec![
                insert(t0(), false),
                RunInsert {
                    run_at: later,
                    ..insert(later, false)
                },
            ],
            t0(),
            false,
        ))
        .await
        .unwrap();
    let [(r, _), (q, _)] = plain.inserted[..] else {
        panic!("two runs: {:?}", plain.inserted);
    };
    store
        .job_fire(fire(jobs[1], vec![insert(t0(), false)], t0(), false))
        .await
        .unwrap();
    let r_run = claim_one(&*store, "w", t0()).await;
    assert_eq!(r_run.run.id, r);
    let p_run = claim_one(&*store, "w", t0()).await;
    assert!(
        store
            .workflow_start(WorkflowStartParams {
                run_id: p_run.run.id,
                lease_token: p_run.lease_token.clone(),
                spec: p_run.job.spec.clone(),
                now: Some(t0()),
            })
            .await
            .unwrap()
    );
    let s_run = claim_one(&*store, "w", t0()).await;
    assert_eq!(s_run.run.parent_id, Some(p_run.run.id));
    assert!(r < q && q < p_run.run.id && p_run.run.id < s_run.run.id);

    let url = pg.schema.config().url;
    let (mut other, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (watch, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = other.transaction().await.unwrap();
    let touch = format!(
        "UPDATE {}.runs SET lease_expires_at = lease_expires_at WHERE id = $1",
        pg.schema.name
    );
    tx.execute(&touch, &[&q]).await.unwrap();
    let waiting = |n: i64| {
        let watch = &watch;
        let name = pg.schema.name.clone();
        async move {
            let sql = "SELECT count(*) FROM pg_stat_activity \
                       WHERE application_name = $1 AND wait_event_type = 'Lock'";
            let mut polls = 0;
            while watch
                .query_one(sql, &[&name])
                .await
                .unwrap()
                .get::<_, i64>(0)
                < n
            {
                polls += 1;
                assert!(polls < 1000, "never {n} waiting");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };

    // The fire locks R, then waits for Q.
    let replace = tokio::spawn({
        let store = store.clone();
        let fires = vec![
            fire(jobs[0], vec![insert(next, false)], next, true),
            fire(jobs[1], vec![insert(next, false)], next, true),
        ];
        async move { store.job_fire_many(&fires).await }
    });
    waiting(1).await;
    // The batch: R and S (with P).
    let batch = tokio::spawn({
        let store = store.clone();
        let finishes = vec![
            step_finish(&s_run, "w", RunNext::Finish(RunState::Succeeded), t0()),
            step_finish(&r_run, "w", RunNext::Finish(RunState::Succeeded), t0()),
        ];
        async move { store.run_finish_many(&finishes).await }
    });
    waiting(2).await;
    tx.commit().await.unwrap();

    let fired = replace.await.unwrap().expect("the fire applies");
    assert!(fired.iter().all(|f| f.applied));
    let held = batch.await.unwrap().expect("the batch applies");
    assert_eq!(held, vec![true, true]);
    // The replace asked P to stop; S's end then ended it.
    let p = store
        .run_get(RunGetParams { id: p_run.run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.state, RunState::Cancelled);
}

/// Fires, claims and starts one run of a workflow job (due at `at`, the job's next fire time);
/// returns the workflow run.
async fn started_flow(store: &dyn Store, job_id: JobId, at: Timestamp) -> Run {
    let fired = store
        .job_fire(JobFireParams {
            job_id,
            expected_next_fire_at: at,
            runs: vec![insert(at, false)],
            cancel_active: false,
            max_active: None,
            next_fire_at: Some(at + SignedDuration::from_secs(1)),
            now: Some(at),
            expected_version: None,
        })
        .await
        .unwrap();
    assert!(fired.applied);
    let flow_run = claim_one(store, "one", at).await;
    assert!(flow_run.run.parent_id.is_none());
    assert!(
        store
            .workflow_start(WorkflowStartParams {
                run_id: flow_run.run.id,
                lease_token: flow_run.lease_token.clone(),
                spec: flow_run.job.spec.clone(),
                now: Some(at),
            })
            .await
            .unwrap()
    );
    flow_run.run
}

/// Each step's name and state, in step order.
async fn step_states(store: &dyn Store, run_id: RunId) -> Vec<(String, RunState)> {
    store
        .run_steps(RunStepsParams { run_id })
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.step.unwrap(), s.state))
        .collect()
}

fn named(pairs: &[(&str, RunState)]) -> Vec<(String, RunState)> {
    pairs.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
}

async fn claim_all(store: &dyn Store, node: &str, now: Timestamp) -> Vec<ClaimedRun> {
    store
        .run_claim(RunClaimParams {
            node: node.into(),
            limit: 10,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::ZERO,
            now: Some(now),
        })
        .await
        .unwrap()
}

/// Claims the one queued step (it must be `step`) and ends it successfully.
async fn run_step(store: &dyn Store, step: &str, at: Timestamp) -> ClaimedRun {
    let c = claim_one(store, "one", at).await;
    assert_eq!(c.run.step.as_deref(), Some(step));
    let finish = step_finish(&c, "one", RunNext::Finish(RunState::Succeeded), at);
    assert!(store.run_finish(finish).await.unwrap());
    c
}

/// Two nodes (two stores, two pools) ask at once to run the failed steps of the same ended
/// workflow run again: each locks the workflow run, then its steps, before it reads them, so
/// the second waits for the first and finds nothing failed any more. Exactly one applies, the
/// failed step is queued once and claimed once, and nothing deadlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_rerunning_the_failed_steps_at_once_rerun_them_once() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let one: Arc<dyn Store> = pg.store.clone();
    let two: Arc<dyn Store> = Arc::new(
        kairos_store_postgres::PostgresStore::connect(pg.schema.config_as("two"))
            .await
            .unwrap(),
    );
    let job = one
        .job_create(JobCreateParams {
            spec: flow("rerun", &[("a", &[]), ("c", &["a"]), ("d", &["c"])]),
            next_fire_at: Some(t0()),
            actor: "test".into(),
            now: Some(t0()),
            calendars: vec![],
        })
        .await
        .unwrap();
    for round in 0..10 {
        let at = t0() + SignedDuration::from_secs(round);
        let run = started_flow(&*one, job.id, at).await;
        run_step(&*one, "a", at).await;
        let c = claim_one(&*one, "one", at).await;
        assert_eq!(c.run.step.as_deref(), Some("c"));
        let failed = RunFinishParams {
            outcome: AttemptOutcome::from_status(AttemptStatus::ExitCode { code: 1 }),
            ..step_finish(&c, "one", RunNext::Finish(RunState::Failed), at)
        };
        assert!(one.run_finish(failed).await.unwrap());
        use RunState::*;
        assert_eq!(
            step_states(&*one, run.id).await,
            named(&[("a", Succeeded), ("c", Failed), ("d", UpstreamFailed)]),
            "round {round}"
        );
        let ended = one
            .run_get(RunGetParams { id: run.id })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.state, Failed, "round {round}");

        let start = Arc::new(tokio::sync::Barrier::new(2));
        let reruns = [(one.clone(), "alice"), (two.clone(), "bob")].map(|(store, actor)| {
            let start = start.clone();
            let run_id = run.id;
            tokio::spawn(async move {
                start.wait().await;
                store
                    .workflow_control(WorkflowControlParams {
                        run_id,
                        action: StepControl::RerunFailed,
                        actor: actor.into(),
                        now: Some(at),
                    })
                    .await
            })
        });
        let mut applied = 0;
        for rerun in reruns {
            match rerun.await.unwrap() {
                Ok(reopened) => {
                    applied += 1;
                    assert_eq!(reopened.state, Running, "round {round}");
                    assert_eq!(reopened.finished_at, None, "round {round}");
                }
                // The second saw the first's result: nothing failed any more.
                Err(StoreError::WorkflowConflict { run_id, .. }) => assert_eq!(run_id, run.id),
                Err(e) => panic!("round {round}: unexpected store error: {e}"),
            }
        }
        assert_eq!(applied, 1, "round {round}: exactly one rerun applies");
        assert_eq!(
            step_states(&*one, run.id).await,
            named(&[("a", Succeeded), ("c", Queued), ("d", Scheduled)]),
            "round {round}"
        );
        // Queued once: one node claims it, the other finds nothing.
        let claims = [(one.clone(), "one"), (two.clone(), "two")]
            .map(|(store, node)| tokio::spawn(async move { claim_all(&*store, node, at).await }));
        let mut claimed = Vec::new();
        for claim in claims {
            claimed.extend(claim.await.unwrap());
        }
        assert_eq!(claimed.len(), 1, "round {round}: {claimed:?}");
        let c = claimed.remove(0);
        assert_eq!(c.run.step.as_deref(), Some("c"));
        assert_eq!((c.run.attempt, c.run.max_attempts), (2, 2), "round {round}");
        let finish = step_finish(&c, "one", RunNext::Finish(Succeeded), at);
        assert!(one.run_finish(finish).await.unwrap());
        run_step(&*two, "d", at).await;
        let ended = one
            .run_get(RunGetParams { id: run.id })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.state, Succeeded, "round {round}");
        assert!(
            claim_all(&*one, "one", at).await.is_empty(),
            "round {round}"
        );
    }
}

/// Skipping a queued step races its claim on another node: either the claim gets it (and the
/// skip is refused: the step is running) or the skip applies (and the claim gets nothing),
/// never both. Each round starts the race at a barrier; both outcomes are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skipping_a_queued_step_races_its_claim_one_wins() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let one: Arc<dyn Store> = pg.store.clone();
    let two: Arc<dyn Store> = Arc::new(
        kairos_store_postgres::PostgresStore::connect(pg.schema.config_as("two"))
            .await
            .unwrap(),
    );
    let job = one
        .job_create(JobCreateParams {
            spec: flow("skip", &[("x", &[]), ("y", &["x"])]),
            next_fire_at: Some(t0()),
            actor: "test".into(),
            now: Some(t0()),
            calendars: vec![],
        })
        .await
        .unwrap();
    let (mut skips, mut claims) = (0, 0);
    for round in 0..20 {
        let at = t0() + SignedDuration::from_secs(round);
        let run = started_flow(&*one, job.id, at).await;
        use RunState::*;
        assert_eq!(
            step_states(&*one, run.id).await,
            named(&[("x", Queued), ("y", Scheduled)]),
            "round {round}"
        );
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let skip = tokio::spawn({
            let (start, store, run_id) = (start.clone(), one.clone(), run.id);
            async move {
                start.wait().await;
                store
                    .workflow_control(WorkflowControlParams {
                        run_id,
                        action: StepControl::Skip("x".into()),
                        actor: "alice".into(),
                        now: Some(at),
                    })
                    .await
            }
        });
        let claim = tokio::spawn({
            let (start, store) = (start.clone(), two.clone());
            async move {
                start.wait().await;
                claim_all(&*store, "two", at).await
            }
        });
        let skipped = skip.await.unwrap();
        let claimed = claim.await.unwrap();
        match (skipped, claimed.as_slice()) {
            (Ok(after), []) => {
                skips += 1;
                assert_eq!(
                    step_states(&*one, run.id).await,
                    named(&[("x", Skipped), ("y", Skipped)]),
                    "round {round}"
                );
                assert_eq!(after.state, Succeeded, "round {round}");
            }
            (Err(StoreError::WorkflowConflict { message, .. }), [x]) => {
                claims += 1;
                assert!(message.contains("is running"), "round {round}: {message}");
                assert_eq!(x.run.step.as_deref(), Some("x"), "round {round}");
                assert_eq!(x.run.attempt, 1, "round {round}");
                let finish = step_finish(x, "two", RunNext::Finish(Succeeded), at);
                assert!(two.run_finish(finish).await.unwrap(), "round {round}");
                run_step(&*one, "y", at).await;
                assert_eq!(
                    step_states(&*one, run.id).await,
                    named(&[("x", Succeeded), ("y", Succeeded)]),
                    "round {round}"
                );
            }
            (skipped, claimed) => {
                panic!("round {round}: the skip gave {skipped:?} and the claim {claimed:?}")
            }
        }
        let ended = one
            .run_get(RunGetParams { id: run.id })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.state, Succeeded, "round {round}");
    }
    eprintln!("skips applied: {skips}, claims won: {claims}");
}

/// A session that holds job `job_id`'s row as a fire does while it counts the job's active
/// runs (its `UPDATE jobs`), until [`fire_ends`].
async fn fire_holds(
    pg: &kairos_testkit::postgres::TempPostgres,
    job_id: JobId,
) -> tokio_postgres::Client {
    let (fire, connection) =
        tokio_postgres::connect(&pg.schema.config().url, tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    fire.batch_execute(&format!(
        "BEGIN; UPDATE \"{}\".jobs SET next_fire_at = next_fire_at WHERE id = {job_id}",
        pg.schema.name
    ))
    .await
    .unwrap();
    fire
}

/// The run's end (`finish`, under way) waits while the fire holds `down`; the fire counts no
/// run of `down`; once the fire commits, the end applies and `down` has its dependency run.
async fn end_waits_for_the_fire(
    pg: &kairos_testkit::postgres::TempPostgres,
    fire: tokio_postgres::Client,
    finish: tokio::task::JoinHandle<bool>,
    down: JobId,
) {
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !finish.is_finished(),
        "the end waits while a fire holds the dependent job"
    );
    let counted: i64 = fire
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".runs WHERE job_id = $1",
                pg.schema.name
            ),
            &[&down],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 0, "the fire counts no run of the dependent job");
    fire.batch_execute("COMMIT").await.unwrap();
    assert!(finish.await.unwrap(), "the end applies once the fire ends");
    let runs = pg
        .store
        .run_list(RunListParams {
            job_id: Some(down),
            namespaces: None,
            state: None,
            limit: 10,
            before_id: None,
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "the dependent's run, created after the fire");
    assert_eq!(runs[0].origin, RunOrigin::Dependency);
}

fn job_params(spec: kairos_core::spec::JobSpec, next: Option<Timestamp>) -> JobCreateParams {
    JobCreateParams {
        actor: "test".into(),
        spec,
        next_fire_at: next,
        now: Some(t0()),
        calendars: vec![],
    }
}

fn runs_after(upstream: &str) -> kairos_core::spec::JobSpec {
    runs_after_on(upstream, "success")
}

fn runs_after_on(upstream: &str, on: &str) -> kairos_core::spec::JobSpec {
    kairos_core::spec::JobSpec::from_json(&format!(
        r#"{{"name":"down","triggers":[{{"after":{{"job":"{upstream}","on":"{on}"}}}}],"task":{{"kind":"shell","script":"true"}}}}"#
    ))
    .unwrap()
}

/// Job `up` (next due at `next`) with one run queued, due at `t0`, and job `down`, which runs
/// after `up`'s runs that end `on`.
async fn up_and_down(store: &dyn Store, next: Option<Timestamp>, on: &str) -> (Job, Job) {
    let at = t0();
    let up = store
        .job_create(job_params(kairos_store::conformance::spec("up"), next))
        .await
        .unwrap();
    let down = store
        .job_create(job_params(runs_after_on("up", on), None))
        .await
        .unwrap();
    store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id: up.id,
            run: insert(at, false),
            params: None,
            actor: "test".into(),
            now: Some(at),
        })
        .await
        .unwrap();
    (up, down)
}

/// A run that ends creates its dependents' runs only once no fire of those jobs is under way.
/// A fire holds its job's row (its `UPDATE jobs`) while it counts the job's active runs, the
/// overlap fence of `forbid` and `max_concurrent`: a dependency run committed after that count
/// and before the fire's commit would not be counted, so the end must wait for the fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_run_waits_for_a_fire_of_its_job() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    let at = t0();
    let (_, down) = up_and_down(&*store, None, "success").await;
    let claimed = claim_one(&*store, "one", at).await;
    let fire = fire_holds(&pg, down.id).await;
    let finish = tokio::spawn({
        let store = store.clone();
        let p = step_finish(&claimed, "one", RunNext::Finish(RunState::Succeeded), at);
        async move { store.run_finish(p).await.unwrap() }
    });
    end_waits_for_the_fire(&pg, fire, finish, down.id).await;
}

/// The same when the run that ends is cancelled by an `overlap: replace` fire of its job: the
/// replacing fire share-locks the jobs that run after its job with its own row, before it
/// cancels anything, so it waits for a fire of one of them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacements_dependency_run_waits_for_a_fire_of_its_job() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    let next = t0() + SignedDuration::from_secs(60);
    let (up, down) = up_and_down(&*store, Some(next), "done").await;
    let fire = fire_holds(&pg, down.id).await;
    let replace = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .job_fire(JobFireParams {
                    job_id: up.id,
                    expected_next_fire_at: next,
                    runs: vec![insert(next, false)],
                    cancel_active: true,
                    max_active: None,
                    next_fire_at: Some(next + SignedDuration::from_secs(60)),
                    now: Some(next),
                    expected_version: None,
                })
                .await
                .unwrap()
                .applied
        }
    });
    end_waits_for_the_fire(&pg, fire, replace, down.id).await;
}

/// The same when the run that ends is a workflow run, ended by its last step's finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_runs_dependency_run_waits_for_a_fire_of_its_job() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let store = pg.store.clone();
    let at = t0();
    let up = store
        .job_create(job_params(flow("up", &[("only", &[])]), Some(at)))
        .await
        .unwrap();
    let down = store
        .job_create(job_params(runs_after("up"), None))
        .await
        .unwrap();
    let flow_run = started_flow(&*store, up.id, at).await;
    let step = claim_one(&*store, "one", at).await;
    assert_eq!(step.run.parent_id, Some(flow_run.id));
    let fire = fire_holds(&pg, down.id).await;
    let finish = tokio::spawn({
        let store = store.clone();
        let p = step_finish(&step, "one", RunNext::Finish(RunState::Succeeded), at);
        async move { store.run_finish(p).await.unwrap() }
    });
    end_waits_for_the_fire(&pg, fire, finish, down.id).await;
}
