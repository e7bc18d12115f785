//! Pure decisions: retry, misfire (catch-up) and overlap. Each is a function of its inputs, `now`
//! included, so that the runtime only carries them out and tests can check them exhaustively.

use jiff::{SignedDuration, Timestamp};

use crate::run::{AttemptStatus, SkipReason};
use crate::spec::{CatchupPolicy, OverlapPolicy};
use crate::trigger::{Fire, Schedule};

/// Which outcomes retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// Every failure (not cancellation).
    Any,
    /// One exit code.
    Exit(i32),
    /// Any unexpected exit code or signal.
    AnyExit,
    /// A timeout.
    Timeout,
    /// One HTTP status.
    Http(u16),
    /// A class of HTTP statuses: `4xx` is 4, `5xx` is 5.
    HttpClass(u16),
    /// A task that could not run (spawn error, connection error, handler error).
    Error,
}

impl std::str::FromStr for RetryOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not a retry condition; use `any`, `timeout`, `error`, `exit:N`, `exit:any`, `http:N` or `http:5xx`")
        };
        match s {
            "any" => return Ok(RetryOn::Any),
            "timeout" => return Ok(RetryOn::Timeout),
            "error" => return Ok(RetryOn::Error),
            "exit:any" => return Ok(RetryOn::AnyExit),
            _ => {}
        }
        if let Some(code) = s.strip_prefix("exit:") {
            let code: i32 = code.parse().map_err(|_| bad())?;
            return if (0..=255).contains(&code) { Ok(RetryOn::Exit(code)) } else { Err(bad()) };
        }
        if let Some(status) = s.strip_prefix("http:") {
            if let Some(class) = status.strip_suffix("xx") {
                let class: u16 = class.parse().map_err(|_| bad())?;
                return if (1..=5).contains(&class) { Ok(RetryOn::HttpClass(class)) } else { Err(bad()) };
            }
            let status: u16 = status.parse().map_err(|_| bad())?;
            return if (100..=599).contains(&status) { Ok(RetryOn::Http(status)) } else { Err(bad()) };
        }
        Err(bad())
    }
}

impl RetryOn {
    fn matches(self, status: &AttemptStatus) -> bool {
        match (self, status) {
            (_, AttemptStatus::Succeeded | AttemptStatus::Cancelled) => false,
            (RetryOn::Any, _) => true,
            (RetryOn::Exit(c), AttemptStatus::ExitCode { code }) => c == *code,
            (RetryOn::AnyExit, AttemptStatus::ExitCode { .. } | AttemptStatus::Signal { .. }) => true,
            (RetryOn::Timeout, AttemptStatus::TimedOut) => true,
            (RetryOn::Http(s), AttemptStatus::HttpStatus { status }) => s == *status,
            (RetryOn::HttpClass(c), AttemptStatus::HttpStatus { status }) => status / 100 == c,
            (RetryOn::Error, AttemptStatus::Error { .. }) => true,
            _ => false,
        }
    }
}

/// Retry policy of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: SignedDuration,
    pub max: SignedDuration,
    pub multiplier: f64,
    pub jitter: f64,
    pub on: Vec<RetryOn>,
}

/// What follows a finished attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Queue another attempt after `delay`.
    Retry { delay: SignedDuration },
    /// The run is over.
    Finish,
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            initial: SignedDuration::from_secs(10),
            max: SignedDuration::from_secs(600),
            multiplier: 2.0,
            jitter: 0.1,
            on: vec![RetryOn::Any],
        }
    }

    /// Decides after attempt number `attempt` (1-based) ended with `status`. `random` is a
    /// uniform sample in `[0, 1)` that spreads the delay by `±jitter`.
    pub fn decide(&self, attempt: u32, status: &AttemptStatus, random: f64) -> RetryDecision {
        if attempt >= self.max_attempts || !self.on.iter().any(|on| on.matches(status)) {
            return RetryDecision::Finish;
        }
        RetryDecision::Retry { delay: self.delay(attempt, random) }
    }

    /// Delay before attempt `attempt + 1`: `initial * multiplier^(attempt-1)`, capped at `max`,
    /// then spread by `±jitter` (never below zero, never above `max`).
    pub fn delay(&self, attempt: u32, random: f64) -> SignedDuration {
        let exp = attempt.saturating_sub(1).min(1000) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let capped = base.min(self.max.as_secs_f64());
        let spread = capped * self.jitter * (random.clamp(0.0, 1.0) * 2.0 - 1.0);
        let secs = (capped + spread).clamp(0.0, self.max.as_secs_f64());
        SignedDuration::try_from_secs_f64(secs).unwrap_or(self.max)
    }
}

/// Most runs one catch-up round may create for one job with `catchup: all`.
pub const MAX_CATCHUP_RUNS: usize = 1000;
/// Most skipped runs one catch-up round records for one job; beyond that they are only counted.
pub const MAX_RECORDED_SKIPS: usize = 1000;

/// The runs one scheduling round creates for one job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FirePlan {
    /// Due times that become runs.
    pub fire: Vec<Fire>,
    /// Due times recorded as skipped runs, with their reason.
    pub skip: Vec<(Fire, SkipReason)>,
    /// Missed due times neither run nor recorded (beyond the caps, or coalesced by `latest`).
    pub dropped: u64,
    /// The job's next due time after this round (strictly after `now`), if any.
    pub next_fire_at: Option<Timestamp>,
}

/// Plans one scheduling round for a job whose earliest pending due time is `next_fire_at`.
///
/// Due times are `next_fire_at` and every later fire time up to `now`. A due time is *late*
/// when a newer one has also passed, or when it is older than `catchup_window`:
/// - `all`: one run per due time within `catchup_window` (at most [`MAX_CATCHUP_RUNS`]);
///   older ones are skipped (`misfire`).
/// - `latest`: one run for the newest due time if it is within the window; older ones coalesce
///   into it (counted in `dropped`, not recorded).
/// - `skip`: the newest due time runs if it is within the window; older ones are skipped.
pub fn plan_fires(
    schedule: &Schedule,
    next_fire_at: Timestamp,
    now: Timestamp,
    catchup: CatchupPolicy,
    catchup_window: SignedDuration,
) -> FirePlan {
    let mut plan = FirePlan::default();
    if next_fire_at > now {
        plan.next_fire_at = Some(next_fire_at);
        return plan;
    }
    let window_start = now.checked_sub(catchup_window).unwrap_or(Timestamp::MIN);
    // The first due time: whichever trigger yields `next_fire_at` (search from just before it).
    let first = schedule
        .next_after(next_fire_at.checked_sub(SignedDuration::from_nanos(1)).unwrap_or(next_fire_at))
        .filter(|f| f.at <= now);
    let Some(mut current) = first else {
        plan.next_fire_at = schedule.next_after(now).map(|f| f.at);
        return plan;
    };
    // Walk the due times in order; only the newest can be known when the walk ends.
    let mut pending_latest: Option<Fire> = None;
    loop {
        let next = schedule.next_after(current.at);
        let is_newest = next.is_none_or(|n| n.at > now);
        let in_window = current.at >= window_start;
        match catchup {
            CatchupPolicy::All => {
                if in_window && plan.fire.len() < MAX_CATCHUP_RUNS {
                    plan.fire.push(current);
                } else {
                    record_skip(&mut plan, current);
                }
            }
            CatchupPolicy::Latest => {
                if is_newest && in_window {
                    pending_latest = Some(current);
                } else if is_newest {
                    record_skip(&mut plan, current);
                } else {
                    plan.dropped += 1;
                }
            }
            CatchupPolicy::Skip => {
                if is_newest && in_window {
                    pending_latest = Some(current);
                } else {
                    record_skip(&mut plan, current);
                }
            }
        }
        match next {
            Some(n) if n.at <= now => current = n,
            other => {
                plan.next_fire_at = other.map(|f| f.at);
                break;
            }
        }
        // Far behind (e.g. an every-second job after days down): jump to the window instead of
        // walking every missed time one by one.
        if plan.skip.len() >= MAX_RECORDED_SKIPS && current.at < window_start {
            if let Some(jump) = schedule.next_after(window_start.checked_sub(SignedDuration::from_nanos(1)).unwrap_or(window_start)) {
                if jump.at > current.at && jump.at <= now {
                    plan.dropped += 1; // at least one; the exact count is not worth a walk
                    current = jump;
                } else if jump.at > now {
                    plan.next_fire_at = Some(jump.at);
                    break;
                }
            }
        }
    }
    if let Some(f) = pending_latest {
        plan.fire.push(f);
    }
    plan
}

fn record_skip(plan: &mut FirePlan, fire: Fire) {
    if plan.skip.len() < MAX_RECORDED_SKIPS {
        plan.skip.push((fire, SkipReason::Misfire));
    } else {
        plan.dropped += 1;
    }
}

/// What to do with a new run given the job's active runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapDecision {
    /// Queue it to start now.
    Start,
    /// Queue it; it starts only when no other run of the job is running.
    Serialize,
    /// Record it as `skipped` (reason `overlap`).
    Skip,
    /// Cancel the active runs, then start it.
    Replace,
}

/// Decides the overlap policy for a new run while `active` runs of the job are not finished.
pub fn decide_overlap(policy: OverlapPolicy, max_concurrent: u32, active: u64) -> OverlapDecision {
    match policy {
        OverlapPolicy::Forbid if active > 0 => OverlapDecision::Skip,
        OverlapPolicy::Forbid => OverlapDecision::Start,
        OverlapPolicy::Allow if active >= u64::from(max_concurrent) => OverlapDecision::Skip,
        OverlapPolicy::Allow => OverlapDecision::Start,
        OverlapPolicy::Queue => OverlapDecision::Serialize,
        OverlapPolicy::Replace if active > 0 => OverlapDecision::Replace,
        OverlapPolicy::Replace => OverlapDecision::Start,
    }
}
