//! The calendar parts of the CLI that need no server: `kairos next --exclude/--only`, and the
//! local validation of calendar files by `kairos calendar apply` and `kairos apply` (which
//! report every problem before anything is sent).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::process::{Command, Output};

use serde_json::Value;

/// Runs the binary against a server address nothing listens on: these commands must finish
/// (or fail) before they would reach it.
fn kairos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(args)
        .env("KAIROS_SERVER", "http://127.0.0.1:9")
        .env_remove("KAIROS_NAMESPACE")
        .output()
        .expect("run kairos")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn next_lists_the_times_an_excluded_calendar_rules_out() {
    let dir = tempfile::tempdir().unwrap();
    let holidays = dir.path().join("holidays.toml");
    // Bare TOML dates are read as the dates they spell.
    std::fs::write(
        &holidays,
        "name = \"de-holidays\"\ntimezone = \"Europe/Berlin\"\ndates = [2026-12-25, 2026-12-26]\n",
    )
    .unwrap();
    let args = [
        "next",
        "0 9 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-12-23T12:00:00Z",
        "-n",
        "3",
        "--exclude",
        holidays.to_str().unwrap(),
    ];
    let out = kairos(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "2026-12-24T09:00:00+01:00",
            "2026-12-25T09:00:00+01:00 skipped: excluded: 2026-12-25 is in calendar `de-holidays`",
            "2026-12-26T09:00:00+01:00 skipped: excluded: 2026-12-26 is in calendar `de-holidays`",
            "2026-12-27T09:00:00+01:00",
            "2026-12-28T09:00:00+01:00",
        ]
    );

    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = kairos(&with_json);
    assert!(out.status.success(), "{}", stderr(&out));
    let items: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["skipped"], Value::Null);
    assert_eq!(items[0]["utc"], "2026-12-24T08:00:00Z");
    assert!(
        items[1]["skipped"]
            .as_str()
            .unwrap()
            .contains("calendar `de-holidays`"),
        "{items:?}"
    );
}

#[test]
fn next_with_an_only_calendar_fires_only_on_its_days() {
    let dir = tempfile::tempdir().unwrap();
    let xmas = dir.path().join("xmas.json");
    std::fs::write(
        &xmas,
        r#"{"calendars": [{"name": "xmas", "yearly": ["12-24"]}]}"#,
    )
    .unwrap();
    let out = kairos(&[
        "next",
        "0 9 * * *",
        "--from",
        "2026-12-20T12:00:00Z",
        "-n",
        "2",
        "--only",
        xmas.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        lines[0],
        "2026-12-21T09:00:00+00:00 skipped: not in `only` calendar(s) xmas"
    );
    assert_eq!(lines[2], "2026-12-24T09:00:00+00:00");
    assert_eq!(lines[3], "2027-12-24T09:00:00+00:00");
}

#[test]
fn next_refuses_an_invalid_calendar_file_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"name": "x", "dates": ["2026-02-30"]}"#).unwrap();
    let out = kairos(&["next", "@daily", "--exclude", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.starts_with("error: --exclude"), "{err}");
    assert!(err.contains("bad.json: dates[0]"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn calendar_apply_validates_every_file_before_sending_anything() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cals.toml");
    std::fs::write(
        &file,
        r#"
[[calendars]]
name = "ok"
dates = ["2026-12-25"]

[[calendars]]
name = "Bad Name"
yearly = ["13-01"]
ranges = [{ from = "2026-01-02T00:00", to = "2026-01-01T00:00" }]
"#,
    )
    .unwrap();
    let out = kairos(&["calendar", "apply", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    for field in [
        "calendars[1].name",
        "calendars[1].yearly[0]",
        "calendars[1].ranges[0].to",
    ] {
        assert!(
            err.contains(&format!("cals.toml: {field}")),
            "{field}: {err}"
        );
    }
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!err.contains("cannot reach"), "nothing was sent: {err}");
}

#[test]
fn apply_validates_the_calendars_of_a_jobs_file_before_sending_anything() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.toml");
    std::fs::write(
        &file,
        r#"
[[jobs]]
name = "report"
task = { kind = "shell", script = "true" }
triggers = [{ cron = "0 9 * * *", exclude = ["holidays"] }]

[[calendars]]
name = "holidays"
dates = ["2026-12-25", "12-26"]
"#,
    )
    .unwrap();
    let out = kairos(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("calendars[0].dates[1]"), "{err}");
    assert!(
        !err.contains("jobs[0]"),
        "a job may name a calendar of the file: {err}"
    );
    assert!(!err.contains("cannot reach"), "nothing was sent: {err}");
}
