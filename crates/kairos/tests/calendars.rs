//! Calendars end to end: the real `kairos` binary driven over HTTP. A job whose trigger excludes
//! a blackout window that covers now does not run; taking the window out of the calendar
//! re-plans the job at once and it runs; the calendar cannot be deleted while the job uses it,
//! and survives a restart of the node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::time::Duration;

use common::Server;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::disallowed_methods,
    reason = "the window is around the real binary's real now"
)]
async fn a_blackout_window_holds_a_job_back_until_the_calendar_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]).await;
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let window = |days: i64| {
        let from = now.date().yesterday().unwrap();
        let to = from.checked_add(jiff::Span::new().days(days)).unwrap();
        json!([{"from": format!("{from}T00:00"), "to": format!("{to}T00:00")}])
    };
    let freeze = json!({"name": "freeze", "ranges": window(3)});
    let (status, _, body) = server
        .call(Method::POST, "/api/v1/calendars", Some(freeze))
        .await;
    assert_eq!(status, 201, "{body}");
    let job = json!({"name": "tick", "overlap": "allow", "max_concurrent": 5,
        "triggers": [{"interval": "1s", "exclude": ["freeze"]}],
        "task": {"kind": "shell", "script": "echo tick"}});
    let (status, _, body) = server.call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{body}");
    // Its next due time is after the window.
    let next = body["next_fire_at"].as_str().unwrap().to_owned();
    assert!(next.ends_with("T00:00:00Z"), "{next}");
    let (_, _, upcoming) = server
        .call(Method::GET, "/api/v1/jobs/tick/next?count=1", None)
        .await;
    assert!(
        upcoming["times"][0]["skipped"]
            .as_str()
            .unwrap()
            .contains("calendar `freeze`"),
        "{upcoming}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.runs("tick").await.is_empty());

    // Deleting the calendar is refused while the job uses it.
    let (status, _, body) = server
        .call(Method::DELETE, "/api/v1/calendars/freeze", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "urn:kairos:problem:calendar-in-use");

    // The window moves to the past: the job is re-planned at once and runs.
    let (status, _, body) = server
        .call(
            Method::PUT,
            "/api/v1/calendars/freeze",
            Some(json!({"name": "freeze", "ranges": [{"from": "2020-01-01T00:00", "to": "2020-01-02T00:00"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], json!(["tick"]));
    let ended = server.ended_runs(30, "tick", 2).await;
    assert!(ended.iter().all(|r| r["state"] == "succeeded"), "{ended:?}");

    // The calendar and the job's use of it survive a restart.
    server.terminate(Duration::from_secs(30)).await;
    let server = Server::start(&data, &[]).await;
    let (status, _, body) = server
        .call(Method::GET, "/api/v1/calendars/freeze", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], json!(["tick"]));
    assert_eq!(body["version"], 2);
}

fn kairos(args: &[&str], server: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(args)
        .env("KAIROS_SERVER", server)
        .env_remove("KAIROS_NAMESPACE")
        .output()
        .expect("run kairos")
}

fn said(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The CLI: calendars in a jobs file are applied before the jobs that name them; `kairos
/// calendar apply` changes one and re-plans its job; `kairos job next` shows the skipped days;
/// `kairos calendar rm` is refused while the job uses it; `apply --prune` removes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendars_from_files_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let url = server.url.as_str();
    let jobs = dir.path().join("jobs.toml");
    std::fs::write(
        &jobs,
        r#"
[[calendars]]
name = "holidays"
timezone = "Europe/Berlin"
dates = ["2030-12-25", "2030-12-26"]

[[jobs]]
name = "report"
task = { kind = "shell", script = "true" }
triggers = [{ cron = "0 9 * * *", timezone = "Europe/Berlin", exclude = ["holidays"], start_at = "2030-12-24T00:00:00Z" }]
"#,
    )
    .unwrap();
    let applied = kairos(&["apply", "-f", jobs.to_str().unwrap()], url);
    assert!(applied.status.success(), "{}", said(&applied));
    let next = kairos(&["job", "next", "report", "-n", "2"], url);
    let text = said(&next);
    assert!(next.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("2030-12-24T09:00:00+01:00"), "{text}");
    assert!(
        lines[1].contains("2030-12-25") && lines[1].contains("skipped"),
        "{text}"
    );
    assert!(lines[3].starts_with("2030-12-27T09:00:00+01:00"), "{text}");

    // One more holiday, from its own file: the job is re-planned.
    let calendar = dir.path().join("holidays.json");
    std::fs::write(
        &calendar,
        r#"{"name": "holidays", "timezone": "Europe/Berlin", "dates": ["2030-12-24", "2030-12-25", "2030-12-26"]}"#,
    )
    .unwrap();
    let changed = kairos(
        &["calendar", "apply", "-f", calendar.to_str().unwrap()],
        url,
    );
    let text = said(&changed);
    assert!(changed.status.success(), "{text}");
    assert!(text.contains("re-planned 1 job"), "{text}");
    let (_, _, job) = server.call(Method::GET, "/api/v1/jobs/report", None).await;
    assert_eq!(job["next_fire_at"], "2030-12-27T08:00:00Z");
    let ls = kairos(&["calendar", "ls"], url);
    assert!(said(&ls).contains("holidays"), "{}", said(&ls));

    let refused = kairos(&["calendar", "rm", "holidays"], url);
    assert!(!refused.status.success());
    assert!(said(&refused).contains("report"), "{}", said(&refused));

    // An invalid calendar file changes nothing and says where.
    std::fs::write(
        &calendar,
        r#"{"name": "holidays", "dates": ["2030-02-30"]}"#,
    )
    .unwrap();
    let bad = kairos(
        &["calendar", "apply", "-f", calendar.to_str().unwrap()],
        url,
    );
    assert!(!bad.status.success());
    assert!(said(&bad).contains("dates[0]"), "{}", said(&bad));

    // With --prune, a file that no longer has them removes the job, then the calendar (in
    // the namespaces whose calendars the file lists).
    std::fs::write(
        &jobs,
        r#"
[[calendars]]
name = "workdays"
ranges = [{ from = "2030-01-01T00:00", to = "2030-01-02T00:00" }]

[[jobs]]
name = "other"
task = { kind = "shell", script = "true" }
triggers = [{ cron = "0 9 * * *", only = ["workdays"] }]
"#,
    )
    .unwrap();
    let pruned = kairos(&["apply", "-f", jobs.to_str().unwrap(), "--prune"], url);
    assert!(pruned.status.success(), "{}", said(&pruned));
    let (_, _, calendars) = server.call(Method::GET, "/api/v1/calendars", None).await;
    let names: Vec<&str> = calendars
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["workdays"], "{}", said(&pruned));
    let (_, _, all) = server.call(Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    // Only the due times in its one window.
    assert_eq!(all[0]["next_fire_at"], "2030-01-01T09:00:00Z");
}
