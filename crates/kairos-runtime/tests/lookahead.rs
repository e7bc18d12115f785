//! Look-ahead edge cases: changes to a job inside the window between the early fire (or the
//! early claim) and the due time, shutdown and restart inside it, and jobs faster than the
//! window. A manual clock and a real store of each backend; services are driven through
//! `run_once`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

#[allow(dead_code, reason = "each test file uses part of the shared setup")]
mod common;

use common::{Setup, every_minute, setup, spec, t};
use jiff::SignedDuration;
use kairos_core::run::RunState;
use kairos_runtime::Clock as _;
use kairos_store::{Run, RunListParams};
use kairos_testkit::Backend;
use tokio::task::JoinSet;

kairos_testkit::backend_tests! {
    an_update_after_the_early_claim_fires_the_due_time_again,
    a_pause_and_resume_after_the_early_claim_fire_the_due_time_again,
    the_scheduler_never_sleeps_past_a_due_time_in_the_window,
    pausing_through_an_update_withdraws_the_early_run,
    a_job_deleted_before_its_due_time_does_not_run,
    a_restart_requeues_an_early_claimed_run_that_never_started,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_shutdown_does_not_start_a_run_claimed_ahead,
    new_triggers_withdraw_an_early_run_they_do_not_contain,
}

const T: &str = "2026-03-01T00:01:00Z";

fn dump(runs: &[Run]) -> Vec<String> {
    runs.iter()
        .map(|r| {
            format!(
                "{} {:?} {:?} cancel={}",
                r.scheduled_for, r.origin, r.state, r.cancel_requested
            )
        })
        .collect()
}

/// The scheduler fires the one job early, 200 ms before its due time T.
async fn fire_early(s: &Setup) {
    s.clock.set(t("2026-03-01T00:00:59.800Z"));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 1);
}

/// [`fire_early`], then the worker claims the run ahead; its attempt waits in the set.
async fn claim_early(s: &Setup) -> JoinSet<()> {
    fire_early(s).await;
    let mut tasks = JoinSet::new();
    assert_eq!(s.worker.claim_once(&mut tasks).await.unwrap(), 1);
    tasks
}

async fn assert_due_time_ran(s: &Setup, job: &str) {
    let runs = s.runs(job).await;
    assert!(
        runs.iter()
            .any(|r| r.scheduled_for == t(T) && r.state == RunState::Succeeded),
        "due time T did not run: {:?}",
        dump(&runs)
    );
}

/// A: update of the triggers (same due times) after the early run was claimed.
async fn an_update_after_the_early_claim_fires_the_due_time_again(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(every_minute("u", "")).await.unwrap();
    let mut tasks = claim_early(&s).await;
    let cur = s.jobs.get("default", "u").await.unwrap();
    let new = spec(
        r#"{"name":"u","triggers":[{"cron":"*/1 * * * *"}],"task":{"kind":"shell","script":"echo hi"}}"#,
    );
    s.jobs
        .update("default", "u", cur.version, new)
        .await
        .unwrap();
    s.worker.heartbeat_once().await.unwrap();
    while tasks.join_next().await.is_some() {}
    s.clock.set(t(T));
    s.scheduler.run_once().await.unwrap();
    s.work().await;
    assert_due_time_ran(&s, "u").await;
}

/// B: pause + resume inside the window after the early run was claimed.
async fn a_pause_and_resume_after_the_early_claim_fire_the_due_time_again(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(every_minute("p", "")).await.unwrap();
    let mut tasks = claim_early(&s).await;
    s.jobs.set_paused("default", "p", true).await.unwrap();
    s.worker.heartbeat_once().await.unwrap();
    while tasks.join_next().await.is_some() {}
    s.clock.set(t("2026-03-01T00:00:59.900Z"));
    s.jobs.set_paused("default", "p", false).await.unwrap();
    assert_eq!(
        s.scheduler.run_once().await.unwrap().runs_queued,
        1,
        "fired early again"
    );
    s.clock.set(t(T));
    s.scheduler.run_once().await.unwrap();
    s.work().await;
    assert_due_time_ran(&s, "p").await;
}

/// D: scheduler next_wake with a sub-lookahead interval job fired early and another deferred.
async fn the_scheduler_never_sleeps_past_a_due_time_in_the_window(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(every_minute("slow", "")).await.unwrap();
    s.jobs.trigger("default", "slow").await.unwrap();
    s.clock.set(t("2026-03-01T00:00:59.700Z"));
    s.jobs
        .create(spec(r#"{"name":"fast","triggers":[{"interval":"100ms"}],"task":{"kind":"shell","script":"true"}}"#))
        .await
        .unwrap();
    s.clock.set(t("2026-03-01T00:00:59.760Z"));
    let report = s.scheduler.run_once().await.unwrap();
    assert_eq!(report.jobs_fired_early, 1);
    let next = s.ctx.store.job_next_fire_at().await.unwrap();
    let wake =
        kairos_runtime::scheduler::next_wake(s.clock.now(), next, SignedDuration::from_millis(250));
    assert!(
        wake <= next.unwrap(),
        "scheduler sleeps past the next due time {next:?}: wake {wake}"
    );
}

/// E: an update that pauses through the spec, inside the window.
async fn pausing_through_an_update_withdraws_the_early_run(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(every_minute("e", "")).await.unwrap();
    fire_early(&s).await;
    let cur = s.jobs.get("default", "e").await.unwrap();
    let mut new = every_minute("e", "");
    new.paused = true;
    s.jobs
        .update("default", "e", cur.version, new)
        .await
        .unwrap();
    let runs = s.runs("e").await;
    assert!(
        runs.is_empty(),
        "paused through update, early run kept: {:?}",
        dump(&runs)
    );
}

/// F: delete inside the window after the early claim.
async fn a_job_deleted_before_its_due_time_does_not_run(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let marker = s.temp.dir().join("ran");
    let json = format!(
        r#"{{"name":"d","triggers":[{{"cron":"* * * * *"}}],"task":{{"kind":"shell","script":"touch {}"}}}}"#,
        marker.display()
    );
    s.jobs.create(spec(&json)).await.unwrap();
    let mut tasks = claim_early(&s).await;
    s.jobs.delete("default", "d", None, false).await.unwrap();
    // The job service wakes the worker's heartbeat; a running worker would beat now.
    s.worker.heartbeat_once().await.unwrap();
    s.clock.set(t(T));
    while tasks.join_next().await.is_some() {}
    assert!(
        !marker.exists(),
        "a job deleted before its due time still ran"
    );
}

/// H: kill -9 with an at_most_once run claimed early, restart before its due time.
async fn a_restart_requeues_an_early_claimed_run_that_never_started(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(every_minute("h", r#","execution":"at_most_once""#))
        .await
        .unwrap();
    let mut tasks = claim_early(&s).await;
    tasks.abort_all(); // the node dies
    while tasks.join_next().await.is_some() {}
    s.clock.set(t("2026-03-01T00:00:59.900Z"));
    let rescuer =
        kairos_runtime::rescuer::Rescuer::new(s.ctx.clone(), std::time::Duration::from_secs(5));
    rescuer.run_once(true).await.unwrap();
    let runs = s.runs("h").await;
    assert_ne!(
        runs[0].state,
        RunState::Lost,
        "a run that never started is lost"
    );
}

/// G: shutdown while an early-claimed run waits; its due time comes during the grace period.
async fn a_shutdown_does_not_start_a_run_claimed_ahead(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let marker = s.temp.dir().join("ran");
    let json = format!(
        r#"{{"name":"g","execution":"at_most_once","triggers":[{{"cron":"* * * * *"}}],"task":{{"kind":"shell","script":"touch {}"}}}}"#,
        marker.display()
    );
    s.jobs.create(spec(&json)).await.unwrap();
    fire_early(&s).await;
    let Setup {
        worker,
        clock,
        ctx,
        temp: _temp,
        ..
    } = s;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone(), std::time::Duration::from_secs(5)));
    loop {
        let runs = ctx.store.run_list(RunListParams::default()).await.unwrap();
        if runs.iter().any(|r| r.state == RunState::Running) {
            break;
        }
        tokio::task::yield_now().await;
    }
    shutdown.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    clock.set(t(T)); // due time arrives during the drain
    task.await.unwrap();

    assert!(
        !marker.exists(),
        "a run due after shutdown began was started during the drain"
    );
}

/// I: new triggers that drop the early-fired due time but keep the same next_fire_at.
async fn new_triggers_withdraw_an_early_run_they_do_not_contain(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(every_minute("i", "")).await.unwrap();
    fire_early(&s).await;
    let cur = s.jobs.get("default", "i").await.unwrap();
    let new = spec(
        r#"{"name":"i","triggers":[{"cron":"*/2 * * * *"}],"task":{"kind":"shell","script":"echo hi"}}"#,
    );
    s.jobs
        .update("default", "i", cur.version, new)
        .await
        .unwrap();
    s.clock.set(t(T));
    s.work().await;
    let runs = s.runs("i").await;
    assert!(
        runs.is_empty(),
        "00:01 is not a due time of */2 but ran: {:?}",
        dump(&runs)
    );
}

/// The look-ahead grows to four times a slow round (a herd of jobs due together), at most 2 s,
/// never below the configured value, shrinks back a quarter per quick round, and stays off when
/// configured off.
#[test]
fn the_lookahead_grows_with_slow_rounds_and_shrinks_back() {
    use kairos_runtime::scheduler::{MAX_ADAPTIVE_LOOKAHEAD, adapt_lookahead};
    let ms = SignedDuration::from_millis;
    let base = ms(250);
    assert_eq!(
        adapt_lookahead(base, base, ms(1)),
        base,
        "quick rounds keep it"
    );
    assert_eq!(
        adapt_lookahead(base, base, ms(200)),
        ms(800),
        "a slow round grows it"
    );
    assert_eq!(
        adapt_lookahead(base, base, ms(900)),
        MAX_ADAPTIVE_LOOKAHEAD,
        "bounded"
    );
    assert_eq!(
        adapt_lookahead(base, ms(800), ms(10)),
        ms(600),
        "shrinks by a quarter"
    );
    assert_eq!(
        adapt_lookahead(base, ms(800), ms(190)),
        ms(760),
        "not below 4 × the round"
    );
    let mut current = MAX_ADAPTIVE_LOOKAHEAD;
    for _ in 0..20 {
        current = adapt_lookahead(base, current, ms(1));
    }
    assert_eq!(current, base, "back to the configured value");
    assert_eq!(
        adapt_lookahead(ms(4000), ms(4000), ms(1)),
        ms(4000),
        "a longer base holds"
    );
    assert_eq!(
        adapt_lookahead(SignedDuration::ZERO, SignedDuration::ZERO, ms(500)),
        SignedDuration::ZERO,
        "off stays off"
    );
}
