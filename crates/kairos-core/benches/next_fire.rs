//! Next-fire computation: `cargo bench -p kairos-core --bench next_fire`.
//!
//! Cron expressions of every kind in zones with and without DST (one instant in a quiet week, one
//! just before a fall-back fold), an interval, a schedule of three triggers (the example job of
//! the issue), and a catch-up plan after a long downtime.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use kairos_core::policy::plan_fires;
use kairos_core::spec::CatchupPolicy;
use kairos_core::trigger::{CronSchedule, Schedule, Trigger, TriggerKind};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("a valid instant")
}

fn trigger(kind: TriggerKind, start_at: Option<Timestamp>) -> Trigger {
    Trigger {
        kind,
        start_at,
        end_at: None,
        jitter: None,
        calendars: Default::default(),
    }
}

fn cron(expr: &str, zone: &str) -> CronSchedule {
    CronSchedule::parse(expr, Some(zone)).expect("a valid expression")
}

fn cron_next_after(c: &mut Criterion) {
    let exprs = [
        ("every_minute", "* * * * *"),
        ("every_15_minutes", "*/15 * * * *"),
        ("daily_fixed", "30 2 * * *"),
        ("seconds", "*/10 * * * * *"),
        ("weekdays_9_to_17", "0 9-17 * * MON-FRI"),
        ("last_friday", "0 0 * * 5L"),
        ("nearest_weekday_15", "0 0 15W * *"),
        ("vixie_or", "0 0 1 * MON"),
        ("leap_day", "0 0 29 2 *"),
    ];
    let zones = ["UTC", "Europe/Berlin", "Australia/Lord_Howe"];
    // A quiet instant, and one an hour before Berlin's fall-back fold.
    let instants = [
        ("quiet", ts("2026-06-10T10:07:13Z")),
        ("before_fold", ts("2026-10-24T23:00:00Z")),
    ];
    let mut group = c.benchmark_group("cron_next_after");
    for (name, expr) in exprs {
        for zone in zones {
            let schedule = cron(expr, zone);
            for (when, at) in instants {
                let id = BenchmarkId::new(name, format!("{zone}/{when}"));
                group.bench_with_input(id, &at, |b, at| {
                    b.iter(|| schedule.next_after(black_box(*at)))
                });
            }
        }
    }
    group.finish();
}

fn cron_parse(c: &mut Criterion) {
    c.bench_function("cron_parse/daily_fixed_berlin", |b| {
        b.iter(|| CronSchedule::parse(black_box("0 30 2 * * *"), Some("Europe/Berlin")))
    });
}

fn interval_next_after(c: &mut Criterion) {
    let t = trigger(
        TriggerKind::Interval {
            every: SignedDuration::from_mins(15),
        },
        Some(ts("2026-01-01T00:00:00Z")),
    );
    let at = ts("2026-06-10T10:07:13.5Z");
    c.bench_function("interval_next_after/15m", |b| {
        b.iter(|| t.next_after(black_box(at)))
    });
}

/// The example job of the issue: 02:30:00 Berlin, every 15 minutes, and one instant.
fn example_schedule() -> Schedule {
    Schedule {
        triggers: vec![
            trigger(
                TriggerKind::Cron(cron("0 30 2 * * *", "Europe/Berlin")),
                None,
            ),
            trigger(
                TriggerKind::Interval {
                    every: SignedDuration::from_mins(15),
                },
                Some(ts("2026-01-01T00:00:00Z")),
            ),
            trigger(TriggerKind::At(ts("2026-12-24T18:00:00Z")), None),
        ],
    }
}

fn schedule_next_after(c: &mut Criterion) {
    let schedule = example_schedule();
    let at = ts("2026-06-10T10:07:13Z");
    c.bench_function("schedule_next_after/3_triggers", |b| {
        b.iter(|| schedule.next_after(black_box(at)))
    });
    c.bench_function("schedule_upcoming/3_triggers_x100", |b| {
        b.iter(|| schedule.upcoming(black_box(at), 100))
    });
}

fn catchup_plan(c: &mut Criterion) {
    let schedule = example_schedule();
    let (next, now) = (ts("2026-01-01T00:00:00Z"), ts("2026-03-01T00:00:00.5Z"));
    let mut group = c.benchmark_group("plan_fires_after_59_days_down");
    for policy in [
        CatchupPolicy::Latest,
        CatchupPolicy::Skip,
        CatchupPolicy::All,
    ] {
        group.bench_function(format!("{policy:?}"), |b| {
            b.iter(|| {
                plan_fires(
                    &schedule,
                    black_box(next),
                    black_box(now),
                    policy,
                    SignedDuration::from_hours(1),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    cron_next_after,
    cron_parse,
    interval_next_after,
    schedule_next_after,
    catchup_plan
);
criterion_main!(benches);
