//! Backfills under a manual clock, on each backend: one run per due time of the range that has
//! none, held until the job's overlap policy lets the scheduler queue it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

#[allow(dead_code, reason = "each test file uses part of the shared setup")]
mod common;

use common::{setup, spec, t};
use kairos_core::run::{RunOrigin, RunState};
use kairos_runtime::JobError;
use kairos_testkit::Backend;

kairos_testkit::backend_tests! {
    a_backfill_runs_each_missing_due_time_one_at_a_time,
    a_backfill_with_overlap_allow_runs_up_to_max_concurrent,
    bad_backfills_are_refused_and_change_nothing,
}

fn daily(name: &str, extra: &str) -> kairos_core::JobSpec {
    spec(&format!(
        r#"{{"name":"{name}","triggers":[{{"cron":"0 0 * * *"}}],"task":{{"kind":"shell","script":"true"}}{extra}}}"#
    ))
}

async fn a_backfill_runs_each_missing_due_time_one_at_a_time(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(daily("etl", "")).await.unwrap();
    let (from, to) = (t("2026-02-01T00:00:00Z"), t("2026-02-10T00:00:00Z"));

    let dry = s
        .jobs
        .backfill("default", "etl", from, to, true)
        .await
        .unwrap();
    assert_eq!(dry.created.len(), 10, "ten days, both ends included");
    assert!(dry.created.iter().all(|r| r.run_id.is_none()));
    assert!(s.runs("etl").await.is_empty(), "a dry run writes nothing");

    let done = s
        .jobs
        .backfill("default", "etl", from, to, false)
        .await
        .unwrap();
    assert_eq!(done.created.len(), 10);
    let runs = s.runs("etl").await;
    assert!(
        runs.iter()
            .all(|r| r.state == RunState::Scheduled && r.origin == RunOrigin::Backfill)
    );
    assert_eq!(s.work().await, 0, "held runs are not claimed");

    // `overlap: forbid` (the default): one at a time, earliest first.
    for day in 1..=10 {
        let report = s.scheduler.run_once().await.unwrap();
        assert_eq!(report.runs_released, 1, "day {day}");
        assert_eq!(s.scheduler.run_once().await.unwrap().runs_released, 0);
        assert_eq!(s.work().await, 1, "day {day}");
        let runs = s.runs("etl").await;
        let finished: Vec<_> = runs
            .iter()
            .filter(|r| r.state == RunState::Succeeded)
            .map(|r| r.scheduled_for)
            .collect();
        assert_eq!(finished.len(), day);
        assert_eq!(
            finished.last().copied(),
            Some(t(&format!("2026-02-{day:02}T00:00:00Z")))
        );
    }
    // Again: every due time has its run.
    let again = s
        .jobs
        .backfill("default", "etl", from, to, false)
        .await
        .unwrap();
    assert!(again.created.is_empty());
    assert_eq!(again.existing.len(), 10);
    assert_eq!(s.runs("etl").await.len(), 10);
}

async fn a_backfill_with_overlap_allow_runs_up_to_max_concurrent(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(daily("wide", r#","overlap":"allow","max_concurrent":3"#))
        .await
        .unwrap();
    s.jobs
        .backfill(
            "default",
            "wide",
            t("2026-02-01T00:00:00Z"),
            t("2026-02-05T00:00:00Z"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_released, 3);
    assert_eq!(s.work().await, 3);
    assert_eq!(s.scheduler.run_once().await.unwrap().runs_released, 2);
    assert_eq!(s.work().await, 2);
    assert!(
        s.runs("wide")
            .await
            .iter()
            .all(|r| r.state == RunState::Succeeded)
    );
}

async fn bad_backfills_are_refused_and_change_nothing(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs.create(daily("etl", "")).await.unwrap();
    s.jobs
        .create(spec(
            r#"{"name":"manual","task":{"kind":"shell","script":"true"}}"#,
        ))
        .await
        .unwrap();
    let field = |e: JobError| match e {
        JobError::Invalid(errs) => errs.errors[0].field.clone(),
        e => panic!("not a validation error: {e}"),
    };
    let backwards = s
        .jobs
        .backfill(
            "default",
            "etl",
            t("2026-02-10T00:00:00Z"),
            t("2026-02-01T00:00:00Z"),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(field(backwards), "to");
    let huge = s
        .jobs
        .backfill(
            "default",
            "etl",
            t("1990-01-01T00:00:00Z"),
            t("2026-01-01T00:00:00Z"),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(field(huge), "to");
    let manual = s
        .jobs
        .backfill(
            "default",
            "manual",
            t("2026-02-01T00:00:00Z"),
            t("2026-02-02T00:00:00Z"),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(field(manual), "triggers");
    let missing = s
        .jobs
        .backfill(
            "default",
            "nope",
            t("2026-02-01T00:00:00Z"),
            t("2026-02-02T00:00:00Z"),
            false,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            missing,
            JobError::Store(kairos_store::StoreError::JobNotFound { .. })
        ),
        "{missing}"
    );
    assert!(s.runs("etl").await.is_empty());
}
