//! Pure plans: catch-up after downtime (`plan_fires`), overlap and retry decisions.

#![allow(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failed unwrap fails the test"
)]

use jiff::{SignedDuration, Timestamp};
use kairos_core::policy::{
    ExclusiveCandidate, FirePlan, MAX_CATCHUP_RUNS, MAX_RECORDED_SKIPS, OverlapDecision,
    RetryDecision, RetryOn, RetryPolicy, decide_overlap, exclusive_heads, plan_fires,
};
use kairos_core::run::{AttemptStatus, SkipReason};
use kairos_core::spec::{CatchupPolicy, OverlapPolicy};
use kairos_core::trigger::{CronSchedule, Fire, Schedule, Trigger, TriggerKind};
use proptest::prelude::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn every(period: SignedDuration, anchor: &str) -> Trigger {
    Trigger {
        kind: TriggerKind::Interval { every: period },
        start_at: Some(ts(anchor)),
        end_at: None,
        jitter: None,
        calendars: Default::default(),
    }
}

fn minutely() -> Schedule {
    Schedule {
        triggers: vec![every(SignedDuration::from_mins(1), "2026-01-01T00:00:00Z")],
    }
}

fn fire(at: &str) -> Fire {
    Fire {
        at: ts(at),
        trigger: 0,
    }
}

fn fires(plan: &FirePlan) -> Vec<String> {
    plan.fire.iter().map(|f| f.at.to_string()).collect()
}

fn skips(plan: &FirePlan) -> Vec<String> {
    assert!(
        plan.skip
            .iter()
            .all(|(_, reason)| *reason == SkipReason::Misfire)
    );
    plan.skip.iter().map(|(f, _)| f.at.to_string()).collect()
}

/// `10:00`, `10:01`, ... on 2026-01-01 for minutes `from..=to`.
fn minutes(from: u32, to: u32) -> Vec<String> {
    (from..=to)
        .map(|m| format!("2026-01-01T{:02}:{:02}:00Z", 10 + m / 60, m % 60))
        .collect()
}

const HOUR: SignedDuration = SignedDuration::from_hours(1);
const ALL: [CatchupPolicy; 3] = [
    CatchupPolicy::Skip,
    CatchupPolicy::Latest,
    CatchupPolicy::All,
];

#[test]
fn nothing_is_due_before_next_fire_at() {
    for policy in ALL {
        let plan = plan_fires(
            &minutely(),
            ts("2026-01-01T10:05:00Z"),
            ts("2026-01-01T10:04:59.999Z"),
            policy,
            HOUR,
        );
        assert_eq!(
            plan,
            FirePlan {
                next_fire_at: Some(ts("2026-01-01T10:05:00Z")),
                ..FirePlan::default()
            }
        );
    }
}

#[test]
fn an_on_time_due_time_fires_under_every_policy() {
    for policy in ALL {
        for now in [
            "2026-01-01T10:05:00Z",
            "2026-01-01T10:05:00.2Z",
            "2026-01-01T10:05:59.999Z",
        ] {
            let plan = plan_fires(
                &minutely(),
                ts("2026-01-01T10:05:00Z"),
                ts(now),
                policy,
                HOUR,
            );
            assert_eq!(
                fires(&plan),
                ["2026-01-01T10:05:00Z"],
                "{policy:?} at {now}"
            );
            assert!(plan.skip.is_empty() && plan.dropped == 0);
            assert_eq!(plan.next_fire_at, Some(ts("2026-01-01T10:06:00Z")));
        }
    }
}

#[test]
fn ten_missed_minutes_within_the_window() {
    let (next, now) = (ts("2026-01-01T10:00:00Z"), ts("2026-01-01T10:09:30Z"));
    let latest = plan_fires(&minutely(), next, now, CatchupPolicy::Latest, HOUR);
    assert_eq!(fires(&latest), ["2026-01-01T10:09:00Z"]);
    assert!(latest.skip.is_empty());
    assert_eq!(latest.dropped, 9, "10:00 to 10:08 coalesce into 10:09");

    let all = plan_fires(&minutely(), next, now, CatchupPolicy::All, HOUR);
    assert_eq!(fires(&all), minutes(0, 9));
    assert!(all.skip.is_empty() && all.dropped == 0);

    let skip = plan_fires(&minutely(), next, now, CatchupPolicy::Skip, HOUR);
    assert_eq!(fires(&skip), ["2026-01-01T10:09:00Z"]);
    assert_eq!(skips(&skip), minutes(0, 8));
    assert_eq!(skip.dropped, 0);

    for plan in [latest, all, skip] {
        assert_eq!(plan.next_fire_at, Some(ts("2026-01-01T10:10:00Z")));
    }
}

#[test]
fn the_window_limits_what_catches_up() {
    // Window 5 minutes: 10:04:30 to 10:09:30.
    let (next, now, window) = (
        ts("2026-01-01T10:00:00Z"),
        ts("2026-01-01T10:09:30Z"),
        SignedDuration::from_mins(5),
    );
    let all = plan_fires(&minutely(), next, now, CatchupPolicy::All, window);
    assert_eq!(skips(&all), minutes(0, 4));
    assert_eq!(fires(&all), minutes(5, 9));

    // Everything stale (window 10 s, newest 12:00 is 30 s old).
    let (next, now, window) = (
        ts("2026-01-01T10:00:00Z"),
        ts("2026-01-01T12:00:30Z"),
        SignedDuration::from_secs(10),
    );
    let latest = plan_fires(&minutely(), next, now, CatchupPolicy::Latest, window);
    assert!(latest.fire.is_empty());
    assert_eq!(
        skips(&latest),
        ["2026-01-01T12:00:00Z"],
        "the newest is recorded as skipped"
    );
    assert_eq!(latest.dropped, 120);
    let skip = plan_fires(&minutely(), next, now, CatchupPolicy::Skip, window);
    assert!(skip.fire.is_empty());
    assert_eq!(skips(&skip), minutes(0, 120));
    let all = plan_fires(&minutely(), next, now, CatchupPolicy::All, window);
    assert!(all.fire.is_empty());
    assert_eq!(skips(&all), minutes(0, 120));
    for plan in [latest, skip, all] {
        assert_eq!(plan.next_fire_at, Some(ts("2026-01-01T12:01:00Z")));
    }

    // A zero window: only a due time exactly at `now` is on time.
    let exact = plan_fires(
        &minutely(),
        ts("2026-01-01T10:00:00Z"),
        ts("2026-01-01T10:00:00Z"),
        CatchupPolicy::Skip,
        SignedDuration::ZERO,
    );
    assert_eq!(fires(&exact), ["2026-01-01T10:00:00Z"]);
    let late = plan_fires(
        &minutely(),
        ts("2026-01-01T10:00:00Z"),
        ts("2026-01-01T10:00:00.001Z"),
        CatchupPolicy::Skip,
        SignedDuration::ZERO,
    );
    assert_eq!(skips(&late), ["2026-01-01T10:00:00Z"]);
}

#[test]
fn next_fire_at_need_not_be_a_fire_time_and_may_have_nothing_due() {
    // The schedule changed: due times start at the first fire time at or after `next_fire_at`.
    let plan = plan_fires(
        &minutely(),
        ts("2026-01-01T10:00:30Z"),
        ts("2026-01-01T10:02:10Z"),
        CatchupPolicy::All,
        HOUR,
    );
    assert_eq!(fires(&plan), minutes(1, 2));
    // A one-off trigger already past: nothing is due and nothing follows.
    let once = Schedule {
        triggers: vec![Trigger {
            kind: TriggerKind::At(ts("2026-01-01T09:00:00Z")),
            start_at: None,
            end_at: None,
            jitter: None,
            calendars: Default::default(),
        }],
    };
    let plan = plan_fires(
        &once,
        ts("2026-01-01T10:00:00Z"),
        ts("2026-01-01T11:00:00Z"),
        CatchupPolicy::All,
        HOUR,
    );
    assert_eq!(plan, FirePlan::default());
    // The one-off due time itself fires, and then the job has no next fire time.
    let plan = plan_fires(
        &once,
        ts("2026-01-01T09:00:00Z"),
        ts("2026-01-01T09:00:01Z"),
        CatchupPolicy::Latest,
        HOUR,
    );
    assert_eq!(fires(&plan), ["2026-01-01T09:00:00Z"]);
    assert_eq!(plan.next_fire_at, None);
}

#[test]
fn latest_finds_the_newest_due_time_over_several_triggers_and_dst() {
    // A daily 02:30 Berlin job plus a one-off instant; down from 1 March to 10 March 12:00:30.
    let schedule = Schedule {
        triggers: vec![
            Trigger {
                kind: TriggerKind::Cron(
                    CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap(),
                ),
                start_at: None,
                end_at: None,
                jitter: None,
                calendars: Default::default(),
            },
            Trigger {
                kind: TriggerKind::At(ts("2026-03-10T12:00:00Z")),
                start_at: None,
                end_at: None,
                jitter: None,
                calendars: Default::default(),
            },
        ],
    };
    let plan = plan_fires(
        &schedule,
        ts("2026-03-01T01:30:00Z"),
        ts("2026-03-10T12:00:30Z"),
        CatchupPolicy::Latest,
        HOUR,
    );
    assert_eq!(
        plan.fire,
        [Fire {
            at: ts("2026-03-10T12:00:00Z"),
            trigger: 1
        }]
    );
    assert_eq!(plan.dropped, 10, "02:30 on 1 to 10 March");
    assert_eq!(plan.next_fire_at, Some(ts("2026-03-11T01:30:00Z")));

    // Quarter-hourly in Berlin, down across the fall-back night: both passes count.
    let quarter = Schedule {
        triggers: vec![Trigger {
            kind: TriggerKind::Cron(
                CronSchedule::parse("*/15 * * * *", Some("Europe/Berlin")).unwrap(),
            ),
            start_at: None,
            end_at: None,
            jitter: None,
            calendars: Default::default(),
        }],
    };
    // 01:45 CEST (23:45Z) to 03:00 CET (02:00Z): 10 due times, the newest 02:00Z.
    let plan = plan_fires(
        &quarter,
        ts("2026-10-24T23:45:00Z"),
        ts("2026-10-25T02:05:00Z"),
        CatchupPolicy::Latest,
        HOUR,
    );
    assert_eq!(plan.fire, [fire("2026-10-25T02:00:00Z")]);
    assert_eq!(plan.dropped, 9);
    let plan = plan_fires(
        &quarter,
        ts("2026-10-24T23:45:00Z"),
        ts("2026-10-25T02:05:00Z"),
        CatchupPolicy::All,
        HOUR,
    );
    assert_eq!(
        fires(&plan),
        [
            "2026-10-25T01:15:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T01:45:00Z",
            "2026-10-25T02:00:00Z"
        ],
        "the window starts at 01:05Z"
    );
    assert_eq!(plan.skip.len(), 6);
}

#[test]
fn every_second_after_thirty_days_down_is_bounded() {
    let schedule = Schedule {
        triggers: vec![every(SignedDuration::from_secs(1), "2026-01-01T00:00:00Z")],
    };
    let (next, now) = (ts("2026-01-01T00:00:00Z"), ts("2026-01-31T00:00:00.5Z"));
    // Due: 00:00:00 on 1 January to 00:00:00 on 31 January, one per second.
    let total: u64 = 30 * 86_400 + 1;

    let all = plan_fires(&schedule, next, now, CatchupPolicy::All, HOUR);
    assert_eq!(all.fire.len(), MAX_CATCHUP_RUNS);
    assert_eq!(
        all.fire[0],
        fire("2026-01-30T23:00:01Z"),
        "the oldest due time in the window"
    );
    assert_eq!(all.fire[MAX_CATCHUP_RUNS - 1], fire("2026-01-30T23:16:40Z"));
    assert_eq!(all.skip.len(), MAX_RECORDED_SKIPS);
    assert_eq!(all.skip[0].0, fire("2026-01-01T00:00:00Z"));
    assert_eq!(
        all.skip[MAX_RECORDED_SKIPS - 1].0,
        fire("2026-01-01T00:16:39Z")
    );
    // The rest is counted: exactly for the 2600 in the window past the cap, at least partly for
    // the 2.6 million before it.
    assert!(
        all.dropped > 2600 && all.dropped <= total - 2000,
        "dropped {}",
        all.dropped
    );

    let latest = plan_fires(&schedule, next, now, CatchupPolicy::Latest, HOUR);
    assert_eq!(fires(&latest), ["2026-01-31T00:00:00Z"]);
    assert!(latest.skip.is_empty());
    assert!(
        latest.dropped >= 10_000 && latest.dropped < total,
        "dropped {}",
        latest.dropped
    );

    let skip = plan_fires(&schedule, next, now, CatchupPolicy::Skip, HOUR);
    assert_eq!(fires(&skip), ["2026-01-31T00:00:00Z"]);
    assert_eq!(skip.skip.len(), MAX_RECORDED_SKIPS);
    assert!(
        skip.dropped >= 10_000 && skip.dropped < total,
        "dropped {}",
        skip.dropped
    );

    for plan in [all, latest, skip] {
        assert_eq!(plan.next_fire_at, Some(ts("2026-01-31T00:00:01Z")));
    }
}

/// Ten years of 100 ms due times (3.2 billion) with a 30-day window: walking them one by one would
/// take hours; a bounded plan takes a moment.
#[test]
fn every_100ms_after_ten_years_down_is_bounded() {
    let schedule = Schedule {
        triggers: vec![every(
            SignedDuration::from_millis(100),
            "2016-01-01T00:00:00Z",
        )],
    };
    let (next, now) = (ts("2016-01-01T00:00:00Z"), ts("2026-01-01T00:00:00.05Z"));
    for policy in ALL {
        let plan = plan_fires(
            &schedule,
            next,
            now,
            policy,
            SignedDuration::from_hours(30 * 24),
        );
        assert!(plan.fire.len() <= MAX_CATCHUP_RUNS && plan.skip.len() <= MAX_RECORDED_SKIPS);
        assert_eq!(
            plan.next_fire_at,
            Some(ts("2026-01-01T00:00:00.1Z")),
            "{policy:?}"
        );
        match policy {
            CatchupPolicy::All => assert_eq!(plan.fire[0], fire("2025-12-02T00:00:00.1Z")),
            _ => assert_eq!(fires(&plan), ["2026-01-01T00:00:00Z"], "{policy:?}"),
        }
    }
}

/// The plan a naive walk over every due time gives, and the number of due times.
fn reference(
    schedule: &Schedule,
    next_fire_at: Timestamp,
    now: Timestamp,
    policy: CatchupPolicy,
    window: SignedDuration,
) -> (FirePlan, usize) {
    let mut plan = FirePlan {
        next_fire_at: Some(next_fire_at),
        ..FirePlan::default()
    };
    if next_fire_at > now {
        return (plan, 0);
    }
    let window_start = now.checked_sub(window).unwrap();
    let mut due = Vec::new();
    let mut cursor = next_fire_at
        .checked_sub(SignedDuration::from_nanos(1))
        .unwrap();
    while let Some(f) = schedule.next_after(cursor).filter(|f| f.at <= now) {
        due.push(f);
        cursor = f.at;
    }
    plan.next_fire_at = schedule.next_after(now).map(|f| f.at);
    let mut skip = Vec::new();
    for (i, f) in due.iter().enumerate() {
        let newest = i + 1 == due.len();
        let in_window = f.at >= window_start;
        match policy {
            CatchupPolicy::All if in_window && plan.fire.len() < MAX_CATCHUP_RUNS => {
                plan.fire.push(*f)
            }
            CatchupPolicy::All => skip.push(*f),
            _ if newest && in_window => plan.fire.push(*f),
            CatchupPolicy::Latest if !newest => plan.dropped += 1,
            _ => skip.push(*f),
        }
    }
    plan.dropped += skip.len().saturating_sub(MAX_RECORDED_SKIPS) as u64;
    skip.truncate(MAX_RECORDED_SKIPS);
    plan.skip = skip.into_iter().map(|f| (f, SkipReason::Misfire)).collect();
    (plan, due.len())
}

fn small_schedule() -> impl Strategy<Value = Schedule> {
    let trigger = prop_oneof![
        (prop_oneof![1i64..20, 20i64..600], 0i64..600).prop_map(|(period, offset)| {
            let anchor = ts("2026-01-01T00:00:00Z")
                .checked_add(SignedDuration::from_secs(offset))
                .unwrap();
            Trigger {
                kind: TriggerKind::Interval {
                    every: SignedDuration::from_secs(period),
                },
                start_at: Some(anchor),
                end_at: None,
                jitter: None,
                calendars: Default::default(),
            }
        }),
        (0i64..7200).prop_map(|s| Trigger {
            kind: TriggerKind::At(
                ts("2026-01-01T00:00:00Z")
                    .checked_add(SignedDuration::from_secs(s))
                    .unwrap()
            ),
            start_at: None,
            end_at: None,
            jitter: None,
            calendars: Default::default(),
        }),
        prop::sample::select(vec![
            "*/5 * * * *",
            "0 * * * *",
            "*/20 * * * * *",
            "7,8,9 * * * *"
        ])
        .prop_map(|e| Trigger {
            kind: TriggerKind::Cron(CronSchedule::parse(e, None).unwrap()),
            start_at: None,
            end_at: None,
            jitter: None,
            calendars: Default::default(),
        }),
    ];
    prop::collection::vec(trigger, 1..4).prop_map(|triggers| Schedule { triggers })
}

fn catchup() -> impl Strategy<Value = CatchupPolicy> {
    prop::sample::select(ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The bounded plan is the naive one (only `dropped` is a lower bound when more than 10 000
    /// due times are counted); runs are within the window, nothing is after `now`, and the next
    /// fire time is strictly after `now`.
    #[test]
    fn plan_fires_matches_a_naive_walk(
        schedule in small_schedule(),
        next_offset_ms in 0i64..7_200_000,
        behind_ms in -60_000i64..10_800_000,
        window_ms in 0i64..10_800_000,
        policy in catchup(),
    ) {
        let next_fire_at = ts("2026-01-01T00:00:00Z").checked_add(SignedDuration::from_millis(next_offset_ms)).unwrap();
        let now = next_fire_at.checked_add(SignedDuration::from_millis(behind_ms)).unwrap();
        let window = SignedDuration::from_millis(window_ms);
        let plan = plan_fires(&schedule, next_fire_at, now, policy, window);
        let (expected, due) = reference(&schedule, next_fire_at, now, policy, window);
        prop_assert_eq!(&plan.fire, &expected.fire);
        prop_assert_eq!(&plan.skip, &expected.skip);
        prop_assert_eq!(plan.next_fire_at, expected.next_fire_at);
        if due < 10_000 {
            prop_assert_eq!(plan.dropped, expected.dropped);
        } else {
            prop_assert!(plan.dropped <= expected.dropped);
            prop_assert!(plan.dropped >= expected.dropped.min(10_000));
        }
        let window_start = now.checked_sub(window).unwrap();
        prop_assert!(plan.fire.iter().all(|f| f.at >= window_start && f.at <= now));
        prop_assert!(plan.skip.iter().all(|(f, _)| f.at <= now));
        prop_assert!(plan.next_fire_at.is_none_or(|n| n > now));
        if policy != CatchupPolicy::All {
            prop_assert!(plan.fire.len() <= 1);
        }
    }
}

#[test]
fn overlap_decisions() {
    use OverlapDecision::*;
    let table = [
        // (policy, max_concurrent, active, decision)
        (OverlapPolicy::Forbid, 1, 0, Start),
        (OverlapPolicy::Forbid, 1, 1, Skip),
        (OverlapPolicy::Forbid, 1, 7, Skip),
        (OverlapPolicy::Allow, 3, 0, Start),
        (OverlapPolicy::Allow, 3, 2, Start),
        (OverlapPolicy::Allow, 3, 3, Skip),
        (OverlapPolicy::Allow, 3, 4, Skip),
        (OverlapPolicy::Allow, 1, 1, Skip),
        (OverlapPolicy::Queue, 1, 0, Serialize),
        (OverlapPolicy::Queue, 1, 5, Serialize),
        (OverlapPolicy::Replace, 1, 0, Start),
        (OverlapPolicy::Replace, 1, 1, Replace),
        (OverlapPolicy::Replace, 1, 3, Replace),
    ];
    for (policy, max, active, expected) in table {
        assert_eq!(
            decide_overlap(policy, max, active),
            expected,
            "{policy:?} max {max} active {active}"
        );
    }
}

fn backoff(jitter: f64) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial: SignedDuration::from_secs(10),
        max: SignedDuration::from_mins(10),
        multiplier: 2.0,
        jitter,
        on: vec![RetryOn::Any],
    }
}

#[test]
fn retry_delays_grow_exponentially_up_to_the_cap() {
    let p = backoff(0.0);
    let secs = |attempt| p.delay(attempt, 0.7).as_secs_f64();
    assert_eq!(
        [secs(1), secs(2), secs(3), secs(4), secs(5), secs(6)],
        [10.0, 20.0, 40.0, 80.0, 160.0, 320.0]
    );
    assert_eq!(secs(7), 600.0, "640 s capped at 10 minutes");
    assert_eq!(secs(1000), 600.0);
    assert_eq!(secs(u32::MAX), 600.0);
    assert_eq!(secs(0), 10.0, "attempt 0 is treated as the first");
    let flat = RetryPolicy {
        multiplier: 1.0,
        ..backoff(0.0)
    };
    assert_eq!(flat.delay(9, 0.1), SignedDuration::from_secs(10));
}

#[test]
fn retry_jitter_spreads_the_delay_both_ways_but_never_above_the_cap() {
    let p = backoff(0.2);
    assert_eq!(p.delay(1, 0.0), SignedDuration::from_secs(8));
    assert_eq!(p.delay(1, 0.5), SignedDuration::from_secs(10));
    assert_eq!(p.delay(1, 0.75), SignedDuration::from_secs(11));
    assert!(p.delay(1, 0.999_999) < SignedDuration::from_secs(12));
    // Out-of-range samples are clamped.
    assert_eq!(p.delay(1, -3.0), SignedDuration::from_secs(8));
    assert_eq!(p.delay(1, 7.0), SignedDuration::from_secs(12));
    // At the cap jitter can only shorten the delay.
    assert_eq!(p.delay(10, 0.0), SignedDuration::from_secs(480));
    assert_eq!(p.delay(10, 0.999), SignedDuration::from_mins(10));
}

proptest! {
    #[test]
    fn retry_delay_is_within_jitter_of_the_capped_exponential(
        initial_ms in 0i64..60_000,
        extra_ms in 0i64..3_600_000,
        multiplier in 1.0f64..10.0,
        jitter in 0.0f64..=1.0,
        attempt in 1u32..100,
        random in 0.0f64..1.0,
    ) {
        let p = RetryPolicy {
            max_attempts: 100,
            initial: SignedDuration::from_millis(initial_ms),
            max: SignedDuration::from_millis(initial_ms + extra_ms),
            multiplier,
            jitter,
            on: vec![RetryOn::Any],
        };
        let capped = (initial_ms as f64 / 1000.0 * multiplier.powi(attempt as i32 - 1)).min(p.max.as_secs_f64());
        let delay = p.delay(attempt, random).as_secs_f64();
        prop_assert!(delay >= 0.0 && delay <= p.max.as_secs_f64() + 1e-9);
        prop_assert!(delay >= capped * (1.0 - jitter) - 1e-6, "{} below {}", delay, capped * (1.0 - jitter));
        prop_assert!(delay <= capped * (1.0 + jitter) + 1e-6, "{} above {}", delay, capped * (1.0 + jitter));
        // Later attempts never wait less (same sample, no jitter).
        let steady = RetryPolicy { jitter: 0.0, ..p.clone() };
        prop_assert!(steady.delay(attempt + 1, random) >= steady.delay(attempt, random));
    }
}

#[test]
fn retry_decisions_follow_max_attempts_and_the_on_conditions() {
    let p = RetryPolicy {
        max_attempts: 3,
        on: vec![
            "exit:1".parse().unwrap(),
            "exit:75".parse().unwrap(),
            "timeout".parse().unwrap(),
        ],
        ..backoff(0.0)
    };
    let retry = |secs| RetryDecision::Retry {
        delay: SignedDuration::from_secs(secs),
    };
    assert_eq!(
        p.decide(1, &AttemptStatus::ExitCode { code: 1 }, 0.5),
        retry(10)
    );
    assert_eq!(
        p.decide(2, &AttemptStatus::ExitCode { code: 75 }, 0.5),
        retry(20)
    );
    assert_eq!(p.decide(1, &AttemptStatus::TimedOut, 0.5), retry(10));
    assert_eq!(
        p.decide(3, &AttemptStatus::ExitCode { code: 1 }, 0.5),
        RetryDecision::Finish,
        "no attempts left"
    );
    assert_eq!(
        p.decide(4, &AttemptStatus::TimedOut, 0.5),
        RetryDecision::Finish
    );
    assert_eq!(
        p.decide(1, &AttemptStatus::ExitCode { code: 2 }, 0.5),
        RetryDecision::Finish
    );
    assert_eq!(
        p.decide(1, &AttemptStatus::Signal { signal: 9 }, 0.5),
        RetryDecision::Finish
    );
    assert_eq!(
        p.decide(1, &AttemptStatus::Succeeded, 0.5),
        RetryDecision::Finish
    );
    assert_eq!(
        p.decide(1, &AttemptStatus::Cancelled, 0.5),
        RetryDecision::Finish
    );
    assert_eq!(
        RetryPolicy::none().decide(1, &AttemptStatus::TimedOut, 0.5),
        RetryDecision::Finish
    );

    let status_table: &[(&str, AttemptStatus, bool)] = &[
        ("any", AttemptStatus::ExitCode { code: 3 }, true),
        (
            "any",
            AttemptStatus::Error {
                message: "spawn".into(),
            },
            true,
        ),
        ("any", AttemptStatus::Cancelled, false),
        ("any", AttemptStatus::Succeeded, false),
        ("exit:any", AttemptStatus::ExitCode { code: 255 }, true),
        ("exit:any", AttemptStatus::Signal { signal: 11 }, true),
        ("exit:any", AttemptStatus::TimedOut, false),
        ("exit:0", AttemptStatus::ExitCode { code: 0 }, true),
        ("http:503", AttemptStatus::HttpStatus { status: 503 }, true),
        ("http:503", AttemptStatus::HttpStatus { status: 502 }, false),
        ("http:5xx", AttemptStatus::HttpStatus { status: 599 }, true),
        ("http:5xx", AttemptStatus::HttpStatus { status: 404 }, false),
        ("http:4xx", AttemptStatus::HttpStatus { status: 429 }, true),
        ("http:5xx", AttemptStatus::ExitCode { code: 5 }, false),
        (
            "error",
            AttemptStatus::Error {
                message: "connection refused".into(),
            },
            true,
        ),
        ("error", AttemptStatus::ExitCode { code: 1 }, false),
        (
            "timeout",
            AttemptStatus::Error {
                message: "x".into(),
            },
            false,
        ),
    ];
    for (on, status, retries) in status_table {
        let p = RetryPolicy {
            on: vec![on.parse().unwrap()],
            ..backoff(0.0)
        };
        let decided = p.decide(1, status, 0.0);
        assert_eq!(
            matches!(decided, RetryDecision::Retry { .. }),
            *retries,
            "`{on}` on {status:?}"
        );
    }
}

#[test]
fn retry_conditions_parse() {
    assert_eq!("exit:1".parse(), Ok(RetryOn::Exit(1)));
    assert_eq!("exit:255".parse(), Ok(RetryOn::Exit(255)));
    assert_eq!("exit:any".parse(), Ok(RetryOn::AnyExit));
    assert_eq!("http:503".parse(), Ok(RetryOn::Http(503)));
    assert_eq!("http:5xx".parse(), Ok(RetryOn::HttpClass(5)));
    assert_eq!("timeout".parse(), Ok(RetryOn::Timeout));
    assert_eq!("error".parse(), Ok(RetryOn::Error));
    assert_eq!("any".parse(), Ok(RetryOn::Any));
    for bad in [
        "", "exit:", "exit:256", "exit:-1", "exit:x", "http:600", "http:99", "http:6xx",
        "http:0xx", "TIMEOUT", "signal:9",
    ] {
        let err = bad.parse::<RetryOn>().unwrap_err();
        assert!(err.contains(&format!("`{bad}`")), "{err}");
    }
}

/// A waiting exclusive run due (and startable) at `at`.
fn waiting(job_id: i64, run_id: i64, at: &str, job_running: bool) -> ExclusiveCandidate {
    ExclusiveCandidate {
        job_id,
        run_id,
        scheduled_for: ts(at),
        run_at: ts(at),
        job_running,
    }
}

#[test]
fn exclusive_runs_start_one_per_idle_job_earliest_first() {
    let candidates = [
        waiting(1, 12, "2026-01-01T00:02:00Z", false),
        waiting(1, 11, "2026-01-01T00:01:00Z", false),
        waiting(2, 20, "2026-01-01T00:00:00Z", true),
        waiting(3, 31, "2026-01-01T00:01:00Z", false),
        waiting(3, 30, "2026-01-01T00:01:00Z", false),
        waiting(4, 40, "2026-01-01T00:00:30Z", false),
    ];
    let horizon = ts("2026-01-01T00:05:00Z");
    // Job 2 has a run running; job 1's head is its earliest; job 3's tie goes to the lower id.
    assert_eq!(exclusive_heads(&candidates, horizon, 10), [40, 11, 30]);
    assert_eq!(exclusive_heads(&candidates, horizon, 2), [40, 11]);
    assert_eq!(exclusive_heads(&candidates, horizon, 0), Vec::<i64>::new());
    assert_eq!(exclusive_heads(&[], horizon, 5), Vec::<i64>::new());
    // Only heads that may start by the horizon.
    assert_eq!(
        exclusive_heads(&candidates, ts("2026-01-01T00:01:00Z"), 10),
        [40, 11, 30]
    );
    assert_eq!(
        exclusive_heads(&candidates, ts("2026-01-01T00:00:30Z"), 10),
        [40]
    );
}

/// A job's queue drains in due-time order, whatever `run_at` says: a run waiting for a retry
/// holds the runs due after it, and a rescued run (requeued now, so with a late `run_at`) goes
/// before them.
#[test]
fn a_jobs_queue_drains_in_due_time_order() {
    let horizon = ts("2026-01-01T00:10:00Z");
    let run = |run_id, due: &str, at: &str| ExclusiveCandidate {
        job_id: 1,
        run_id,
        scheduled_for: ts(due),
        run_at: ts(at),
        job_running: false,
    };
    // Run 1 (due at 00:00) failed and retries at 00:30; run 2 (due at 00:01) waits for it.
    let retrying = [
        run(1, "2026-01-01T00:00:00Z", "2026-01-01T00:30:00Z"),
        run(2, "2026-01-01T00:01:00Z", "2026-01-01T00:01:00Z"),
    ];
    assert_eq!(exclusive_heads(&retrying, horizon, 10), Vec::<i64>::new());
    assert_eq!(
        exclusive_heads(&retrying, ts("2026-01-01T00:30:00Z"), 10),
        [1]
    );
    // Run 3 (due at 00:00) was rescued at 00:09, after run 4 (due at 00:05) had become due.
    let rescued = [
        run(4, "2026-01-01T00:05:00Z", "2026-01-01T00:05:00Z"),
        run(3, "2026-01-01T00:00:00Z", "2026-01-01T00:09:00Z"),
    ];
    assert_eq!(exclusive_heads(&rescued, horizon, 10), [3]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// At most one run per job, never for a job with a run running, always the job's earliest
    /// by due time and only if it may start by the horizon, and no more than the limit.
    #[test]
    fn exclusive_heads_respect_the_rule(
        runs in prop::collection::vec((0i64..6, 0i64..50, 0i64..10, any::<bool>()), 0..40),
        horizon in 0i64..60,
        limit in 0usize..8,
    ) {
        let t0 = ts("2026-01-01T00:00:00Z");
        let horizon = t0 + SignedDuration::from_mins(horizon);
        let candidates: Vec<ExclusiveCandidate> = runs
            .iter()
            .enumerate()
            .map(|(i, &(job, minute, delay, running))| ExclusiveCandidate {
                job_id: job,
                run_id: i as i64,
                scheduled_for: t0 + SignedDuration::from_mins(minute),
                run_at: t0 + SignedDuration::from_mins(minute + delay),
                job_running: running,
            })
            .collect();
        let heads = exclusive_heads(&candidates, horizon, limit);
        prop_assert!(heads.len() <= limit);
        let mut jobs = std::collections::HashSet::new();
        for id in &heads {
            let c = candidates[*id as usize];
            prop_assert!(jobs.insert(c.job_id), "two runs of job {}", c.job_id);
            prop_assert!(c.run_at <= horizon);
            prop_assert!(candidates.iter().all(|o| o.job_id != c.job_id || !o.job_running));
            prop_assert!(candidates.iter().all(|o| o.job_id != c.job_id
                || (o.scheduled_for, o.run_id) >= (c.scheduled_for, c.run_id)));
        }
        // Every job whose head may start gets it, up to the limit.
        let startable: std::collections::HashSet<i64> = candidates
            .iter()
            .map(|c| c.job_id)
            .filter(|j| {
                let own = || candidates.iter().filter(move |o| o.job_id == *j);
                own().all(|o| !o.job_running)
                    && own()
                        .min_by_key(|o| (o.scheduled_for, o.run_id))
                        .is_some_and(|h| h.run_at <= horizon)
            })
            .collect();
        prop_assert_eq!(heads.len(), startable.len().min(limit));
    }
}

#[test]
fn backfill_due_times_include_both_ends_and_are_bounded() {
    use kairos_core::policy::due_times_between;
    let s = minutely();
    let times = due_times_between(
        &s,
        ts("2026-01-01T00:10:00Z"),
        ts("2026-01-01T00:13:00Z"),
        100,
    )
    .unwrap();
    assert_eq!(
        times,
        [
            ts("2026-01-01T00:10:00Z"),
            ts("2026-01-01T00:11:00Z"),
            ts("2026-01-01T00:12:00Z"),
            ts("2026-01-01T00:13:00Z")
        ]
    );
    let inside = due_times_between(
        &s,
        ts("2026-01-01T00:10:30Z"),
        ts("2026-01-01T00:10:59Z"),
        100,
    )
    .unwrap();
    assert!(inside.is_empty(), "no due time in the range");
    assert_eq!(
        due_times_between(
            &s,
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-02T00:00:00Z"),
            10
        ),
        Err(11)
    );
    assert!(
        due_times_between(
            &Schedule { triggers: vec![] },
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-02T00:00:00Z"),
            10
        )
        .unwrap()
        .is_empty()
    );
}

#[test]
fn backfill_releases_one_at_a_time_unless_overlap_allows_more() {
    use kairos_core::policy::backfill_release;
    for policy in [
        OverlapPolicy::Forbid,
        OverlapPolicy::Queue,
        OverlapPolicy::Replace,
    ] {
        assert_eq!(backfill_release(policy, 1, 0), 1);
        assert_eq!(backfill_release(policy, 1, 1), 0);
        assert_eq!(backfill_release(policy, 1, 3), 0);
    }
    assert_eq!(backfill_release(OverlapPolicy::Allow, 4, 1), 3);
    assert_eq!(backfill_release(OverlapPolicy::Allow, 4, 4), 0);
    assert_eq!(backfill_release(OverlapPolicy::Allow, 4, 9), 0);
}
