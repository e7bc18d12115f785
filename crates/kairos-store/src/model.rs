//! What the store holds: jobs, runs and attempts.

use jiff::Timestamp;
use kairos_core::auth::{AuditAction, Role, Scope};
use kairos_core::run::{JobId, RunId, RunOrigin, RunState};
use kairos_core::spec::{ExecutionMode, JobSpec};
use serde::Serialize;

/// A stored job: the spec as written plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    /// Starts at 1 and increments on every change (update, pause, resume).
    pub version: i64,
    /// The earliest due time not yet fired (`None`: nothing left to fire).
    pub next_fire_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Job {
    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// A stored calendar: the document as written plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCalendar {
    pub id: i64,
    pub spec: kairos_core::calendar::CalendarSpec,
    /// Starts at 1 and increments on every change.
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One occurrence of a job for one due time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: RunId,
    pub job_id: JobId,
    pub namespace: String,
    pub job_name: String,
    /// The due time this run is for; unique per job.
    pub scheduled_for: Timestamp,
    /// Earliest start (due time plus jitter, or the retry time).
    pub run_at: Timestamp,
    pub state: RunState,
    pub origin: RunOrigin,
    /// Attempts started so far.
    pub attempt: u32,
    pub max_attempts: u32,
    pub execution: ExecutionMode,
    /// `overlap: queue`: starts only when no other run of the job is running.
    pub exclusive: bool,
    /// Why it was skipped (`overlap`, `misfire`) or why it ended without an attempt.
    pub reason: Option<String>,
    pub node: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub cancel_requested: bool,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    /// For a step run: its workflow run. `None` for a top-level run.
    pub parent_id: Option<RunId>,
    /// For a step run: the step's name.
    pub step: Option<String>,
    /// For a step run: the JSON document the step wrote to `KAIROS_RESULT`.
    pub result: Option<String>,
    /// The JSON object given to a manual trigger (`KAIROS_PARAMS`); a step run reads its
    /// workflow run's.
    pub params: Option<String>,
    /// The event that created the run (`origin: event`); a step run reads its workflow run's.
    pub event: Option<RunEvent>,
    /// The run of another job whose end created this one (`origin: dependency`); a step run
    /// reads its workflow run's.
    pub upstream_run_id: Option<RunId>,
    /// What its task last reported (progress, message, checkpoint), if anything.
    pub report: Option<RunReport>,
    /// False only while an `at_most_once` run's attempt has been claimed and has not begun
    /// (its worker records the begin before the task starts). Not part of a run's API view.
    #[serde(skip)]
    pub begun: bool,
}

/// What a run's task last reported while it ran; kept across attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// 0 to 1.
    pub progress: Option<f64>,
    pub message: Option<String>,
    /// The last checkpoint (JSON text, at most [`kairos_core::run::MAX_RESULT_BYTES`]): what a
    /// later attempt resumes from.
    pub checkpoint: Option<String>,
    /// When the last report was written.
    pub at: Timestamp,
}

/// The event a run was created for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunEvent {
    /// The event's id: its idempotency key, or one the server made up.
    pub id: String,
    pub topic: String,
    /// The payload, as JSON text (at most [`kairos_core::event::MAX_EVENT_BYTES`]).
    pub payload: String,
}

impl Run {
    /// A workflow run's step.
    pub fn is_step(&self) -> bool {
        self.parent_id.is_some()
    }
}

/// One execution of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub run_id: RunId,
    pub attempt: u32,
    pub node: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// `succeeded`, `exit:N`, `signal:N`, `http:N`, `timeout`, `cancelled`, `error`, `lost`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub output: String,
    pub output_truncated: bool,
    pub max_rss_kib: Option<i64>,
    pub user_cpu_us: Option<i64>,
    pub sys_cpu_us: Option<i64>,
}

/// A run handed to a worker, with the lease that fences its writes.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    pub run: Run,
    pub lease_token: String,
    /// The job as it is now (its current definition runs). For a step run: the plain job the
    /// step runs as (`JobSpec::step_job` of the workflow run's document).
    pub job: Job,
    /// For a step run: the document its workflow run started with.
    pub workflow: Option<std::sync::Arc<kairos_core::JobSpec>>,
}

/// An API token. The secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: i64,
    /// Unique among tokens not revoked.
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    pub created_at: Timestamp,
    /// Who created it (a token name, or `offline` for the CLI against the store).
    pub created_by: String,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// One change in the audit log, written in the same transaction as the change itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Timestamp,
    /// Who: a token name (`anonymous` with authentication off, `system` for the library).
    pub actor: String,
    pub action: AuditAction,
    /// `None` for token changes.
    pub namespace: Option<String>,
    pub job: Option<String>,
    pub run_id: Option<RunId>,
    pub version_before: Option<i64>,
    pub version_after: Option<i64>,
    /// More about the change (a token's name, role and namespaces).
    pub detail: Option<String>,
}
