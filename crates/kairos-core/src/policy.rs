//! Pure decisions: retry, misfire (catch-up) and overlap. Each is a function of its inputs, `now`
//! included, so that the runtime only carries them out and tests can check them exhaustively.

use jiff::{SignedDuration, Timestamp};

use crate::run::{AttemptStatus, JobId, RunId, SkipReason};
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
            format!(
                "`{s}` is not a retry condition; use `any`, `timeout`, `error`, `exit:N`, `exit:any`, `http:N` or `http:5xx`"
            )
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
            return if (0..=255).contains(&code) {
                Ok(RetryOn::Exit(code))
            } else {
                Err(bad())
            };
        }
        if let Some(status) = s.strip_prefix("http:") {
            if let Some(class) = status.strip_suffix("xx") {
                let class: u16 = class.parse().map_err(|_| bad())?;
                return if (1..=5).contains(&class) {
                    Ok(RetryOn::HttpClass(class))
                } else {
                    Err(bad())
                };
            }
            let status: u16 = status.parse().map_err(|_| bad())?;
            return if (100..=599).contains(&status) {
                Ok(RetryOn::Http(status))
            } else {
                Err(bad())
            };
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
            (RetryOn::AnyExit, AttemptStatus::ExitCode { .. } | AttemptStatus::Signal { .. }) => {
                true
            }
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
        RetryDecision::Retry {
            delay: self.delay(attempt, random),
        }
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
/// Most missed due times one round counts one by one (per stretch it does not record); beyond
/// that it jumps ahead, and [`FirePlan::dropped`] is a lower bound.
const MAX_COUNTED: u64 = 10_000;

/// The runs one scheduling round creates for one job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FirePlan {
    /// Due times that become runs, oldest first.
    pub fire: Vec<Fire>,
    /// Due times recorded as skipped runs, with their reason, oldest first.
    pub skip: Vec<(Fire, SkipReason)>,
    /// Missed due times neither run nor recorded (beyond the caps, or coalesced by `latest`).
    /// Exact unless the job is far behind (more than 10 000 such times in one stretch): then a
    /// lower bound, because the round jumps ahead instead of walking every missed time.
    pub dropped: u64,
    /// The job's next due time after this round (strictly after `now`), if any.
    pub next_fire_at: Option<Timestamp>,
}

/// Plans one scheduling round for a job whose earliest pending due time is `next_fire_at`.
///
/// Due times are `next_fire_at` and every later fire time up to `now`. A due time is *late*
/// when a newer one has also passed, or when it is older than `catchup_window`:
/// - `all`: one run per due time within `catchup_window` (at most [`MAX_CATCHUP_RUNS`], the
///   oldest first); older ones and those beyond the cap are skipped (`misfire`).
/// - `latest`: one run for the newest due time if it is within the window; older ones coalesce
///   into it (counted in `dropped`, not recorded). A newest due time outside the window is
///   skipped.
/// - `skip`: the newest due time runs if it is within the window; older ones are skipped.
///
/// At most [`MAX_RECORDED_SKIPS`] skips are recorded; the rest are counted in `dropped`. The work
/// is bounded whatever the downtime: `Schedule::next_after` is called at most a few ten thousand
/// times (the newest due time is found by bisection, not by walking every missed one).
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
        .next_after(just_before(next_fire_at))
        .filter(|f| f.at <= now);
    plan.next_fire_at = schedule.next_after(now).map(|f| f.at);
    let Some(first) = first else { return plan };
    let due = Due { schedule, now };
    match catchup {
        CatchupPolicy::All => {
            // Late ones before the window: skipped, then counted, then jumped over.
            let mut current = Some(first);
            while let Some(fire) = current.filter(|f| f.at < window_start) {
                if plan.skip.len() < MAX_RECORDED_SKIPS {
                    plan.skip.push((fire, SkipReason::Misfire));
                    current = due.after(fire.at);
                } else {
                    plan.dropped += due.count(fire, window_start);
                    current = due.after(just_before(window_start));
                }
            }
            // Within the window: run (up to the cap), then skip, then count.
            while let Some(fire) = current {
                if plan.fire.len() < MAX_CATCHUP_RUNS {
                    plan.fire.push(fire);
                } else if plan.skip.len() < MAX_RECORDED_SKIPS {
                    plan.skip.push((fire, SkipReason::Misfire));
                } else {
                    plan.dropped += due.count_through_now(fire);
                    break;
                }
                current = due.after(fire.at);
            }
        }
        CatchupPolicy::Latest | CatchupPolicy::Skip => {
            let newest = due.newest(first);
            if catchup == CatchupPolicy::Latest {
                plan.dropped += due.count(first, newest.at);
            } else {
                let mut current = Some(first).filter(|f| f.at < newest.at);
                while let Some(fire) = current {
                    if plan.skip.len() < MAX_RECORDED_SKIPS {
                        plan.skip.push((fire, SkipReason::Misfire));
                        current = due.after(fire.at).filter(|f| f.at < newest.at);
                    } else {
                        plan.dropped += due.count(fire, newest.at);
                        break;
                    }
                }
            }
            if newest.at >= window_start {
                plan.fire.push(newest);
            } else if plan.skip.len() < MAX_RECORDED_SKIPS {
                plan.skip.push((newest, SkipReason::Misfire));
            } else {
                plan.dropped += 1;
            }
        }
    }
    plan
}

fn just_before(t: Timestamp) -> Timestamp {
    t.checked_sub(SignedDuration::from_nanos(1)).unwrap_or(t)
}

/// The due times of one schedule up to `now`.
struct Due<'a> {
    schedule: &'a Schedule,
    now: Timestamp,
}

impl Due<'_> {
    /// The first due time strictly after `t`, if it is not after `now`.
    fn after(&self, t: Timestamp) -> Option<Fire> {
        self.schedule.next_after(t).filter(|f| f.at <= self.now)
    }

    /// Due times in `from.at..end`, counted one by one up to [`MAX_COUNTED`] (then a lower bound).
    fn count(&self, from: Fire, end: Timestamp) -> u64 {
        let mut n = 0;
        let mut current = Some(from);
        while let Some(fire) = current.filter(|f| f.at < end) {
            n += 1;
            if n >= MAX_COUNTED {
                break;
            }
            current = self.after(fire.at);
        }
        n
    }

    /// Due times in `from.at..=now`, as [`Due::count`].
    fn count_through_now(&self, from: Fire) -> u64 {
        match self.now.checked_add(SignedDuration::from_nanos(1)) {
            Ok(end) => self.count(from, end),
            Err(_) => self.count(from, self.now) + 1,
        }
    }

    /// The newest due time, given `first` (a due time). A few steps, then bisection: the search
    /// for the last instant `t` with `next_after(t) <= now` halves `first..now` each time, so
    /// it takes at most about 70 calls however far behind the job is.
    fn newest(&self, first: Fire) -> Fire {
        let mut newest = first;
        for _ in 0..4 {
            match self.after(newest.at) {
                Some(next) => newest = next,
                None => return newest,
            }
        }
        // Invariant: no due time follows `hi` (up to `now`); the newest is the one following
        // `lo`, or `newest` itself when none follows `lo`.
        let (mut lo, mut hi) = (newest.at.as_nanosecond(), self.now.as_nanosecond());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let has_due = Timestamp::from_nanosecond(mid)
                .ok()
                .and_then(|t| self.after(t))
                .is_some();
            if has_due {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Timestamp::from_nanosecond(lo)
            .ok()
            .and_then(|t| self.after(t))
            .unwrap_or(newest)
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

/// Most due times one backfill may create.
pub const MAX_BACKFILL_RUNS: usize = 10_000;

/// The due times of `schedule` from `from` to `to`, both included, earliest first (without
/// jitter: a backfill runs them as soon as it may). `Err(n)` when there are more than `limit`
/// (`n` is `limit + 1`: the count is not pursued further).
pub fn due_times_between(
    schedule: &Schedule,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
) -> Result<Vec<Timestamp>, usize> {
    let mut times = Vec::new();
    let Ok(mut after) = from.checked_sub(SignedDuration::from_nanos(1)) else {
        return Ok(times);
    };
    while let Some(fire) = schedule.next_after(after) {
        if fire.at > to {
            break;
        }
        if times.len() == limit {
            return Err(limit + 1);
        }
        times.push(fire.at);
        after = fire.at;
    }
    Ok(times)
}

/// How many held runs of a backfill may join the queue now, with `active` runs of the job
/// queued or running: up to `max_concurrent` at once with `overlap: allow`, else one at a time
/// (`forbid`, `queue` and `replace` all mean one run of the job at a time; a backfill's runs
/// wait for each other instead of being skipped or replaced).
pub fn backfill_release(policy: OverlapPolicy, max_concurrent: u32, active: u64) -> u64 {
    let limit = match policy {
        OverlapPolicy::Allow => u64::from(max_concurrent.max(1)),
        OverlapPolicy::Forbid | OverlapPolicy::Queue | OverlapPolicy::Replace => 1,
    };
    limit.saturating_sub(active)
}

/// A waiting run of a job with `overlap: queue` (an exclusive run), as a claim sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExclusiveCandidate {
    pub job_id: JobId,
    pub run_id: RunId,
    /// The due time the run is for: a job's queue drains in this order.
    pub scheduled_for: Timestamp,
    /// When the run may start (its due time, a retry's backoff, a rescue's instant).
    pub run_at: Timestamp,
    /// Whether a run of the same job is running.
    pub job_running: bool,
}

/// The exclusive runs a claim may start, at most `limit`, earliest `run_at` first. Each job's
/// queue drains one run at a time in due-time order: its head is its waiting exclusive run
/// with the earliest due time (`scheduled_for`, ties by id), and the head starts only if it
/// may start by `horizon` and no run of the job is running. A head that may not start yet (a
/// retry waiting for its backoff) holds the runs behind it, as a running one does: a retried
/// run keeps its place, and a rescued one (requeued now) takes its place back.
///
/// Stores give, for every job with a waiting exclusive run that may start by `horizon`, at
/// least that job's head (more runs of the job change nothing), and claim the chosen ones
/// fenced on the job still having nothing running.
pub fn exclusive_heads(
    candidates: &[ExclusiveCandidate],
    horizon: Timestamp,
    limit: usize,
) -> Vec<RunId> {
    let mut first: std::collections::HashMap<JobId, &ExclusiveCandidate> =
        std::collections::HashMap::new();
    let mut blocked = std::collections::HashSet::new();
    for c in candidates {
        if c.job_running {
            blocked.insert(c.job_id);
        }
        first
            .entry(c.job_id)
            .and_modify(|f| {
                if (c.scheduled_for, c.run_id) < (f.scheduled_for, f.run_id) {
                    *f = c;
                }
            })
            .or_insert(c);
    }
    let mut heads: Vec<&ExclusiveCandidate> = first
        .into_values()
        .filter(|c| !blocked.contains(&c.job_id) && c.run_at <= horizon)
        .collect();
    heads.sort_by_key(|c| (c.run_at, c.run_id));
    heads.into_iter().take(limit).map(|c| c.run_id).collect()
}

/// Whether a change of a job decides its due times that have not come yet again, so that the
/// runs created ahead of them (look-ahead) are taken back: a new schedule, a moved next due
/// time, or a pause. Stores apply it inside the update's transaction.
pub fn reschedules(
    old: &crate::spec::JobSpec,
    new: &crate::spec::JobSpec,
    next_moved: bool,
) -> bool {
    next_moved || old.triggers != new.triggers || (new.paused && !old.paused)
}
