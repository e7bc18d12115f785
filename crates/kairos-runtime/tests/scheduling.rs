//! Scheduler, worker and rescuer under a manual clock, on a real store of each backend,
//! executing real processes. The services' `run_once` methods are driven directly; nothing
//! sleeps on the clock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

#[allow(dead_code, reason = "each test file uses part of the shared setup")]
mod common;

use common::{every_minute, setup, spec, start_node, t};
use jiff::SignedDuration;
use kairos_core::run::{RunState, SkipReason};
use kairos_runtime::rescuer::Rescuer;
use kairos_runtime::*;
use kairos_testkit::Backend;
use tokio::task::JoinSet;

kairos_testkit::backend_tests! {
    fires_each_due_time_exactly_once,
    catchup_policies_after_downtime,
    catchup_window_bounds_what_is_caught_up,
    overlap_forbid_records_a_skip,
    overlap_queue_runs_one_after_another,
    overlap_replace_cancels_the_active_run,
    replace_in_a_catch_up_round_records_the_replaced_due_times,
    paused_jobs_do_not_fire_and_resume_does_not_replay,
    failed_attempts_retry_with_backoff_then_fail,
    expired_leases_are_rescued_and_a_restarted_node_recovers_at_once,
    trigger_now_and_stale_updates,
    node_runs_jobs_end_to_end_with_the_loops,
    the_worker_loop_starts_a_queued_run_when_the_one_before_it_ends,
    a_blocked_queued_run_does_not_delay_the_next_timed_one,
    resuming_through_an_update_does_not_replay_the_pause,
    fires_and_claims_ahead_of_the_due_time_and_starts_on_time,
    a_run_cancelled_while_waiting_for_its_due_time_never_runs,
    a_job_with_active_runs_is_fired_when_due_not_early,
    a_pause_withdraws_an_early_run,
    a_pause_withdraws_an_early_run_already_claimed,
}

async fn fires_each_due_time_exactly_once(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s.jobs.create(every_minute("tick", "")).await.unwrap();
    assert_eq!(job.next_fire_at, Some(t("2026-03-01T00:01:00Z")));
    // Nothing due yet.
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 0);
    for minute in 1..=5 {
        s.clock.set(t(&format!("2026-03-01T00:0{minute}:00.003Z")));
        let report = s.scheduler.run_once().await.unwrap();
        assert_eq!(report.runs_queued, 1, "minute {minute}");
        // Running the scheduler again at the same instant creates nothing.
        assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 0);
        assert_eq!(s.work().await, 1);
    }
    let runs = s.runs("tick").await;
    let due: Vec<_> = runs.iter().map(|r| r.scheduled_for.to_string()).collect();
    assert_eq!(
        due,
        [
            "2026-03-01T00:01:00Z",
            "2026-03-01T00:02:00Z",
            "2026-03-01T00:03:00Z",
            "2026-03-01T00:04:00Z",
            "2026-03-01T00:05:00Z"
        ]
    );
    assert!(runs.iter().all(|r| r.state == RunState::Succeeded));
    let attempts = s
        .ctx
        .store
        .attempt_list(kairos_store::AttemptListParams { run_id: runs[0].id })
        .await
        .unwrap();
    assert!(
        attempts[0].output.contains("stdout hi"),
        "{}",
        attempts[0].output
    );
}

async fn catchup_policies_after_downtime(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    for (name, catchup) in [("all", "all"), ("latest", "latest"), ("skip", "skip")] {
        s.jobs
            .create(every_minute(
                name,
                &format!(r#","catchup":"{catchup}","overlap":"allow","max_concurrent":100"#),
            ))
            .await
            .unwrap();
    }
    // Down for five due times, then back.
    s.clock.set(t("2026-03-01T00:05:30Z"));
    s.scheduler.run_once().await.unwrap();
    let all = s.runs("all").await;
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|r| r.state == RunState::Queued));
    let latest = s.runs("latest").await;
    assert_eq!(latest.len(), 1, "latest coalesces");
    assert_eq!(latest[0].scheduled_for, t("2026-03-01T00:05:00Z"));
    let skip = s.runs("skip").await;
    assert_eq!(skip.len(), 5);
    assert_eq!(
        skip.iter().filter(|r| r.state == RunState::Skipped).count(),
        4
    );
    assert!(
        skip.iter()
            .filter(|r| r.state == RunState::Skipped)
            .all(|r| r.reason.as_deref() == Some("misfire"))
    );
    assert_eq!(skip[4].state, RunState::Queued);
    // The next due time is in the future and nothing repeats.
    for name in ["all", "latest", "skip"] {
        let job = s.jobs.get("default", name).await.unwrap();
        assert_eq!(job.next_fire_at, Some(t("2026-03-01T00:06:00Z")));
    }
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 0);
}

async fn catchup_window_bounds_what_is_caught_up(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(every_minute(
            "w",
            r#","catchup":"all","catchup_window":"2m","overlap":"allow","max_concurrent":100"#,
        ))
        .await
        .unwrap();
    s.clock.set(t("2026-03-01T00:10:30Z"));
    s.scheduler.run_once().await.unwrap();
    let runs = s.runs("w").await;
    let queued: Vec<_> = runs
        .iter()
        .filter(|r| r.state == RunState::Queued)
        .map(|r| r.scheduled_for)
        .collect();
    assert_eq!(
        queued,
        [t("2026-03-01T00:09:00Z"), t("2026-03-01T00:10:00Z")]
    );
    assert_eq!(
        runs.iter().filter(|r| r.state == RunState::Skipped).count(),
        8
    );
}

async fn overlap_forbid_records_a_skip(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(spec(r#"{"name":"slow","triggers":[{"interval":"1m"}],"task":{"kind":"shell","script":"sleep 30"}}"#))
        .await
        .unwrap();
    s.clock.set(t("2026-03-01T00:01:00Z"));
    s.scheduler.run_once().await.unwrap();
    let mut tasks = JoinSet::new();
    assert_eq!(s.claim_and_begin(&mut tasks).await, 1);
    s.clock.set(t("2026-03-01T00:02:00Z"));
    let report = s.scheduler.run_once().await.unwrap();
    assert_eq!((report.runs_queued, report.runs_skipped), (0, 1));
    let runs = s.runs("slow").await;
    assert_eq!(runs[1].state, RunState::Skipped);
    assert_eq!(
        runs[1].reason.as_deref(),
        Some(SkipReason::Overlap.as_str())
    );
    // Cancel the long one: its process group is killed and the run ends cancelled.
    s.ctx
        .store
        .run_cancel(kairos_store::RunCancelParams {
            actor: "test".into(),
            run_id: runs[0].id,
            now: None,
        })
        .await
        .unwrap();
    s.worker.heartbeat_once().await.unwrap();
    while tasks.join_next().await.is_some() {}
    assert_eq!(s.runs("slow").await[0].state, RunState::Cancelled);
}

async fn overlap_queue_runs_one_after_another(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(every_minute("q", r#","overlap":"queue","catchup":"all""#))
        .await
        .unwrap();
    s.clock.set(t("2026-03-01T00:03:00Z"));
    s.scheduler.run_once().await.unwrap();
    assert_eq!(s.runs("q").await.len(), 3);
    for expected_done in 1..=3 {
        assert_eq!(s.work().await, 1, "one at a time");
        let done = s
            .runs("q")
            .await
            .iter()
            .filter(|r| r.state == RunState::Succeeded)
            .count();
        assert_eq!(done, expected_done);
    }
}

async fn overlap_replace_cancels_the_active_run(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(spec(r#"{"name":"r","overlap":"replace","triggers":[{"interval":"1m"}],"task":{"kind":"shell","script":"sleep 30"}}"#))
        .await
        .unwrap();
    s.clock.set(t("2026-03-01T00:01:00Z"));
    s.scheduler.run_once().await.unwrap();
    let mut tasks = JoinSet::new();
    s.claim_and_begin(&mut tasks).await;
    s.clock.set(t("2026-03-01T00:02:00Z"));
    s.scheduler.run_once().await.unwrap();
    s.worker.heartbeat_once().await.unwrap();
    tasks.join_next().await.unwrap().unwrap();
    let runs = s.runs("r").await;
    assert_eq!(runs[0].state, RunState::Cancelled);
    assert_eq!(runs[1].state, RunState::Queued);
}

async fn replace_in_a_catch_up_round_records_the_replaced_due_times(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(every_minute(
            "rc",
            r#","overlap":"replace","catchup":"all""#,
        ))
        .await
        .unwrap();
    s.clock.set(t("2026-03-01T00:03:30Z"));
    s.scheduler.run_once().await.unwrap();
    let runs = s.runs("rc").await;
    let states: Vec<_> = runs.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [RunState::Skipped, RunState::Skipped, RunState::Queued],
        "only the newest runs; the others are recorded"
    );
    assert!(
        runs[..2]
            .iter()
            .all(|r| r.reason.as_deref() == Some("overlap"))
    );
}

async fn paused_jobs_do_not_fire_and_resume_does_not_replay(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(every_minute(
            "p",
            r#","catchup":"all","overlap":"allow","max_concurrent":10"#,
        ))
        .await
        .unwrap();
    let paused = s.jobs.set_paused("default", "p", true).await.unwrap();
    assert_eq!(paused.version, 2);
    s.clock.set(t("2026-03-01T00:10:30Z"));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 0);
    let resumed = s.jobs.set_paused("default", "p", false).await.unwrap();
    assert_eq!(resumed.next_fire_at, Some(t("2026-03-01T00:11:00Z")));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 0);
    assert!(
        s.runs("p").await.is_empty(),
        "times inside the pause are not recorded"
    );
    s.clock.set(t("2026-03-01T00:11:00Z"));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 1);
}

async fn failed_attempts_retry_with_backoff_then_fail(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(spec(
            r#"{"name":"flaky","triggers":[{"at":"2026-03-01T00:01:00Z"}],
                "task":{"kind":"shell","script":"echo attempt $KAIROS_ATTEMPT; exit 3"},
                "retry":{"max_attempts":3,"backoff":{"initial":"10s","max":"1m","multiplier":2.0,"jitter":0.0},"on":["exit:3"]}}"#,
        ))
        .await
        .unwrap();
    s.clock.set(t("2026-03-01T00:01:00Z"));
    s.scheduler.run_once().await.unwrap();
    assert_eq!(s.work().await, 1);
    let run = &s.runs("flaky").await[0];
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(
        run.run_at,
        t("2026-03-01T00:01:10Z"),
        "first backoff is `initial`"
    );
    s.clock.set(t("2026-03-01T00:01:09Z"));
    assert_eq!(s.work().await, 0, "not before the backoff");
    s.clock.set(t("2026-03-01T00:01:10Z"));
    assert_eq!(s.work().await, 1);
    assert_eq!(
        s.runs("flaky").await[0].run_at,
        t("2026-03-01T00:01:30Z"),
        "then doubled"
    );
    s.clock.set(t("2026-03-01T00:01:30Z"));
    assert_eq!(s.work().await, 1);
    let run = &s.runs("flaky").await[0];
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.attempt, 3);
    assert_eq!(run.exit_code, Some(3));
    let attempts = s
        .ctx
        .store
        .attempt_list(kairos_store::AttemptListParams { run_id: run.id })
        .await
        .unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts[2].output.contains("attempt 3"));
    assert!(attempts.iter().all(|a| a.status == "exit:3"));
}

async fn expired_leases_are_rescued_and_a_restarted_node_recovers_at_once(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(spec(r#"{"name":"once","execution":"at_most_once","triggers":[{"interval":"1m"}],"task":{"kind":"shell","script":"true"}}"#))
        .await
        .unwrap();
    s.jobs.create(every_minute("least", "")).await.unwrap();
    s.clock.set(t("2026-03-01T00:01:00Z"));
    s.scheduler.run_once().await.unwrap();
    // A worker on another node claims both and dies.
    let dead = s
        .ctx
        .store
        .run_claim(kairos_store::RunClaimParams {
            node: "node-b".into(),
            limit: 10,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::ZERO,
            now: Some(s.clock.now()),
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    // Both attempts began (the at-most-once one said so, as its worker does).
    for c in &dead {
        assert!(
            s.ctx
                .store
                .run_begin(kairos_store::RunBeginParams {
                    run_id: c.run.id,
                    lease_token: c.lease_token.clone(),
                })
                .await
                .unwrap()
        );
    }
    let rescuer = Rescuer::new(s.ctx.clone(), std::time::Duration::from_secs(5));
    assert_eq!(
        rescuer.run_once(true).await.unwrap(),
        Default::default(),
        "node-b's leases are valid"
    );
    s.clock.advance(SignedDuration::from_secs(31));
    let report = rescuer.run_once(false).await.unwrap();
    assert_eq!(report.requeued.len(), 1);
    assert_eq!(report.lost.len(), 1);
    assert_eq!(s.runs("once").await[0].state, RunState::Lost);
    assert_eq!(s.work().await, 1);
    let least = &s.runs("least").await[0];
    assert_eq!(least.state, RunState::Succeeded);
    assert_eq!(least.attempt, 2);

    // This node "restarts" while holding a run: the startup pass recovers it without waiting.
    s.clock.set(t("2026-03-01T00:02:00Z"));
    s.scheduler.run_once().await.unwrap();
    s.ctx
        .store
        .run_claim(kairos_store::RunClaimParams {
            node: "node-a".into(),
            limit: 1,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::ZERO,
            now: Some(s.clock.now()),
        })
        .await
        .unwrap();
    let report = rescuer.run_once(true).await.unwrap();
    assert_eq!(report.requeued.len() + report.lost.len(), 1);
}

async fn trigger_now_and_stale_updates(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let job = s.jobs.create(every_minute("m", "")).await.unwrap();
    let run = s.jobs.trigger("default", "m").await.unwrap();
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.scheduled_for, s.clock.now());
    assert_eq!(s.work().await, 1);
    assert_eq!(
        s.ctx
            .store
            .run_get(kairos_store::RunGetParams { id: run.id })
            .await
            .unwrap()
            .unwrap()
            .state,
        RunState::Succeeded
    );

    let mut changed = job.spec.clone();
    changed.description = Some("v2".into());
    let v2 = s
        .jobs
        .update("default", "m", 1, changed.clone())
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        v2.next_fire_at, job.next_fire_at,
        "same triggers keep the pending due time"
    );
    let stale = s.jobs.update("default", "m", 1, changed).await;
    assert!(matches!(
        stale,
        Err(JobError::Store(
            kairos_store::StoreError::VersionConflict { .. }
        ))
    ));
    let renamed = s
        .jobs
        .update("default", "m", 2, every_minute("other", ""))
        .await;
    match renamed {
        Err(JobError::Invalid(e)) => assert_eq!(e.errors[0].field, "name"),
        other => panic!("{other:?}"),
    }
}

async fn node_runs_jobs_end_to_end_with_the_loops(backend: Backend) {
    let Some(mut r) = start_node(backend, NodeConfig::default()).await else {
        return;
    };
    r.node.jobs.create(every_minute("loop", "")).await.unwrap();
    r.clock.set(t("2026-03-01T00:01:00Z"));
    let (_, finished) = tokio::time::timeout(std::time::Duration::from_secs(20), r.run_finished())
        .await
        .expect("the run finishes");
    assert_eq!(finished, RunState::Succeeded);
    r.node.shutdown().await;
}

/// The worker loop claims a queued run that waits behind a running one (`overlap: queue`) as
/// soon as the running one's result is recorded: a freed slot wakes it while such a backlog
/// exists. The manual clock never moves, so no timer or poll can be what claims it.
async fn the_worker_loop_starts_a_queued_run_when_the_one_before_it_ends(backend: Backend) {
    // Heartbeats (real time) also make the worker claim; keep them out of the picture.
    let Some(mut r) = start_node(
        backend,
        NodeConfig {
            worker: WorkerConfig {
                lease: kairos_core::lease::LeaseTiming::new(kairos_core::lease::LeaseTiming::MAX)
                    .unwrap(),
                ..WorkerConfig::default()
            },
            ..NodeConfig::default()
        },
    )
    .await
    else {
        return;
    };
    r.node
        .jobs
        .create(spec(
            r#"{"name":"q","task":{"kind":"shell","script":"sleep 0.2"},"overlap":"queue"}"#,
        ))
        .await
        .unwrap();
    r.node.jobs.trigger("default", "q").await.unwrap();
    // A manual run's due time is the trigger's instant: the second needs another one.
    r.clock.set(t("2026-03-01T00:00:00.001Z"));
    r.node.jobs.trigger("default", "q").await.unwrap();
    let finished = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        vec![r.run_finished().await, r.run_finished().await]
    })
    .await
    .expect("both runs finish without the clock moving");
    assert!(finished.iter().all(|(_, s)| *s == RunState::Succeeded));
    assert_eq!(r.clock.now(), t("2026-03-01T00:00:00.001Z"));
    r.node.shutdown().await;
}

/// A queued run that waits behind a running one (`overlap: queue`) does not hide a later run
/// of another job from the worker's timer: a run due in two seconds (a retry, a jittered
/// start) starts when due, not at the next poll. Polls are an hour apart and heartbeats 20 minutes here,
/// and the manual clock only jumps to the later run's due time.
async fn a_blocked_queued_run_does_not_delay_the_next_timed_one(backend: Backend) {
    let hour = std::time::Duration::from_secs(3600);
    let Some(mut r) = start_node(
        backend,
        NodeConfig {
            worker: WorkerConfig {
                lease: kairos_core::lease::LeaseTiming::new(kairos_core::lease::LeaseTiming::MAX)
                    .unwrap(),
                poll: hour,
                ..WorkerConfig::default()
            },
            shutdown_grace: std::time::Duration::from_millis(50),
            ..NodeConfig::default()
        },
    )
    .await
    else {
        return;
    };
    r.node
        .jobs
        .create(spec(
            r#"{"name":"q","task":{"kind":"shell","script":"sleep 30"},"overlap":"queue"}"#,
        ))
        .await
        .unwrap();
    let later = r
        .node
        .jobs
        .create(spec(
            r#"{"name":"later","task":{"kind":"shell","script":"true"}}"#,
        ))
        .await
        .unwrap();
    r.node.jobs.trigger("default", "q").await.unwrap();
    r.clock.set(t("2026-03-01T00:00:00.001Z"));
    r.node.jobs.trigger("default", "q").await.unwrap();
    // The first q run is running; wait until the worker has seen the second one blocked.
    loop {
        if let Ok(Event::RunStarted { job, .. }) = r.events.recv().await
            && job == "q"
        {
            break;
        }
    }
    let due = t("2026-03-01T00:00:02Z");
    let run = r
        .ctx
        .store
        .run_insert(kairos_store::RunInsertParams {
            expected_version: None,
            params: None,
            actor: "test".into(),
            job_id: later.id,
            run: kairos_store::RunInsert {
                scheduled_for: due,
                run_at: due,
                origin: kairos_core::run::RunOrigin::Manual,
                skip: None,
                exclusive: false,
                max_attempts: 1,
                execution: kairos_core::spec::ExecutionMode::AtLeastOnce,
                event: None,
            },
            now: Some(r.clock.now()),
        })
        .await
        .unwrap();
    r.ctx.worker_wake.notify_one();
    // Let the worker claim (nothing) and compute its next wake-up on the real runtime.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    r.clock.set(due);
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let (run_id, state) = r.run_finished().await;
            if run_id == run.id {
                assert_eq!(state, RunState::Succeeded);
                return;
            }
        }
    })
    .await
    .expect("the later run starts at its due time, before the next poll");
    r.node.shutdown().await;
}

async fn resuming_through_an_update_does_not_replay_the_pause(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(every_minute(
            "p",
            r#","catchup":"all","overlap":"allow","max_concurrent":10"#,
        ))
        .await
        .unwrap();
    let paused = s.jobs.set_paused("default", "p", true).await.unwrap();
    s.clock.set(t("2026-03-01T00:10:30Z"));
    let mut spec = paused.spec.clone();
    spec.paused = false;
    let resumed = s
        .jobs
        .update("default", "p", paused.version, spec)
        .await
        .unwrap();
    assert_eq!(resumed.next_fire_at, Some(t("2026-03-01T00:11:00Z")));
    s.scheduler.run_once().await.unwrap();
    assert!(
        s.runs("p").await.is_empty(),
        "no run or skip for times inside the pause"
    );
}

/// Look-ahead: a due time less than `lookahead` away is fired early as a queued run with
/// `run_at` at the due time; the worker claims it ahead too, and starts it at the due time.
async fn fires_and_claims_ahead_of_the_due_time_and_starts_on_time(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(every_minute("soon", "")).await.unwrap();
    // Outside the window: nothing.
    s.clock.set(t("2026-03-01T00:00:59.500Z"));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 0);
    s.clock.set(t("2026-03-01T00:00:59.800Z"));
    let report = s.scheduler.run_once().await.unwrap();
    assert_eq!((report.jobs_fired_early, report.runs_queued), (1, 1));
    let runs = s.runs("soon").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, RunState::Queued);
    assert_eq!(runs[0].scheduled_for, t("2026-03-01T00:01:00Z"));
    assert_eq!(runs[0].run_at, t("2026-03-01T00:01:00Z"));
    let job = s.jobs.get("default", "soon").await.unwrap();
    assert_eq!(job.next_fire_at, Some(t("2026-03-01T00:02:00Z")));
    // The scheduler does not fire the following due time early.
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 0);
    // The worker claims it ahead; the attempt waits for the due time.
    let mut tasks = JoinSet::new();
    assert_eq!(s.worker.claim_once(&mut tasks).await.unwrap(), 1);
    let claimed = &s.runs("soon").await[0];
    assert_eq!(claimed.state, RunState::Running);
    assert_eq!(claimed.started_at, Some(t("2026-03-01T00:01:00Z")));
    tokio::task::yield_now().await;
    assert!(tasks.try_join_next().is_none(), "it waits for its due time");
    s.clock.set(t("2026-03-01T00:01:00Z"));
    while tasks.join_next().await.is_some() {}
    let run = &s.runs("soon").await[0];
    assert_eq!(run.state, RunState::Succeeded);
    let attempts = s
        .ctx
        .store
        .attempt_list(kairos_store::AttemptListParams { run_id: run.id })
        .await
        .unwrap();
    assert!(
        attempts[0].started_at >= t("2026-03-01T00:01:00Z"),
        "never started before its due time"
    );
}

/// A run claimed ahead and cancelled before its due time ends cancelled without running.
async fn a_run_cancelled_while_waiting_for_its_due_time_never_runs(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(every_minute("c", "")).await.unwrap();
    s.clock.set(t("2026-03-01T00:00:59.800Z"));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 1);
    let mut tasks = JoinSet::new();
    assert_eq!(s.worker.claim_once(&mut tasks).await.unwrap(), 1);
    let run = s.runs("c").await[0].clone();
    s.ctx
        .store
        .run_cancel(kairos_store::RunCancelParams {
            actor: "test".into(),
            run_id: run.id,
            now: s.ctx.clock.store_now(),
        })
        .await
        .unwrap();
    s.worker.heartbeat_once().await.unwrap();
    while tasks.join_next().await.is_some() {}
    let run = &s.runs("c").await[0];
    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(s.clock.now(), t("2026-03-01T00:00:59.800Z"));
}

/// A job with an active run is not fired early (the overlap decision needs the due time); it is
/// fired when due, and the scheduler's next wake-up is that due time, not a busy loop.
async fn a_job_with_active_runs_is_fired_when_due_not_early(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(every_minute("busy", r#","overlap":"forbid""#))
        .await
        .unwrap();
    s.jobs.trigger("default", "busy").await.unwrap();
    s.clock.set(t("2026-03-01T00:00:59.800Z"));
    let report = s.scheduler.run_once().await.unwrap();
    assert_eq!(report.jobs_fired, 0);
    assert_eq!(report.deferred_until, Some(t("2026-03-01T00:01:00Z")));
    // Half a look-ahead before the due time one more pass finds it still deferred; from then on
    // the scheduler sleeps until the due time itself (no busy loop).
    let la = SignedDuration::from_millis(250);
    let next = Some(t("2026-03-01T00:01:00Z"));
    let wake = kairos_runtime::scheduler::next_wake(s.clock.now(), next, la);
    assert_eq!(wake, t("2026-03-01T00:00:59.875Z"));
    s.clock.set(wake);
    let report = s.scheduler.run_once().await.unwrap();
    assert_eq!(report.jobs_fired, 0);
    assert_eq!(
        kairos_runtime::scheduler::next_wake(s.clock.now(), next, la),
        t("2026-03-01T00:01:00Z")
    );
    s.clock.set(t("2026-03-01T00:01:00Z"));
    let report = s.scheduler.run_once().await.unwrap();
    assert_eq!(report.jobs_fired, 1);
    assert_eq!(
        report.runs_skipped, 1,
        "forbid: the manual run is still active"
    );
}

/// Pausing inside the look-ahead window takes the early run back; resuming before the due time
/// fires it again.
async fn a_pause_withdraws_an_early_run(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(every_minute("p", "")).await.unwrap();
    s.clock.set(t("2026-03-01T00:00:59.800Z"));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 1);
    s.jobs.set_paused("default", "p", true).await.unwrap();
    assert!(s.runs("p").await.is_empty());
    s.clock.set(t("2026-03-01T00:00:59.900Z"));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 0);
    s.jobs.set_paused("default", "p", false).await.unwrap();
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 1);
    s.clock.set(t("2026-03-01T00:01:00Z"));
    assert_eq!(s.work().await, 1);
    let runs = s.runs("p").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].scheduled_for, t("2026-03-01T00:01:00Z"));
}

/// Pausing after a worker claimed the early run (it waits for its due time) takes it back: the
/// run is gone and the worker's attempt never starts.
async fn a_pause_withdraws_an_early_run_already_claimed(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(every_minute("pc", "")).await.unwrap();
    s.clock.set(t("2026-03-01T00:00:59.800Z"));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 1);
    let mut tasks = JoinSet::new();
    assert_eq!(s.worker.claim_once(&mut tasks).await.unwrap(), 1);
    s.jobs.set_paused("default", "pc", true).await.unwrap();
    s.worker.heartbeat_once().await.unwrap();
    while tasks.join_next().await.is_some() {}
    assert!(s.runs("pc").await.is_empty());
    assert_eq!(
        s.clock.now(),
        t("2026-03-01T00:00:59.800Z"),
        "it never waited for T"
    );
}

#[test]
fn the_scheduler_wakes_half_the_lookahead_before_the_next_due_time() {
    use kairos_runtime::scheduler::next_wake;
    let now = t("2026-03-01T00:00:00Z");
    let la = SignedDuration::from_millis(250);
    assert_eq!(
        next_wake(now, Some(t("2026-03-01T00:00:00.900Z")), la),
        t("2026-03-01T00:00:00.775Z"),
        "half the look-ahead before: one pass takes the due times of half a window"
    );
    // Due in 200 ms, inside the window: wake when it is 125 ms away, not at once.
    assert_eq!(
        next_wake(now, Some(t("2026-03-01T00:00:00.200Z")), la),
        t("2026-03-01T00:00:00.075Z")
    );
    // Nothing scheduled: the polling fallback (a second: another node's change whose
    // notification was lost is seen within it).
    assert_eq!(next_wake(now, None, la), t("2026-03-01T00:00:01Z"));
    // Far away: the fallback.
    assert_eq!(
        next_wake(now, Some(t("2026-03-01T01:00:00Z")), la),
        t("2026-03-01T00:00:01Z")
    );
    // Something in the window was not fired early (it has active runs): its due time.
    assert_eq!(
        next_wake(now, Some(t("2026-03-01T00:00:00.100Z")), la),
        t("2026-03-01T00:00:00.100Z")
    );
    // Already due: at once.
    assert_eq!(next_wake(now, Some(t("2026-02-28T23:59:59Z")), la), now);
    // Without look-ahead: the due time itself.
    assert_eq!(
        next_wake(
            now,
            Some(t("2026-03-01T00:00:00.900Z")),
            SignedDuration::ZERO
        ),
        t("2026-03-01T00:00:00.900Z")
    );
}
