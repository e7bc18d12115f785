//! `Trigger` and `Schedule`: intervals ignore wall clocks, `at` fires once, start/end bounds and
//! jitter apply to every kind, and a schedule is the ordered union of its triggers.

#![allow(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failed unwrap fails the test"
)]

use jiff::{SignedDuration, Timestamp};
use kairos_core::trigger::{CronSchedule, Fire, Schedule, Trigger, TriggerKind};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cron(expr: &str, tz: &str) -> TriggerKind {
    TriggerKind::Cron(CronSchedule::parse(expr, Some(tz)).unwrap())
}

fn interval(every: SignedDuration) -> TriggerKind {
    TriggerKind::Interval { every }
}

fn trigger(kind: TriggerKind, start_at: Option<&str>, end_at: Option<&str>) -> Trigger {
    Trigger {
        kind,
        start_at: start_at.map(ts),
        end_at: end_at.map(ts),
        jitter: None,
        calendars: Default::default(),
    }
}

fn walk(t: &Trigger, after: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = ts(after);
    while out.len() < n {
        let Some(next) = t.next_after(cursor) else {
            break;
        };
        assert!(next > cursor);
        out.push(next.to_string());
        cursor = next;
    }
    out
}

#[test]
fn interval_is_anchored_at_start_and_ignores_wall_clocks() {
    // 24 hours from 02:30 CET keeps 24 hours of elapsed time across the Berlin spring change:
    // the wall clock reads 03:30 CEST afterwards.
    let daily = trigger(
        interval(SignedDuration::from_hours(24)),
        Some("2026-03-28T01:30:00Z"),
        None,
    );
    assert_eq!(
        walk(&daily, "2026-03-01T00:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-30T01:30:00Z"
        ]
    );
    // Without `start_at` the anchor is the Unix epoch: 15 minutes fires at :00, :15, :30, :45.
    let quarter = trigger(interval(SignedDuration::from_mins(15)), None, None);
    assert_eq!(
        walk(&quarter, "2026-10-25T00:52:10Z", 3),
        [
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:15:00Z",
            "2026-10-25T01:30:00Z"
        ]
    );
    // An odd period anchored off the minute.
    let odd = trigger(
        interval(SignedDuration::from_secs(7)),
        Some("2026-01-01T00:00:01.5Z"),
        None,
    );
    assert_eq!(
        walk(&odd, "2026-01-01T00:00:08.5Z", 2),
        ["2026-01-01T00:00:15.5Z", "2026-01-01T00:00:22.5Z"]
    );
    // `start_at` itself is a fire time; a sub-second period works too.
    let fast = trigger(
        interval(SignedDuration::from_millis(250)),
        Some("2026-01-01T00:00:00Z"),
        None,
    );
    assert_eq!(
        walk(&fast, "2025-12-31T23:59:59Z", 3),
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.25Z",
            "2026-01-01T00:00:00.5Z"
        ]
    );
}

#[test]
fn at_fires_once() {
    let t = trigger(TriggerKind::At(ts("2026-12-24T18:00:00Z")), None, None);
    assert_eq!(
        walk(&t, "2020-01-01T00:00:00Z", 5),
        ["2026-12-24T18:00:00Z"]
    );
    assert_eq!(
        t.next_after(ts("2026-12-24T17:59:59.999999999Z")),
        Some(ts("2026-12-24T18:00:00Z"))
    );
    assert_eq!(t.next_after(ts("2026-12-24T18:00:00Z")), None);
    assert_eq!(t.next_after(ts("2027-01-01T00:00:00Z")), None);
}

#[test]
fn start_and_end_bounds_apply_to_every_kind() {
    let bounds = (Some("2026-03-10T00:00:00Z"), Some("2026-03-12T12:00:00Z"));
    let daily = trigger(cron("0 12 * * *", "UTC"), bounds.0, bounds.1);
    // The end bound is inclusive: 12:00 on the 12th fires.
    assert_eq!(
        walk(&daily, "2026-01-01T00:00:00Z", 10),
        [
            "2026-03-10T12:00:00Z",
            "2026-03-11T12:00:00Z",
            "2026-03-12T12:00:00Z"
        ]
    );
    // A cron fire time exactly at `start_at` fires.
    let midnight = trigger(cron("0 0 * * *", "UTC"), bounds.0, bounds.1);
    assert_eq!(
        walk(&midnight, "2026-01-01T00:00:00Z", 10),
        [
            "2026-03-10T00:00:00Z",
            "2026-03-11T00:00:00Z",
            "2026-03-12T00:00:00Z"
        ]
    );
    let every_day = trigger(interval(SignedDuration::from_hours(24)), bounds.0, bounds.1);
    assert_eq!(
        walk(&every_day, "2026-01-01T00:00:00Z", 10),
        [
            "2026-03-10T00:00:00Z",
            "2026-03-11T00:00:00Z",
            "2026-03-12T00:00:00Z"
        ]
    );
    let before = trigger(
        TriggerKind::At(ts("2026-03-09T23:59:59Z")),
        bounds.0,
        bounds.1,
    );
    assert_eq!(
        walk(&before, "2026-01-01T00:00:00Z", 2),
        Vec::<String>::new()
    );
    let after = trigger(
        TriggerKind::At(ts("2026-03-12T12:00:01Z")),
        bounds.0,
        bounds.1,
    );
    assert_eq!(
        walk(&after, "2026-01-01T00:00:00Z", 2),
        Vec::<String>::new()
    );
    let inside = trigger(
        TriggerKind::At(ts("2026-03-12T12:00:00Z")),
        bounds.0,
        bounds.1,
    );
    assert_eq!(
        walk(&inside, "2026-01-01T00:00:00Z", 2),
        ["2026-03-12T12:00:00Z"]
    );
}

#[test]
fn jitter_is_deterministic_and_within_its_bound() {
    let mut t = trigger(cron("0 * * * *", "UTC"), None, None);
    let due = ts("2026-01-01T05:00:00Z");
    assert_eq!(
        t.jitter_for(42, due),
        SignedDuration::ZERO,
        "no jitter configured"
    );
    t.jitter = Some(SignedDuration::ZERO);
    assert_eq!(t.jitter_for(42, due), SignedDuration::ZERO);
    t.jitter = Some(SignedDuration::from_secs(30));
    assert_eq!(
        t.jitter_for(42, due),
        t.jitter_for(42, due),
        "the same due time gets the same delay"
    );
    let mut distinct = std::collections::BTreeSet::new();
    for key in 0..200u64 {
        let d = t.jitter_for(key, due);
        assert!(
            d >= SignedDuration::ZERO && d < SignedDuration::from_secs(30),
            "{d:?}"
        );
        distinct.insert(d);
    }
    assert!(
        distinct.len() > 150,
        "delays spread over the range, got {} distinct",
        distinct.len()
    );
}

/// The triggers of the example job in the issue: 02:30:00 Berlin, every 15 minutes from
/// 2026-01-01, and once on 2026-12-24 at 18:00 UTC.
fn example_schedule() -> Schedule {
    Schedule {
        triggers: vec![
            Trigger {
                jitter: Some(SignedDuration::from_secs(30)),
                ..trigger(cron("0 30 2 * * *", "Europe/Berlin"), None, None)
            },
            trigger(
                interval(SignedDuration::from_mins(15)),
                Some("2026-01-01T00:00:00Z"),
                None,
            ),
            trigger(TriggerKind::At(ts("2026-12-24T18:00:00Z")), None, None),
        ],
    }
}

fn fire(at: &str, trigger: usize) -> Fire {
    Fire {
        at: ts(at),
        trigger,
    }
}

#[test]
fn a_schedule_is_the_union_of_its_triggers_and_the_first_listed_wins_a_tie() {
    let s = example_schedule();
    // 18:00 is due for both the interval and the `at` trigger: one fire, the interval's.
    assert_eq!(
        s.upcoming(ts("2026-12-24T17:40:00Z"), 4),
        [
            fire("2026-12-24T17:45:00Z", 1),
            fire("2026-12-24T18:00:00Z", 1),
            fire("2026-12-24T18:15:00Z", 1),
            fire("2026-12-24T18:30:00Z", 1),
        ]
    );
    // 02:30 CET is 01:30 UTC: the cron trigger (listed first) wins the tie with the interval.
    assert_eq!(
        s.upcoming(ts("2026-12-25T01:00:00Z"), 3),
        [
            fire("2026-12-25T01:15:00Z", 1),
            fire("2026-12-25T01:30:00Z", 0),
            fire("2026-12-25T01:45:00Z", 1)
        ]
    );
    // Before the interval starts only the cron trigger fires.
    assert_eq!(
        s.upcoming(ts("2025-12-30T00:00:00Z"), 3),
        [
            fire("2025-12-30T01:30:00Z", 0),
            fire("2025-12-31T01:30:00Z", 0),
            fire("2026-01-01T00:00:00Z", 1)
        ]
    );
    assert_eq!(
        s.next_after(ts("2026-12-24T17:59:59Z")),
        Some(fire("2026-12-24T18:00:00Z", 1))
    );
    assert!(s.upcoming(ts("2026-01-01T00:00:00Z"), 0).is_empty());
    assert_eq!(
        Schedule::default().next_after(ts("2026-01-01T00:00:00Z")),
        None
    );
    assert!(
        Schedule::default()
            .upcoming(ts("2026-01-01T00:00:00Z"), 5)
            .is_empty()
    );
}

#[test]
fn a_schedule_with_only_an_at_trigger_ends() {
    let s = Schedule {
        triggers: vec![trigger(
            TriggerKind::At(ts("2026-12-24T18:00:00Z")),
            None,
            None,
        )],
    };
    assert_eq!(
        s.upcoming(ts("2026-01-01T00:00:00Z"), 10),
        [fire("2026-12-24T18:00:00Z", 0)]
    );
}

#[test]
fn upcoming_fire_times_strictly_increase_across_dst_in_every_zone() {
    for zone in [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Sydney",
        "Australia/Lord_Howe",
        "America/Santiago",
    ] {
        let s = Schedule {
            triggers: vec![
                trigger(cron("0 * * * *", zone), None, None),
                trigger(cron("30 2 * * *", zone), None, None),
                trigger(cron("0 1,13 * * *", zone), None, None),
                trigger(interval(SignedDuration::from_mins(7 * 60 + 7)), None, None),
            ],
        };
        // About a year and a half: both DST changes of 2026.
        let fires = s.upcoming(ts("2026-01-01T00:00:00Z"), 15_000);
        assert_eq!(fires.len(), 15_000);
        assert!(fires[14_999].at > ts("2027-01-01T00:00:00Z"));
        assert!(
            fires.windows(2).all(|w| w[0].at < w[1].at),
            "strictly increasing in {zone}"
        );
    }
}
