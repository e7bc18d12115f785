//! Alerts: the rules that say when to tell someone (a job's `notify`, or the server's global
//! `[[alerts]]`), and the pure decisions of which rules a run's end, a skipped due time, a
//! silence (dead-man switch) or a late run (SLA) raises.
//!
//! A rule names a condition and the channels (defined in the server's configuration) to send
//! to. Conditions:
//!
//! | `on` | raised when |
//! | --- | --- |
//! | `failure` | a run ends `failed`, `timed_out` or `lost` |
//! | `failures` (`count` N ≥ 2) | a run's end is the Nth unsuccessful one in a row (once per streak) |
//! | `timeout` | a run ends `timed_out` |
//! | `lost` | a run ends `lost` (its node died and it was not run again) |
//! | `recovery` | a run succeeds after an unsuccessful one |
//! | `skipped` | a due time is not run (`overlap: forbid`, or dropped by the catch-up policy) |
//! | `no_success` (`within` T) | no run has succeeded for T (a dead-man switch) |
//! | `sla` (`start_within`, `finish_within`) | a run has not started, or not finished, within T of its due time |
//!
//! Cancelled and skipped runs are neither successes nor failures: they do not break a streak
//! and are not recovered from. Only top-level runs count (a workflow run, not its steps).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::ValidationErrors;
use crate::duration::parse_duration;
use crate::error::index;
use crate::job::validate_name;
use crate::run::RunState;

/// Most rules in a job's `notify`.
pub const MAX_RULES: usize = 16;
/// Most channels one rule sends to.
pub const MAX_CHANNELS: usize = 8;
/// Most consecutive failures a `failures` rule counts.
pub const MAX_COUNT: u32 = 1000;
/// Longest `within` of a dead-man switch, and longest SLA.
pub const MAX_WITHIN: SignedDuration = SignedDuration::from_hours(24 * 366);
/// Shortest `within` of a dead-man switch (the leader checks about every few seconds).
pub const MIN_WITHIN: SignedDuration = SignedDuration::from_secs(10);

/// One rule, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// What raises it: `failure`, `failures`, `timeout`, `lost`, `recovery`, `skipped`,
    /// `no_success` or `sla`.
    pub on: Condition,
    /// With `failures`: how many unsuccessful ends in a row (2 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// With `no_success`: the longest time without a successful run, e.g. `26h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    /// With `sla`: a run must start within this of its due time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_within: Option<String>,
    /// With `sla`: a run must finish within this of its due time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_within: Option<String>,
    /// Channels of the server's configuration, by name (1 to 8).
    pub channels: Vec<String>,
}

/// What raises a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Failure,
    Failures,
    Timeout,
    Lost,
    Recovery,
    Skipped,
    NoSuccess,
    Sla,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Failure => "failure",
            Condition::Failures => "failures",
            Condition::Timeout => "timeout",
            Condition::Lost => "lost",
            Condition::Recovery => "recovery",
            Condition::Skipped => "skipped",
            Condition::NoSuccess => "no_success",
            Condition::Sla => "sla",
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRule {
    pub when: When,
    pub channels: Vec<String>,
}

/// A checked condition, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Failure,
    Failures(u32),
    Timeout,
    Lost,
    Recovery,
    Skipped,
    NoSuccess(SignedDuration),
    Sla {
        start: Option<SignedDuration>,
        finish: Option<SignedDuration>,
    },
}

impl NotifySpec {
    /// Checks the rule at field path `at`; every problem is added to `errs`.
    pub fn validate(&self, at: &str, errs: &mut ValidationErrors) -> Option<AlertRule> {
        let before = errs.errors.len();
        let field = |name: &str| format!("{at}.{name}");
        let mut long = |name: &str, value: &Option<String>, min: SignedDuration| match value {
            None => None,
            Some(v) => match parse_duration(v, false) {
                Ok(d) if d < min => {
                    errs.push(field(name), format!("must be at least {min:#}"));
                    None
                }
                Ok(d) if d > MAX_WITHIN => {
                    errs.push(field(name), "must be at most 366d");
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    errs.push(field(name), e);
                    None
                }
            },
        };
        let within = long("within", &self.within, MIN_WITHIN);
        let start = long(
            "start_within",
            &self.start_within,
            SignedDuration::from_secs(1),
        );
        let finish = long(
            "finish_within",
            &self.finish_within,
            SignedDuration::from_secs(1),
        );
        let only = |name: &str, set: bool, errs: &mut ValidationErrors, with: &str| {
            if set {
                errs.push(field(name), format!("only applies with `on: {with}`"));
            }
        };
        if self.on != Condition::Failures {
            only("count", self.count.is_some(), errs, "failures");
        }
        if self.on != Condition::NoSuccess {
            only("within", self.within.is_some(), errs, "no_success");
        }
        if self.on != Condition::Sla {
            only("start_within", self.start_within.is_some(), errs, "sla");
            only("finish_within", self.finish_within.is_some(), errs, "sla");
        }
        let when = match self.on {
            Condition::Failure => When::Failure,
            Condition::Timeout => When::Timeout,
            Condition::Lost => When::Lost,
            Condition::Recovery => When::Recovery,
            Condition::Skipped => When::Skipped,
            Condition::Failures => match self.count {
                Some(n) if (2..=MAX_COUNT).contains(&n) => When::Failures(n),
                Some(_) => {
                    errs.push(field("count"), format!("must be between 2 and {MAX_COUNT}"));
                    When::Failure
                }
                None => {
                    errs.push(
                        field("count"),
                        "`on: failures` needs `count`: how many failures in a row",
                    );
                    When::Failure
                }
            },
            Condition::NoSuccess => match within {
                Some(d) => When::NoSuccess(d),
                None => {
                    if self.within.is_none() {
                        errs.push(
                            field("within"),
                            "`on: no_success` needs `within`: the longest time without a success",
                        );
                    }
                    When::Failure
                }
            },
            Condition::Sla => {
                if self.start_within.is_none() && self.finish_within.is_none() {
                    errs.push(
                        field("start_within"),
                        "`on: sla` needs `start_within`, `finish_within` or both",
                    );
                }
                When::Sla { start, finish }
            }
        };
        if self.channels.is_empty() {
            errs.push(field("channels"), "name at least one channel");
        }
        if self.channels.len() > MAX_CHANNELS {
            errs.push(
                field("channels"),
                format!("at most {MAX_CHANNELS} channels per rule"),
            );
        }
        for (i, name) in self.channels.iter().enumerate() {
            if let Err(e) = validate_name(name) {
                errs.push(index(&field("channels"), i), e);
            } else if self.channels[..i].contains(name) {
                errs.push(
                    index(&field("channels"), i),
                    format!("`{name}` is listed twice"),
                );
            }
        }
        (errs.errors.len() == before).then(|| AlertRule {
            when,
            channels: self.channels.clone(),
        })
    }
}

/// Checks a job's `notify` list.
pub fn validate_rules(
    rules: &[NotifySpec],
    at: &str,
    errs: &mut ValidationErrors,
) -> Vec<AlertRule> {
    if rules.len() > MAX_RULES {
        errs.push(at, format!("at most {MAX_RULES} rules"));
    }
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.validate(&index(at, i), errs))
        .collect()
}

/// A run end that counts as a failure.
pub fn is_failure(state: RunState) -> bool {
    matches!(
        state,
        RunState::Failed | RunState::TimedOut | RunState::Lost
    )
}

/// An end that is an outcome (a success or a failure), as opposed to a cancel or a skip.
pub fn is_outcome(state: RunState) -> bool {
    state == RunState::Succeeded || is_failure(state)
}

/// What an alert is about, for its text and its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Raised {
    Failure,
    Failures(u32),
    Timeout,
    Lost,
    Recovery,
    Skipped,
    NoSuccess,
    /// Not started within the SLA.
    SlaStart,
    /// Not finished within the SLA.
    SlaFinish,
}

impl Raised {
    /// Its name in a delivery and its key: `failure`, `failures`, ..., `sla_start`, `sla_finish`.
    pub fn as_str(self) -> &'static str {
        match self {
            Raised::Failure => "failure",
            Raised::Failures(_) => "failures",
            Raised::Timeout => "timeout",
            Raised::Lost => "lost",
            Raised::Recovery => "recovery",
            Raised::Skipped => "skipped",
            Raised::NoSuccess => "no_success",
            Raised::SlaStart => "sla_start",
            Raised::SlaFinish => "sla_finish",
        }
    }
}

/// A run that ended, as the decisions need it.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub state: RunState,
    pub scheduled_for: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

/// What a run's end raises under `rule`. `earlier` are the states of the job's runs that ended
/// before it, newest first (any states: those that are not outcomes are stepped over).
pub fn on_run_end(rule: &AlertRule, run: &Ended, earlier: &[RunState]) -> Vec<Raised> {
    let mut previous = earlier.iter().copied().filter(|s| is_outcome(*s));
    let raised = match rule.when {
        When::Failure => is_failure(run.state).then_some(Raised::Failure),
        When::Timeout => (run.state == RunState::TimedOut).then_some(Raised::Timeout),
        When::Lost => (run.state == RunState::Lost).then_some(Raised::Lost),
        When::Recovery => (run.state == RunState::Succeeded
            && previous.next().is_some_and(is_failure))
        .then_some(Raised::Recovery),
        When::Failures(n) => {
            let streak = previous.take_while(|s| is_failure(*s)).count() + 1;
            (is_failure(run.state) && streak == n as usize).then_some(Raised::Failures(n))
        }
        When::Sla { start, finish } => {
            // An SLA the watch on active runs did not catch in time (the run ended between two
            // checks) is still raised at its end.
            let mut late = sla_breaches(
                start,
                finish,
                run.scheduled_for,
                run.started_at,
                Some(run.finished_at),
                run.finished_at,
            );
            return std::mem::take(&mut late);
        }
        When::Skipped | When::NoSuccess(_) => None,
    };
    raised.into_iter().collect()
}

/// Which SLAs a run breaks by `now`: not started by `scheduled_for + start`, not finished by
/// `scheduled_for + finish`. A run that started (or finished) in time breaks nothing.
pub fn sla_breaches(
    start: Option<SignedDuration>,
    finish: Option<SignedDuration>,
    scheduled_for: Timestamp,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    now: Timestamp,
) -> Vec<Raised> {
    let late = |limit: Option<SignedDuration>, done: Option<Timestamp>| {
        limit.is_some_and(|limit| {
            let deadline = scheduled_for
                .saturating_add(limit)
                .unwrap_or(Timestamp::MAX);
            match done {
                Some(at) => at > deadline,
                None => now > deadline,
            }
        })
    };
    let mut raised = Vec::new();
    if late(start, started_at) {
        raised.push(Raised::SlaStart);
    }
    if late(finish, finished_at) {
        raised.push(Raised::SlaFinish);
    }
    raised
}

/// A dead-man switch: the instant since which a job has been silent too long, if it has.
/// `since` is when the job could last have succeeded first: its last success, or (never
/// succeeded) its creation or its last resume, whichever is later. `None`: within `within`.
pub fn silent_since(within: SignedDuration, since: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let deadline = since.saturating_add(within).unwrap_or(Timestamp::MAX);
    (now > deadline).then_some(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Result<AlertRule, ValidationErrors> {
        let spec: NotifySpec = serde_json::from_str(json).map_err(|e| {
            let mut errs = ValidationErrors::default();
            errs.push("", e.to_string());
            errs
        })?;
        let mut errs = ValidationErrors::default();
        let rule = spec.validate("notify[0]", &mut errs);
        errs.into_result(())
            .map(|()| rule.unwrap_or_else(|| unreachable!()))
    }

    fn fields(json: &str) -> Vec<String> {
        rule(json)
            .err()
            .map(|e| e.errors.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    fn ended(state: RunState) -> Ended {
        Ended {
            state,
            scheduled_for: t("2026-01-01T00:00:00Z"),
            started_at: Some(t("2026-01-01T00:00:01Z")),
            finished_at: t("2026-01-01T00:00:02Z"),
        }
    }

    use RunState::{Cancelled, Failed, Lost, Skipped, Succeeded, TimedOut};

    #[test]
    fn rules_are_checked_with_their_field_paths() {
        assert!(rule(r#"{"on":"failure","channels":["ops"]}"#).is_ok());
        assert_eq!(
            rule(r#"{"on":"failures","count":3,"channels":["ops","chat"]}"#)
                .map(|r| r.when)
                .ok(),
            Some(When::Failures(3))
        );
        assert_eq!(
            fields(r#"{"on":"failures","channels":["ops"]}"#),
            ["notify[0].count"]
        );
        assert_eq!(
            fields(r#"{"on":"failures","count":1,"channels":["ops"]}"#),
            ["notify[0].count"]
        );
        assert_eq!(
            fields(r#"{"on":"failure","count":2,"within":"1h","channels":[]}"#),
            ["notify[0].count", "notify[0].within", "notify[0].channels"]
        );
        assert_eq!(
            fields(r#"{"on":"no_success","within":"5s","channels":["ops"]}"#),
            ["notify[0].within"]
        );
        assert_eq!(
            fields(r#"{"on":"no_success","within":"soon","channels":["ops"]}"#),
            ["notify[0].within"]
        );
        assert_eq!(
            fields(r#"{"on":"sla","channels":["ops"]}"#),
            ["notify[0].start_within"]
        );
        assert_eq!(
            fields(r#"{"on":"sla","finish_within":"400d","channels":["ops","Bad","ops"]}"#),
            [
                "notify[0].finish_within",
                "notify[0].channels[1]",
                "notify[0].channels[2]"
            ]
        );
        assert_eq!(
            rule(r#"{"on":"sla","start_within":"5m","channels":["ops"]}"#)
                .map(|r| r.when)
                .ok(),
            Some(When::Sla {
                start: Some(SignedDuration::from_mins(5)),
                finish: None
            })
        );
        assert!(rule(r#"{"on":"sometimes","channels":["ops"]}"#).is_err());
    }

    fn raised(json: &str, state: RunState, earlier: &[RunState]) -> Vec<Raised> {
        let rule = rule(json).unwrap_or_else(|e| panic!("{e:?}"));
        on_run_end(&rule, &ended(state), earlier)
    }

    #[test]
    fn run_ends_raise_what_their_rules_say() {
        let failure = r#"{"on":"failure","channels":["ops"]}"#;
        for state in [Failed, TimedOut, Lost] {
            assert_eq!(raised(failure, state, &[]), [Raised::Failure]);
        }
        for state in [Succeeded, Cancelled, Skipped] {
            assert!(raised(failure, state, &[]).is_empty());
        }
        let timeout = r#"{"on":"timeout","channels":["ops"]}"#;
        assert_eq!(raised(timeout, TimedOut, &[]), [Raised::Timeout]);
        assert!(raised(timeout, Failed, &[]).is_empty());
        let lost = r#"{"on":"lost","channels":["ops"]}"#;
        assert_eq!(raised(lost, Lost, &[]), [Raised::Lost]);
        assert!(raised(lost, Failed, &[]).is_empty());
    }

    #[test]
    fn a_streak_raises_once_at_its_count_and_cancels_do_not_break_it() {
        let three = r#"{"on":"failures","count":3,"channels":["ops"]}"#;
        assert!(raised(three, Failed, &[]).is_empty());
        assert!(raised(three, Failed, &[Failed, Succeeded]).is_empty());
        assert_eq!(
            raised(
                three,
                Failed,
                &[Failed, Cancelled, Skipped, TimedOut, Succeeded]
            ),
            [Raised::Failures(3)]
        );
        assert!(
            raised(three, Failed, &[Failed, Failed, Failed]).is_empty(),
            "once per streak"
        );
        assert!(raised(three, Succeeded, &[Failed, Failed]).is_empty());
    }

    #[test]
    fn recovery_is_a_success_after_a_failure() {
        let recovery = r#"{"on":"recovery","channels":["ops"]}"#;
        assert_eq!(
            raised(recovery, Succeeded, &[Cancelled, Lost, Succeeded]),
            [Raised::Recovery]
        );
        assert!(raised(recovery, Succeeded, &[Succeeded, Failed]).is_empty());
        assert!(raised(recovery, Succeeded, &[]).is_empty());
        assert!(raised(recovery, Failed, &[Failed]).is_empty());
    }

    #[test]
    fn slas_are_judged_from_the_due_time() {
        let at = t("2026-01-01T00:00:00Z");
        let s = |secs: i64| at + SignedDuration::from_secs(secs);
        let start = Some(SignedDuration::from_secs(60));
        let finish = Some(SignedDuration::from_secs(600));
        // Waiting: not late yet, then late to start.
        assert!(sla_breaches(start, finish, at, None, None, s(60)).is_empty());
        assert_eq!(
            sla_breaches(start, finish, at, None, None, s(61)),
            [Raised::SlaStart]
        );
        // Started in time, running past the finish deadline.
        assert_eq!(
            sla_breaches(start, finish, at, Some(s(5)), None, s(601)),
            [Raised::SlaFinish]
        );
        // Ended: judged by when it started and finished, not by now.
        assert!(sla_breaches(start, finish, at, Some(s(5)), Some(s(600)), s(9999)).is_empty());
        assert_eq!(
            sla_breaches(start, finish, at, Some(s(90)), Some(s(700)), s(9999)),
            [Raised::SlaStart, Raised::SlaFinish]
        );
        let sla = r#"{"on":"sla","finish_within":"1s","channels":["ops"]}"#;
        assert_eq!(raised(sla, Succeeded, &[]), [Raised::SlaFinish]);
    }

    #[test]
    fn a_dead_man_switch_fires_after_its_silence() {
        let since = t("2026-01-01T00:00:00Z");
        let within = SignedDuration::from_hours(1);
        assert_eq!(silent_since(within, since, since + within), None);
        assert_eq!(
            silent_since(within, since, since + within + SignedDuration::from_secs(1)),
            Some(since)
        );
        assert_eq!(silent_since(within, Timestamp::MAX, Timestamp::MAX), None);
    }
}
