//! Calendars named by a job's triggers: validation, resolution, and what a plan does before and
//! after its calendars are looked up.

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use std::sync::Arc;

use jiff::Timestamp;
use kairos_core::JobSpec;
use kairos_core::calendar::{Calendar, CalendarSpec};

fn job(triggers: serde_json::Value) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "name": "j",
        "triggers": triggers,
        "task": {"kind": "shell", "script": "true"},
    }))
    .unwrap()
}

fn calendar(json: serde_json::Value) -> Arc<Calendar> {
    Arc::new(
        serde_json::from_value::<CalendarSpec>(json)
            .unwrap()
            .validate()
            .unwrap(),
    )
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[test]
fn an_unresolved_plan_fires_nothing_and_a_resolved_one_skips_the_calendars_days() {
    let spec = job(serde_json::json!([{"cron": "0 9 * * *", "exclude": ["holidays"]}]));
    let mut plan = spec.validate().unwrap();
    assert_eq!(plan.calendar_names(), ["holidays"]);
    // Not looked up yet: no due time at all rather than one on a holiday.
    assert_eq!(plan.schedule.next_after(ts("2026-12-24T10:00:00Z")), None);

    let err = plan.clone().resolve_calendars(|_| None).unwrap_err();
    assert_eq!(err.errors[0].field, "triggers[0].exclude[0]");
    assert!(err.errors[0].message.contains("holidays"));

    let holidays =
        calendar(serde_json::json!({"name": "holidays", "dates": ["2026-12-25", "2026-12-26"]}));
    plan.resolve_calendars(|n| (n == "holidays").then(|| holidays.clone()))
        .unwrap();
    let next = plan
        .schedule
        .next_after(ts("2026-12-24T10:00:00Z"))
        .unwrap();
    assert_eq!(next.at, ts("2026-12-27T09:00:00Z"));

    // The preview says which times were skipped and why.
    let preview = plan.schedule.preview(ts("2026-12-24T10:00:00Z"), 2);
    let shown: Vec<(String, bool)> = preview
        .iter()
        .map(|u| (u.at.to_string(), u.skipped.is_some()))
        .collect();
    assert_eq!(
        shown,
        [
            ("2026-12-25T09:00:00Z".to_owned(), true),
            ("2026-12-26T09:00:00Z".to_owned(), true),
            ("2026-12-27T09:00:00Z".to_owned(), false),
            ("2026-12-28T09:00:00Z".to_owned(), false),
        ]
    );
    assert!(
        preview[0]
            .skipped
            .as_deref()
            .unwrap()
            .contains("2026-12-25 is in calendar `holidays`"),
        "{preview:?}"
    );
}

#[test]
fn a_time_another_trigger_fires_is_not_shown_as_skipped() {
    let spec = job(serde_json::json!([
        {"cron": "0 9 * * *", "exclude": ["h"]},
        {"cron": "0 9 25 12 *"},
    ]));
    let mut plan = spec.validate().unwrap();
    let h = calendar(serde_json::json!({"name": "h", "dates": ["2026-12-25"]}));
    plan.resolve_calendars(|_| Some(h.clone())).unwrap();
    let preview = plan.schedule.preview(ts("2026-12-24T10:00:00Z"), 2);
    assert!(preview.iter().all(|u| u.skipped.is_none()), "{preview:?}");
    assert_eq!(preview[0].at, ts("2026-12-25T09:00:00Z"));
}

#[test]
fn events_in_an_excluded_window_are_not_for_the_job() {
    let spec = job(serde_json::json!([{"event": "signup", "exclude": ["freeze"]}]));
    let mut plan = spec.validate().unwrap();
    let freeze = calendar(serde_json::json!({"name": "freeze",
        "ranges": [{"from": "2026-12-24T00:00", "to": "2026-12-27T00:00"}]}));
    let payload = serde_json::json!({});
    // Unresolved: no event counts.
    assert!(
        !plan
            .schedule
            .subscribes("signup", &payload, ts("2026-12-28T00:00:00Z"))
    );
    plan.resolve_calendars(|_| Some(freeze.clone())).unwrap();
    assert!(
        !plan
            .schedule
            .subscribes("signup", &payload, ts("2026-12-25T00:00:00Z"))
    );
    assert!(
        plan.schedule
            .subscribes("signup", &payload, ts("2026-12-28T00:00:00Z"))
    );
}

#[test]
fn bad_calendar_references_name_their_fields() {
    let spec = job(serde_json::json!([
        {"cron": "0 9 * * *", "exclude": ["Bad Name", "ok", "ok"]},
        {"after": {"job": "x"}, "only": ["ok"]},
        {"interval": "1h", "only": (0..17).map(|i| format!("c{i}")).collect::<Vec<_>>()},
    ]));
    let errs = spec.validate().unwrap_err();
    let mut fields: Vec<&str> = errs.errors.iter().map(|e| e.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "triggers[0].exclude[0]",
            "triggers[0].exclude[2]",
            "triggers[1].only",
            "triggers[2].only"
        ]
    );
}

#[test]
fn jobs_files_name_the_calendars_a_job_uses() {
    let spec = job(serde_json::json!([
        {"cron": "0 9 * * *", "exclude": ["b", "a"], "only": ["c"]},
        {"interval": "1h", "exclude": ["a"]},
    ]));
    assert_eq!(kairos_core::calendar::used_by(&spec), ["a", "b", "c"]);
}
