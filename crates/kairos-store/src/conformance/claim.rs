//! Claiming: queued runs whose time has come go to one worker each, with a lease; exclusive
//! runs (`overlap: queue`) of a job one at a time.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{RunId, RunState};

use super::{T0, claim, create, finish, insert, queue, t};
use crate::*;

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
            max_active: None,
            next_fire_at: None,
            now: Some(b),
            expected_version: None,
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

/// A job's exclusive runs start in due-time order, whatever their `run_at` says: a run waiting
/// for its retry's backoff holds the runs due after it (it has not ended), and a run requeued
/// by a rescue (its `run_at` now) starts before the runs due after it.
pub async fn run_exclusive_queue_drains_in_due_time_order(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let b = t("2026-03-01T00:02:00Z");
    let job = create(&store, "j", None).await;
    let exclusive = |at: Timestamp| RunInsert {
        exclusive: true,
        ..insert(at)
    };
    let ra = queue(&store, job.id, exclusive(a), a).await;
    let rb = queue(&store, job.id, exclusive(b), b).await;

    // A fails and is to be retried ten minutes later: B, due, waits for it.
    let first = claim(&store, "n1", 10, b).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].run.id, ra.id);
    let retry_at = a + SignedDuration::from_mins(10);
    assert!(finish(&store, &first[0], RunNext::Retry { run_at: retry_at }, b).await);
    assert!(
        claim(&store, "n1", 10, b + SignedDuration::from_mins(1))
            .await
            .is_empty(),
        "B waits for A's retry"
    );
    let retried = claim(&store, "n1", 10, retry_at).await;
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].run.id, retried[0].run.attempt), (ra.id, 2));
    assert!(
        finish(
            &store,
            &retried[0],
            RunNext::Finish(RunState::Succeeded),
            retry_at
        )
        .await
    );

    // B starts; C is queued behind it; B's node dies and B is rescued after C became due.
    let second = claim(&store, "n1", 10, retry_at).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].run.id, rb.id);
    let c_due = retry_at + SignedDuration::from_secs(1);
    let rc = queue(&store, job.id, exclusive(c_due), c_due).await;
    let expired = retry_at + SignedDuration::from_secs(31);
    let rescued = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: None,
            now: Some(expired),
        })
        .await
        .unwrap();
    assert_eq!(rescued.requeued, vec![rb.id]);
    let third = claim(&store, "n1", 10, expired).await;
    assert_eq!(third.len(), 1);
    assert_eq!(
        third[0].run.id, rb.id,
        "the rescued run keeps its place before C"
    );
    assert!(
        finish(
            &store,
            &third[0],
            RunNext::Finish(RunState::Succeeded),
            expired
        )
        .await
    );
    let last = claim(&store, "n1", 10, expired).await;
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].run.id, rc.id);
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
            max_active: None,
            next_fire_at: None,
            now: Some(a),
            expected_version: None,
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
/// Exclusive runs (`overlap: queue`) of two jobs, all due, claimed by concurrent claimers on
/// separate connections, each finishing what it got before it claims again: never two runs of
/// one job running at once, each job's runs start in due-time order, each runs once.
///
/// Two checks, neither of which can fire falsely: a claimer counts a job's run as running from
/// just after its claim returns until just before it finishes it (inside the time the store
/// has it running), so a count above one means the store let two run at once; and while it
/// holds the run, the store must list exactly that run of its job as running.
pub async fn run_claim_concurrent_exclusive(store: Arc<dyn Store>) {
    const ROUNDS: i64 = 20;
    const JOBS: usize = 2;
    const RUNS: usize = 6;
    const CLAIMERS: usize = 4;
    /// Claims (most of them empty while another claimer holds a job's run) before a claimer
    /// gives up: far more than the rounds need, a bound so a stuck store fails instead of
    /// hanging.
    const MAX_CLAIMS: usize = 50_000;
    for round in 0..ROUNDS {
        let a = t(T0) + SignedDuration::from_hours(round);
        let now = a + SignedDuration::from_mins(1);
        let mut jobs = Vec::new();
        for j in 0..JOBS {
            let job = create(&store, &format!("queue-{round}-{j}"), None).await;
            let runs = (0..RUNS)
                .map(|i| {
                    let mut run = insert(a + SignedDuration::from_secs(i as i64));
                    run.exclusive = true;
                    run
                })
                .collect();
            store
                .run_insert_many(RunInsertManyParams {
                    job_id: job.id,
                    runs,
                    now: Some(a),
                })
                .await
                .unwrap();
            jobs.push(job.id);
        }
        let running: Arc<std::collections::HashMap<_, _>> = Arc::new(
            jobs.iter()
                .map(|id| (*id, std::sync::atomic::AtomicUsize::new(0)))
                .collect(),
        );
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut claimers = tokio::task::JoinSet::new();
        for n in 0..CLAIMERS {
            let (store, running) = (store.clone(), running.clone());
            let (started, done) = (started.clone(), done.clone());
            claimers.spawn(async move {
                use std::sync::atomic::Ordering::SeqCst;
                let node = format!("n{n}");
                for _ in 0..MAX_CLAIMS {
                    if done.load(SeqCst) == JOBS * RUNS {
                        return;
                    }
                    let got = claim(&store, &node, 3, now).await;
                    for c in &got {
                        let before = running[&c.run.job_id].fetch_add(1, SeqCst);
                        assert_eq!(
                            before, 0,
                            "round {round}: {node} got run {} of job {} while another \
                                 of its runs was running",
                            c.run.id, c.run.job_id
                        );
                        started
                            .lock()
                            .unwrap()
                            .push((c.run.job_id, c.run.scheduled_for));
                    }
                    for c in &got {
                        let listed: Vec<_> = store
                            .run_list(RunListParams {
                                job_id: Some(c.run.job_id),
                                state: Some(RunState::Running),
                                ..Default::default()
                            })
                            .await
                            .unwrap()
                            .into_iter()
                            .map(|r| r.id)
                            .collect();
                        assert_eq!(listed, [c.run.id], "round {round}: one running");
                    }
                    for c in &got {
                        running[&c.run.job_id].fetch_sub(1, SeqCst);
                        assert!(finish(&store, c, RunNext::Finish(RunState::Succeeded), now).await);
                        done.fetch_add(1, SeqCst);
                    }
                    if got.is_empty() {
                        tokio::task::yield_now().await;
                    }
                }
                panic!("round {round}: {node} made no progress in {MAX_CLAIMS} claims");
            });
        }
        // The first claimer to fail fails the case at once (the others would wait for it).
        while let Some(joined) = claimers.join_next().await {
            if let Err(e) = joined {
                claimers.abort_all();
                std::panic::resume_unwind(e.into_panic());
            }
        }
        let started = started.lock().unwrap().clone();
        for job in &jobs {
            let order: Vec<Timestamp> = started
                .iter()
                .filter(|(j, _)| j == job)
                .map(|(_, at)| *at)
                .collect();
            let due: Vec<Timestamp> = (0..RUNS)
                .map(|i| a + SignedDuration::from_secs(i as i64))
                .collect();
            assert_eq!(order, due, "round {round}: once each, in due-time order");
        }
    }
}

/// Claims under a backlog may start where the last full batch stopped (the PostgreSQL store
/// does, to skip the queue's dead head): a run that is queued again behind that position (a
/// release), one due before everything (a caught-up due time) and an `overlap: queue` job's
/// next run due before it are still claimed, and no run is claimed twice.
pub async fn run_claim_never_skips_runs_behind_the_last_batch(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "backlog", None).await;
    let serial = create(&store, "serial", None).await;
    let at = |i: i64| a + SignedDuration::from_secs(i);
    store
        .run_insert_many(RunInsertManyParams {
            job_id: job.id,
            runs: (0..10).map(|i| insert(at(i))).collect(),
            now: Some(a),
        })
        .await
        .unwrap();
    let now = at(20);
    let first = claim(&store, "n1", 2, now).await;
    let second = claim(&store, "n1", 2, now).await;
    assert_eq!(
        (first.len(), second.len()),
        (2, 2),
        "full batches from the backlog"
    );
    // The earliest run goes back to the queue, a run due before all of them comes in, and so
    // does an exclusive run of another job, earlier still.
    let released = &first[0];
    assert!(finish(&store, released, RunNext::Release, now).await);
    let insert_one = |job_id, run| queue(&store, job_id, run, a);
    let early = insert_one(job.id, insert(a - SignedDuration::from_secs(60))).await;
    let mut exclusive = insert(a - SignedDuration::from_secs(120));
    exclusive.exclusive = true;
    let exclusive = insert_one(serial.id, exclusive).await;
    // Nine runs are queued, six of them after the last position: a claim of three takes the
    // three earliest, the exclusive one first.
    let mut later = claim(&store, "n1", 3, now).await;
    let ids: Vec<RunId> = later.iter().map(|c| c.run.id).collect();
    assert_eq!(
        ids,
        vec![exclusive.id, early.id, released.run.id],
        "the earliest queued runs, by due time"
    );
    later.extend(claim(&store, "n1", 10, now).await);
    let mut ids: Vec<RunId> = later.iter().map(|c| c.run.id).collect();
    ids.sort_unstable();
    let taken: Vec<RunId> = first.iter().chain(&second).map(|c| c.run.id).collect();
    let all = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut expected: Vec<RunId> = vec![released.run.id, exclusive.id];
    expected.extend(all.iter().map(|r| r.id).filter(|id| !taken.contains(id)));
    expected.sort_unstable();
    assert_eq!(ids, expected, "every queued run claimed once");
    assert!(claim(&store, "n1", 2, now).await.is_empty());
}

/// A claim whose walk from the last full batch's position comes up short takes the rest of its
/// limit from behind that position (here a released run) in the same claim: without an
/// exclusive run waiting, and with one (whose job has nothing running) due after the position,
/// which the claim starts too.
pub async fn run_claim_fills_a_short_walk_from_behind_the_last_batch(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let at = |i: i64| a + SignedDuration::from_secs(i);
    let now = at(20);
    for with_exclusive in [false, true] {
        let job = create(&store, &format!("backlog-{with_exclusive}"), None).await;
        store
            .run_insert_many(RunInsertManyParams {
                job_id: job.id,
                runs: (0..4).map(|i| insert(at(i))).collect(),
                now: Some(a),
            })
            .await
            .unwrap();
        let mut expected = vec![at(0), at(2), at(3)];
        if with_exclusive {
            let serial = create(&store, "serial", None).await;
            let run = RunInsert {
                exclusive: true,
                ..insert(at(10))
            };
            queue(&store, serial.id, run, a).await;
            expected.push(at(10));
        }
        let first = claim(&store, "n1", 2, now).await;
        let due: Vec<Timestamp> = first.iter().map(|c| c.run.scheduled_for).collect();
        assert_eq!(due, vec![at(0), at(1)], "a full batch ({with_exclusive})");
        assert!(finish(&store, &first[0], RunNext::Release, now).await);
        let next = claim(&store, "n1", 10, now).await;
        let due: Vec<Timestamp> = next.iter().map(|c| c.run.scheduled_for).collect();
        assert_eq!(
            due, expected,
            "the runs after the position and the released one, in one claim ({with_exclusive})"
        );
        assert!(claim(&store, "n1", 10, now).await.is_empty());
    }
}

/// An exclusive run (`overlap: queue`) queued after claims that found none waiting is claimed
/// by the next claim that has room, beside the other due runs, not a claim later.
pub async fn run_claim_takes_an_exclusive_run_queued_after_claims_without_one(
    store: Arc<dyn Store>,
) {
    let a = t("2026-03-01T00:01:00Z");
    let job = create(&store, "plain", None).await;
    let serial = create(&store, "serial", None).await;
    let now = a + SignedDuration::from_secs(60);
    for round in 0..2 {
        queue(
            &store,
            job.id,
            insert(a + SignedDuration::from_secs(round)),
            a,
        )
        .await;
        assert_eq!(claim(&store, "n1", 5, now).await.len(), 1, "round {round}");
    }
    let plain = queue(&store, job.id, insert(a + SignedDuration::from_secs(2)), a).await;
    let exclusive = queue(
        &store,
        serial.id,
        RunInsert {
            exclusive: true,
            ..insert(a + SignedDuration::from_secs(3))
        },
        a,
    )
    .await;
    let claimed: Vec<RunId> = claim(&store, "n1", 5, now)
        .await
        .iter()
        .map(|c| c.run.id)
        .collect();
    assert_eq!(claimed, vec![plain.id, exclusive.id]);

    // Once claims find no exclusive run waiting again, one due before a plain run still comes
    // first in a claim with room for one.
    let other = create(&store, "serial-2", None).await;
    assert!(claim(&store, "n1", 5, now).await.is_empty());
    let exclusive = queue(
        &store,
        other.id,
        RunInsert {
            exclusive: true,
            ..insert(a + SignedDuration::from_secs(4))
        },
        a,
    )
    .await;
    queue(&store, job.id, insert(a + SignedDuration::from_secs(5)), a).await;
    let claimed: Vec<RunId> = claim(&store, "n1", 1, now)
        .await
        .iter()
        .map(|c| c.run.id)
        .collect();
    assert_eq!(claimed, vec![exclusive.id], "the earliest due run");
}

/// A copy settles the runs that were running in the copied store (their node is gone) as a
/// rescue would: back to the queue without the attempt they were in, `lost` for an
/// `at_most_once` run that began (never run twice; its attempt recorded `lost`), `cancelled`
/// when asked to stop, and back to the queue when the attempt never started (an
/// `at_most_once` run that had not begun, a run claimed ahead of a due time still to come).
pub async fn run_import_settles_runs_that_were_running(store: Arc<dyn Store>) {
    use kairos_core::spec::ExecutionMode::{AtLeastOnce, AtMostOnce};
    let a = t("2026-03-01T00:01:00Z");
    let source = create(&store, "source", None).await;
    let target = create(&store, "target", None).await;
    let now = a + SignedDuration::from_secs(60);
    queue(&store, source.id, insert(a), a).await;
    let running = claim(&store, "n1", 1, now).await.remove(0).run;
    assert_eq!(running.state, RunState::Running);
    let at = |i: i64| a + SignedDuration::from_secs(i);
    let variant = |i: i64, execution, begun, cancel_requested, started_at| Run {
        scheduled_for: at(i),
        execution,
        begun,
        cancel_requested,
        started_at: Some(started_at),
        ..running.clone()
    };
    let ahead = now + SignedDuration::from_secs(30);
    let runs = vec![
        variant(0, AtLeastOnce, true, false, now),
        variant(1, AtMostOnce, true, false, now),
        variant(2, AtLeastOnce, true, true, now),
        variant(3, AtMostOnce, false, false, now),
        variant(4, AtLeastOnce, true, false, ahead),
    ];
    let copied = store
        .run_import(RunImportParams {
            job_id: target.id,
            runs: runs.into_iter().map(|r| (r, vec![])).collect(),
            now,
        })
        .await
        .unwrap();
    assert_eq!(copied, 5);
    let mut got = store
        .run_list(RunListParams {
            job_id: Some(target.id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    got.sort_by_key(|r| r.scheduled_for);
    let settled: Vec<(RunState, u32, Option<Timestamp>, Option<Timestamp>)> = got
        .iter()
        .map(|r| (r.state, r.attempt, r.started_at, r.finished_at))
        .collect();
    let queued = (RunState::Queued, 0, None, None);
    assert_eq!(
        settled,
        vec![
            queued,
            (RunState::Lost, 1, Some(now), Some(now)),
            (RunState::Cancelled, 1, Some(now), Some(now)),
            queued,
            queued,
        ]
    );
    assert_eq!(got[1].reason.as_deref(), Some(IMPORTED_RUNNING));
    assert!(
        got.iter()
            .all(|r| r.state != RunState::Queued || r.node.is_none())
    );
    let attempts = store
        .attempt_list(AttemptListParams { run_id: got[1].id })
        .await
        .unwrap();
    let recorded: Vec<(u32, &str)> = attempts
        .iter()
        .map(|x| (x.attempt, x.status.as_str()))
        .collect();
    assert_eq!(recorded, vec![(1, "lost")], "the lost attempt is recorded");
    let cancelled = store
        .attempt_list(AttemptListParams { run_id: got[2].id })
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1, "and the cancelled one's");
}
