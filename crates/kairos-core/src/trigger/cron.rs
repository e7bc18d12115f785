//! Cron schedules through `croner`, matched against the wall clock of an IANA time zone.
//!
//! Dialect: 5 fields (`min hour dom mon dow`) or 6 with seconds first; `*`, lists, ranges,
//! steps, month and day names, `L`, `W`, `#`, `nL`, `?` and the macros `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`. `cron_syntax` checks each field
//! before croner parses the expression, so that a mistake is reported with its field and never
//! silently reinterpreted. An expression that matches no date (`0 0 30 2 *`) is an error.
//!
//! Day fields combine as in Vixie cron: when both day-of-month and day-of-week are restricted
//! (neither starts with `*` or is `?`) a day matches if either matches; otherwise both must.
//! croner ORs by default, so its AND mode is chosen when a day field starts with `*` or `?`.
//!
//! DST follows croner (the Open Cron Pattern Specification): a fixed-time schedule (one value in
//! each of second, minute and hour) fires once for each matching wall time (a time in a
//! spring-forward gap fires at the first instant after the gap; a repeated time fires on its
//! first pass only); every other schedule follows the wall clock (times in the gap do not occur;
//! the repeated hour fires on both passes). croner stops looking for the end of a gap after two
//! hours; [`CronSchedule::next_after`] steps over longer gaps itself with the same rule.
//!
//! Invariant: `next_after(t) > t`, and the fire times form one fixed set of instants, so
//! `next_after(t') == next_after(t)` for every `t'` in `t..next_after(t)`.

use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, JobType};
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use super::cron_syntax;

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// Boxed: a parsed pattern is a few hundred bytes, and triggers are moved around.
    cron: Box<Cron>,
    tz: TimeZone,
    fixed_time: bool,
}

/// Why a fire time is not where its wall clock reading suggests (for `kairos next`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DstNote {
    /// The wall time fell into a spring-forward gap; it fires at the first instant after it.
    MovedByGap,
    /// The wall time occurs twice (fall back); this is its first pass.
    RepeatedFirstPass,
    /// The wall time occurs twice (fall back); this is its second pass.
    RepeatedSecondPass,
}

impl std::fmt::Display for DstNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DstNote::MovedByGap => {
                "(DST: scheduled wall time does not exist this day; moved to the end of the gap)"
            }
            DstNote::RepeatedFirstPass => "(DST: wall time occurs twice; first pass)",
            DstNote::RepeatedSecondPass => "(DST: wall time occurs twice; second pass)",
        })
    }
}

/// `croner` searches at most two hours past the start of a spring-forward gap for the first
/// instant after it; longer gaps (Pacific/Apia skipped 2011-12-30) are handled here.
const CRONER_GAP_SEARCH: i32 = 2 * 3600;
/// Most long gaps one `next_after` call steps over before giving up.
const MAX_LONG_GAPS: usize = 8;
/// Most time zone transitions scanned for the next long gap.
const MAX_TRANSITIONS_SCANNED: usize = 4096;

impl CronSchedule {
    /// Parses `expr` for time zone `tz` (IANA name, default UTC). Errors are messages for people.
    ///
    /// An expression that matches no date at all (`0 0 30 2 *`) is an error.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, CronScheduleError> {
        if expr.len() > MAX_CRON_LEN {
            return Err(CronScheduleError::Expression(format!(
                "it is {} characters long; at most {MAX_CRON_LEN}",
                expr.len()
            )));
        }
        let fields = cron_syntax::check(expr).map_err(CronScheduleError::Expression)?;
        let (dom, dow) = fields.day_fields();
        let unrestricted = |f: &str| f.starts_with('*') || f == "?";
        let dom_and_dow = unrestricted(dom) || unrestricted(dow);
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(dom_and_dow)
            .build()
            .parse(&fields.to_pattern())
            .map_err(|e| CronScheduleError::Expression(e.to_string()))?;
        // Whether any date matches does not depend on the zone: search the civil calendar (croner
        // gives up at year 5000; every pattern repeats within 400 years).
        if cron
            .find_next_occurrence(&DateTime::constant(1970, 1, 1, 0, 0, 0, 0), false)
            .is_err()
        {
            return Err(CronScheduleError::Expression(
                "this expression never fires (no date matches it)".into(),
            ));
        }
        let tz = match tz {
            None => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|_| CronScheduleError::TimeZone(name.to_owned()))?
            }
        };
        let fixed_time = cron.determine_job_type() == JobType::FixedTime;
        Ok(Self {
            cron: Box::new(cron),
            tz,
            fixed_time,
        })
    }

    /// The expression in English words (croner's best effort), e.g. "At 03:00, every day".
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// The time zone the expression is matched in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Whether second, minute and hour are single fixed values (DST rules differ).
    pub fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let mut from = after;
        let mut inclusive = false;
        for _ in 0..MAX_LONG_GAPS {
            let start = from.to_zoned(self.tz.clone());
            match self.cron.find_next_occurrence(&start, inclusive) {
                // croner works in whole seconds; never return an instant at or before `after`.
                Ok(next) if next.timestamp() <= after => {
                    from = next.timestamp();
                    inclusive = false;
                }
                Ok(next) => return Some(next.timestamp()),
                // croner also gives up at year 5000; only fixed-time schedules move out of gaps.
                Err(_) if self.fixed_time => {
                    let (gap_end, matched_in_gap) = self.next_long_gap(from)?;
                    if matched_in_gap {
                        return Some(gap_end);
                    }
                    from = gap_end;
                    inclusive = true;
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The end of the first gap after `from` longer than croner searches, and whether the
    /// schedule's wall time falls inside it (then it fires at the end of the gap).
    fn next_long_gap(&self, from: Timestamp) -> Option<(Timestamp, bool)> {
        for transition in self.tz.following(from).take(MAX_TRANSITIONS_SCANNED) {
            let end = transition.timestamp();
            let before = self
                .tz
                .to_offset(end.checked_sub(SignedDuration::from_nanos(1)).ok()?);
            let after = transition.offset();
            if after.seconds() - before.seconds() <= CRONER_GAP_SEARCH {
                continue;
            }
            let (gap_start, gap_end) = (before.to_datetime(end), after.to_datetime(end));
            let matched = self
                .cron
                .find_next_occurrence(&gap_start, true)
                .is_ok_and(|civil| civil < gap_end);
            return Some((end, matched));
        }
        None
    }

    /// Whether DST moved or doubled this fire time (for `kairos next`).
    pub fn dst_note(&self, fire: Timestamp) -> Option<DstNote> {
        let zoned = fire.to_zoned(self.tz.clone());
        let after_gap = fire
            .checked_sub(SignedDuration::from_nanos(1))
            .is_ok_and(|before| self.tz.to_offset(before) < zoned.offset());
        if after_gap && !self.cron.is_time_matching(&zoned).unwrap_or(true) {
            return Some(DstNote::MovedByGap);
        }
        match self.tz.to_ambiguous_zoned(zoned.datetime()).offset() {
            AmbiguousOffset::Fold { before, .. } => {
                if zoned.offset() == before {
                    Some(DstNote::RepeatedFirstPass)
                } else {
                    Some(DstNote::RepeatedSecondPass)
                }
            }
            _ => None,
        }
    }
}

/// Cron fire times are computed up to this year (croner's search ends there); a schedule has no
/// fire time after it.
pub const CRON_LAST_YEAR: i16 = 5000;

/// Longest cron expression (a long list of values fits; a page of text does not).
pub const MAX_CRON_LEN: usize = 1024;

/// Why a cron trigger is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronScheduleError {
    #[error("invalid cron expression: {0}")]
    Expression(String),
    #[error("unknown time zone `{0}`; use an IANA name such as `Europe/Berlin` or `UTC`")]
    TimeZone(String),
}
