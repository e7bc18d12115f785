//! Calendars under a manual clock, on a real store of each backend: excluded due times are not
//! fired and not counted as missed, a calendar change re-plans the jobs that use it at once
//! (withdrawing a run created ahead for a day that became a holiday), and writes that name
//! unknown calendars or delete used ones are refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

#[allow(dead_code, reason = "each test file uses part of the shared setup")]
mod common;

use common::{setup, spec, t};
use kairos_core::calendar::CalendarSpec;
use kairos_runtime::*;
use kairos_store::StoreError;
use kairos_testkit::Backend;

kairos_testkit::backend_tests! {
    excluded_days_are_not_fired_nor_missed,
    a_calendar_change_replans_its_jobs_at_once,
    unknown_and_used_calendars_are_refused,
    event_triggers_honour_their_calendars,
}

fn calendar(json: serde_json::Value) -> CalendarSpec {
    serde_json::from_value(json).unwrap()
}

fn daily(name: &str, extra: &str) -> kairos_core::JobSpec {
    spec(&format!(
        r#"{{"name":"{name}","triggers":[{{"cron":"0 9 * * *","timezone":"Europe/Berlin"{extra}}}],
            "catchup":"all","catchup_window":"720h","overlap":"allow","max_concurrent":10,
            "task":{{"kind":"shell","script":"true"}}}}"#
    ))
}

async fn excluded_days_are_not_fired_nor_missed(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .calendar_put(
            calendar(
                serde_json::json!({"name": "holidays", "timezone": "Europe/Berlin",
                "dates": ["2026-03-03"],
                "ranges": [{"from": "2026-03-05T00:00", "to": "2026-03-07T00:00"}]}),
            ),
            CalendarWrite::Create,
        )
        .await
        .unwrap();
    let job = s
        .jobs
        .create(daily("report", r#","exclude":["holidays"]"#))
        .await
        .unwrap();
    // 09:00 in Berlin is 08:00Z in March (before the DST change on the 29th).
    assert_eq!(job.next_fire_at, Some(t("2026-03-01T08:00:00Z")));
    // The node was down for a week: catch-up `all` fires every due time the calendar leaves,
    // and records no missed (skipped) runs for the holidays.
    s.clock.set(t("2026-03-08T12:00:00Z"));
    s.scheduler.run_once().await.unwrap();
    let runs = s.runs("report").await;
    let days: Vec<String> = runs
        .iter()
        .map(|r| r.scheduled_for.to_string()[..10].to_owned())
        .collect();
    assert_eq!(
        days,
        [
            "2026-03-01",
            "2026-03-02",
            "2026-03-04",
            "2026-03-07",
            "2026-03-08"
        ]
    );
    assert!(runs.iter().all(|r| r.reason.is_none()), "{runs:?}");
    let job = s.jobs.get("default", "report").await.unwrap();
    assert_eq!(job.next_fire_at, Some(t("2026-03-09T08:00:00Z")));
    // The preview says why the next holiday is skipped.
    s.jobs
        .calendar_put(
            calendar(
                serde_json::json!({"name": "holidays", "timezone": "Europe/Berlin",
                "dates": ["2026-03-03", "2026-03-10"]}),
            ),
            CalendarWrite::Upsert,
        )
        .await
        .unwrap();
    let (_, _, preview) = s.jobs.upcoming("default", "report", 2).await.unwrap();
    let shown: Vec<(String, bool)> = preview
        .iter()
        .map(|u| (u.at.to_string(), u.skipped.is_some()))
        .collect();
    assert_eq!(
        shown,
        [
            ("2026-03-09T08:00:00Z".to_owned(), false),
            ("2026-03-10T08:00:00Z".to_owned(), true),
            ("2026-03-11T08:00:00Z".to_owned(), false),
        ]
    );
}

async fn a_calendar_change_replans_its_jobs_at_once(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .calendar_put(
            calendar(serde_json::json!({"name": "h"})),
            CalendarWrite::Create,
        )
        .await
        .unwrap();
    let job = s
        .jobs
        .create(daily("report", r#","exclude":["h"]"#))
        .await
        .unwrap();
    let other = s.jobs.create(daily("other", "")).await.unwrap();
    assert_eq!(job.next_fire_at, Some(t("2026-03-01T08:00:00Z")));
    // The look-ahead fires the first due time ahead of it.
    s.clock.set(t("2026-03-01T07:59:59.800Z"));
    s.scheduler.run_once().await.unwrap();
    assert_eq!(s.runs("report").await.len(), 1);
    // March 1 becomes a holiday: its early run is withdrawn and the next due time is March 2.
    let change = s
        .jobs
        .calendar_put(
            calendar(serde_json::json!({"name": "h", "dates": ["2026-03-01"]})),
            CalendarWrite::Replace(1),
        )
        .await
        .unwrap();
    assert_eq!(change.replanned, ["report"]);
    assert_eq!(change.calendar.version, 2);
    assert!(s.runs("report").await.is_empty());
    let replanned = s.jobs.get("default", "report").await.unwrap();
    assert_eq!(replanned.version, job.version + 1);
    assert_eq!(replanned.next_fire_at, Some(t("2026-03-02T08:00:00Z")));
    let untouched = s.jobs.get("default", "other").await.unwrap();
    assert_eq!(untouched.version, other.version);
    // A stale calendar version is refused, nothing changed.
    let stale = s
        .jobs
        .calendar_put(
            calendar(serde_json::json!({"name": "h"})),
            CalendarWrite::Replace(1),
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(JobError::Store(StoreError::CalendarVersionConflict { .. }))
        ),
        "{stale:?}"
    );
    // The holiday is taken back: March 1's due time (not fired yet, its time has come) is
    // planned again rather than dropped.
    s.clock.set(t("2026-03-01T08:00:30Z"));
    s.jobs
        .calendar_put(
            calendar(serde_json::json!({"name": "h"})),
            CalendarWrite::Upsert,
        )
        .await
        .unwrap();
    let job = s.jobs.get("default", "report").await.unwrap();
    assert_eq!(job.next_fire_at, Some(t("2026-03-02T08:00:00Z")));
    s.scheduler.run_once().await.unwrap();
    assert!(s.runs("report").await.is_empty());
}

async fn unknown_and_used_calendars_are_refused(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let unknown = s
        .jobs
        .create(daily("report", r#","only":["business-days"]"#))
        .await;
    match unknown {
        Err(JobError::Invalid(e)) => {
            assert_eq!(e.errors[0].field, "triggers[0].only[0]");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(s.jobs.list(None).await.unwrap().is_empty());
    let bad = s
        .jobs
        .calendar_put(
            calendar(serde_json::json!({"name": "x", "dates": ["2026-02-30"]})),
            CalendarWrite::Create,
        )
        .await;
    match bad {
        Err(JobError::Invalid(e)) => assert_eq!(e.errors[0].field, "dates[0]"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    s.jobs
        .calendar_put(
            calendar(serde_json::json!({"name": "business-days",
                "ranges": [{"from": "2026-03-02T00:00", "to": "2026-03-07T00:00"}]})),
            CalendarWrite::Create,
        )
        .await
        .unwrap();
    let job = s
        .jobs
        .create(daily("report", r#","only":["business-days"]"#))
        .await
        .unwrap();
    assert_eq!(job.next_fire_at, Some(t("2026-03-02T08:00:00Z")));
    let used = s
        .jobs
        .calendar_delete("default", "business-days", None)
        .await;
    assert!(
        matches!(
            used,
            Err(JobError::Store(StoreError::CalendarInUse { ref jobs, .. })) if jobs == &["report"]
        ),
        "{used:?}"
    );
    s.jobs
        .update("default", "report", job.version, daily("report", ""))
        .await
        .unwrap();
    s.jobs
        .calendar_delete("default", "business-days", None)
        .await
        .unwrap();
}

async fn event_triggers_honour_their_calendars(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .calendar_put(
            calendar(serde_json::json!({"name": "freeze",
                "ranges": [{"from": "2026-03-01T00:00", "to": "2026-03-02T00:00"}]})),
            CalendarWrite::Create,
        )
        .await
        .unwrap();
    s.jobs
        .create(spec(
            r#"{"name":"on-signup","triggers":[{"event":"signup","exclude":["freeze"]}],
                "task":{"kind":"shell","script":"true"}}"#,
        ))
        .await
        .unwrap();
    let emit = |id: &str| EventRequest {
        topic: "signup".into(),
        id: Some(id.into()),
        payload: serde_json::json!({}),
        namespaces: None,
    };
    let frozen = s.jobs.emit(emit("e1")).await.unwrap();
    assert!(frozen.runs.is_empty(), "{:?}", frozen.runs);
    s.clock.set(t("2026-03-02T00:00:00Z"));
    let thawed = s.jobs.emit(emit("e2")).await.unwrap();
    assert_eq!(thawed.runs.len(), 1);
}
