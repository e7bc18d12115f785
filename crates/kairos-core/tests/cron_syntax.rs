//! The cron dialect of DESIGN.md ("Time semantics"), feature by feature, in UTC: every expected
//! instant is written by hand. DST behaviour is in `cron_dst.rs`.

#![allow(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failed unwrap fails the test"
)]

use jiff::Timestamp;
use kairos_core::trigger::{CronSchedule, CronScheduleError};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The first `n` fire times strictly after `after`, as RFC 3339 UTC strings.
fn fires(expr: &str, tz: Option<&str>, after: &str, n: usize) -> Vec<String> {
    let cron = CronSchedule::parse(expr, tz).unwrap_or_else(|e| panic!("`{expr}`: {e}"));
    let mut out = Vec::new();
    let mut cursor = ts(after);
    for _ in 0..n {
        let Some(next) = cron.next_after(cursor) else {
            break;
        };
        assert!(next > cursor, "`{expr}`: {next} is not after {cursor}");
        out.push(next.to_string());
        cursor = next;
    }
    out
}

/// 2026-01-01 is a Thursday.
const NEW_YEAR: &str = "2026-01-01T00:00:00Z";

#[test]
fn every_syntax_feature_fires_at_the_expected_instants() {
    let table: &[(&str, &str, &[&str])] = &[
        // Wildcards, steps, lists, ranges, ranges with steps.
        (
            "*/20 * * * *",
            NEW_YEAR,
            &[
                "2026-01-01T00:20:00Z",
                "2026-01-01T00:40:00Z",
                "2026-01-01T01:00:00Z",
            ],
        ),
        (
            "5,35 * * * *",
            NEW_YEAR,
            &[
                "2026-01-01T00:05:00Z",
                "2026-01-01T00:35:00Z",
                "2026-01-01T01:05:00Z",
            ],
        ),
        (
            "10-12 * * * *",
            NEW_YEAR,
            &[
                "2026-01-01T00:10:00Z",
                "2026-01-01T00:11:00Z",
                "2026-01-01T00:12:00Z",
                "2026-01-01T01:10:00Z",
            ],
        ),
        (
            "10-30/10 * * * *",
            NEW_YEAR,
            &[
                "2026-01-01T00:10:00Z",
                "2026-01-01T00:20:00Z",
                "2026-01-01T00:30:00Z",
                "2026-01-01T01:10:00Z",
            ],
        ),
        (
            "0 9-17/4 * * *",
            NEW_YEAR,
            &[
                "2026-01-01T09:00:00Z",
                "2026-01-01T13:00:00Z",
                "2026-01-01T17:00:00Z",
                "2026-01-02T09:00:00Z",
            ],
        ),
        (
            "0 0 1,15 * *",
            NEW_YEAR,
            &[
                "2026-01-15T00:00:00Z",
                "2026-02-01T00:00:00Z",
                "2026-02-15T00:00:00Z",
            ],
        ),
        // Day names (any case), ranges of names, Sunday as 0 and as 7.
        (
            "0 0 * * MON",
            NEW_YEAR,
            &[
                "2026-01-05T00:00:00Z",
                "2026-01-12T00:00:00Z",
                "2026-01-19T00:00:00Z",
            ],
        ),
        (
            "0 0 * * mon-wed",
            NEW_YEAR,
            &[
                "2026-01-05T00:00:00Z",
                "2026-01-06T00:00:00Z",
                "2026-01-07T00:00:00Z",
                "2026-01-12T00:00:00Z",
            ],
        ),
        (
            "0 0 * * SAT-SUN",
            NEW_YEAR,
            &[
                "2026-01-03T00:00:00Z",
                "2026-01-04T00:00:00Z",
                "2026-01-10T00:00:00Z",
            ],
        ),
        (
            "0 0 * * 0",
            NEW_YEAR,
            &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
        ),
        (
            "0 0 * * 7",
            NEW_YEAR,
            &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
        ),
        // Month names and ranges of them.
        (
            "0 0 1 JAN,JUL *",
            NEW_YEAR,
            &["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"],
        ),
        (
            "0 0 1 feb-apr *",
            NEW_YEAR,
            &[
                "2026-02-01T00:00:00Z",
                "2026-03-01T00:00:00Z",
                "2026-04-01T00:00:00Z",
            ],
        ),
        // `L` in day-of-month: the last day, leap years included.
        (
            "0 0 L * *",
            NEW_YEAR,
            &[
                "2026-01-31T00:00:00Z",
                "2026-02-28T00:00:00Z",
                "2026-03-31T00:00:00Z",
                "2026-04-30T00:00:00Z",
            ],
        ),
        (
            "0 0 L 2 *",
            "2027-03-01T00:00:00Z",
            &["2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"],
        ),
        (
            "0 0 1,L * *",
            NEW_YEAR,
            &[
                "2026-01-31T00:00:00Z",
                "2026-02-01T00:00:00Z",
                "2026-02-28T00:00:00Z",
            ],
        ),
        // `nL` in day-of-week: the last Friday of the month (also as `FRIL`).
        (
            "0 0 * * 5L",
            NEW_YEAR,
            &[
                "2026-01-30T00:00:00Z",
                "2026-02-27T00:00:00Z",
                "2026-03-27T00:00:00Z",
                "2026-04-24T00:00:00Z",
            ],
        ),
        (
            "0 0 * * FRIL",
            NEW_YEAR,
            &["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z"],
        ),
        // `W`: the weekday nearest to the 15th (Sunday the 15th moves to Monday the 16th, Saturday
        // the 15th to Friday the 14th), never leaving the month (Saturday the 1st moves to the 3rd).
        (
            "0 0 15W * *",
            NEW_YEAR,
            &[
                "2026-01-15T00:00:00Z",
                "2026-02-16T00:00:00Z",
                "2026-03-16T00:00:00Z",
                "2026-04-15T00:00:00Z",
            ],
        ),
        ("0 0 15W 8 *", NEW_YEAR, &["2026-08-14T00:00:00Z"]),
        ("0 0 1W 8 *", NEW_YEAR, &["2026-08-03T00:00:00Z"]),
        (
            "0 0 1W * *",
            NEW_YEAR,
            &[
                "2026-02-02T00:00:00Z",
                "2026-03-02T00:00:00Z",
                "2026-04-01T00:00:00Z",
            ],
        ),
        // `LW`: the last weekday of the month (Saturday the 31st moves to Friday the 30th).
        (
            "0 0 LW * *",
            NEW_YEAR,
            &[
                "2026-01-30T00:00:00Z",
                "2026-02-27T00:00:00Z",
                "2026-03-31T00:00:00Z",
            ],
        ),
        // `#`: the second Monday; the fifth Monday (only in months that have one).
        (
            "0 0 * * MON#2",
            NEW_YEAR,
            &[
                "2026-01-12T00:00:00Z",
                "2026-02-09T00:00:00Z",
                "2026-03-09T00:00:00Z",
            ],
        ),
        (
            "0 0 * * 1#5",
            NEW_YEAR,
            &[
                "2026-03-30T00:00:00Z",
                "2026-06-29T00:00:00Z",
                "2026-08-31T00:00:00Z",
            ],
        ),
        // `?` means "any" in either day field.
        (
            "0 0 ? * MON",
            NEW_YEAR,
            &["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"],
        ),
        (
            "0 0 1 * ?",
            NEW_YEAR,
            &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
        ),
        // Six fields: seconds first.
        (
            "*/10 * * * * *",
            NEW_YEAR,
            &[
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:30Z",
            ],
        ),
        (
            "30 0 12 * * *",
            NEW_YEAR,
            &["2026-01-01T12:00:30Z", "2026-01-02T12:00:30Z"],
        ),
        (
            "0 30 2 * * *",
            NEW_YEAR,
            &["2026-01-01T02:30:00Z", "2026-01-02T02:30:00Z"],
        ),
        (
            "15,45 * * * * *",
            NEW_YEAR,
            &[
                "2026-01-01T00:00:15Z",
                "2026-01-01T00:00:45Z",
                "2026-01-01T00:01:15Z",
            ],
        ),
        // Macros.
        (
            "@yearly",
            NEW_YEAR,
            &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"],
        ),
        ("@annually", NEW_YEAR, &["2027-01-01T00:00:00Z"]),
        (
            "@monthly",
            NEW_YEAR,
            &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
        ),
        (
            "@weekly",
            NEW_YEAR,
            &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
        ),
        (
            "@daily",
            NEW_YEAR,
            &["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"],
        ),
        ("@midnight", NEW_YEAR, &["2026-01-02T00:00:00Z"]),
        (
            "@Hourly",
            NEW_YEAR,
            &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"],
        ),
        // Extra whitespace is fine.
        ("  0   12 * *   *  ", NEW_YEAR, &["2026-01-01T12:00:00Z"]),
    ];
    for (expr, after, expected) in table {
        assert_eq!(
            fires(expr, None, after, expected.len()),
            *expected,
            "`{expr}` after {after}"
        );
    }
}

/// DESIGN.md: when both day fields are restricted a day matches if either matches; when one
/// starts with `*` (or is `?`) both must match.
#[test]
fn day_fields_combine_as_in_vixie_cron() {
    // The 1st and every Monday: Monday 29 June, Wednesday 1 July, Monday 6 July.
    assert_eq!(
        fires("0 0 1 * MON", None, "2026-06-25T00:00:00Z", 3),
        [
            "2026-06-29T00:00:00Z",
            "2026-07-01T00:00:00Z",
            "2026-07-06T00:00:00Z"
        ]
    );
    // Mondays with an odd day of the month only (8, 22 June and 6, 20 July are even).
    assert_eq!(
        fires("0 0 */2 * MON", None, "2026-06-01T00:00:00Z", 4),
        [
            "2026-06-15T00:00:00Z",
            "2026-06-29T00:00:00Z",
            "2026-07-13T00:00:00Z",
            "2026-07-27T00:00:00Z"
        ]
    );
    // The 13th or a Friday.
    assert_eq!(
        fires("0 0 13 * FRI", None, NEW_YEAR, 4),
        [
            "2026-01-02T00:00:00Z",
            "2026-01-09T00:00:00Z",
            "2026-01-13T00:00:00Z",
            "2026-01-16T00:00:00Z"
        ]
    );
    // A day-of-week starting with `*` restricts together with the day of month: the 1st when it
    // is a Sunday, Tuesday, Thursday or Saturday (1 January 2026 itself is excluded: not after).
    assert_eq!(
        fires("0 0 1 * */2", None, NEW_YEAR, 3),
        [
            "2026-02-01T00:00:00Z",
            "2026-03-01T00:00:00Z",
            "2026-08-01T00:00:00Z"
        ]
    );
    // Only the day of week restricted.
    assert_eq!(
        fires("0 0 * * */2", None, NEW_YEAR, 4),
        [
            "2026-01-03T00:00:00Z",
            "2026-01-04T00:00:00Z",
            "2026-01-06T00:00:00Z",
            "2026-01-08T00:00:00Z"
        ]
    );
    // Both restricted, one of them `L`: the last day or the last Friday.
    assert_eq!(
        fires("0 0 L * 5L", None, NEW_YEAR, 3),
        [
            "2026-01-30T00:00:00Z",
            "2026-01-31T00:00:00Z",
            "2026-02-27T00:00:00Z"
        ]
    );
    // 1-7 or Monday: every day of the first week and every Monday after it.
    assert_eq!(
        fires("0 0 1-7 * MON", None, "2026-01-06T00:00:00Z", 3),
        [
            "2026-01-07T00:00:00Z",
            "2026-01-12T00:00:00Z",
            "2026-01-19T00:00:00Z"
        ]
    );
    // `?` in the day-of-month: Mondays only.
    assert_eq!(
        fires("0 0 ? * MON#5", None, NEW_YEAR, 1),
        ["2026-03-30T00:00:00Z"]
    );
}

#[test]
fn rare_expressions_are_found_and_are_not_never_firing() {
    // Leap days: every four years, and a fifth Monday of February only every 28 years.
    assert_eq!(
        fires("0 0 29 2 *", None, NEW_YEAR, 2),
        ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
    );
    assert_eq!(
        fires("0 0 ? 2 MON#5", None, NEW_YEAR, 2),
        ["2044-02-29T00:00:00Z", "2072-02-29T00:00:00Z"]
    );
}

#[test]
fn sub_second_instants_and_exact_fire_times() {
    // Strictly after: a fire time itself is not returned, anything just before it is.
    assert_eq!(
        fires("0 * * * *", None, "2026-01-01T00:59:59.999999999Z", 1),
        ["2026-01-01T01:00:00Z"]
    );
    assert_eq!(
        fires("0 * * * *", None, "2026-01-01T01:00:00Z", 1),
        ["2026-01-01T02:00:00Z"]
    );
    assert_eq!(
        fires("0 * * * *", None, "2026-01-01T01:00:00.000000001Z", 1),
        ["2026-01-01T02:00:00Z"]
    );
    assert_eq!(
        fires("* * * * * *", None, "2026-01-01T00:00:00.5Z", 2),
        ["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"]
    );
}

#[test]
fn time_zone_defaults_to_utc_and_names_are_case_insensitive() {
    let utc = CronSchedule::parse("0 12 * * *", None).unwrap();
    assert_eq!(
        utc.next_after(ts(NEW_YEAR)),
        Some(ts("2026-01-01T12:00:00Z"))
    );
    assert_eq!(
        fires("0 12 * * *", Some("europe/berlin"), NEW_YEAR, 1),
        ["2026-01-01T11:00:00Z"],
        "12:00 CET is 11:00 UTC"
    );
    assert_eq!(
        fires("0 12 * * *", Some("Asia/Kolkata"), NEW_YEAR, 1),
        ["2026-01-01T06:30:00Z"]
    );
}

#[test]
fn fixed_time_is_one_value_in_second_minute_and_hour() {
    let fixed = |e: &str| CronSchedule::parse(e, None).unwrap().is_fixed_time();
    assert!(fixed("30 2 * * *"));
    assert!(fixed("0 0 9 * * MON"));
    assert!(fixed("@daily"));
    assert!(fixed("0 0 1 * MON"));
    assert!(!fixed("*/15 * * * *"));
    assert!(!fixed("0 * * * *"));
    assert!(!fixed("0 1,13 * * *"));
    assert!(!fixed("* 30 2 * * *"));
    assert!(!fixed("0 0-1 * * *"));
}

#[test]
fn invalid_expressions_are_rejected_with_the_field_named() {
    let table: &[(&str, &str)] = &[
        ("", "empty"),
        ("   ", "empty"),
        ("* * * *", "found 4"),
        ("* * * * * * *", "found 7"),
        ("0 0 1 1 * 2030", "day-of-week field `2030`"),
        ("60 * * * *", "minute field `60`"),
        ("* 24 * * *", "hour field `24`"),
        ("60 * * * * *", "second field `60`"),
        ("0 0 0 * *", "day-of-month field `0`"),
        ("0 0 32 * *", "day-of-month field `32`"),
        ("0 0 * 13 *", "month field `13`"),
        ("0 0 * 0 *", "month field `0`"),
        ("0 0 * * 8", "day-of-week field `8`"),
        ("0 MON * * *", "hour field `MON`"),
        ("0 0 * * JAN", "day-of-week field `JAN`"),
        ("0 0 JAN * *", "day-of-month field `JAN`"),
        ("0 0 * MON *", "month field `MON`"),
        ("x * * * *", "minute field `x`"),
        ("1,,2 * * * *", "empty item"),
        ("1, * * * *", "empty item"),
        ("*/0 * * * *", "step 0"),
        ("*/x * * * *", "is not a number"),
        ("30/5 * * * *", "a step needs"),
        ("5-1 * * * *", "runs backwards"),
        ("0 0 * * FRI-MON", "runs backwards"),
        ("0 0 * * MON#6", "#6"),
        ("0 0 * * MON#0", "#0"),
        ("0 0 * * L", "`L` needs a weekday"),
        ("0 0 W * *", "value is missing"),
        ("0 0 1-5W * *", "day-of-month field"),
        ("0 0 L-2 * *", "day-of-month field"),
        ("0 0 1 * +MON", "day-of-week field `+MON`"),
        ("? * * * *", "`?` is only allowed"),
        ("0 0 1? * *", "`?` stands alone"),
        ("0 0 * * 5#", "#"),
        ("@reboot", "unknown macro `@reboot`"),
        ("@every 5m", "unknown macro"),
        ("@", "unknown macro"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("0 0 31W 4 *", "never fires"),
        ("0 0 30,31 2 *", "never fires"),
    ];
    for (expr, needle) in table {
        match CronSchedule::parse(expr, None) {
            Err(CronScheduleError::Expression(message)) => {
                assert!(
                    message.contains(needle),
                    "`{expr}`: `{message}` does not mention `{needle}`"
                )
            }
            other => panic!("`{expr}` should be an invalid expression, got {other:?}"),
        }
    }
}

#[test]
fn unknown_time_zones_are_rejected() {
    for zone in ["Mars/Olympus", "", "Europe/Berlinn", "CEST+2"] {
        assert_eq!(
            CronSchedule::parse("0 0 * * *", Some(zone)).unwrap_err(),
            CronScheduleError::TimeZone(zone.to_owned()),
            "zone `{zone}`"
        );
    }
    // The expression is checked first: a bad expression in a bad zone is an expression error
    // (job validation reports both).
    assert!(matches!(
        CronSchedule::parse("61 * * * *", Some("Mars/Olympus")),
        Err(CronScheduleError::Expression(_))
    ));
}
