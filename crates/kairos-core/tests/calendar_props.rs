//! Calendars against a brute-force enumeration: a daily trigger in a zone with DST, filtered
//! by a calendar of holidays and a blackout window, fires exactly on the remaining days.

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use kairos_core::calendar::{CalendarFilter, CalendarSpec, RangeSpec, days};
use kairos_core::trigger::{CronSchedule, Trigger, TriggerKind};
use proptest::prelude::*;

const ZONE: &str = "Europe/Berlin";

fn first_day() -> Date {
    // Two weeks before the spring DST change (2026-03-29), two weeks after.
    "2026-03-15".parse().unwrap()
}

fn last_day() -> Date {
    "2026-04-12".parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_daily_trigger_fires_on_the_days_its_calendars_leave(
        // Not 02:xx: that wall time does not exist on the day of the change, and its cron rule
        // (the first instant after the gap) is tested elsewhere.
        hour in prop_oneof![0i8..2, 3i8..24],
        minute in prop_oneof![Just(0i8), Just(30i8), Just(59i8)],
        holidays in proptest::bits::u32::ANY,
        blackout_start in 0u32..(29 * 24),
        blackout_hours in 1u32..72,
        only_weekdays in any::<bool>(),
    ) {
        let tz = TimeZone::get(ZONE).unwrap();
        let all_days: Vec<Date> = days(first_day(), last_day()).collect();
        let holiday_days: Vec<Date> = all_days
            .iter()
            .enumerate()
            .filter(|(i, _)| holidays & (1 << (i % 32)) != 0 && i % 3 == 0)
            .map(|(_, d)| *d)
            .collect();
        let start = first_day().at(0, 0, 0, 0) + jiff::Span::new().hours(i64::from(blackout_start));
        let end = start + jiff::Span::new().hours(i64::from(blackout_hours));
        // A window that lies inside the spring gap (02:00 to 03:00 on the day of the change)
        // is empty in real time, and validation refuses it (`to` must be after `from`).
        prop_assume!(tz.to_timestamp(start).unwrap() < tz.to_timestamp(end).unwrap());
        let calendar = CalendarSpec {
            name: "holidays".into(),
            timezone: Some(ZONE.into()),
            dates: holiday_days.iter().map(ToString::to_string).collect(),
            ranges: vec![RangeSpec {
                from: start.strftime("%Y-%m-%dT%H:%M").to_string(),
                to: end.strftime("%Y-%m-%dT%H:%M").to_string(),
            }],
            ..CalendarSpec::default()
        }
        .validate()
        .unwrap();
        // Weekdays, as a calendar of every Monday to Friday of the period.
        let weekdays = CalendarSpec {
            name: "weekdays".into(),
            timezone: Some(ZONE.into()),
            dates: all_days
                .iter()
                .filter(|d| d.weekday().to_monday_one_offset() <= 5)
                .map(ToString::to_string)
                .collect(),
            ..CalendarSpec::default()
        }
        .validate()
        .unwrap();
        let trigger = Trigger {
            kind: TriggerKind::Cron(
                CronSchedule::parse(&format!("{minute} {hour} * * *"), Some(ZONE)).unwrap(),
            ),
            start_at: None,
            end_at: None,
            jitter: None,
            calendars: CalendarFilter {
                exclude: vec![Arc::new(calendar)],
                only: if only_weekdays { vec![Arc::new(weekdays)] } else { vec![] },
                ..Default::default()
            },
        };
        let from = tz.to_timestamp(first_day().at(0, 0, 0, 0)).unwrap();
        let to = tz.to_timestamp(last_day().at(23, 59, 59, 0)).unwrap();

        // The schedule, walked.
        let mut fired = Vec::new();
        let mut cursor = from.checked_sub(jiff::SignedDuration::from_nanos(1)).unwrap();
        while let Some(t) = trigger.next_after(cursor) {
            if t > to {
                break;
            }
            fired.push(t);
            cursor = t;
        }

        // By hand: each day's wall time in the zone, unless a holiday, in the blackout window
        // (wall time from start included to end excluded), or (with `only`) a weekend.
        let blackout = (tz.to_timestamp(start).unwrap(), tz.to_timestamp(end).unwrap());
        let expected: Vec<Timestamp> = all_days
            .iter()
            .filter(|d| !holiday_days.contains(d))
            .filter(|d| !only_weekdays || d.weekday().to_monday_one_offset() <= 5)
            .map(|d| tz.to_timestamp(d.at(hour, minute, 0, 0)).unwrap())
            .filter(|t| !(blackout.0 <= *t && *t < blackout.1))
            .collect();
        prop_assert_eq!(fired, expected);
    }
}

#[test]
fn the_day_of_the_change_is_the_calendars_day_in_its_own_zone() {
    // A calendar's dates are days of its own zone: one in UTC excludes UTC days, whatever the
    // trigger's zone.
    let utc_day = CalendarSpec {
        name: "utc".into(),
        dates: vec!["2026-03-29".into()],
        ..CalendarSpec::default()
    }
    .validate()
    .unwrap();
    let trigger = Trigger {
        kind: TriggerKind::Cron(CronSchedule::parse("30 0 * * *", Some(ZONE)).unwrap()),
        start_at: None,
        end_at: None,
        jitter: None,
        calendars: CalendarFilter {
            exclude: vec![Arc::new(utc_day)],
            only: vec![],
            ..Default::default()
        },
    };
    // 00:30 Berlin on March 29 is 23:30Z on March 28 (a UTC day not excluded); on March 30 it
    // is 22:30Z on March 29, which is.
    let after: Timestamp = "2026-03-28T12:00:00Z".parse().unwrap();
    let first = trigger.next_after(after).unwrap();
    assert_eq!(first, "2026-03-28T23:30:00Z".parse::<Timestamp>().unwrap());
    let second = trigger.next_after(first).unwrap();
    assert_eq!(second, "2026-03-30T22:30:00Z".parse::<Timestamp>().unwrap());
}
