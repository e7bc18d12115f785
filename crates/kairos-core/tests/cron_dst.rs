//! DST as DESIGN.md ("Time semantics") defines it, zone by zone. Every expected instant is
//! written by hand from the zone's 2026 transitions (tzdb):
//!
//! | zone                | spring forward (local)              | fall back (local)                      |
//! | ------------------- | ----------------------------------- | -------------------------------------- |
//! | Europe/Berlin       | 29 Mar 02:00 CET → 03:00 CEST       | 25 Oct 03:00 CEST → 02:00 CET          |
//! | America/New_York    | 8 Mar 02:00 EST → 03:00 EDT         | 1 Nov 02:00 EDT → 01:00 EST            |
//! | Australia/Sydney    | 4 Oct 02:00 AEST → 03:00 AEDT       | 5 Apr 03:00 AEDT → 02:00 AEST          |
//! | Australia/Lord_Howe | 4 Oct 02:00 +10:30 → 02:30 +11      | 5 Apr 02:00 +11 → 01:30 +10:30         |
//! | America/Santiago    | 6 Sep 00:00 -04 → 01:00 -03         | 5 Apr 00:00 -03 → 4 Apr 23:00 -04      |
//!
//! A fixed-time schedule fires once per matching wall time: in a gap at the first instant after
//! it, in a fold on the first pass only. Every other schedule follows the wall clock: nothing in
//! the gap, both passes of the fold.

#![allow(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failed unwrap fails the test"
)]

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use kairos_core::trigger::{CronSchedule, DstNote};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn fires(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
    let cron = CronSchedule::parse(expr, Some(tz)).unwrap_or_else(|e| panic!("`{expr}`: {e}"));
    let mut out = Vec::new();
    let mut cursor = ts(after);
    for _ in 0..n {
        let Some(next) = cron.next_after(cursor) else {
            break;
        };
        assert!(
            next > cursor,
            "`{expr}` in {tz}: {next} is not after {cursor}"
        );
        out.push(next.to_string());
        cursor = next;
    }
    out
}

/// (expression, zone, after, expected fire times in UTC)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

fn check(table: &[Case]) {
    for (expr, tz, after, expected) in table {
        assert_eq!(
            fires(expr, tz, after, expected.len()),
            *expected,
            "`{expr}` in {tz} after {after}"
        );
    }
}

const BERLIN: &str = "Europe/Berlin";
const NEW_YORK: &str = "America/New_York";
const SYDNEY: &str = "Australia/Sydney";
const LORD_HOWE: &str = "Australia/Lord_Howe";
const SANTIAGO: &str = "America/Santiago";

#[test]
fn fixed_time_in_a_gap_fires_at_the_end_of_the_gap() {
    check(&[
        // 02:30 does not exist on 29 March: 03:00 CEST (01:00Z); the days around it are normal.
        (
            "30 2 * * *",
            BERLIN,
            "2026-03-27T12:00:00Z",
            &[
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
            ],
        ),
        (
            "0 30 2 * * *",
            BERLIN,
            "2026-03-27T12:00:00Z",
            &[
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
            ],
        ),
        // 02:00 itself (the start of the gap) also moves to 03:00.
        (
            "0 2 * * *",
            BERLIN,
            "2026-03-28T12:00:00Z",
            &["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"],
        ),
        // Just before the moved fire time, and exactly at it.
        (
            "30 2 * * *",
            BERLIN,
            "2026-03-29T00:59:59.5Z",
            &["2026-03-29T01:00:00Z"],
        ),
        (
            "30 2 * * *",
            BERLIN,
            "2026-03-29T01:00:00Z",
            &["2026-03-30T00:30:00Z"],
        ),
        (
            "30 2 * * *",
            NEW_YORK,
            "2026-03-07T00:00:00Z",
            &[
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z",
            ],
        ),
        // Southern hemisphere: the gap is in October.
        (
            "30 2 * * *",
            SYDNEY,
            "2026-10-02T12:00:00Z",
            &[
                "2026-10-02T16:30:00Z",
                "2026-10-03T16:00:00Z",
                "2026-10-04T15:30:00Z",
            ],
        ),
        // A 30-minute gap: 02:15 moves to 02:30 +11.
        (
            "15 2 * * *",
            LORD_HOWE,
            "2026-10-02T12:00:00Z",
            &[
                "2026-10-02T15:45:00Z",
                "2026-10-03T15:30:00Z",
                "2026-10-04T15:15:00Z",
            ],
        ),
        // A gap at midnight: 00:00 on 6 September is 01:00 -03.
        (
            "0 0 * * *",
            SANTIAGO,
            "2026-09-04T12:00:00Z",
            &[
                "2026-09-05T04:00:00Z",
                "2026-09-06T04:00:00Z",
                "2026-09-07T03:00:00Z",
            ],
        ),
        (
            "@daily",
            SANTIAGO,
            "2026-09-05T12:00:00Z",
            &["2026-09-06T04:00:00Z"],
        ),
        // A whole day skipped (Samoa moved across the date line: 29 Dec 2011 23:59:59 -10 was
        // followed by 31 Dec 00:00 +14). Noon on the 30th fires at the end of the gap.
        (
            "0 12 * * *",
            "Pacific/Apia",
            "2011-12-28T12:00:00Z",
            &[
                "2011-12-28T22:00:00Z",
                "2011-12-29T22:00:00Z",
                "2011-12-30T10:00:00Z",
                "2011-12-30T22:00:00Z",
            ],
        ),
        // Antarctica/Troll springs forward by two hours (01:00 +00 → 03:00 +02).
        (
            "0 0 1 * * *",
            "Antarctica/Troll",
            "2026-03-28T12:00:00Z",
            &["2026-03-29T01:00:00Z", "2026-03-29T23:00:00Z"],
        ),
        (
            "59 59 2 * * *",
            "Antarctica/Troll",
            "2026-03-28T12:00:00Z",
            &["2026-03-29T01:00:00Z", "2026-03-30T00:59:59Z"],
        ),
    ]);
}

#[test]
fn fixed_time_in_a_fold_fires_on_the_first_pass_only() {
    check(&[
        (
            "30 2 * * *",
            BERLIN,
            "2026-10-23T12:00:00Z",
            &[
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
            ],
        ),
        // From inside the second pass, before its 02:30: the second pass is not a fire time.
        (
            "30 2 * * *",
            BERLIN,
            "2026-10-25T01:10:00Z",
            &["2026-10-26T01:30:00Z"],
        ),
        // From inside the first pass, before 02:30: the first pass fires.
        (
            "30 2 * * *",
            BERLIN,
            "2026-10-25T00:10:00Z",
            &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        (
            "30 1 * * *",
            NEW_YORK,
            "2026-10-31T12:00:00Z",
            &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
        ),
        // Southern hemisphere: the fold is in April.
        (
            "30 2 * * *",
            SYDNEY,
            "2026-04-03T12:00:00Z",
            &[
                "2026-04-03T15:30:00Z",
                "2026-04-04T15:30:00Z",
                "2026-04-05T16:30:00Z",
            ],
        ),
        // A 30-minute fold: 01:45 +11, not 01:45 +10:30.
        (
            "45 1 * * *",
            LORD_HOWE,
            "2026-04-03T12:00:00Z",
            &[
                "2026-04-03T14:45:00Z",
                "2026-04-04T14:45:00Z",
                "2026-04-05T15:15:00Z",
            ],
        ),
        // A fold the evening before: 23:30 on 4 April happens at -03 and again at -04.
        (
            "30 23 * * *",
            SANTIAGO,
            "2026-04-03T12:00:00Z",
            &[
                "2026-04-04T02:30:00Z",
                "2026-04-05T02:30:00Z",
                "2026-04-06T03:30:00Z",
            ],
        ),
    ]);
}

#[test]
fn wildcard_schedules_skip_the_gap() {
    check(&[
        (
            "*/15 * * * *",
            BERLIN,
            "2026-03-29T00:30:00Z",
            &[
                "2026-03-29T00:45:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:15:00Z",
            ],
        ),
        (
            "0 * * * *",
            BERLIN,
            "2026-03-28T23:30:00Z",
            &[
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z",
            ],
        ),
        // Two hours, one of them in the gap: 02:00 on 29 March does not occur.
        (
            "0 2,14 * * *",
            BERLIN,
            "2026-03-28T12:00:00Z",
            &[
                "2026-03-28T13:00:00Z",
                "2026-03-29T12:00:00Z",
                "2026-03-30T00:00:00Z",
            ],
        ),
        (
            "0 2,14 * * *",
            NEW_YORK,
            "2026-03-07T20:00:00Z",
            &["2026-03-08T18:00:00Z", "2026-03-09T06:00:00Z"],
        ),
        // 01:00 exists on the spring day in New York: nothing moves.
        (
            "0 1,13 * * *",
            NEW_YORK,
            "2026-03-07T12:00:00Z",
            &[
                "2026-03-07T18:00:00Z",
                "2026-03-08T06:00:00Z",
                "2026-03-08T17:00:00Z",
            ],
        ),
        // Seconds do not make a schedule fixed-time: 02:30:xx does not occur.
        (
            "* 30 2 * * *",
            BERLIN,
            "2026-03-29T00:00:00Z",
            &["2026-03-30T00:30:00Z"],
        ),
        (
            "*/30 * * * *",
            SYDNEY,
            "2026-10-03T15:00:00Z",
            &[
                "2026-10-03T15:30:00Z",
                "2026-10-03T16:00:00Z",
                "2026-10-03T16:30:00Z",
            ],
        ),
        // Lord Howe: 02:00 and 02:15 do not occur; 01:00 is followed by 03:00 for an hourly job.
        (
            "*/15 * * * *",
            LORD_HOWE,
            "2026-10-03T15:00:00Z",
            &[
                "2026-10-03T15:15:00Z",
                "2026-10-03T15:30:00Z",
                "2026-10-03T15:45:00Z",
            ],
        ),
        (
            "0 * * * *",
            LORD_HOWE,
            "2026-10-03T14:00:00Z",
            &["2026-10-03T14:30:00Z", "2026-10-03T16:00:00Z"],
        ),
        (
            "*/30 * * * *",
            SANTIAGO,
            "2026-09-06T03:00:00Z",
            &[
                "2026-09-06T03:30:00Z",
                "2026-09-06T04:00:00Z",
                "2026-09-06T04:30:00Z",
            ],
        ),
        // A day-long gap: hourly fires resume at 00:00 on the 31st.
        (
            "0 * * * *",
            "Pacific/Apia",
            "2011-12-30T08:30:00Z",
            &[
                "2011-12-30T09:00:00Z",
                "2011-12-30T10:00:00Z",
                "2011-12-30T11:00:00Z",
            ],
        ),
    ]);
}

#[test]
fn wildcard_schedules_fire_on_both_passes_of_a_fold() {
    check(&[
        (
            "*/15 * * * *",
            BERLIN,
            "2026-10-24T23:40:00Z",
            &[
                "2026-10-24T23:45:00Z", // 01:45 CEST
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:15:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T00:45:00Z",
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T01:15:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T01:45:00Z",
                "2026-10-25T02:00:00Z", // 03:00 CET
            ],
        ),
        (
            "0 * * * *",
            BERLIN,
            "2026-10-24T22:30:00Z",
            &[
                "2026-10-24T23:00:00Z",
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z",
            ],
        ),
        // From late in the first pass, the next is the start of the second pass.
        (
            "*/15 * * * *",
            BERLIN,
            "2026-10-25T00:50:00Z",
            &["2026-10-25T01:00:00Z"],
        ),
        (
            "*/15 * * * *",
            BERLIN,
            "2026-10-25T00:59:59.999Z",
            &["2026-10-25T01:00:00Z"],
        ),
        // From inside the second pass.
        (
            "*/15 * * * *",
            BERLIN,
            "2026-10-25T01:05:00Z",
            &["2026-10-25T01:15:00Z"],
        ),
        (
            "0 2,14 * * *",
            BERLIN,
            "2026-10-24T13:00:00Z",
            &[
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T13:00:00Z",
            ],
        ),
        (
            "0 1,13 * * *",
            NEW_YORK,
            "2026-10-31T12:00:00Z",
            &[
                "2026-10-31T17:00:00Z",
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T06:00:00Z", // 01:00 EST
                "2026-11-01T18:00:00Z",
                "2026-11-02T06:00:00Z",
            ],
        ),
        (
            "*/30 * * * *",
            NEW_YORK,
            "2026-11-01T05:00:00Z",
            &[
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-01T07:00:00Z",
            ],
        ),
        (
            "0 * * * *",
            SYDNEY,
            "2026-04-04T14:30:00Z",
            &[
                "2026-04-04T15:00:00Z",
                "2026-04-04T16:00:00Z",
                "2026-04-04T17:00:00Z",
            ],
        ),
        (
            "*/15 * * * *",
            LORD_HOWE,
            "2026-04-04T14:00:00Z",
            &[
                "2026-04-04T14:15:00Z",
                "2026-04-04T14:30:00Z", // 01:30 +11
                "2026-04-04T14:45:00Z",
                "2026-04-04T15:00:00Z", // 01:30 +10:30
                "2026-04-04T15:15:00Z",
                "2026-04-04T15:30:00Z", // 02:00 +10:30
            ],
        ),
        (
            "0 * * * *",
            SANTIAGO,
            "2026-04-05T00:30:00Z",
            &[
                "2026-04-05T01:00:00Z",
                "2026-04-05T02:00:00Z",
                "2026-04-05T03:00:00Z",
                "2026-04-05T04:00:00Z",
            ],
        ),
    ]);
}

/// The first instant of local day `date` in `tz`.
fn start_of_day(date: Date, tz: &TimeZone) -> Timestamp {
    date.to_zoned(tz.clone()).unwrap().timestamp()
}

/// Fire times of `expr` in `tz` over the local year 2026 (strictly increasing is checked).
fn year_of_fires(expr: &str, zone: &str) -> Vec<Timestamp> {
    let tz = TimeZone::get(zone).unwrap();
    let cron = CronSchedule::parse(expr, Some(zone)).unwrap();
    let start = start_of_day(Date::constant(2026, 1, 1), &tz);
    let end = start_of_day(Date::constant(2027, 1, 1), &tz);
    let mut out = Vec::new();
    let mut cursor = start.checked_sub(SignedDuration::from_nanos(1)).unwrap();
    while let Some(next) = cron.next_after(cursor).filter(|t| *t < end) {
        assert!(next > cursor, "`{expr}` in {zone}: {next} after {cursor}");
        out.push(next);
        cursor = next;
    }
    out
}

#[test]
fn a_daily_fixed_time_job_fires_exactly_once_every_local_day_of_a_year() {
    let zones = [
        BERLIN,
        NEW_YORK,
        SYDNEY,
        LORD_HOWE,
        SANTIAGO,
        "Europe/London",
        "UTC",
        "Asia/Kolkata",
    ];
    // The times DST moves somewhere: into gaps (02:00, 02:15, 02:30, 00:00) and folds (01:30,
    // 01:45, 02:30, 23:30), and one far from both.
    let exprs = [
        "0 0 * * *",
        "30 1 * * *",
        "45 1 * * *",
        "0 2 * * *",
        "15 2 * * *",
        "30 2 * * *",
        "0 30 2 * * *",
        "30 23 * * *",
        "0 9 * * *",
    ];
    for zone in zones {
        let tz = TimeZone::get(zone).unwrap();
        for expr in exprs {
            let fires = year_of_fires(expr, zone);
            let days: Vec<Date> = fires
                .iter()
                .map(|t| t.to_zoned(tz.clone()).date())
                .collect();
            let expected: Vec<Date> = Date::constant(2026, 1, 1)
                .series(jiff::Span::new().days(1))
                .take(365)
                .collect();
            assert_eq!(days, expected, "`{expr}` in {zone}: one fire per local day");
        }
    }
}

#[test]
fn wildcard_schedules_follow_the_wall_clock_over_a_year() {
    // Hourly: 8760 hours in 2026, minus the hour in the gap, plus the repeated hour.
    for (zone, hourly, quarter_hourly) in [
        (BERLIN, 8760, 35040),
        (NEW_YORK, 8760, 35040),
        (SYDNEY, 8760, 35040),
        (SANTIAGO, 8760, 35040),
        // A 30-minute gap (02:00-02:30) holds one full hour and two quarters; the 30-minute fold
        // (01:30-02:00) holds no full hour and two quarters.
        (LORD_HOWE, 8759, 35040),
        ("UTC", 8760, 35040),
    ] {
        assert_eq!(
            year_of_fires("0 * * * *", zone).len(),
            hourly,
            "hourly in {zone}"
        );
        assert_eq!(
            year_of_fires("*/15 * * * *", zone).len(),
            quarter_hourly,
            "every 15 minutes in {zone}"
        );
    }
}

#[test]
fn dst_notes_mark_the_fire_times_dst_moved_or_doubled() {
    let note = |expr: &str, tz: &str, at: &str| {
        CronSchedule::parse(expr, Some(tz))
            .unwrap()
            .dst_note(ts(at))
    };
    assert_eq!(
        note("30 2 * * *", BERLIN, "2026-03-29T01:00:00Z"),
        Some(DstNote::MovedByGap)
    );
    assert_eq!(note("30 2 * * *", BERLIN, "2026-03-28T01:30:00Z"), None);
    assert_eq!(
        note("30 2 * * *", BERLIN, "2026-10-25T00:30:00Z"),
        Some(DstNote::RepeatedFirstPass)
    );
    assert_eq!(
        note("15 2 * * *", LORD_HOWE, "2026-10-03T15:30:00Z"),
        Some(DstNote::MovedByGap)
    );
    assert_eq!(
        note("0 0 * * *", SANTIAGO, "2026-09-06T04:00:00Z"),
        Some(DstNote::MovedByGap)
    );
    assert_eq!(
        note("0 12 * * *", "Pacific/Apia", "2011-12-30T10:00:00Z"),
        Some(DstNote::MovedByGap)
    );
    // 03:00 CEST is a regular fire time of a quarter-hourly job, not a moved one.
    assert_eq!(note("*/15 * * * *", BERLIN, "2026-03-29T01:00:00Z"), None);
    assert_eq!(
        note("*/15 * * * *", BERLIN, "2026-10-25T00:15:00Z"),
        Some(DstNote::RepeatedFirstPass)
    );
    assert_eq!(
        note("*/15 * * * *", BERLIN, "2026-10-25T01:15:00Z"),
        Some(DstNote::RepeatedSecondPass)
    );
    assert_eq!(
        note("0 1,13 * * *", NEW_YORK, "2026-11-01T06:00:00Z"),
        Some(DstNote::RepeatedSecondPass)
    );
    assert_eq!(note("0 * * * *", "UTC", "2026-10-25T01:00:00Z"), None);
    assert!(DstNote::MovedByGap.to_string().contains("does not exist"));
    assert!(
        DstNote::RepeatedSecondPass
            .to_string()
            .contains("second pass")
    );
}
