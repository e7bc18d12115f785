//! Failure modes, with fake executors from the testkit (a hanging or failing task) on a real
//! store of each backend and a manual clock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use kairos_core::JobSpec;
use kairos_core::run::{AttemptStatus, RunState};
use kairos_core::spec::ExecutionMode;
use kairos_runtime::rescuer::Rescuer;
use kairos_runtime::scheduler::Scheduler;
use kairos_runtime::worker::Worker;
use kairos_runtime::{Clock as _, Event, JobService, ManualClock, NodeContext, WorkerConfig};
use kairos_store::{Run, RunListParams};
use kairos_testkit::{
    Backend, FailingExecutor, HangingExecutor, RecordingExecutor, TestStore, node_context_on,
    wait_for_event,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

kairos_testkit::backend_tests! {
    shutdown_releases_attempts_that_outlive_the_grace,
    an_attempt_whose_lease_was_lost_is_stopped_and_its_result_refused,
    an_attempt_whose_lease_cannot_be_renewed_is_killed_before_it_expires,
    a_run_claimed_ahead_does_not_start_on_a_lease_that_is_no_longer_safe,
    a_run_released_unstarted_after_a_cancel_request_ends_cancelled,
    retries_follow_the_retry_conditions,
    the_executor_gets_the_run_context_and_the_job_policies,
    at_most_once_runs_stopped_by_shutdown_are_not_run_again,
    a_shutdown_releases_a_run_still_waiting_for_its_due_time,
    a_cancel_stops_a_running_attempt_without_waiting_for_the_heartbeat,
    a_cancel_whose_notification_was_missed_arrives_within_seconds,
    an_attempt_that_panics_gives_its_lease_up,
    an_at_most_once_run_whose_node_died_before_it_began_runs_elsewhere,
}

/// An executor whose attempts panic: a failure mode a bug could bring.
#[derive(Debug, Default)]
struct PanickingExecutor;

#[async_trait::async_trait]
impl kairos_exec::Executor for PanickingExecutor {
    async fn execute(&self, _req: kairos_exec::ExecRequest) -> kairos_core::run::AttemptOutcome {
        panic!("an executor bug");
    }
}

/// An attempt whose task panics gives its lease up: the worker stops renewing it, so the run
/// is rescued after the lease instead of staying `running` forever.
async fn an_attempt_that_panics_gives_its_lease_up(backend: Backend) {
    let Some((ctx, clock, _temp, run)) = one_triggered_run(
        backend,
        r#"{"name":"boom","task":{"kind":"shell","script":"true"}}"#,
    )
    .await
    else {
        return;
    };
    let worker = Worker::new(
        ctx.clone(),
        Arc::new(PanickingExecutor),
        WorkerConfig::default(),
    );
    let mut tasks = JoinSet::new();
    assert_eq!(worker.claim_once(&mut tasks).await.unwrap(), 1);
    assert!(
        tasks.join_next().await.unwrap().is_err(),
        "the task panicked"
    );
    // A heartbeat after the panic renews nothing...
    clock.advance(SignedDuration::from_secs(20));
    worker.heartbeat_once().await.unwrap();
    // ...so the lease taken at the claim expires, and the run is rescued.
    clock.advance(SignedDuration::from_secs(11));
    let report = Rescuer::new(ctx.clone(), Duration::from_secs(5))
        .run_once(false)
        .await
        .unwrap();
    assert_eq!(report.requeued, vec![run.id]);
}

fn spec(json: &str) -> JobSpec {
    JobSpec::from_json(json).unwrap()
}

/// A node context on `backend` under a manual clock with one job created from `json` and one
/// run of it triggered; `None` when the backend is unreachable.
async fn one_triggered_run(
    backend: Backend,
    json: &str,
) -> Option<(NodeContext, ManualClock, TestStore, Run)> {
    let (ctx, clock, temp) = node_context_on(backend, "2026-03-01T00:00:00Z").await?;
    let run = trigger_one(&ctx, json).await;
    Some((ctx, clock, temp, run))
}

/// [`one_triggered_run`] on PostgreSQL behind the testkit's proxy, which the test cuts or
/// refuses; `None` without a server.
async fn one_triggered_run_behind_proxy(
    json: &str,
) -> Option<(
    NodeContext,
    kairos_testkit::postgres::TempPostgres,
    kairos_testkit::proxy::TcpProxy,
    Run,
)> {
    let (pg, proxy) = kairos_testkit::postgres::temp_postgres_behind_proxy().await?;
    let clock = ManualClock::new("2026-03-01T00:00:00Z".parse().unwrap());
    let ctx = NodeContext::new("test-node", pg.store.clone(), Arc::new(clock));
    let run = trigger_one(&ctx, json).await;
    Some((ctx, pg, proxy, run))
}

/// Creates a job from `json` and triggers one run of it.
async fn trigger_one(ctx: &NodeContext, json: &str) -> Run {
    let jobs = JobService::new(ctx.clone());
    let job = jobs.create(spec(json)).await.unwrap();
    jobs.trigger(job.namespace(), job.name()).await.unwrap()
}

async fn shutdown_releases_attempts_that_outlive_the_grace(backend: Backend) {
    let Some((ctx, _clock, _temp, run)) = one_triggered_run(
        backend,
        r#"{"name":"stuck","task":{"kind":"shell","script":"true"}}"#,
    )
    .await
    else {
        return;
    };
    let hanging = Arc::new(HangingExecutor::default());
    let worker = Worker::new(ctx.clone(), hanging.clone(), WorkerConfig::default());
    let shutdown = CancellationToken::new();
    let mut events = ctx.telemetry.subscribe();
    let task = tokio::spawn(worker.run(shutdown.clone(), Duration::from_millis(50)));
    hanging.started().await;
    shutdown.cancel();
    task.await.unwrap();
    wait_for_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::RunReleased { .. })
    })
    .await;
    let released = ctx
        .store
        .run_get(kairos_store::RunGetParams { id: run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(released.state, RunState::Queued, "released, not lost");
    assert_eq!(released.attempt, 0, "the released attempt does not count");
    assert!(
        ctx.store
            .attempt_list(kairos_store::AttemptListParams { run_id: run.id })
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_attempt_whose_lease_was_lost_is_stopped_and_its_result_refused(backend: Backend) {
    let Some((ctx, clock, _temp, run)) = one_triggered_run(
        backend,
        r#"{"name":"slow","task":{"kind":"shell","script":"true"}}"#,
    )
    .await
    else {
        return;
    };
    let hanging = Arc::new(HangingExecutor::default());
    let worker = Worker::new(ctx.clone(), hanging.clone(), WorkerConfig::default());
    let mut tasks = JoinSet::new();
    assert_eq!(worker.claim_once(&mut tasks).await.unwrap(), 1);
    hanging.started().await;
    // This node stalls past its lease; the rescuer (as on another node) requeues the run.
    clock.advance(SignedDuration::from_secs(31));
    let report = Rescuer::new(ctx.clone(), Duration::from_secs(5))
        .run_once(false)
        .await
        .unwrap();
    assert_eq!(report.requeued, vec![run.id]);
    // The stalled worker's next heartbeat finds the lease gone and stops the attempt.
    worker.heartbeat_once().await.unwrap();
    tasks.join_next().await.unwrap().unwrap();
    let after = ctx
        .store
        .run_get(kairos_store::RunGetParams { id: run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.state,
        RunState::Queued,
        "the stale result was not recorded"
    );
    let attempts = ctx
        .store
        .attempt_list(kairos_store::AttemptListParams { run_id: run.id })
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, "lost");
}

async fn run_now(ctx: &NodeContext, id: kairos_core::run::RunId) -> Run {
    ctx.store
        .run_get(kairos_store::RunGetParams { id })
        .await
        .unwrap()
        .unwrap()
}

/// A worker that cannot renew its lease (the store is unreachable, the node is cut off) kills
/// the attempt before the lease can expire in the store and drops its result, so the run never
/// executes on two nodes at once. Renewals push the point back. The manual clock stands for
/// the worker's clock; no heartbeat runs between the steps (the test calls them).
async fn an_attempt_whose_lease_cannot_be_renewed_is_killed_before_it_expires(backend: Backend) {
    let Some((ctx, clock, _temp, run)) = one_triggered_run(
        backend,
        r#"{"name":"slow","task":{"kind":"shell","script":"true"}}"#,
    )
    .await
    else {
        return;
    };
    let hanging = Arc::new(HangingExecutor::default());
    // A 30 s lease: renewed every 10 s, given up 24 s after the last renewal was sent.
    let worker = Worker::new(ctx.clone(), hanging.clone(), WorkerConfig::default());
    let mut tasks = JoinSet::new();
    assert_eq!(worker.claim_once(&mut tasks).await.unwrap(), 1);
    hanging.started().await;
    clock.advance(SignedDuration::from_secs(20));
    worker.heartbeat_once().await.unwrap();
    // 30 s after the claim: the renewal sent at 20 s holds it until 44 s.
    clock.advance(SignedDuration::from_secs(10));
    worker.expire_once();
    tokio::task::yield_now().await;
    assert!(tasks.try_join_next().is_none(), "renewed: still running");
    clock.advance(SignedDuration::from_secs(13));
    worker.expire_once();
    assert!(tasks.try_join_next().is_none(), "43 s: still running");
    // The heartbeats meant to come at 30 s and 40 s did not get through.
    clock.advance(SignedDuration::from_secs(1));
    worker.expire_once();
    tasks.join_next().await.unwrap().unwrap();
    assert!(hanging.killed(), "killed at once, not after the kill grace");
    let after = run_now(&ctx, run.id).await;
    assert_eq!(after.state, RunState::Running, "the result was dropped");
    assert_eq!(after.attempt, 1);
    // Once the lease has expired in the store, the rescuer requeues the run.
    let rescuer = Rescuer::new(ctx.clone(), Duration::from_secs(5));
    assert_eq!(rescuer.run_once(false).await.unwrap(), Default::default());
    clock.advance(SignedDuration::from_secs(7));
    assert_eq!(
        rescuer.run_once(false).await.unwrap().requeued,
        vec![run.id]
    );
}

/// Queues a run of job `job_id` due 200 ms after the clock's now (a worker claims it ahead,
/// then waits for it).
async fn due_ahead(
    ctx: &NodeContext,
    clock: &ManualClock,
    job_id: kairos_core::run::JobId,
    execution: ExecutionMode,
) -> Run {
    let due = clock.now() + SignedDuration::from_millis(200);
    ctx.store
        .run_insert(kairos_store::RunInsertParams {
            expected_version: None,
            job_id,
            run: kairos_store::RunInsert {
                scheduled_for: due,
                run_at: due,
                origin: kairos_core::run::RunOrigin::Schedule,
                skip: None,
                exclusive: false,
                max_attempts: 1,
                execution,
                event: None,
            },
            params: None,
            actor: "test".into(),
            now: Some(clock.now()),
        })
        .await
        .unwrap()
}

/// A run claimed ahead of its due time does not start if the lease is no longer safe by then;
/// it goes back to the queue as it was (nothing ran).
async fn a_run_claimed_ahead_does_not_start_on_a_lease_that_is_no_longer_safe(backend: Backend) {
    let Some((ctx, clock, _temp)) = node_context_on(backend, "2026-03-01T00:00:00Z").await else {
        return;
    };
    let jobs = JobService::new(ctx.clone());
    let job = jobs
        .create(spec(
            r#"{"name":"ahead","task":{"kind":"shell","script":"true"}}"#,
        ))
        .await
        .unwrap();
    let run = due_ahead(&ctx, &clock, job.id, ExecutionMode::AtMostOnce).await;
    let recorder = Arc::new(RecordingExecutor::default());
    let worker = Worker::new(ctx.clone(), recorder.clone(), WorkerConfig::default());
    let mut tasks = JoinSet::new();
    assert_eq!(
        worker.claim_once(&mut tasks).await.unwrap(),
        1,
        "claimed ahead"
    );
    // The node stalls: by the time it looks again, the lease is past its safe point.
    clock.advance(SignedDuration::from_secs(25));
    tasks.join_next().await.unwrap().unwrap();
    assert!(recorder.recorded().is_empty(), "the task never ran");
    let after = run_now(&ctx, run.id).await;
    assert_eq!(after.state, RunState::Queued, "released");
    assert_eq!(
        after.attempt, 0,
        "the attempt that never began is not counted"
    );
}

/// An `at_most_once` run claimed ahead whose node dies before the due time never began: the
/// rescue puts it back and another node runs it. Once a worker has begun an attempt (it
/// records that before the task starts), a node that dies leaves it `lost`.
async fn an_at_most_once_run_whose_node_died_before_it_began_runs_elsewhere(backend: Backend) {
    let Some((ctx, clock, _temp)) = node_context_on(backend, "2026-03-01T00:00:00Z").await else {
        return;
    };
    let job = JobService::new(ctx.clone())
        .create(spec(
            r#"{"name":"once","execution":"at_most_once","task":{"kind":"shell","script":"true"}}"#,
        ))
        .await
        .unwrap();
    let run = due_ahead(&ctx, &clock, job.id, ExecutionMode::AtMostOnce).await;
    let rescuer = Rescuer::new(ctx.clone(), Duration::from_secs(5));

    // Node A claims it ahead and dies while it waits for the due time.
    let hanging = Arc::new(HangingExecutor::default());
    let a = Worker::new(ctx.clone(), hanging.clone(), WorkerConfig::default());
    let mut tasks = JoinSet::new();
    assert_eq!(a.claim_once(&mut tasks).await.unwrap(), 1, "claimed ahead");
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(a);
    clock.advance(SignedDuration::from_secs(31));
    let report = rescuer.run_once(false).await.unwrap();
    assert_eq!(report.requeued, vec![run.id], "put back: nothing ran");
    assert_eq!(run_now(&ctx, run.id).await.attempt, 0);

    // Node B runs it; it dies once the task has started.
    let b = Worker::new(ctx.clone(), hanging.clone(), WorkerConfig::default());
    assert_eq!(b.claim_once(&mut tasks).await.unwrap(), 1);
    hanging.started().await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(b);
    clock.advance(SignedDuration::from_secs(31));
    let report = rescuer.run_once(false).await.unwrap();
    assert_eq!(report.lost, vec![run.id], "it may have run: never again");
    assert_eq!(run_now(&ctx, run.id).await.state, RunState::Lost);
}

/// A run whose cancel was requested while its attempt waited for its due time, and which the
/// worker then gives back unstarted (its lease no longer safe; a shutdown does the same)
/// before a heartbeat delivered the cancel, ends cancelled: the release does not put a
/// cancelled (or replaced) run back in the queue, where the next claim would start it again.
async fn a_run_released_unstarted_after_a_cancel_request_ends_cancelled(backend: Backend) {
    let Some((ctx, clock, _temp)) = node_context_on(backend, "2026-03-01T00:00:00Z").await else {
        return;
    };
    let jobs = JobService::new(ctx.clone());
    let job = jobs
        .create(spec(
            r#"{"name":"ahead","task":{"kind":"shell","script":"true"}}"#,
        ))
        .await
        .unwrap();
    let run = due_ahead(&ctx, &clock, job.id, ExecutionMode::AtLeastOnce).await;
    let recorder = Arc::new(RecordingExecutor::default());
    let worker = Worker::new(ctx.clone(), recorder.clone(), WorkerConfig::default());
    let mut tasks = JoinSet::new();
    assert_eq!(
        worker.claim_once(&mut tasks).await.unwrap(),
        1,
        "claimed ahead"
    );
    // Cancelled in the store while the attempt waits; no heartbeat tells the worker.
    ctx.store
        .run_cancel(kairos_store::RunCancelParams {
            actor: "test".into(),
            run_id: run.id,
            now: ctx.clock.store_now(),
        })
        .await
        .unwrap();
    assert!(run_now(&ctx, run.id).await.cancel_requested);
    // The node stalls past the lease's safe point: the attempt never begins and is given back.
    clock.advance(SignedDuration::from_secs(25));
    tasks.join_next().await.unwrap().unwrap();
    assert!(recorder.recorded().is_empty(), "the task never ran");
    let after = run_now(&ctx, run.id).await;
    assert_eq!(after.state, RunState::Cancelled, "not queued again");
    assert_eq!(
        after.attempt, 0,
        "the attempt that never began is not counted"
    );
    assert_eq!(worker.claim_once(&mut tasks).await.unwrap(), 0);
}

async fn retries_follow_the_retry_conditions(backend: Backend) {
    // A 404 is not in `on`: the run fails at once.
    let Some((ctx, _clock, _temp, run)) = one_triggered_run(
        backend,
        r#"{"name":"http","task":{"kind":"http","url":"http://127.0.0.1:9/"},
            "retry":{"max_attempts":5,"on":["http:5xx"]}}"#,
    )
    .await
    else {
        return;
    };
    let worker = Worker::new(
        ctx.clone(),
        Arc::new(FailingExecutor(AttemptStatus::HttpStatus { status: 404 })),
        WorkerConfig::default(),
    );
    let mut tasks = JoinSet::new();
    worker.claim_once(&mut tasks).await.unwrap();
    while tasks.join_next().await.is_some() {}
    assert_eq!(
        ctx.store
            .run_get(kairos_store::RunGetParams { id: run.id })
            .await
            .unwrap()
            .unwrap()
            .state,
        RunState::Failed
    );
    // A 503 is: the run goes back to the queue with a later run_at.
    let Some((ctx2, clock2, _temp2, run2)) = one_triggered_run(
        backend,
        r#"{"name":"http","task":{"kind":"http","url":"http://127.0.0.1:9/"},"retry":{"max_attempts":5,"on":["http:5xx"]}}"#,
    )
    .await
    else {
        return;
    };
    let worker2 = Worker::new(
        ctx2.clone(),
        Arc::new(FailingExecutor(AttemptStatus::HttpStatus { status: 503 })),
        WorkerConfig::default(),
    );
    worker2.claim_once(&mut tasks).await.unwrap();
    while tasks.join_next().await.is_some() {}
    let after = ctx2
        .store
        .run_get(kairos_store::RunGetParams { id: run2.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state, RunState::Queued);
    use kairos_runtime::Clock as _;
    assert!(after.run_at > clock2.now(), "a backoff delay applies");
}

async fn the_executor_gets_the_run_context_and_the_job_policies(backend: Backend) {
    let Some((ctx, clock, _temp)) = node_context_on(backend, "2026-03-01T00:00:00Z").await else {
        return;
    };
    let jobs = JobService::new(ctx.clone());
    jobs.create(spec(
        r#"{"name":"rec","triggers":[{"interval":"1m"}],"task":{"kind":"shell","script":"true"},
            "timeout":"90s","kill_grace":"2s"}"#,
    ))
    .await
    .unwrap();
    clock.advance(SignedDuration::from_secs(60));
    Scheduler::new(ctx.clone()).run_once().await.unwrap();
    let recorder = RecordingExecutor::default();
    let worker = Worker::new(
        ctx.clone(),
        Arc::new(recorder.clone()),
        WorkerConfig::default(),
    );
    let mut tasks = JoinSet::new();
    worker.claim_once(&mut tasks).await.unwrap();
    while tasks.join_next().await.is_some() {}
    let seen = recorder.recorded();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].job, "rec");
    assert_eq!(seen[0].attempt, 1);
    assert_eq!(
        seen[0].scheduled_for,
        "2026-03-01T00:01:00Z".parse().unwrap()
    );
    assert_eq!(seen[0].timeout, Some(SignedDuration::from_secs(90)));
    assert_eq!(seen[0].kill_grace, SignedDuration::from_secs(2));
    let runs = ctx.store.run_list(RunListParams::default()).await.unwrap();
    assert_eq!(runs[0].state, RunState::Succeeded);
}

async fn at_most_once_runs_stopped_by_shutdown_are_not_run_again(backend: Backend) {
    let Some((ctx, _clock, _temp, run)) = one_triggered_run(
        backend,
        r#"{"name":"once","execution":"at_most_once","task":{"kind":"shell","script":"true"}}"#,
    )
    .await
    else {
        return;
    };
    let hanging = Arc::new(HangingExecutor::default());
    let worker = Worker::new(ctx.clone(), hanging.clone(), WorkerConfig::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone(), Duration::from_millis(50)));
    hanging.started().await;
    shutdown.cancel();
    task.await.unwrap();
    let after = ctx
        .store
        .run_get(kairos_store::RunGetParams { id: run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state, RunState::Cancelled, "never queued again");
}

/// A run claimed ahead of its due time that is still waiting when the node shuts down never
/// started: it goes back to the queue, even for `at_most_once`.
async fn a_shutdown_releases_a_run_still_waiting_for_its_due_time(backend: Backend) {
    let Some((ctx, clock, _temp)) = node_context_on(backend, "2026-03-01T00:00:59.800Z").await
    else {
        return;
    };
    let jobs = JobService::new(ctx.clone());
    jobs.create(spec(
        r#"{"name":"early","execution":"at_most_once","triggers":[{"cron":"* * * * *"}],
            "task":{"kind":"shell","script":"true"}}"#,
    ))
    .await
    .unwrap();
    // Due at 00:01:00, 200 ms from now: fired early.
    assert_eq!(
        Scheduler::new(ctx.clone())
            .run_once()
            .await
            .unwrap()
            .jobs_fired_early,
        1
    );
    let recorder = RecordingExecutor::default();
    let worker = Worker::new(
        ctx.clone(),
        Arc::new(recorder.clone()),
        WorkerConfig::default(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone(), Duration::from_millis(50)));
    // The worker claims it ahead; the manual clock never reaches its due time.
    let run_id = loop {
        let runs = ctx.store.run_list(RunListParams::default()).await.unwrap();
        if let Some(run) = runs.iter().find(|r| r.state == RunState::Running) {
            break run.id;
        }
        tokio::task::yield_now().await;
    };
    shutdown.cancel();
    task.await.unwrap();
    let after = ctx
        .store
        .run_get(kairos_store::RunGetParams { id: run_id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state, RunState::Queued, "released, not cancelled");
    assert_eq!(
        after.attempt, 0,
        "the attempt that never started is not counted"
    );
    assert!(recorder.recorded().is_empty(), "the task never ran");
    use kairos_runtime::Clock as _;
    assert_eq!(clock.now(), "2026-03-01T00:00:59.800Z".parse().unwrap());
}

async fn a_cancel_stops_a_running_attempt_without_waiting_for_the_heartbeat(backend: Backend) {
    // Heartbeats every 20 minutes: only the wake-up can deliver the cancel in time.
    cancel_reaches_a_running_attempt(backend, true).await;
}

/// A cancel whose notification never reached the node (its change feed down or silently cut
/// off): the node asks about the runs it holds every second, so the attempt stops within
/// seconds, not at the next heartbeat (20 minutes here). On SQLite the in-process feed
/// delivers it anyway; on PostgreSQL only the poll does.
async fn a_cancel_whose_notification_was_missed_arrives_within_seconds(backend: Backend) {
    cancel_reaches_a_running_attempt(backend, false).await;
}

/// A running attempt under a lease of an hour (heartbeats every 20 minutes) is cancelled in
/// the store, with this node's heartbeat woken (`wake`, as the change feed does) or not; it
/// must end `cancelled` within 5 s.
async fn cancel_reaches_a_running_attempt(backend: Backend, wake: bool) {
    let Some((ctx, _clock, _temp, run)) = one_triggered_run(
        backend,
        r#"{"name":"long","task":{"kind":"shell","script":"true"}}"#,
    )
    .await
    else {
        return;
    };
    let hanging = Arc::new(HangingExecutor::default());
    let config = WorkerConfig {
        lease: kairos_core::lease::LeaseTiming::new(kairos_core::lease::LeaseTiming::MAX).unwrap(),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(ctx.clone(), hanging.clone(), config);
    let shutdown = CancellationToken::new();
    let mut events = ctx.telemetry.subscribe();
    let task = tokio::spawn(worker.run(shutdown.clone(), Duration::from_secs(5)));
    hanging.started().await;
    ctx.store
        .run_cancel(kairos_store::RunCancelParams {
            actor: "test".into(),
            run_id: run.id,
            now: None,
        })
        .await
        .unwrap();
    if wake {
        ctx.heartbeat_wake.notify_one();
    }
    let finished = wait_for_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::RunFinished { .. })
    })
    .await;
    assert!(
        matches!(
            finished,
            Event::RunFinished {
                state: RunState::Cancelled,
                ..
            }
        ),
        "{finished:?}"
    );
    shutdown.cancel();
    task.await.unwrap();
}

/// An executor whose attempts succeed when the test opens the gate.
#[derive(Debug, Default)]
struct GatedExecutor {
    started: tokio::sync::Notify,
    open: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl kairos_exec::Executor for GatedExecutor {
    async fn execute(&self, _req: kairos_exec::ExecRequest) -> kairos_core::run::AttemptOutcome {
        self.started.notify_one();
        self.open.notified().await;
        kairos_core::run::AttemptOutcome::from_status(AttemptStatus::Succeeded)
    }
}

/// A database that restarts while an attempt ends (its connections closed, new ones refused
/// for several seconds) delays the attempt's record; it does not drop it. A dropped record
/// would leave the run `running` until its lease expired, and the rescuer would run the task
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_outlasts_a_database_restart_of_several_seconds() {
    let Some((ctx, pg, proxy, run)) = one_triggered_run_behind_proxy(
        r#"{"name":"blip","task":{"kind":"shell","script":"true"}}"#,
    )
    .await
    else {
        return;
    };
    let gated = Arc::new(GatedExecutor::default());
    let worker = Worker::new(ctx.clone(), gated.clone(), WorkerConfig::default());
    let mut tasks = JoinSet::new();
    assert_eq!(worker.claim_once(&mut tasks).await.unwrap(), 1);
    gated.started.notified().await;
    // The database goes down; the task ends meanwhile.
    proxy.refuse();
    gated.open.notify_one();
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.restore();
    tokio::time::timeout(Duration::from_secs(20), tasks.join_next())
        .await
        .expect("the attempt ends once its result is recorded")
        .unwrap()
        .unwrap();
    let run = pg
        .store
        .run_get(kairos_store::RunGetParams { id: run.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state, RunState::Succeeded, "recorded after the restart");
    assert_eq!(run.attempt, 1, "the task ran once");
}

/// A node cut off from the database kills an attempt whose lease it cannot renew by
/// `lease − lease/5` of real time, even when its wall clock stands still (here a manual clock
/// that never moves, as a clock set back would): the lease is also measured on the monotonic
/// clock, so a task never outlives it because the wall clock stepped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_renewed_ends_on_time_whatever_the_wall_clock_does() {
    let Some((ctx, _pg, proxy, _run)) = one_triggered_run_behind_proxy(
        r#"{"name":"long","task":{"kind":"shell","script":"true"}}"#,
    )
    .await
    else {
        return;
    };
    let hanging = Arc::new(HangingExecutor::default());
    let lease = kairos_core::lease::LeaseTiming::new(kairos_core::lease::LeaseTiming::MIN).unwrap();
    let config = WorkerConfig {
        lease,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(ctx.clone(), hanging.clone(), config);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone(), Duration::from_millis(100)));
    hanging.started().await;
    let cut = std::time::Instant::now();
    proxy.cut();
    // The claim was sent before the cut: the attempt must be killed by `lease − lease/5`
    // after it (2.4 s), whatever the node's clock says.
    let limit = (lease.lease() - lease.margin()).unsigned_abs() + Duration::from_millis(500);
    while !hanging.killed() && cut.elapsed() < limit * 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hanging.killed(), "the attempt was not killed");
    assert!(
        cut.elapsed() <= limit,
        "killed {:?} after the cut, later than {limit:?}",
        cut.elapsed()
    );
    proxy.restore();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
}

/// A store that answers every renewal slowly, but in time, keeps the attempts running: a
/// renewal holds from when it was sent, so it is waited for (beside the next beats) until what
/// it renews to has passed, not cut off at the heartbeat's period. Here each renewal takes 7 s
/// against a heartbeat of 6.67 s (a 20 s lease, given up 16 s after the last renewal that
/// held was sent); cut off at the period, none would count and the attempt would be killed
/// 16 s after its claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_slower_than_the_heartbeat_still_keep_the_attempt() {
    let Some(pg) = kairos_testkit::postgres::temp_postgres().await else {
        return;
    };
    let client = kairos_testkit::postgres::connect(&pg.schema.base_url)
        .await
        .unwrap();
    // Slow renewals only: an update that keeps a run running and moves its lease.
    client
        .batch_execute(&format!(
            "SET search_path = {0}; \
             CREATE FUNCTION slow_renewal() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF OLD.state = 'running' AND NEW.state = 'running' \
                  AND NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at THEN \
                 PERFORM pg_sleep(7); \
               END IF; \
               RETURN NEW; \
             END $$; \
             CREATE TRIGGER slow_renewal BEFORE UPDATE ON {0}.runs \
               FOR EACH ROW EXECUTE FUNCTION slow_renewal();",
            pg.schema.name
        ))
        .await
        .unwrap();
    let ctx = NodeContext::new(
        "test-node",
        pg.store.clone(),
        Arc::new(kairos_runtime::SystemClock),
    );
    trigger_one(
        &ctx,
        r#"{"name":"long","task":{"kind":"shell","script":"true"}}"#,
    )
    .await;
    let hanging = Arc::new(HangingExecutor::default());
    let config = WorkerConfig {
        lease: kairos_core::lease::LeaseTiming::new(SignedDuration::from_secs(20)).unwrap(),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(ctx.clone(), hanging.clone(), config);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone(), Duration::from_millis(100)));
    hanging.started().await;
    let started = std::time::Instant::now();
    // Two renewals in 20 s, each holding before the one before it would run out (the
    // renewals of one run queue for its row, 0.33 s later each time).
    while started.elapsed() < Duration::from_secs(20) {
        assert!(
            !hanging.killed(),
            "killed {:?} after it started",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
}
