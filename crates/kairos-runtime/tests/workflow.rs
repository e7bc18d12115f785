//! Workflows under a manual clock, on each backend: a workflow job fires like any job, its run
//! is started by the worker that claims it, and each step's end queues the next steps, with
//! real shell steps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

#[allow(dead_code, reason = "each test file uses part of the shared setup")]
mod common;

use common::{Setup, setup, spec, t};
use kairos_core::run::RunState;
use kairos_store::RunStepsParams;
use kairos_testkit::Backend;

kairos_testkit::backend_tests! {
    a_scheduled_workflow_runs_its_steps_in_order_and_counts_once_for_overlap,
    a_step_that_fails_after_its_retries_fails_the_run,
}

async fn steps(s: &Setup, run_id: i64) -> Vec<(String, RunState)> {
    s.ctx
        .store
        .run_steps(RunStepsParams { run_id })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.step.unwrap(), r.state))
        .collect()
}

fn named(pairs: &[(&str, RunState)]) -> Vec<(String, RunState)> {
    pairs.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
}

async fn a_scheduled_workflow_runs_its_steps_in_order_and_counts_once_for_overlap(
    backend: Backend,
) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let out = s.temp.dir().join("order");
    let step = |name: &str, deps: &str| {
        format!(
            r#"{{"name":"{name}","depends_on":[{deps}],"task":{{"kind":"shell","script":"echo {name} >> '{}'"}}}}"#,
            out.display()
        )
    };
    s.jobs
        .create(spec(&format!(
            r#"{{"name":"flow","triggers":[{{"cron":"* * * * *"}}],"steps":[{},{},{}]}}"#,
            step("first", ""),
            step("second", r#""first""#),
            step("third", r#""second""#),
        )))
        .await
        .unwrap();
    s.clock.set(t("2026-03-01T00:01:00.003Z"));
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_queued, 1);
    // The claim starts the workflow run: its first step is queued, nothing has run.
    assert_eq!(s.work().await, 1);
    let run = s.runs("flow").await.remove(0);
    assert_eq!(run.state, RunState::Running);
    use RunState::*;
    assert_eq!(
        steps(&s, run.id).await,
        named(&[
            ("first", Queued),
            ("second", Scheduled),
            ("third", Scheduled)
        ])
    );
    // The next due time comes while it runs: `overlap: forbid` skips it. Its steps do not
    // count as runs of the job: one active run, the workflow run.
    s.clock.set(t("2026-03-01T00:02:00.003Z"));
    s.scheduler.run_once().await.unwrap();
    let runs = s.runs("flow").await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].state, Skipped);
    // Each step's end queues the next.
    for done in 1..=3 {
        assert_eq!(s.work().await, 1, "step {done}");
    }
    assert_eq!(s.work().await, 0);
    assert_eq!(
        steps(&s, run.id).await,
        named(&[
            ("first", Succeeded),
            ("second", Succeeded),
            ("third", Succeeded)
        ])
    );
    let run = s.runs("flow").await.remove(0);
    assert_eq!(run.state, Succeeded);
    assert!(run.finished_at.is_some());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "first\nsecond\nthird\n"
    );
}

async fn a_step_that_fails_after_its_retries_fails_the_run(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(spec(
            r#"{"name":"flow","steps":[
                {"name":"flaky","task":{"kind":"shell","script":"exit 2"},
                 "retry":{"max_attempts":2,"backoff":{"initial":"30s","jitter":0.0}}},
                {"name":"after","depends_on":["flaky"],"task":{"kind":"shell","script":"true"}},
                {"name":"cleanup","depends_on":["flaky"],"trigger_rule":"all_failed",
                 "task":{"kind":"shell","script":"true"}}]}"#,
        ))
        .await
        .unwrap();
    let run = s.jobs.trigger("default", "flow").await.unwrap();
    assert_eq!(s.work().await, 1, "the workflow run starts");
    assert_eq!(s.work().await, 1, "the first attempt of `flaky`");
    use RunState::*;
    assert_eq!(
        steps(&s, run.id).await,
        named(&[
            ("flaky", Queued),
            ("after", Scheduled),
            ("cleanup", Scheduled)
        ]),
        "a step to be retried is still active: nothing after it is decided"
    );
    assert_eq!(s.work().await, 0, "the retry waits for its backoff");
    s.clock.advance(jiff::SignedDuration::from_secs(31));
    assert_eq!(s.work().await, 1, "the second attempt");
    assert_eq!(
        steps(&s, run.id).await,
        named(&[
            ("flaky", Failed),
            ("after", UpstreamFailed),
            ("cleanup", Queued)
        ])
    );
    assert_eq!(s.work().await, 1, "the cleanup step");
    assert_eq!(s.runs("flow").await[0].state, Failed);
    let flaky = &s
        .ctx
        .store
        .run_steps(RunStepsParams { run_id: run.id })
        .await
        .unwrap()[0];
    assert_eq!(flaky.attempt, 2);
    assert_eq!(flaky.exit_code, Some(2));
}
