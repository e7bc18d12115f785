//! Runs and attempts: the state machine and the outcome of one execution.
//!
//! ```text
//! scheduled ─► queued ─► running ─► succeeded | failed | timed_out | cancelled
//!                 ▲         │
//!                 └─────────┘ failed attempt with retries left (later run_at)
//! queued/running ─► cancelled            (cancel)
//! running ─► queued | lost               (lease expired: at_least_once | at_most_once)
//! (due time)  ─► skipped                 (overlap or misfire policy)
//! ```
//!
//! A workflow run (a job with `steps`) is claimed like any run, then stays `running` without a
//! lease while its step runs go; it ends `succeeded`, `failed` or `cancelled` with its last
//! step (see [`crate::workflow`]). A step run starts `scheduled` (waiting for its upstream
//! steps), is queued when its trigger rule holds, or ends `upstream_failed` or `skipped` without
//! running.

use serde::{Deserialize, Serialize};

/// Identifier of a job (store-assigned).
pub type JobId = i64;
/// Identifier of a run (store-assigned).
pub type RunId = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Scheduled,
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Skipped,
    Lost,
    /// A workflow's step that did not run because the steps it depends on failed.
    UpstreamFailed,
}

impl RunState {
    pub const ALL: [RunState; 10] = [
        RunState::Scheduled,
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Cancelled,
        RunState::Skipped,
        RunState::Lost,
        RunState::UpstreamFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Scheduled => "scheduled",
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Cancelled => "cancelled",
            RunState::Skipped => "skipped",
            RunState::Lost => "lost",
            RunState::UpstreamFailed => "upstream_failed",
        }
    }

    /// A finished run never changes state again.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RunState::Scheduled | RunState::Queued | RunState::Running
        )
    }

    /// Active runs count against overlap limits.
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = RunState::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown run state `{s}`; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunOrigin {
    /// A trigger was due.
    Schedule,
    /// Someone asked for it (trigger-now).
    Manual,
    /// A backfill asked for this due time.
    Backfill,
    /// An event posted to a topic the job subscribes to.
    Event,
    /// A run of a job this job runs after ended.
    Dependency,
}

impl RunOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOrigin::Schedule => "schedule",
            RunOrigin::Manual => "manual",
            RunOrigin::Backfill => "backfill",
            RunOrigin::Event => "event",
            RunOrigin::Dependency => "dependency",
        }
    }
}

impl std::str::FromStr for RunOrigin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "schedule" => Ok(RunOrigin::Schedule),
            "manual" => Ok(RunOrigin::Manual),
            "backfill" => Ok(RunOrigin::Backfill),
            "event" => Ok(RunOrigin::Event),
            "dependency" => Ok(RunOrigin::Dependency),
            _ => Err(format!("unknown run origin `{s}`")),
        }
    }
}

/// Why a due time was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// `overlap: forbid` (or `allow` at `max_concurrent`) while earlier runs were active.
    Overlap,
    /// Missed while the scheduler was down or behind, and the catch-up policy dropped it.
    Misfire,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::Misfire => "misfire",
        }
    }
}

/// How one attempt ended. A value, not an error: retry decisions are pure functions of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Exit code in `expected_exit_codes`, or an expected HTTP status, or the function returned Ok.
    Succeeded,
    /// The process exited with an unexpected code.
    ExitCode { code: i32 },
    /// The process was killed by a signal it did not get from Kairos.
    Signal { signal: i32 },
    /// An HTTP response with an unexpected status.
    HttpStatus { status: u16 },
    /// The attempt exceeded its timeout and was killed.
    TimedOut,
    /// The attempt was cancelled (by a user, `overlap: replace`, or shutdown).
    Cancelled,
    /// The task could not run or the function failed: spawn error, missing file, connection
    /// refused, pre-hook failure, handler error.
    Error { message: String },
}

impl AttemptStatus {
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptStatus::Succeeded)
    }

    /// The run state this status ends a run in, when no retry follows.
    pub fn final_state(&self) -> RunState {
        match self {
            AttemptStatus::Succeeded => RunState::Succeeded,
            AttemptStatus::TimedOut => RunState::TimedOut,
            AttemptStatus::Cancelled => RunState::Cancelled,
            _ => RunState::Failed,
        }
    }

    /// Short label for metrics and tables: `succeeded`, `exit:1`, `timeout`, `http:503`, ...
    pub fn label(&self) -> String {
        match self {
            AttemptStatus::Succeeded => "succeeded".into(),
            AttemptStatus::ExitCode { code } => format!("exit:{code}"),
            AttemptStatus::Signal { signal } => format!("signal:{signal}"),
            AttemptStatus::HttpStatus { status } => format!("http:{status}"),
            AttemptStatus::TimedOut => "timeout".into(),
            AttemptStatus::Cancelled => "cancelled".into(),
            AttemptStatus::Error { .. } => "error".into(),
        }
    }
}

/// Resource use of an attempt's process (from `wait4`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceUsage {
    /// The most memory the task used at once (its cgroup's peak); `None` where it cannot be
    /// measured.
    pub max_rss_kib: Option<i64>,
    pub user_cpu_us: i64,
    pub sys_cpu_us: i64,
}

/// Everything an executor reports about one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptOutcome {
    pub status: AttemptStatus,
    /// Process exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// Captured output (stdout and stderr interleaved, timestamped lines), capped.
    pub output: String,
    /// Whether the cap dropped part of the output.
    pub output_truncated: bool,
    pub usage: Option<ResourceUsage>,
    /// The JSON document the task wrote to the file named by `KAIROS_RESULT` (at most
    /// [`MAX_RESULT_BYTES`]), if it wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// Largest document a task may write to `KAIROS_RESULT`, and largest `params` of a trigger.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

impl AttemptOutcome {
    pub fn from_status(status: AttemptStatus) -> Self {
        Self {
            status,
            exit_code: None,
            http_status: None,
            output: String::new(),
            output_truncated: false,
            usage: None,
            result: None,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::from_status(AttemptStatus::Error {
            message: message.into(),
        })
    }
}
