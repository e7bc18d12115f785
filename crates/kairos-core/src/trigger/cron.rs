//! Cron schedules through `croner`, matched against the wall clock of an IANA time zone.
//!
//! Dialect: 5 fields (`min hour dom mon dow`) or 6 with seconds first; `*`, lists, ranges,
//! steps, month and day names, `L`, `W`, `#`, `nL`, `?` and the macros `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.
//!
//! Day fields combine as in Vixie cron: when both day-of-month and day-of-week are restricted
//! (neither starts with `*` or is `?`) a day matches if either matches; otherwise both must.
//! croner ORs by default, so its AND mode is chosen when a day field starts with `*` or `?`.
//!
//! DST follows croner (the Open Cron Pattern Specification): a fixed-time schedule fires once for
//! each matching wall time (a time in a spring-forward gap fires at the first instant after the
//! gap; a repeated time fires on its first pass only); every other schedule follows the wall
//! clock (times in the gap do not occur; the repeated hour fires on both passes).

use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, JobType};
use jiff::Timestamp;
use jiff::tz::{AmbiguousOffset, TimeZone};

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
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
            DstNote::MovedByGap => "(DST: scheduled wall time does not exist this day; moved to the end of the gap)",
            DstNote::RepeatedFirstPass => "(DST: wall time occurs twice; first pass)",
            DstNote::RepeatedSecondPass => "(DST: wall time occurs twice; second pass)",
        })
    }
}

impl CronSchedule {
    /// Parses `expr` for time zone `tz` (IANA name, default UTC). Errors are messages for people.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, CronScheduleError> {
        let tz = match tz {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| CronScheduleError::TimeZone(name.to_owned()))?,
        };
        let trimmed = expr.trim();
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let day_fields = match fields.len() {
            5 => Some((fields[2], fields[4])),
            6 => Some((fields[3], fields[5])),
            1 if trimmed.starts_with('@') => None,
            n => {
                return Err(CronScheduleError::Expression(format!(
                    "expected 5 fields (min hour dom mon dow) or 6 (sec min hour dom mon dow), found {n}"
                )));
            }
        };
        let unrestricted = |f: &str| f.starts_with('*') || f == "?";
        let dom_and_dow = day_fields.is_some_and(|(dom, dow)| unrestricted(dom) || unrestricted(dow));
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(dom_and_dow)
            .build()
            .parse(trimmed)
            .map_err(|e| CronScheduleError::Expression(e.to_string()))?;
        let fixed_time = cron.determine_job_type() == JobType::FixedTime;
        let schedule = Self { cron, tz, fixed_time };
        if schedule.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(CronScheduleError::Expression("this expression never fires".into()));
        }
        Ok(schedule)
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
        let start = after.to_zoned(self.tz.clone());
        let mut next = self.cron.find_next_occurrence(&start, false).ok()?.timestamp();
        // croner works in whole seconds; never return an instant at or before `after`.
        let mut guard = 0;
        while next <= after && guard < 4 {
            let z = next.to_zoned(self.tz.clone());
            next = self.cron.find_next_occurrence(&z, false).ok()?.timestamp();
            guard += 1;
        }
        (next > after).then_some(next)
    }

    /// Whether DST moved or doubled this fire time.
    pub fn dst_note(&self, fire: Timestamp) -> Option<DstNote> {
        let zoned = fire.to_zoned(self.tz.clone());
        let civil = zoned.datetime();
        if !self.cron.is_time_matching(&zoned).unwrap_or(true) {
            return Some(DstNote::MovedByGap);
        }
        match self.tz.to_ambiguous_zoned(civil).offset() {
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

/// Why a cron trigger is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronScheduleError {
    #[error("invalid cron expression: {0}")]
    Expression(String),
    #[error("unknown time zone `{0}`; use an IANA name such as `Europe/Berlin` or `UTC`")]
    TimeZone(String),
}
