//! Triggers: *when* a job is due. Pure functions of their inputs; no clock is read here.
//!
//! Every trigger answers one question, [`Trigger::next_after`]: the first due time strictly after
//! an instant, within the trigger's bounds. A job's [`Schedule`] is the union of its triggers;
//! fire times strictly increase, so iterating `next_after` never repeats or goes backwards.

mod cron;
mod cron_syntax;

use jiff::{SignedDuration, Timestamp};

pub use cron::{CRON_LAST_YEAR, CronSchedule, CronScheduleError, DstNote, MAX_CRON_LEN};

/// One trigger with its bounds and jitter.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub kind: TriggerKind,
    /// No due time before this instant.
    pub start_at: Option<Timestamp>,
    /// No due time after this instant.
    pub end_at: Option<Timestamp>,
    /// Upper bound of the random delay added to each start (not to the due time itself).
    pub jitter: Option<SignedDuration>,
    /// Calendars whose days and windows are not due times (or are the only ones).
    pub calendars: crate::calendar::CalendarFilter,
}

#[derive(Debug, Clone)]
pub enum TriggerKind {
    /// A cron expression matched against the wall clock of a time zone.
    Cron(CronSchedule),
    /// A fixed period in elapsed time, anchored at `start_at` (or the Unix epoch when absent, so
    /// that `15m` fires at :00, :15, :30 and :45 UTC and survives restarts and updates unchanged).
    Interval { every: SignedDuration },
    /// One instant.
    At(Timestamp),
    /// Events posted to a topic (no due times of its own).
    Event(crate::event::EventTrigger),
    /// The ends of another job's runs (no due times of its own).
    After(crate::dependency::AfterTrigger),
}

impl Trigger {
    /// The first due time strictly after `after`, within `start_at..=end_at`, that its
    /// calendars allow.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        if self.calendars.is_empty() {
            return self.next_in_bounds(after);
        }
        self.calendars
            .first_allowed(after, |t| self.next_in_bounds(t))
    }

    /// The first due time strictly after `after`, within `start_at..=end_at`, whatever the
    /// calendars say.
    pub fn next_in_bounds(&self, after: Timestamp) -> Option<Timestamp> {
        // Search from just before `start_at` so that `start_at` itself can be a due time.
        let from = match self.start_at {
            Some(start) if start > after => {
                start.checked_sub(SignedDuration::from_nanos(1)).ok()?
            }
            _ => after,
        };
        let next = match &self.kind {
            TriggerKind::Cron(cron) => cron.next_after(from)?,
            TriggerKind::Interval { every } => {
                interval_next_after(self.start_at.unwrap_or(Timestamp::UNIX_EPOCH), *every, from)?
            }
            TriggerKind::At(at) => (*at > from).then_some(*at)?,
            TriggerKind::Event(_) | TriggerKind::After(_) => return None,
        };
        match self.end_at {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// Deterministic start delay for the due time `scheduled_for` of job `job_key`, in
    /// `0..jitter`. Deterministic so that a retried fire (after a crash) computes the same delay.
    pub fn jitter_for(&self, job_key: u64, scheduled_for: Timestamp) -> SignedDuration {
        let Some(jitter) = self.jitter else {
            return SignedDuration::ZERO;
        };
        let nanos = jitter.as_nanos();
        if nanos <= 0 {
            return SignedDuration::ZERO;
        }
        let seed = splitmix64(job_key ^ (scheduled_for.as_nanosecond() as u64));
        let offset = seed as u128 % nanos as u128;
        // Below `jitter`, so it fits whenever the jitter does (validation bounds it to 24h).
        i64::try_from(offset).map_or(SignedDuration::ZERO, SignedDuration::from_nanos)
    }
}

/// The first `anchor + k * every` (k ≥ 0) strictly after `after`.
fn interval_next_after(
    anchor: Timestamp,
    every: SignedDuration,
    after: Timestamp,
) -> Option<Timestamp> {
    if after < anchor {
        return Some(anchor);
    }
    let period = every.as_nanos();
    if period <= 0 {
        return None;
    }
    let elapsed = after.as_nanosecond() - anchor.as_nanosecond();
    let k = elapsed / period + 1;
    let next = anchor.as_nanosecond().checked_add(k.checked_mul(period)?)?;
    Timestamp::from_nanosecond(next).ok()
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A due time and the trigger (index into the job's triggers) that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    pub at: Timestamp,
    pub trigger: usize,
}

/// A due time of [`Schedule::preview`], or a time its trigger's calendars rule out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcoming {
    pub at: Timestamp,
    /// The trigger (index into the job's triggers).
    pub trigger: usize,
    /// Why it is not a due time (`None`: it is one).
    pub skipped: Option<String>,
}

/// All triggers of one job.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    pub triggers: Vec<Trigger>,
}

impl Schedule {
    /// The earliest due time strictly after `after` over all triggers. When two triggers are due
    /// at the same instant, the first one listed wins (one run per due time).
    pub fn next_after(&self, after: Timestamp) -> Option<Fire> {
        let mut best: Option<Fire> = None;
        for (i, trigger) in self.triggers.iter().enumerate() {
            if let Some(at) = trigger.next_after(after)
                && best.is_none_or(|b| at < b.at)
            {
                best = Some(Fire { at, trigger: i });
            }
        }
        best
    }

    /// Whether an event of `topic` with `payload`, posted at `now`, is for this job: one of its
    /// event triggers subscribes to the topic, its filter matches and `now` is within its
    /// bounds.
    pub fn subscribes(&self, topic: &str, payload: &serde_json::Value, now: Timestamp) -> bool {
        self.triggers.iter().any(|t| match &t.kind {
            TriggerKind::Event(e) => {
                t.start_at.is_none_or(|s| now >= s)
                    && t.end_at.is_none_or(|e| now <= e)
                    && t.calendars.allows(now)
                    && e.matches(topic, payload)
            }
            _ => false,
        })
    }

    /// Whether any trigger yields due times (cron, interval, at).
    pub fn is_timed(&self) -> bool {
        self.triggers
            .iter()
            .any(|t| !matches!(t.kind, TriggerKind::Event(_) | TriggerKind::After(_)))
    }

    /// Up to `n` due times strictly after `after`, and the times the triggers' calendars rule
    /// out before the last of them (or, when no due time is left, after `after`), each with
    /// why; at most `n` of those too, the earliest. In time order.
    pub fn preview(&self, after: Timestamp, n: usize) -> Vec<Upcoming> {
        let fires = self.upcoming(after, n);
        let until = fires.last().map(|f| f.at);
        let mut skipped: Vec<Upcoming> = Vec::new();
        for (i, trigger) in self.triggers.iter().enumerate() {
            if trigger.calendars.is_empty() {
                continue;
            }
            let mut cursor = after;
            while skipped.len() < n * (i + 1) {
                let Some(at) = trigger.next_in_bounds(cursor) else {
                    break;
                };
                if until.is_some_and(|u| at >= u) {
                    break;
                }
                if let Some(why) = trigger.calendars.why_not(at) {
                    skipped.push(Upcoming {
                        at,
                        trigger: i,
                        skipped: Some(why),
                    });
                }
                cursor = at;
            }
        }
        skipped.sort_by_key(|u| u.at);
        skipped.dedup_by_key(|u| u.at);
        // A time one trigger skips but another fires is not skipped.
        skipped.retain(|s| !fires.iter().any(|f| f.at == s.at));
        skipped.truncate(n);
        let mut out: Vec<Upcoming> = fires
            .into_iter()
            .map(|f| Upcoming {
                at: f.at,
                trigger: f.trigger,
                skipped: None,
            })
            .chain(skipped)
            .collect();
        out.sort_by_key(|u| u.at);
        out
    }

    /// Up to `n` due times strictly after `after`.
    pub fn upcoming(&self, after: Timestamp, n: usize) -> Vec<Fire> {
        let mut out = Vec::with_capacity(n.min(1024));
        let mut cursor = after;
        while out.len() < n {
            let Some(fire) = self.next_after(cursor) else {
                break;
            };
            cursor = fire.at;
            out.push(fire);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn interval_is_anchored() {
        let t = Trigger {
            kind: TriggerKind::Interval {
                every: SignedDuration::from_mins(15),
            },
            start_at: Some(ts("2026-01-01T00:05:00Z")),
            end_at: Some(ts("2026-01-01T01:00:00Z")),
            jitter: None,
            calendars: Default::default(),
        };
        assert_eq!(
            t.next_after(ts("2025-06-01T00:00:00Z")),
            Some(ts("2026-01-01T00:05:00Z"))
        );
        assert_eq!(
            t.next_after(ts("2026-01-01T00:05:00Z")),
            Some(ts("2026-01-01T00:20:00Z"))
        );
        assert_eq!(
            t.next_after(ts("2026-01-01T00:19:59Z")),
            Some(ts("2026-01-01T00:20:00Z"))
        );
        assert_eq!(t.next_after(ts("2026-01-01T00:50:00Z")), None);
    }

    #[test]
    fn at_fires_once() {
        let t = Trigger {
            kind: TriggerKind::At(ts("2026-12-24T18:00:00Z")),
            start_at: None,
            end_at: None,
            jitter: None,
            calendars: Default::default(),
        };
        assert_eq!(
            t.next_after(ts("2026-12-24T17:00:00Z")),
            Some(ts("2026-12-24T18:00:00Z"))
        );
        assert_eq!(t.next_after(ts("2026-12-24T18:00:00Z")), None);
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let t = Trigger {
            kind: TriggerKind::At(ts("2026-12-24T18:00:00Z")),
            start_at: None,
            end_at: None,
            jitter: Some(SignedDuration::from_secs(30)),
            calendars: Default::default(),
        };
        let a = t.jitter_for(7, ts("2026-12-24T18:00:00Z"));
        assert_eq!(a, t.jitter_for(7, ts("2026-12-24T18:00:00Z")));
        assert!(a >= SignedDuration::ZERO && a < SignedDuration::from_secs(30));
    }
}
