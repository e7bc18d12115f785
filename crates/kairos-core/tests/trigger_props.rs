//! Properties of `next_after` for generated cron expressions (in zones with and without DST,
//! often right next to a transition), intervals, one-off instants and whole schedules:
//! `next_after(t) > t`, fire times strictly increase, they form one fixed set of instants (asking
//! from anywhere between two fire times gives the same answer), they stay within start/end
//! bounds, and jitter stays within `[0, jitter)`.

#![allow(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failed unwrap fails the test"
)]

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use kairos_core::trigger::{CronSchedule, DstNote, Schedule, Trigger, TriggerKind};
use proptest::prelude::*;

const ZONES: [&str; 12] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/St_Johns",
    "Europe/Dublin",
    "Africa/Casablanca",
    "Antarctica/Troll",
    "Asia/Kolkata",
    "Pacific/Apia",
];

/// A field of numbers in `min..=max`: `*`, `*/k`, `a`, `a-b`, `a-b/k` or a list.
fn numbers(min: u32, max: u32) -> BoxedStrategy<String> {
    let range = (min..=max, min..=max).prop_map(|(a, b)| (a.min(b), a.max(b)));
    prop_oneof![
        3 => Just("*".to_owned()),
        2 => (1..=max).prop_map(|k| format!("*/{k}")),
        3 => (min..=max).prop_map(|a| a.to_string()),
        1 => range.clone().prop_map(|(a, b)| format!("{a}-{b}")),
        1 => (range, 1..=max).prop_map(|((a, b), k)| format!("{a}-{b}/{k}")),
        1 => prop::collection::btree_set(min..=max, 2..4)
            .prop_map(|s| s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
    ]
    .boxed()
}

fn day_of_month() -> BoxedStrategy<String> {
    prop_oneof![
        6 => numbers(1, 31),
        1 => Just("?".to_owned()),
        1 => Just("L".to_owned()),
        1 => Just("LW".to_owned()),
        1 => (1..=31u32).prop_map(|d| format!("{d}W")),
    ]
    .boxed()
}

fn month() -> BoxedStrategy<String> {
    prop_oneof![
        6 => numbers(1, 12),
        1 => Just("JAN-JUN".to_owned()),
        1 => Just("mar,Sep".to_owned()),
    ]
    .boxed()
}

fn day_of_week() -> BoxedStrategy<String> {
    prop_oneof![
        6 => numbers(0, 7),
        1 => Just("?".to_owned()),
        1 => Just("MON-FRI".to_owned()),
        1 => Just("SAT,SUN".to_owned()),
        1 => (0..=7u32).prop_map(|d| format!("{d}L")),
        1 => (0..=7u32, 1..=5u32).prop_map(|(d, n)| format!("{d}#{n}")),
    ]
    .boxed()
}

/// A syntactically valid expression: 5 fields, 6 with seconds, or a macro.
fn expression() -> impl Strategy<Value = String> {
    let fields = (
        prop::option::weighted(0.3, numbers(0, 59)),
        numbers(0, 59),
        numbers(0, 23),
        day_of_month(),
        month(),
        day_of_week(),
    )
        .prop_map(|(sec, min, hour, dom, mon, dow)| {
            let five = format!("{min} {hour} {dom} {mon} {dow}");
            match sec {
                Some(sec) => format!("{sec} {five}"),
                None => five,
            }
        });
    let macros = prop::sample::select(vec![
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ]);
    prop_oneof![9 => fields, 1 => macros.prop_map(str::to_owned)]
}

/// An instant between 1990 and 2100, with or without a fraction of a second.
fn instant() -> impl Strategy<Value = Timestamp> {
    (
        631_152_000i64..4_102_444_800,
        prop_oneof![Just(0i32), 0..1_000_000_000i32],
    )
        .prop_map(|(s, ns)| Timestamp::new(s, ns).unwrap())
}

/// Often the instant is moved next to the zone's following transition (within three hours).
fn instant_in(zone: &'static str) -> impl Strategy<Value = Timestamp> {
    (instant(), any::<bool>(), -3 * 3600i64..3 * 3600).prop_map(move |(t, near, offset)| {
        let tz = TimeZone::get(zone).unwrap();
        match tz.following(t).next().filter(|_| near) {
            Some(transition) => transition
                .timestamp()
                .checked_add(SignedDuration::from_secs(offset))
                .unwrap(),
            None => t,
        }
    })
}

fn zone_and_instant() -> impl Strategy<Value = (&'static str, Timestamp)> {
    prop::sample::select(ZONES.to_vec()).prop_flat_map(|zone| (Just(zone), instant_in(zone)))
}

fn just_before(t: Timestamp) -> Timestamp {
    t.checked_sub(SignedDuration::from_nanos(1)).unwrap()
}

fn midpoint(a: Timestamp, b: Timestamp) -> Timestamp {
    Timestamp::from_nanosecond(a.as_nanosecond() + (b.as_nanosecond() - a.as_nanosecond()) / 2)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cron_fire_times_strictly_increase_and_form_a_fixed_set(
        expr in expression(),
        (zone, t) in zone_and_instant(),
    ) {
        let cron = match CronSchedule::parse(&expr, Some(zone)) {
            Ok(cron) => cron,
            // The generator writes valid syntax; only impossible dates may be refused.
            Err(e) => {
                prop_assert!(e.to_string().contains("never fires"), "`{}`: {}", expr, e);
                return Ok(());
            }
        };
        let mut cursor = t;
        for _ in 0..12 {
            let next = cron.next_after(cursor);
            prop_assert!(next.is_some(), "`{}` in {} stops after {}", expr, zone, cursor);
            let next = next.unwrap();
            prop_assert!(next > cursor, "`{}` in {}: {} is not after {}", expr, zone, next, cursor);
            // Asking from anywhere in `cursor..next` gives the same answer.
            prop_assert_eq!(cron.next_after(just_before(next)), Some(next), "`{}` in {}", expr, zone);
            prop_assert_eq!(cron.next_after(midpoint(cursor, next)), Some(next), "`{}` in {}", expr, zone);
            // Only fixed-time schedules move out of gaps; they never fire on a second pass.
            match cron.dst_note(next) {
                Some(DstNote::MovedByGap) => prop_assert!(cron.is_fixed_time(), "`{}` in {} at {}", expr, zone, next),
                Some(DstNote::RepeatedSecondPass) => prop_assert!(!cron.is_fixed_time(), "`{}` in {} at {}", expr, zone, next),
                _ => {}
            }
            cursor = next;
        }
    }

    #[test]
    fn interval_fire_times_are_anchored_multiples_of_the_period(
        every_ms in 100i64..10 * 86_400_000,
        anchor in instant(),
        t in instant(),
    ) {
        let every = SignedDuration::from_millis(every_ms);
        let trigger = Trigger { kind: TriggerKind::Interval { every }, start_at: Some(anchor), end_at: None, jitter: None, calendars: Default::default() };
        let mut cursor = t;
        for _ in 0..5 {
            let next = trigger.next_after(cursor).unwrap();
            prop_assert!(next > cursor && next >= anchor);
            let since_anchor = next.as_nanosecond() - anchor.as_nanosecond();
            prop_assert_eq!(since_anchor % every.as_nanos(), 0);
            if cursor >= anchor {
                prop_assert!(next.as_nanosecond() - cursor.as_nanosecond() <= every.as_nanos());
            }
            prop_assert_eq!(trigger.next_after(just_before(next)), Some(next));
            cursor = next;
        }
    }

    #[test]
    fn every_trigger_kind_stays_within_its_bounds_and_jitter(
        kind in trigger_kind(),
        start in prop::option::of(instant()),
        length_s in 1i64..5 * 365 * 86_400,
        bounded_end in any::<bool>(),
        jitter_ms in prop::option::of(0i64..3_600_000),
        t in instant(),
        job_key in any::<u64>(),
    ) {
        let end = match (start, bounded_end) {
            (Some(s), true) => Some(s.checked_add(SignedDuration::from_secs(length_s)).unwrap()),
            (None, true) => Some(t.checked_add(SignedDuration::from_secs(length_s)).unwrap()),
            _ => None,
        };
        let jitter = jitter_ms.map(SignedDuration::from_millis);
        let trigger = Trigger { kind, start_at: start, end_at: end, jitter, calendars: Default::default() };
        let mut cursor = t;
        let mut seen = 0;
        while let Some(next) = trigger.next_after(cursor) {
            prop_assert!(next > cursor);
            prop_assert!(start.is_none_or(|s| next >= s), "{} before start {:?}", next, start);
            prop_assert!(end.is_none_or(|e| next <= e), "{} after end {:?}", next, end);
            let delay = trigger.jitter_for(job_key, next);
            let bound = jitter.unwrap_or(SignedDuration::ZERO);
            prop_assert!(delay >= SignedDuration::ZERO);
            prop_assert!(delay < bound || (bound.is_zero() && delay.is_zero()), "{:?} not below {:?}", delay, bound);
            seen += 1;
            if seen == 10 {
                break;
            }
            cursor = next;
        }
        if let TriggerKind::At(_) = trigger.kind {
            prop_assert!(seen <= 1, "`at` fired {} times", seen);
        }
    }

    #[test]
    fn a_schedule_fires_at_the_earliest_trigger_and_the_first_listed_wins(
        kinds in prop::collection::vec(trigger_kind(), 0..5),
        t in instant(),
    ) {
        let schedule = Schedule {
            triggers: kinds.into_iter().map(|kind| Trigger { kind, start_at: None, end_at: None, jitter: None, calendars: Default::default() }).collect(),
        };
        let fires = schedule.upcoming(t, 20);
        let mut cursor = t;
        for fire in &fires {
            prop_assert!(fire.at > cursor);
            let each: Vec<Option<Timestamp>> = schedule.triggers.iter().map(|tr| tr.next_after(cursor)).collect();
            let earliest = each.iter().flatten().min().copied();
            prop_assert_eq!(Some(fire.at), earliest);
            prop_assert_eq!(each.iter().position(|a| *a == earliest), Some(fire.trigger));
            cursor = fire.at;
        }
        if fires.len() < 20 {
            prop_assert_eq!(schedule.next_after(cursor), None);
        }
    }
}

fn trigger_kind() -> impl Strategy<Value = TriggerKind> {
    prop_oneof![
        (expression(), prop::sample::select(ZONES.to_vec())).prop_filter_map(
            "never fires",
            |(expr, zone)| {
                CronSchedule::parse(&expr, Some(zone))
                    .ok()
                    .map(TriggerKind::Cron)
            }
        ),
        (100i64..30 * 86_400_000).prop_map(|ms| TriggerKind::Interval {
            every: SignedDuration::from_millis(ms)
        }),
        instant().prop_map(TriggerKind::At),
    ]
}
