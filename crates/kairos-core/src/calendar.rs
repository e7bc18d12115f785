//! Calendars: named sets of days and windows in a time zone (holidays, blackout windows) that a
//! trigger's due times may exclude, or be limited to.
//!
//! A calendar is dates (`2026-12-25`: the whole day, in the calendar's zone), yearly dates
//! (`12-25`: that day every year) and ranges (`2026-12-24T12:00` to `2027-01-02T00:00`: wall
//! times in the zone, the start included, the end not). An instant is *in* the calendar when
//! its wall-clock date in the zone is one of the dates or yearly dates, or when it falls in a
//! range.
//!
//! [`CalendarFilter`] applies calendars to due times: a due time in an `exclude` calendar, or in
//! none of the `only` calendars (when there are any), is not a due time at all. Pure; the
//! property tests check a filtered schedule against a brute-force enumeration across DST.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::error::{ValidationErrors, index, path};

/// Most dates, yearly dates and ranges, each, in one calendar.
pub const MAX_ENTRIES: usize = 10_000;
/// Most windows a filtered trigger skips looking for its next due time (calendars that rule
/// out nearly everything end the search rather than spin).
pub const MAX_SKIPPED: usize = 100_000;

/// A calendar as users write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// Unique within the namespace: `^[a-z0-9][a-z0-9_.-]{0,62}$`.
    pub name: String,
    /// The namespace whose jobs may use it. Default `default`.
    #[serde(default = "crate::spec::default_namespace")]
    pub namespace: String,
    /// IANA time zone of its dates and ranges. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Whole days, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dates: Vec<String>,
    /// Windows of wall time, `{"from": "YYYY-MM-DDTHH:MM", "to": "..."}`: from included, to
    /// not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangeSpec>,
    /// Days every year, `MM-DD`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub yearly: Vec<String>,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Default for CalendarSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            namespace: crate::spec::default_namespace(),
            timezone: None,
            dates: Vec::new(),
            ranges: Vec::new(),
            yearly: Vec::new(),
            description: None,
        }
    }
}

/// A window of wall time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    pub from: String,
    pub to: String,
}

/// A validated calendar.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub name: String,
    tz: TimeZone,
    dates: BTreeSet<Date>,
    yearly: BTreeSet<(i8, i8)>,
    /// Instants, from included, to not; sorted, none overlapping or touching another.
    ranges: Vec<(Timestamp, Timestamp)>,
}

impl CalendarSpec {
    /// Reads a calendar document from JSON (or TOML turned into JSON), reporting every type
    /// error and every invalid field with its path.
    pub fn from_value(mut value: serde_json::Value) -> Result<Self, ValidationErrors> {
        if !value.is_object() {
            return Err(ValidationErrors::single("", "a calendar is a JSON object"));
        }
        let mut errs = ValidationErrors::default();
        let mut removed = crate::document::Removed::default();
        let Some(spec) =
            crate::document::collect::<CalendarSpec>(&mut value, "", &mut errs, &mut removed)
        else {
            return Err(errs);
        };
        if let Err(more) = spec.validate() {
            errs.errors
                .extend(more.errors.into_iter().filter(|e| !removed.hides(&e.field)));
        }
        errs.into_result(spec)
    }

    /// Validates every field; every problem with its field path.
    pub fn validate(&self) -> Result<Calendar, ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if let Err(e) = crate::job::validate_name(&self.name) {
            errs.push("name", e);
        }
        if let Err(e) = crate::job::validate_name(&self.namespace) {
            errs.push("namespace", e);
        }
        let zone = self.timezone.as_deref().unwrap_or("UTC");
        let tz = match TimeZone::get(zone) {
            Ok(tz) => tz,
            Err(_) => {
                errs.push(
                    "timezone",
                    format!(
                        "unknown time zone `{}`; use an IANA name such as `Europe/Berlin`",
                        short(zone)
                    ),
                );
                TimeZone::UTC
            }
        };
        for (field, len) in [
            ("dates", self.dates.len()),
            ("ranges", self.ranges.len()),
            ("yearly", self.yearly.len()),
        ] {
            if len > MAX_ENTRIES {
                errs.push(field, format!("at most {MAX_ENTRIES} entries"));
            }
        }
        let mut dates = BTreeSet::new();
        for (i, d) in self.dates.iter().enumerate() {
            match parse_date(d) {
                Ok(date) => {
                    dates.insert(date);
                }
                Err(e) => errs.push(index("dates", i), e),
            }
        }
        let mut yearly = BTreeSet::new();
        for (i, d) in self.yearly.iter().enumerate() {
            match parse_month_day(d) {
                Ok(md) => {
                    yearly.insert(md);
                }
                Err(e) => errs.push(index("yearly", i), e),
            }
        }
        let mut ranges = Vec::with_capacity(self.ranges.len());
        for (i, r) in self.ranges.iter().enumerate() {
            let at = index("ranges", i);
            let from = parse_wall(&r.from, &tz).map_err(|e| errs.push(path(&at, "from"), e));
            let to = parse_wall(&r.to, &tz).map_err(|e| errs.push(path(&at, "to"), e));
            if let (Ok(from), Ok(to)) = (from, to) {
                if to <= from {
                    errs.push(path(&at, "to"), "must be after `from`");
                } else {
                    ranges.push((from, to));
                }
            }
        }
        ranges.sort_unstable();
        // Overlapping and touching ranges as one window: lookups are a binary search, and a
        // skip crosses the whole window at once.
        let mut merged: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(ranges.len());
        for (from, to) in ranges {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        let ranges = merged;
        if self.description.as_ref().is_some_and(|d| d.len() > 4096) {
            errs.push("description", "at most 4096 characters");
        }
        errs.into_result(Calendar {
            name: self.name.clone(),
            tz,
            dates,
            yearly,
            ranges,
        })
    }
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

fn parse_date(s: &str) -> Result<Date, String> {
    if s.len() != 10 {
        return Err(format!("`{}` is not a date such as `2026-12-25`", short(s)));
    }
    s.parse::<Date>()
        .map_err(|_| format!("`{}` is not a date such as `2026-12-25`", short(s)))
}

fn parse_month_day(s: &str) -> Result<(i8, i8), String> {
    let bad = || format!("`{}` is not a day of the year such as `12-25`", short(s));
    let (m, d) = s.split_once('-').ok_or_else(bad)?;
    if m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (m, d): (i8, i8) = (m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    // Valid in some year (02-29 included).
    Date::new(2024, m, d).map_err(|_| bad())?;
    Ok((m, d))
}

/// A wall time in `tz` (`YYYY-MM-DDTHH:MM[:SS]`) as an instant; a time in a DST gap is the
/// instant after the gap, a repeated one its first pass (jiff's `compatible` rule).
fn parse_wall(s: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let bad = || {
        format!(
            "`{}` is not a wall time such as `2026-12-24T12:00` (in the calendar's zone, no offset)",
            short(s)
        )
    };
    if s.len() > 32 {
        return Err(bad());
    }
    let dt: DateTime = s.parse().map_err(|_| bad())?;
    tz.to_timestamp(dt).map_err(|_| bad())
}

impl Calendar {
    /// Whether `t` is in the calendar: its date in the calendar's zone is one of its dates or
    /// yearly dates, or it falls in one of its ranges.
    pub fn contains(&self, t: Timestamp) -> bool {
        let date = t.to_zoned(self.tz.clone()).date();
        if self.dates.contains(&date) || self.yearly.contains(&(date.month(), date.day())) {
            return true;
        }
        self.range_at(t).is_some()
    }

    /// The range holding `t`, if any (the last one starting at or before it: ranges do not
    /// overlap).
    fn range_at(&self, t: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let i = self.ranges.partition_point(|(from, _)| *from <= t);
        i.checked_sub(1)
            .map(|i| self.ranges[i])
            .filter(|(_, to)| t < *to)
    }

    fn holds_date(&self, date: Date) -> bool {
        self.dates.contains(&date) || self.yearly.contains(&(date.month(), date.day()))
    }

    /// The instant at midnight starting `date` in the calendar's zone (a midnight in a DST gap
    /// is the end of the gap).
    fn start_of(&self, date: Date) -> Option<Timestamp> {
        date.at(0, 0, 0, 0)
            .to_zoned(self.tz.clone())
            .ok()
            .map(|z| z.timestamp())
    }

    /// For `t` in the calendar: the first instant after it that the window holding `t` does not
    /// cover (the next midnight for a date, the end of a range; the latest of them when
    /// several hold it). The instant after may be in another window.
    fn step_end(&self, t: Timestamp) -> Option<Timestamp> {
        let date = t.to_zoned(self.tz.clone()).date();
        let mut end = None;
        if self.holds_date(date) {
            end = self.start_of(date.tomorrow().ok()?);
        }
        if let Some((_, to)) = self.range_at(t) {
            end = Some(end.map_or(to, |e: Timestamp| e.max(to)));
        }
        end
    }

    /// For `t` in the calendar: the first instant after it that the calendar does not cover,
    /// following windows that touch (consecutive dates, a range that ends on a listed date), at
    /// most `budget` of them (each one spent is taken off).
    fn window_end(&self, t: Timestamp, budget: &mut usize) -> Option<Timestamp> {
        let mut end = self.step_end(t)?;
        while *budget > 0 {
            *budget -= 1;
            match self.step_end(end) {
                Some(next) if next > end => end = next,
                _ => break,
            }
        }
        Some(end)
    }

    /// The first instant at or after `t` in the calendar (`None`: there is none, the
    /// calendar's dates and ranges are all before `t` and it has no yearly dates).
    fn next_start(&self, t: Timestamp) -> Option<Timestamp> {
        if self.contains(t) {
            return Some(t);
        }
        let today = t.to_zoned(self.tz.clone()).date();
        let mut best: Option<Timestamp> = None;
        let mut consider = |c: Option<Timestamp>| {
            if let Some(c) = c.filter(|c| *c >= t) {
                best = Some(best.map_or(c, |b| b.min(c)));
            }
        };
        if let Some(d) = self.dates.range(today..).next() {
            consider(self.start_of(*d));
        }
        if !self.yearly.is_empty() {
            // Every day of the next four years and a day holds each yearly date (02-29 too).
            let next = days(today, today.checked_add(1462.days()).ok()?)
                .find(|d| d > &today && self.yearly.contains(&(d.month(), d.day())));
            consider(next.and_then(|d| self.start_of(d)));
        }
        let i = self.ranges.partition_point(|(from, _)| *from <= t);
        if let Some((from, _)) = self.ranges.get(i) {
            consider(Some(*from));
        }
        best
    }

    /// Why `t` is in the calendar, for people: the date or the range.
    pub fn why(&self, t: Timestamp) -> Option<String> {
        let date = t.to_zoned(self.tz.clone()).date();
        if self.dates.contains(&date) {
            return Some(format!("{date} is in calendar `{}`", self.name));
        }
        if self.yearly.contains(&(date.month(), date.day())) {
            return Some(format!(
                "{:02}-{:02} (every year) is in calendar `{}`",
                date.month(),
                date.day(),
                self.name
            ));
        }
        self.range_at(t).map(|(from, to)| {
            format!(
                "{} to {} is in calendar `{}`",
                from.to_zoned(self.tz.clone()).datetime(),
                to.to_zoned(self.tz.clone()).datetime(),
                self.name
            )
        })
    }
}

/// The calendars of one trigger.
///
/// A trigger names its calendars (`names`); validation alone cannot know them (they live in the
/// store), so a plan fresh from [`crate::JobSpec::validate`] has the names but not the
/// calendars: such an *unresolved* filter allows nothing, so that a plan whose calendars were
/// never looked up can never fire on a day it should not. [`crate::job::JobPlan::resolve_calendars`]
/// fills them in.
#[derive(Debug, Clone, Default)]
pub struct CalendarFilter {
    /// Due times in any of these are not due times.
    pub exclude: Vec<Arc<Calendar>>,
    /// When not empty, only due times in one of these are due times.
    pub only: Vec<Arc<Calendar>>,
    /// The calendars the trigger names, to be resolved.
    pub names: CalendarNames,
}

/// The calendars a trigger names (`exclude`, `only`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalendarNames {
    pub exclude: Vec<String>,
    pub only: Vec<String>,
}

impl CalendarFilter {
    pub fn is_empty(&self) -> bool {
        self.exclude.is_empty() && self.only.is_empty() && self.is_resolved()
    }

    /// Whether every calendar the trigger names is there.
    pub fn is_resolved(&self) -> bool {
        self.exclude.len() >= self.names.exclude.len() && self.only.len() >= self.names.only.len()
    }

    /// Whether `t` stays a due time.
    pub fn allows(&self, t: Timestamp) -> bool {
        self.is_resolved()
            && !self.exclude.iter().any(|c| c.contains(t))
            && (self.only.is_empty() || self.only.iter().any(|c| c.contains(t)))
    }

    /// Why `t` is not a due time (`None`: it is).
    pub fn why_not(&self, t: Timestamp) -> Option<String> {
        if !self.is_resolved() {
            return Some("the trigger's calendars are not known here".into());
        }
        if let Some(why) = self.exclude.iter().find_map(|c| c.why(t)) {
            return Some(format!("excluded: {why}"));
        }
        if !self.only.is_empty() && !self.only.iter().any(|c| c.contains(t)) {
            let names: Vec<&str> = self.only.iter().map(|c| c.name.as_str()).collect();
            return Some(format!("not in `only` calendar(s) {}", names.join(", ")));
        }
        None
    }

    /// The first due time strictly after `after` (as `next` yields them, increasing) that the
    /// calendars allow. A due time in a window the calendars rule out skips the whole window
    /// (to its end for `exclude`, to the next window of an `only` calendar), so the search
    /// costs one step per window, not per due time; `None` when no due time is left (an `only`
    /// calendar with no window ahead), or after [`MAX_SKIPPED`] windows and days (a calendar
    /// that rules out nearly everything ends the schedule rather than spin).
    pub fn first_allowed(
        &self,
        mut after: Timestamp,
        mut next: impl FnMut(Timestamp) -> Option<Timestamp>,
    ) -> Option<Timestamp> {
        if !self.is_resolved() {
            return None;
        }
        let just_before = |t: Timestamp| t.checked_sub(jiff::SignedDuration::from_nanos(1)).ok();
        let mut budget = MAX_SKIPPED;
        while budget > 0 {
            budget -= 1;
            let t = next(after)?;
            if let Some(end) = self
                .exclude
                .iter()
                .find_map(|c| c.window_end(t, &mut budget))
            {
                after = just_before(end)?.max(t);
                continue;
            }
            if !self.only.is_empty() && !self.only.iter().any(|c| c.contains(t)) {
                let start = self.only.iter().filter_map(|c| c.next_start(t)).min()?;
                after = just_before(start)?.max(t);
                continue;
            }
            return Some(t);
        }
        None
    }
}

/// The calendars a job document's triggers name, sorted, each once (what the stores index, so
/// that a calendar in use is not deleted).
pub fn used_by(spec: &crate::JobSpec) -> Vec<String> {
    let mut names: Vec<String> = spec
        .triggers
        .iter()
        .flat_map(|t| t.exclude.iter().chain(&t.only))
        .cloned()
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Every date from `from` to `to` (both included), for tests and brute-force checks.
pub fn days(from: Date, to: Date) -> impl Iterator<Item = Date> {
    from.series(1.day()).take_while(move |d| *d <= to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(json: &str) -> Calendar {
        serde_json::from_str::<CalendarSpec>(json)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn dates_yearly_dates_and_ranges_in_the_calendars_zone() {
        let c = cal(
            r#"{"name":"de","timezone":"Europe/Berlin","dates":["2026-12-25"],
            "yearly":["01-01"],"ranges":[{"from":"2026-12-24T12:00","to":"2026-12-24T18:00"}]}"#,
        );
        // 2026-12-25 in Berlin starts at 2026-12-24T23:00Z.
        assert!(c.contains(ts("2026-12-24T23:00:00Z")));
        assert!(!c.contains(ts("2026-12-24T22:59:59Z")));
        assert!(c.contains(ts("2026-12-25T22:59:59Z")));
        assert!(!c.contains(ts("2026-12-25T23:00:00Z")));
        assert!(c.contains(ts("2031-01-01T12:00:00Z")), "yearly");
        // The range: 12:00 to 18:00 Berlin (11:00Z to 17:00Z), the end excluded.
        assert!(c.contains(ts("2026-12-24T11:00:00Z")));
        assert!(c.contains(ts("2026-12-24T16:59:59Z")));
        assert!(!c.contains(ts("2026-12-24T17:00:00Z")));
        assert!(!c.contains(ts("2026-12-24T10:59:59Z")));
        assert!(c.why(ts("2026-12-24T12:00:00Z")).unwrap().contains("to"));
    }

    #[test]
    fn overlapping_ranges_are_each_honoured() {
        let c = cal(
            r#"{"name":"x","ranges":[{"from":"2026-01-01T00:00","to":"2026-01-10T00:00"},
            {"from":"2026-01-02T00:00","to":"2026-01-03T00:00"}]}"#,
        );
        assert!(
            c.contains(ts("2026-01-05T00:00:00Z")),
            "covered by the first, longer range"
        );
    }

    #[test]
    fn bad_calendars_name_their_fields() {
        let errs = serde_json::from_str::<CalendarSpec>(
            r#"{"name":"Bad Name","timezone":"Mars/Base","dates":["2026-02-30","x"],
               "yearly":["13-01","02-29"],"ranges":[{"from":"2026-01-02T00:00","to":"2026-01-01T00:00"},
               {"from":"2026-01-01T00:00Z","to":"2026-01-02T00:00"}]}"#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        let mut fields: Vec<&str> = errs.errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "dates[0]",
                "dates[1]",
                "name",
                "ranges[0].to",
                "ranges[1].from",
                "timezone",
                "yearly[0]"
            ]
        );
    }

    #[test]
    fn filters_exclude_and_limit() {
        let holidays = Arc::new(cal(r#"{"name":"h","dates":["2026-03-02"]}"#));
        let weekdays = Arc::new(cal(
            r#"{"name":"w","ranges":[{"from":"2026-03-02T00:00","to":"2026-03-07T00:00"}]}"#,
        ));
        let f = CalendarFilter {
            exclude: vec![holidays],
            only: vec![weekdays],
            ..Default::default()
        };
        assert!(!f.allows(ts("2026-03-02T09:00:00Z")));
        assert!(f.allows(ts("2026-03-03T09:00:00Z")));
        assert!(!f.allows(ts("2026-03-07T09:00:00Z")));
        assert!(
            f.why_not(ts("2026-03-02T09:00:00Z"))
                .unwrap()
                .starts_with("excluded")
        );
        assert!(
            f.why_not(ts("2026-03-08T09:00:00Z"))
                .unwrap()
                .contains("only")
        );
        // Daily at 09:00 from March 1: the first allowed is March 3.
        let daily = |after: Timestamp| {
            let z = after.to_zoned(TimeZone::UTC);
            let today = z
                .date()
                .at(9, 0, 0, 0)
                .to_zoned(TimeZone::UTC)
                .unwrap()
                .timestamp();
            Some(if today > after {
                today
            } else {
                today
                    .checked_add(jiff::SignedDuration::from_hours(24))
                    .unwrap()
            })
        };
        assert_eq!(
            f.first_allowed(ts("2026-03-01T10:00:00Z"), daily),
            Some(ts("2026-03-03T09:00:00Z"))
        );
        let never = CalendarFilter {
            exclude: vec![Arc::new(cal(
                r#"{"name":"all","ranges":[{"from":"2000-01-01T00:00","to":"2999-01-01T00:00"}]}"#,
            ))],
            only: vec![],
            ..Default::default()
        };
        // A long window is skipped in one step, not day by day.
        let mut steps = 0;
        let counted = |after| {
            steps += 1;
            daily(after)
        };
        assert_eq!(
            never.first_allowed(ts("2026-03-01T10:00:00Z"), counted),
            Some(ts("2999-01-01T09:00:00Z"))
        );
        assert_eq!(steps, 2);
        // Consecutive dates and a range that touches them are one window too.
        let christmas = CalendarFilter {
            exclude: vec![Arc::new(cal(
                r#"{"name":"x","dates":["2026-12-24","2026-12-25"],"yearly":["12-26"],
                "ranges":[{"from":"2026-12-27T00:00","to":"2026-12-28T12:00"}]}"#,
            ))],
            ..Default::default()
        };
        let mut steps = 0;
        let counted = |after| {
            steps += 1;
            daily(after)
        };
        assert_eq!(
            christmas.first_allowed(ts("2026-12-23T10:00:00Z"), counted),
            Some(ts("2026-12-29T09:00:00Z"))
        );
        assert_eq!(steps, 2);
        // A calendar that rules out every day ends the schedule, in bounded time.
        let every_day: Vec<String> =
            days("2024-01-01".parse().unwrap(), "2024-12-31".parse().unwrap())
                .map(|d| format!("{:02}-{:02}", d.month(), d.day()))
                .collect();
        let spec = CalendarSpec {
            name: "all".into(),
            yearly: every_day,
            ..CalendarSpec::default()
        };
        let all = CalendarFilter {
            exclude: vec![Arc::new(spec.validate().unwrap())],
            ..Default::default()
        };
        assert_eq!(all.first_allowed(ts("2026-12-23T10:00:00Z"), daily), None);
        // An `only` calendar with no window left: no due time.
        let ended = CalendarFilter {
            exclude: vec![],
            only: vec![Arc::new(cal(r#"{"name":"o","dates":["2026-03-02"]}"#))],
            ..Default::default()
        };
        assert_eq!(
            ended.first_allowed(ts("2026-03-01T10:00:00Z"), daily),
            Some(ts("2026-03-02T09:00:00Z"))
        );
        assert_eq!(ended.first_allowed(ts("2026-03-02T09:00:00Z"), daily), None);
        let yearly = CalendarFilter {
            exclude: vec![],
            only: vec![Arc::new(cal(r#"{"name":"y","yearly":["02-29"]}"#))],
            ..Default::default()
        };
        assert_eq!(
            yearly.first_allowed(ts("2026-03-01T10:00:00Z"), daily),
            Some(ts("2028-02-29T09:00:00Z"))
        );
    }
}
