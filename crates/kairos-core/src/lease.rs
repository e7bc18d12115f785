//! Leases on claimed runs: how long one lasts, how often a worker renews it, when a worker that
//! could not renew it must give the attempt up, and what the rescuer does with a run whose lease
//! expired.
//!
//! The model: a worker claims a run with a lease of length `L` that the store dates with its own
//! clock. The worker renews it every `L / 3` (so two heartbeats may fail before it is at risk).
//! It measures its lease from the moment it *sent* the last claim or renewal that held: the
//! store dated that write no earlier, so the store's expiry is at least `sent + L` in real time,
//! whatever the offset between the two clocks. A worker that has not renewed by
//! `sent + L − margin` (the store is unreachable, the node is cut off) kills the attempt at
//! once and drops its result, so the task has ended before anyone can rescue the run and start
//! it elsewhere: at no time do two attempts of one run execute.

use jiff::{SignedDuration, Timestamp};

use crate::spec::ExecutionMode;

/// The validated lease settings of a worker; every derived interval comes from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    lease: SignedDuration,
}

/// A lease length outside its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease must be between {min:#} and {max:#}, not {actual:#}")]
pub struct LeaseError {
    pub min: SignedDuration,
    pub max: SignedDuration,
    pub actual: SignedDuration,
}

impl LeaseTiming {
    /// The shortest lease: a heartbeat every second.
    pub const MIN: SignedDuration = SignedDuration::from_secs(3);
    /// The longest lease: a dead node's runs wait at most this long for rescue.
    pub const MAX: SignedDuration = SignedDuration::from_secs(3600);
    /// The default lease.
    pub const DEFAULT: SignedDuration = SignedDuration::from_secs(30);

    pub fn new(lease: SignedDuration) -> Result<Self, LeaseError> {
        if lease < Self::MIN || lease > Self::MAX {
            return Err(LeaseError {
                min: Self::MIN,
                max: Self::MAX,
                actual: lease,
            });
        }
        Ok(Self { lease })
    }

    pub fn lease(&self) -> SignedDuration {
        self.lease
    }

    /// Time between renewals: a third of the lease.
    pub fn heartbeat(&self) -> SignedDuration {
        self.lease / 3
    }

    /// How long before the lease's earliest possible expiry a worker gives the attempt up: a
    /// fifth of the lease, room for killing the process group and for clock rates that differ.
    pub fn margin(&self) -> SignedDuration {
        self.lease / 5
    }

    /// The instant by which a worker must have stopped an attempt whose last claim or renewal
    /// that held was sent at `sent` (by the worker's clock).
    pub fn stop_at(&self, sent: Timestamp) -> Timestamp {
        sent.checked_add(self.lease - self.margin())
            .unwrap_or(Timestamp::MAX)
    }
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            lease: Self::DEFAULT,
        }
    }
}

/// Attempts a run may lose to expired leases beyond its `max_attempts` before the rescuer gives
/// it up as `lost`. A lease lost to a crash or a partition is not the task's failure, so it does
/// not use up the retry budget as such (as a Kubernetes Job ignores pod disruptions); but a task
/// that keeps taking its node down must not loop forever.
pub const RESCUE_EXTRA_ATTEMPTS: u32 = 2;

/// A running run whose lease expired, as the rescuer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredRun {
    /// The attempt that was running (counted at its claim).
    pub attempt: u32,
    pub max_attempts: u32,
    pub execution: ExecutionMode,
    pub cancel_requested: bool,
    /// Nothing ran: claimed ahead of a due time that has not come (its `started_at` is after
    /// now), or an `at_most_once` run whose worker never recorded that its attempt began (the
    /// node stopped between the claim and the start).
    pub never_started: bool,
}

/// Whether a running run's attempt never started, for [`ExpiredRun::never_started`]: an
/// `at_most_once` run's own begin record decides (its start may be dated ahead of the store's
/// clock); another's, its start after `now` (claimed ahead of a due time still to come).
pub fn never_started(
    execution: ExecutionMode,
    begun: bool,
    started_at: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    if execution == ExecutionMode::AtMostOnce {
        !begun
    } else {
        started_at.is_some_and(|s| s > now)
    }
}

/// A run of a job as a pause or a new schedule of the job finds it, for [`withdrawable`]: a
/// top-level run the scheduler created, queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyRun {
    pub scheduled_for: Timestamp,
    pub created_at: Timestamp,
    /// Queued (else running).
    pub queued: bool,
    pub attempt: u32,
    /// A workflow run (its steps exist once it runs).
    pub workflow: bool,
    pub started_at: Option<Timestamp>,
    pub execution: ExecutionMode,
    /// An `at_most_once` run's begin was recorded.
    pub begun: bool,
}

/// Whether a pause or a new schedule takes `run` back, as if its due time had never been
/// fired, so that the due time is decided again: a run created ahead of its due time (the
/// look-ahead; a run created when due or late is kept, so a wall clock stepped back never
/// takes one back) for a due time after `after`, that has not started: queued and never
/// claimed, or claimed ahead and waiting for its due time (its start after `now`), unless it
/// is a workflow run or an `at_most_once` run whose begin was recorded.
pub fn withdrawable(run: &EarlyRun, after: Timestamp, now: Timestamp) -> bool {
    if run.scheduled_for <= after || run.created_at >= run.scheduled_for {
        return false;
    }
    if run.queued {
        return run.attempt == 0;
    }
    run.attempt == 1
        && !run.workflow
        && run.started_at.is_some_and(|s| s > now)
        && !(run.execution == ExecutionMode::AtMostOnce && run.begun)
}

/// What the rescuer does with a run whose lease expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescueDecision {
    /// Back to `queued` as it was: the attempt is not counted and none is recorded.
    Release,
    /// Back to `queued` for a new attempt now; the lost attempt is recorded.
    Requeue,
    /// The run ends `lost`; the lost attempt is recorded.
    Lost,
    /// Someone asked to cancel it: the run ends `cancelled`.
    Cancelled,
}

/// The rescue rule: a run that never started goes back as it was; a cancel that was asked for
/// is honoured; `at_most_once` runs are never repeated; others are repeated until they have lost
/// [`RESCUE_EXTRA_ATTEMPTS`] attempts beyond their `max_attempts`.
pub fn rescue_decision(run: &ExpiredRun) -> RescueDecision {
    if run.never_started && !run.cancel_requested {
        RescueDecision::Release
    } else if run.cancel_requested {
        RescueDecision::Cancelled
    } else if run.execution == ExecutionMode::AtMostOnce
        || run.attempt >= run.max_attempts.saturating_add(RESCUE_EXTRA_ATTEMPTS)
    {
        RescueDecision::Lost
    } else {
        RescueDecision::Requeue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    #[test]
    fn intervals_derive_from_the_lease() {
        let t = LeaseTiming::new(secs(30)).unwrap_or_default();
        assert_eq!(t.heartbeat(), secs(10));
        assert_eq!(t.margin(), secs(6));
        let sent: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap_or_default();
        assert_eq!(
            t.stop_at(sent),
            "2026-03-01T00:00:24Z".parse().unwrap_or_default()
        );
        // Two heartbeats may fail before the attempt is given up.
        assert!(t.heartbeat() * 2 < t.lease() - t.margin());
    }

    #[test]
    fn bounds_are_checked() {
        assert!(LeaseTiming::new(secs(2)).is_err());
        assert!(LeaseTiming::new(secs(3)).is_ok());
        assert!(LeaseTiming::new(secs(3600)).is_ok());
        let e = LeaseTiming::new(secs(3601)).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("lease must be between 3s and 1h, not 1h 1s")
        );
    }

    fn expired(attempt: u32) -> ExpiredRun {
        ExpiredRun {
            attempt,
            max_attempts: 1,
            execution: ExecutionMode::AtLeastOnce,
            cancel_requested: false,
            never_started: false,
        }
    }

    #[test]
    fn rescue_rule() {
        assert_eq!(rescue_decision(&expired(1)), RescueDecision::Requeue);
        assert_eq!(rescue_decision(&expired(2)), RescueDecision::Requeue);
        assert_eq!(rescue_decision(&expired(3)), RescueDecision::Lost);
        let at_most_once = ExpiredRun {
            execution: ExecutionMode::AtMostOnce,
            ..expired(1)
        };
        assert_eq!(rescue_decision(&at_most_once), RescueDecision::Lost);
        let cancelled = ExpiredRun {
            cancel_requested: true,
            never_started: true,
            ..expired(1)
        };
        assert_eq!(rescue_decision(&cancelled), RescueDecision::Cancelled);
        let early = ExpiredRun {
            never_started: true,
            execution: ExecutionMode::AtMostOnce,
            ..expired(5)
        };
        assert_eq!(rescue_decision(&early), RescueDecision::Release);
    }

    #[test]
    fn only_runs_created_ahead_that_have_not_started_are_withdrawn() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let queued = EarlyRun {
            scheduled_for: t(10),
            created_at: t(9),
            queued: true,
            attempt: 0,
            workflow: false,
            started_at: None,
            execution: ExecutionMode::AtLeastOnce,
            begun: true,
        };
        let (after, now) = (t(8), t(9));
        assert!(withdrawable(&queued, after, now));
        // Due at or before `after`; created when due or late; a retry (attempt counted).
        assert!(!withdrawable(
            &EarlyRun {
                scheduled_for: t(8),
                created_at: t(7),
                ..queued
            },
            after,
            now
        ));
        assert!(!withdrawable(
            &EarlyRun {
                created_at: t(10),
                ..queued
            },
            after,
            now
        ));
        assert!(!withdrawable(
            &EarlyRun {
                attempt: 1,
                ..queued
            },
            after,
            now
        ));
        // Claimed ahead, waiting for its due time: taken back, unless it is a workflow run, an
        // at-most-once run that began, or it has started (its start is not after now).
        let claimed = EarlyRun {
            queued: false,
            attempt: 1,
            started_at: Some(t(10)),
            ..queued
        };
        assert!(withdrawable(&claimed, after, now));
        assert!(!withdrawable(
            &EarlyRun {
                workflow: true,
                ..claimed
            },
            after,
            now
        ));
        assert!(!withdrawable(
            &EarlyRun {
                started_at: Some(t(9)),
                ..claimed
            },
            after,
            now
        ));
        assert!(!withdrawable(
            &EarlyRun {
                started_at: None,
                ..claimed
            },
            after,
            now
        ));
        assert!(!withdrawable(
            &EarlyRun {
                attempt: 2,
                ..claimed
            },
            after,
            now
        ));
        let once = EarlyRun {
            execution: ExecutionMode::AtMostOnce,
            ..claimed
        };
        assert!(!withdrawable(&once, after, now));
        assert!(withdrawable(
            &EarlyRun {
                begun: false,
                ..once
            },
            after,
            now
        ));
    }
}
