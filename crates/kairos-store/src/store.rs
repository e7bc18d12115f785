//! The `Store` trait: every method is noun first and takes one params struct, so that adding a
//! field does not break every backend. `now: Option<Timestamp>` is `None` in production (the
//! store's own clock rules) and `Some` under a manual clock in tests.

use jiff::{SignedDuration, Timestamp};
use kairos_core::auth::{AuditAction, Role, Scope};
use kairos_core::run::{AttemptOutcome, JobId, RunId, RunOrigin, RunState, SkipReason};
use kairos_core::spec::{ExecutionMode, JobSpec};

use crate::cluster::*;
use crate::error::StoreResult;
use crate::model::{Attempt, AuditEntry, ClaimedRun, Job, Run, RunEvent, StoredCalendar, Token};

#[derive(Debug, Clone)]
pub struct JobCreateParams {
    pub spec: JobSpec,
    pub next_fire_at: Option<Timestamp>,
    /// The calendars `next_fire_at` was planned with, and their versions: the write applies
    /// only if each is still at that version (else `CalendarChanged`, nothing written).
    pub calendars: Vec<CalendarVersion>,
    /// Who makes the change (for the audit log).
    pub actor: String,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct JobGetParams {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy)]
pub struct JobGetByIdParams {
    pub id: JobId,
}

#[derive(Debug, Clone, Copy)]
pub struct RunGetParams {
    pub id: RunId,
}

#[derive(Debug, Clone, Copy)]
pub struct AttemptListParams {
    pub run_id: RunId,
}

#[derive(Debug, Clone, Copy)]
pub struct RunActiveCountParams {
    pub job_id: JobId,
}

#[derive(Debug, Clone, Default)]
pub struct RunActiveCountsParams {
    pub job_ids: Vec<JobId>,
}

#[derive(Debug, Clone, Default)]
pub struct JobListParams {
    /// Only these namespaces (a token's scope); `None`: all.
    pub namespaces: Option<Vec<String>>,
    /// Most jobs returned.
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct JobUpdateParams {
    pub namespace: String,
    pub name: String,
    /// The write applies only if the stored version equals this.
    pub expected_version: i64,
    pub spec: JobSpec,
    /// What becomes of the job's next due time.
    pub next_fire_at: NextFire,
    /// As for [`JobCreateParams::calendars`].
    pub calendars: Vec<CalendarVersion>,
    pub actor: String,
    pub now: Option<Timestamp>,
}

/// A calendar's name (in the job's namespace) and the version a plan used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarVersion {
    pub name: String,
    pub version: i64,
}

/// Creates or changes a calendar.
#[derive(Debug, Clone)]
pub struct CalendarPutParams {
    pub spec: kairos_core::calendar::CalendarSpec,
    /// `None`: create it (`CalendarExists` if the name is taken); `Some(v)`: change version
    /// `v` (`CalendarVersionConflict` otherwise).
    pub expected_version: Option<i64>,
    /// The jobs that use the calendar, each re-planned with the new calendar. The write
    /// applies only if these are exactly the jobs that use it when it happens, each still at
    /// its expected version (else `CalendarChanged`, nothing written); each one's version
    /// goes up.
    pub replans: Vec<JobReplan>,
    pub actor: String,
    pub now: Option<Timestamp>,
}

/// A job's new next due time after a calendar it uses changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobReplan {
    pub job_id: JobId,
    pub expected_version: i64,
    /// `Set`: the first due time the new plan allows after `after`; the job's runs created
    /// ahead of their due time (not started) for due times after `after` are withdrawn, since
    /// the plan decides those due times again. `Keep`: nothing moves (a paused job, or a
    /// calendar whose days did not change).
    pub next_fire_at: NextFire,
    pub after: Timestamp,
}

/// Something that happened, for the activity log (the event stream every node serves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRecord {
    pub at: Timestamp,
    /// The node it happened on.
    pub node: String,
    /// `run.finished`, `job.changed`, ...
    pub kind: String,
    pub namespace: Option<String>,
    pub job: Option<String>,
    pub run_id: Option<RunId>,
    /// The whole event, as JSON.
    pub data: String,
}

/// A position in the activity log: the batch an entry was appended in (`id`) and its place in
/// it (`seq`); `tx` is 0 (kept for a store that orders batches by more than an id). Entries
/// are read in cursor order, and an entry never appears behind a cursor already read past:
/// batches are committed in the order of their ids (SQLite has one writer; PostgreSQL
/// appends under an advisory lock taken before the id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActivityCursor {
    pub tx: i64,
    pub id: i64,
    pub seq: i64,
}

/// An entry of the activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityEntry {
    pub cursor: ActivityCursor,
    pub record: ActivityRecord,
}

#[derive(Debug, Clone, Copy)]
pub struct ActivityPruneParams {
    /// Batches whose last entry is from before this.
    pub before: Timestamp,
    /// Most batches kept (the newest).
    pub keep_at_most: u64,
    /// Keep this batch and those after it, whatever their age (a reader's position that must
    /// stay known: the alert evaluator's); `keep_at_most` still applies.
    pub keep_from: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ActivityReadParams {
    /// Entries after this position.
    pub after: ActivityCursor,
    /// Most entries returned.
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct CalendarGetParams {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct CalendarListParams {
    /// Only these namespaces; `None`: all.
    pub namespaces: Option<Vec<String>>,
    /// Only these names; `None`: all.
    pub names: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct CalendarDeleteParams {
    pub namespace: String,
    pub name: String,
    pub expected_version: Option<i64>,
    pub actor: String,
    pub now: Option<Timestamp>,
}

/// What an update does with the job's `next_fire_at`. Decided by the store inside the update's
/// transaction, so that a fire committed between the caller's read and the update is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextFire {
    /// Leave it as stored (the schedule did not change): a due time fired meanwhile is not
    /// rewound.
    Keep,
    /// Set it (a new schedule, or a resume through the update).
    Set(Option<Timestamp>),
}

#[derive(Debug, Clone)]
pub struct JobDeleteParams {
    pub namespace: String,
    pub name: String,
    pub expected_version: Option<i64>,
    /// Delete it even if other jobs run after it (their `after` triggers then name a job that
    /// does not exist, and fire no more until one of that name exists again).
    pub force: bool,
    pub actor: String,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct JobDueParams {
    /// Jobs whose `next_fire_at` is at or before this instant.
    pub before: Timestamp,
    pub limit: u32,
}

/// A run to create with a fire.
#[derive(Debug, Clone)]
pub struct RunInsert {
    pub scheduled_for: Timestamp,
    pub run_at: Timestamp,
    pub origin: RunOrigin,
    /// `Some`: created as `skipped` with this reason; `None`: created `queued`.
    pub skip: Option<SkipReason>,
    pub exclusive: bool,
    pub max_attempts: u32,
    pub execution: ExecutionMode,
    /// The event the run is for: its key is `(job_id, event.id)` instead of `(job_id,
    /// scheduled_for)`, so two events at one instant are two runs and one event twice is one.
    pub event: Option<std::sync::Arc<RunEvent>>,
}

#[derive(Debug, Clone)]
pub struct JobFireParams {
    pub job_id: JobId,
    /// The job version the round was planned with (its triggers and calendars): with `Some`,
    /// the round applies only if the job is still at it. The scheduler always sets it.
    pub expected_version: Option<i64>,
    /// Fence: the fire applies only if the job's `next_fire_at` still equals this.
    pub expected_next_fire_at: Timestamp,
    /// Runs to create; an existing `(job_id, scheduled_for)` is left alone (exactly once).
    pub runs: Vec<RunInsert>,
    /// Cancel the job's active runs first (`overlap: replace`), except the runs for the due
    /// times this round starts (its `runs` without `skip`): a fire that repeats a due time
    /// leaves that due time's run alone, as it leaves its key alone, since nothing could
    /// replace it.
    pub cancel_active: bool,
    /// Fence for the overlap decision: the fire applies only if the job has at most this many
    /// unfinished runs (scheduled, queued, running) once the fire holds the job, so a run
    /// triggered on another node meanwhile is counted (`None`: no such fence, for policies
    /// whose decision does not depend on the count).
    pub max_active: Option<u64>,
    pub next_fire_at: Option<Timestamp>,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFireResult {
    /// False when the fence did not hold (the job changed or was fired already): nothing written.
    pub applied: bool,
    /// Runs actually created, with their due times (duplicates of existing due times are not).
    pub inserted: Vec<(RunId, Timestamp)>,
}

#[derive(Debug, Clone)]
pub struct JobSetPausedParams {
    pub namespace: String,
    pub name: String,
    pub paused: bool,
    /// With `Some`, the write applies only at this version (`VersionConflict` otherwise): a
    /// resume's `next_fire_at` was planned with it.
    pub expected_version: Option<i64>,
    /// On resume, the next due time after now (a resume does not replay the pause).
    pub next_fire_at: Option<Timestamp>,
    pub actor: String,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct RunInsertParams {
    pub job_id: JobId,
    /// The job's version the run's fields (exclusive, attempts, execution) were decided on:
    /// at another version nothing is written and the result is `VersionConflict`. `None`: any.
    pub expected_version: Option<i64>,
    pub run: RunInsert,
    /// A JSON object for the run's tasks (`KAIROS_PARAMS`); only when the run is created.
    pub params: Option<String>,
    /// Who asked for the run (trigger-now; audited when a run is created).
    pub actor: String,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct RunInsertManyParams {
    pub job_id: JobId,
    /// Runs to create in one transaction; existing `(job_id, scheduled_for)` keys are left alone.
    pub runs: Vec<RunInsert>,
    pub now: Option<Timestamp>,
}

/// What a running attempt reports: each field given replaces the stored one.
#[derive(Debug, Clone)]
pub struct RunReportParams {
    pub run_id: RunId,
    /// Fence: the attempt still holds the run.
    pub lease_token: String,
    pub progress: Option<f64>,
    pub message: Option<String>,
    /// JSON text.
    pub checkpoint: Option<String>,
    pub now: Option<Timestamp>,
}

/// Reads the jobs an event may be for.
#[derive(Debug, Clone)]
pub struct EventTargetsParams {
    pub topic: String,
    /// The event's id: each job's run for it, if it has one, is read too.
    pub event_id: String,
    /// Only jobs in these namespaces (a token's scope, or the namespace asked for); `None`: all.
    pub namespaces: Option<Vec<String>>,
}

/// A job subscribed to an event's topic, as the event's round sees it.
#[derive(Debug, Clone)]
pub struct EventTarget {
    pub job: Job,
    /// The run the job already has for the event, if any.
    pub existing: Option<Run>,
    /// The job's unfinished top-level runs (scheduled, queued, running).
    pub active: u64,
}

/// One job's run for an event.
#[derive(Debug, Clone)]
pub struct EventFireParams {
    pub job_id: JobId,
    /// Fence: the job is unchanged since its decision was made (and not paused).
    pub expected_version: i64,
    /// The run, with its event (`run.event` is set).
    pub run: RunInsert,
    /// Cancel the job's active runs first (`overlap: replace`).
    pub cancel_active: bool,
    /// Fence for the overlap decision, as in [`JobFireParams::max_active`].
    pub max_active: Option<u64>,
    pub now: Option<Timestamp>,
}

/// A backfill: runs for past (or future) due times of a job, created `scheduled` (held) and
/// released to the queue by the scheduler as the job's overlap policy allows.
#[derive(Debug, Clone)]
pub struct RunBackfillParams {
    pub job_id: JobId,
    /// The job's version the due times and the runs' fields were decided on: at another
    /// version nothing is written and the result is `VersionConflict`. `None`: any.
    pub expected_version: Option<i64>,
    /// The range's due times; those that have a run already are left alone.
    pub due_times: Vec<Timestamp>,
    pub max_attempts: u32,
    pub execution: ExecutionMode,
    /// Only tell which due times have a run already; write nothing.
    pub dry_run: bool,
    /// Who asked (audited when runs are created).
    pub actor: String,
    pub now: Option<Timestamp>,
}

/// One due time of a backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillRun {
    pub scheduled_for: Timestamp,
    /// The run created; `None` on a dry run.
    pub run_id: Option<RunId>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunBackfillResult {
    /// Due times that got a run (or would, on a dry run), earliest first.
    pub created: Vec<BackfillRun>,
    /// Due times that had a run already, earliest first.
    pub existing: Vec<Timestamp>,
}

/// A job with held (`scheduled`) runs, and how many of its runs are queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldRuns {
    pub job_id: JobId,
    pub held: u64,
    pub active: u64,
}

/// Releases held runs of a job to the queue, earliest due time first, if the job still has
/// `expected_active` runs queued or running (the fence of the overlap decision).
#[derive(Debug, Clone)]
pub struct RunReleaseParams {
    pub job_id: JobId,
    pub count: u32,
    pub expected_active: u64,
    pub now: Option<Timestamp>,
}

/// Starts a claimed workflow run: records the document it runs (`spec`, the job as claimed),
/// creates one step run per step (`scheduled`) and queues those whose rule holds (the roots),
/// and drops the run's lease (a workflow run is not executed by a worker: its steps are). Fenced
/// by the lease token.
#[derive(Debug, Clone)]
pub struct WorkflowStartParams {
    pub run_id: RunId,
    pub lease_token: String,
    pub spec: JobSpec,
    pub now: Option<Timestamp>,
}

/// A user's action on a workflow run's steps (see [`Store::workflow_control`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepControl {
    /// End a step that has not started as `skipped`.
    Skip(String),
    /// End a step that is not running as `succeeded`; the steps below it that did not run
    /// because of it decide again.
    MarkSucceeded(String),
    /// Run a step and everything downstream of it again.
    Rerun(String),
    /// Run the failed and upstream failed steps (and the skipped ones below them) again.
    RerunFailed,
}

impl StepControl {
    pub fn audit_action(&self) -> AuditAction {
        match self {
            StepControl::Skip(_) => AuditAction::RunSkipStep,
            StepControl::MarkSucceeded(_) => AuditAction::RunMarkStepSucceeded,
            StepControl::Rerun(_) => AuditAction::RunRerunStep,
            StepControl::RerunFailed => AuditAction::RunRerunFailed,
        }
    }

    /// The step it names, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            StepControl::Skip(s) | StepControl::MarkSucceeded(s) | StepControl::Rerun(s) => Some(s),
            StepControl::RerunFailed => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkflowControlParams {
    /// The workflow run.
    pub run_id: RunId,
    pub action: StepControl,
    pub actor: String,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct RunStepResultsParams {
    /// The workflow run.
    pub run_id: RunId,
    /// The steps whose results are read.
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct RunStepsParams {
    /// The workflow run.
    pub run_id: RunId,
}

#[derive(Debug, Clone)]
pub struct RunClaimParams {
    pub node: String,
    pub limit: u32,
    pub lease: SignedDuration,
    /// Also claim runs due up to this long after now (the worker waits for their `run_at`
    /// itself). Zero: only runs that are due.
    pub ahead: SignedDuration,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct RunNextAtParams {
    /// Also report the earliest `run_at` strictly after this instant (a worker passes the
    /// horizon of its last claim: what lies beyond it is what it should wake up for).
    pub after: Timestamp,
}

/// When queued runs are due to start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NextQueued {
    /// The earliest `run_at` of any queued run.
    pub earliest: Option<Timestamp>,
    /// The earliest `run_at` of a queued run strictly after [`RunNextAtParams::after`].
    pub earliest_after: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct RunBeginParams {
    pub run_id: RunId,
    pub lease_token: String,
}

#[derive(Debug, Clone)]
pub struct RunHeartbeatParams {
    /// `(run, lease token)` pairs held by this worker.
    pub leases: Vec<(RunId, String)>,
    pub lease: SignedDuration,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResult {
    pub run_id: RunId,
    /// False when the lease was lost (expired and rescued, or the run was deleted).
    pub held: bool,
    /// Someone asked to cancel the run.
    pub cancel_requested: bool,
}

/// A job copied from another store (`kairos store copy`): its version, state and times kept.
#[derive(Debug, Clone)]
pub struct JobImportParams {
    pub job: Job,
    pub actor: String,
    pub now: Option<Timestamp>,
}

/// Runs of one job copied from another store, with their attempts. A run that was `running` in
/// the source (its node is gone) arrives as [`imported_run`] settles it; leases are not copied.
#[derive(Debug, Clone)]
pub struct RunImportParams {
    /// The job in this store.
    pub job_id: JobId,
    pub runs: Vec<(Run, Vec<Attempt>)>,
    /// The copy's time: when the runs that were running and end now ended.
    pub now: Timestamp,
}

/// What a copy records of a run: its state, attempt count, reason, start, end and node, and
/// the attempt it ends with when it was lost at the copy.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedRun {
    pub state: RunState,
    pub attempt: u32,
    pub reason: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub node: Option<String>,
    /// The record of the attempt that was running, `lost` (as a rescue records it).
    pub lost: Option<Attempt>,
}

/// The reason a run that was running in the copied store ended with.
pub const IMPORTED_RUNNING: &str = "copied from another store while running: its node was gone";

/// What a copy records of `run`, with `recorded` attempts copied beside it, at `now`. A run that
/// was `running` (its node is gone, its lease not copied) is settled by the rescue rule
/// (`kairos_core::lease::rescue_decision`), as if its lease had expired at `now`: one asked to
/// stop ends `cancelled` and an `at_most_once` one that began ends `lost` (it never runs
/// twice), each with its attempt recorded `lost`; any other goes back to `queued` without the
/// attempt it was in, as does one that never started (an `at_most_once` run whose attempt had
/// not begun, another claimed ahead of a due time still to come). Unlike a rescue, a copy does
/// not start the runs of the jobs that run after a run it ends; and a workflow run is settled
/// as one run (its steps are not copied). Other runs arrive as they were.
pub fn imported_run(run: &Run, recorded: u32, now: Timestamp) -> ImportedRun {
    use kairos_core::lease::{ExpiredRun, RescueDecision, never_started, rescue_decision};
    if run.state != RunState::Running {
        return ImportedRun {
            state: run.state,
            attempt: run.attempt,
            reason: run.reason.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            node: run.node.clone(),
            lost: None,
        };
    }
    let decision = rescue_decision(&ExpiredRun {
        attempt: run.attempt,
        max_attempts: run.max_attempts,
        execution: run.execution,
        cancel_requested: run.cancel_requested,
        never_started: never_started(run.execution, run.begun, run.started_at, now),
    });
    // An ended run's attempt that was running is recorded `lost`, as a rescue records it.
    let ended = |state| ImportedRun {
        state,
        attempt: run.attempt.max(recorded),
        reason: Some(IMPORTED_RUNNING.to_owned()),
        started_at: run.started_at,
        finished_at: Some(now),
        node: run.node.clone(),
        lost: Some(Attempt {
            run_id: run.id,
            attempt: run.attempt,
            node: run.node.clone().unwrap_or_default(),
            started_at: run.started_at.unwrap_or(now),
            finished_at: now,
            status: "lost".into(),
            exit_code: None,
            http_status: None,
            error: Some(IMPORTED_RUNNING.to_owned()),
            output: String::new(),
            output_truncated: false,
            max_rss_kib: None,
            user_cpu_us: None,
            sys_cpu_us: None,
        }),
    };
    match decision {
        RescueDecision::Release | RescueDecision::Requeue => ImportedRun {
            state: RunState::Queued,
            attempt: recorded,
            reason: run.reason.clone(),
            // The start of a first attempt that never ran is no start.
            started_at: run.started_at.filter(|_| recorded > 0),
            finished_at: None,
            node: None,
            lost: None,
        },
        RescueDecision::Lost => ended(RunState::Lost),
        RescueDecision::Cancelled => ended(RunState::Cancelled),
    }
}

/// Runs waiting and running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub queued: u64,
    pub running: u64,
}

/// What follows a finished attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunNext {
    /// The run ends in this terminal state.
    Finish(RunState),
    /// Back to `queued` for another attempt at `run_at`.
    Retry { run_at: Timestamp },
    /// Back to `queued` without counting the attempt (graceful shutdown gave it up).
    Release,
}

#[derive(Debug, Clone)]
pub struct RunFinishParams {
    pub run_id: RunId,
    /// The workflow run of a step run (the claimed run's `parent_id`): settled in the same
    /// transaction when the step ends.
    pub parent_id: Option<RunId>,
    pub lease_token: String,
    /// The attempt being recorded: the claimed run's `attempt`. The lease token fences it, so
    /// the store records it as given instead of reading it back.
    pub attempt: u32,
    pub node: String,
    pub started_at: Timestamp,
    pub outcome: AttemptOutcome,
    pub next: RunNext,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct RunRescueParams {
    pub limit: u32,
    /// Also rescue runs held by this node whatever their lease says: a node that starts knows
    /// that nothing it held before is still running.
    pub orphaned_node: Option<String>,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Requeued as a new attempt (`at_least_once`).
    pub requeued: Vec<RunId>,
    /// Marked `lost` (`at_most_once`).
    pub lost: Vec<RunId>,
}

#[derive(Debug, Clone)]
pub struct RunCancelParams {
    pub run_id: RunId,
    pub actor: String,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
pub struct RunListParams {
    pub job_id: Option<JobId>,
    /// Only runs of jobs in these namespaces (a token's scope); `None`: all.
    pub namespaces: Option<Vec<String>>,
    pub state: Option<RunState>,
    /// Most runs returned, newest first.
    pub limit: u32,
    /// Only runs with an id below this (paging).
    pub before_id: Option<RunId>,
}

/// The last ended runs of each job: a summary for lists (last outcome, success rate).
#[derive(Debug, Clone, Default)]
pub struct RunRecentParams {
    /// Only jobs in these namespaces (a token's scope); `None`: all.
    pub namespaces: Option<Vec<String>>,
    /// Only this job.
    pub job_id: Option<JobId>,
    /// Most runs per job.
    pub per_job: u32,
}

/// A job's top-level runs that have not ended (`scheduled`, `queued`, `running`), as
/// [`Store::run_active_brief`] lists them: the facts a deadline needs, without the run's
/// documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRun {
    pub run_id: RunId,
    pub state: RunState,
    pub origin: RunOrigin,
    pub scheduled_for: Timestamp,
    pub started_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct RunActiveBriefParams {
    pub job_id: JobId,
    /// Most runs returned, the earliest due first.
    pub limit: u32,
}

/// An ended top-level run, as [`Store::run_recent`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentRun {
    pub job_id: JobId,
    pub run_id: RunId,
    pub state: RunState,
    pub scheduled_for: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct TokenCreateParams {
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    /// SHA-256 of the secret, lowercase hex. Unique.
    pub hash: String,
    pub expires_at: Option<Timestamp>,
    pub actor: String,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
pub struct TokenListParams {
    /// Also list revoked tokens.
    pub include_revoked: bool,
}

#[derive(Debug, Clone)]
pub struct TokenRevokeParams {
    /// The token's id (the one read and checked, not whichever holds its name now).
    pub id: i64,
    pub actor: String,
    pub now: Option<Timestamp>,
}

#[derive(Clone)]
pub struct TokenAuthenticateParams {
    /// SHA-256 of the presented secret, lowercase hex.
    pub hash: String,
    pub now: Option<Timestamp>,
}

/// Shows no hash.
impl std::fmt::Debug for TokenAuthenticateParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthenticateParams")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// An alert to deliver to one channel.
#[derive(Debug, Clone)]
pub struct AlertInsert {
    /// Unique: an alert with a key that exists is not queued again (`run:42:failure:ops`).
    pub key: String,
    /// What raised it: `failure`, `failures`, `timeout`, `lost`, `recovery`, `skipped`,
    /// `no_success`, `sla_start`, `sla_finish`.
    pub alert: String,
    /// The channel's name (from the server's configuration).
    pub channel: String,
    pub namespace: String,
    pub job: String,
    pub run_id: Option<RunId>,
    /// The alert's document (JSON), which channels render.
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct AlertEnqueueParams {
    pub alerts: Vec<AlertInsert>,
    pub now: Option<Timestamp>,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its (next) attempt, at `next_attempt_at`.
    Pending,
    /// A node is sending it (it holds the lease).
    Sending,
    Delivered,
    /// Given up after its last attempt.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sending => "sending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending" => DeliveryState::Pending,
            "sending" => DeliveryState::Sending,
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            other => {
                return Err(format!(
                    "`{other}` is not a delivery state: pending, sending, delivered or failed"
                ));
            }
        })
    }
}

/// An alert and its delivery to one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertDelivery {
    pub id: i64,
    pub key: String,
    pub alert: String,
    pub channel: String,
    pub namespace: String,
    pub job: String,
    pub run_id: Option<RunId>,
    pub payload: String,
    pub state: DeliveryState,
    /// Attempts started so far.
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// The last attempt's HTTP status (webhook and Slack channels).
    pub last_status: Option<u16>,
    pub created_at: Timestamp,
    /// When it ended: delivered, or given up (`failed`).
    pub delivered_at: Option<Timestamp>,
    /// The node holding it while `sending`.
    pub node: Option<String>,
    /// The token of the claim holding it while `sending` (fences its finish).
    pub lease_token: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct AlertClaimParams {
    pub node: String,
    /// Only deliveries to this channel; `None`: to any channel.
    pub channel: Option<String>,
    /// Most deliveries claimed.
    pub limit: u32,
    /// How long the claim holds them; a delivery whose lease expired (its node died mid-send)
    /// is claimed again.
    pub lease: SignedDuration,
    pub now: Option<Timestamp>,
}

/// How one attempt of a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOutcome {
    Delivered {
        status: Option<u16>,
    },
    /// Try again at `at`.
    Retry {
        at: Timestamp,
        error: String,
        status: Option<u16>,
    },
    /// Give up.
    Failed {
        error: String,
        status: Option<u16>,
    },
    /// Handed back unsent, due again at `at`: the claim's attempt is not charged (`attempts`
    /// goes back down by one), and the last attempt's error and status are kept.
    Release {
        at: Timestamp,
    },
}

#[derive(Debug, Clone)]
pub struct AlertFinishParams {
    pub id: i64,
    /// Fences the write: it applies only while this claim holds the delivery.
    pub lease_token: String,
    pub outcome: AlertOutcome,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
pub struct AlertListParams {
    /// Only deliveries of jobs in these namespaces (a token's scope); `None`: all.
    pub namespaces: Option<Vec<String>>,
    /// Only this job (`namespace`, `name`).
    pub job: Option<(String, String)>,
    pub state: Option<DeliveryState>,
    /// Most returned, newest first (0: 100).
    pub limit: u32,
    /// Only ids below this (paging).
    pub before_id: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct AlertPruneParams {
    /// Deliveries that ended (delivered or failed) before this are deleted.
    pub before: Timestamp,
}

#[derive(Debug, Clone)]
pub struct AlertCursorParams {
    /// The write applies only if the stored position is this (`None`: none stored yet).
    pub expected: Option<ActivityCursor>,
    pub to: ActivityCursor,
}

/// A web UI session: a random id, of which the store keeps only the hash, that stands for a
/// token until it expires, is signed out, or the token is revoked or expires.
#[derive(Clone)]
pub struct SessionCreateParams {
    /// SHA-256 of the session id, lowercase hex.
    pub id_hash: String,
    /// SHA-256 of the token's secret: the session is created only while that token works.
    pub token_hash: String,
    pub expires_at: Timestamp,
    pub now: Option<Timestamp>,
}

/// Shows no hash.
impl std::fmt::Debug for SessionCreateParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCreateParams")
            .field("expires_at", &self.expires_at)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct SessionParams {
    /// SHA-256 of the session id, lowercase hex.
    pub id_hash: String,
    pub now: Option<Timestamp>,
}

/// Shows no hash.
impl std::fmt::Debug for SessionParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionParams")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuditListParams {
    /// Only entries of these namespaces; `None`: all.
    pub namespaces: Option<Vec<String>>,
    /// Also entries without a namespace (token changes).
    pub include_global: bool,
    /// Most entries returned, newest first.
    pub limit: u32,
    /// Only entries with an id below this (paging).
    pub before_id: Option<i64>,
}

/// The seam between Kairos and its database. Object safe: used as `Arc<dyn Store>`.
///
/// # Concurrency: every write is fenced
///
/// Many callers write at once: API handlers, the scheduler, workers, the rescuer, on one node or
/// on many nodes sharing a database. A backend keeps them correct with one rule:
///
/// - **Every mutation carries its fence in its `WHERE` clause** and applies only if the fence
///   still holds when it runs: a job's `version` (update, delete, pause, resume), the job's
///   `next_fire_at` (fire), a run's lease token and state (heartbeat, finish, rescue), a lease's
///   expiry (rescue, leader election), a leader's node id and term (renew, resign). Where the
///   backend must read a row to decide what to write, it reads it under the same fence (a row
///   lock taken before the read, or a single writer), and writes with the fence again.
/// - **Every mutation reports whether it applied**: `applied`, `held`, a `bool`, the rows it
///   moved, the leader after the attempt, or a typed error that changed nothing
///   (`VersionConflict` with the expected and actual versions, `JobGone`, …). A write that lost
///   its fence is never an `Internal` error, never partly applied, and never silent.
/// - **No read-then-write by id without a fence**: reading a row and then writing it back by id
///   alone lets a concurrent writer's change be overwritten. Exactly-once per due time never
///   depends on a fence alone either: the unique `(job_id, scheduled_for)` key backs it.
///
/// # Time
///
/// `now: None` means the store's clock: the database's clock for a shared store, so that nodes
/// whose clocks disagree still date leases, terms and due times alike; `now: Some` is a manual
/// clock in tests. The conformance suite ([`crate::conformance`]) checks all of this on every
/// backend, with concurrent cases on separate connections.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a job at version 1 (audited). `JobExists` if the name is taken in the namespace;
    /// `Invalid` (nothing written) if an `after` trigger names a job that does not exist in
    /// the namespace or closes a cycle (see [`crate::dependency::check`]; checked under a lock
    /// on the namespace's dependencies, so that two writes cannot close one together).
    async fn job_create(&self, p: JobCreateParams) -> StoreResult<Job>;
    async fn job_get(&self, p: JobGetParams) -> StoreResult<Option<Job>>;
    async fn job_get_by_id(&self, p: JobGetByIdParams) -> StoreResult<Option<Job>>;
    /// Jobs ordered by namespace and name.
    async fn job_list(&self, p: JobListParams) -> StoreResult<Vec<Job>>;
    /// Full replace (audited), fenced by version; `VersionConflict` changes nothing. When the
    /// update changes the triggers, moves `next_fire_at` or pauses the job, runs created ahead
    /// of their due time (scheduled, not started, due after now; queued or claimed) are
    /// deleted: the new schedule decides those due times again. `Invalid` as for
    /// [`Store::job_create`]; `HasDependents` for a rename of a job others run after.
    async fn job_update(&self, p: JobUpdateParams) -> StoreResult<Job>;
    /// Deletes the job and its runs (audited). `HasDependents` (nothing changed) if other jobs
    /// of its namespace run after it, unless `force`.
    async fn job_delete(&self, p: JobDeleteParams) -> StoreResult<()>;
    /// Pauses or resumes (audited); increments the version. Pausing leaves queued runs that are
    /// due alone, but deletes those created ahead of their due time (scheduled, not started,
    /// due after now; queued or claimed): a pause stops every due time that has not come yet.
    async fn job_set_paused(&self, p: JobSetPausedParams) -> StoreResult<Job>;
    /// Unpaused jobs due at or before `before`, earliest first (reads the `next_fire_at` index).
    async fn job_due(&self, p: JobDueParams) -> StoreResult<Vec<Job>>;
    /// The earliest `next_fire_at` of any unpaused job.
    async fn job_next_fire_at(&self) -> StoreResult<Option<Timestamp>>;
    /// Creates the runs of one scheduling round and advances `next_fire_at`, in one transaction.
    async fn job_fire(&self, p: JobFireParams) -> StoreResult<JobFireResult>;
    /// `job_fire` for many jobs in one transaction (each fenced on its own).
    async fn job_fire_many(&self, ps: &[JobFireParams]) -> StoreResult<Vec<JobFireResult>>;

    /// Unpaused jobs subscribed to `p.topic` (through the index of topics the stores keep from
    /// each job's `event` triggers), in job id order, each with its run for `p.event_id` and
    /// its count of active runs. Filters and bounds are the caller's to apply.
    async fn event_targets(&self, p: EventTargetsParams) -> StoreResult<Vec<EventTarget>>;
    /// Creates the runs of one event (one per job) in one transaction, each fenced on its own:
    /// the job still has `expected_version` and is not paused, has no run for the event yet
    /// and, with `max_active`, no more active runs than that; then `overlap: replace` cancels
    /// the job's active runs and the run goes in. Each element is the run created, or `None`
    /// when its fence did not hold (nothing written for that job).
    async fn event_fire_many(&self, ps: &[EventFireParams]) -> StoreResult<Vec<Option<RunId>>>;
    /// Creates one run (trigger-now; audited when created). An existing `(job_id,
    /// scheduled_for)` returns that run. `JobGone` when the job was deleted, and
    /// `VersionConflict` (nothing written) when it is no longer at `p.expected_version`.
    async fn run_insert(&self, p: RunInsertParams) -> StoreResult<Run>;
    /// Creates many runs of one job in one transaction (bulk enqueue). Returns the ids of the
    /// runs created; due times that already had a run are skipped.
    async fn run_insert_many(&self, p: RunInsertManyParams) -> StoreResult<Vec<RunId>>;
    /// Creates a backfill's runs, held as `scheduled`, for the due times that have no run yet
    /// (or, on a dry run, only tells which have one); audited once when runs are created.
    /// `JobGone` when the job was deleted.
    async fn run_backfill(&self, p: RunBackfillParams) -> StoreResult<RunBackfillResult>;
    /// Jobs that have held (`scheduled`) runs, with their queued and running counts.
    async fn run_held(&self) -> StoreResult<Vec<HeldRuns>>;
    /// Moves up to `count` held runs of a job to `queued` (earliest due time first, `run_at`
    /// now), fenced by the job's count of queued and running runs: nothing when it is no
    /// longer `expected_active`. The runs released.
    async fn run_release(&self, p: RunReleaseParams) -> StoreResult<Vec<RunId>>;
    /// Runs of the job that are not finished (`scheduled`, `queued`, `running`).
    async fn run_active_count(&self, p: RunActiveCountParams) -> StoreResult<u64>;
    /// `run_active_count` for many jobs in one read; jobs without active runs are absent.
    async fn run_active_counts(&self, p: RunActiveCountsParams) -> StoreResult<Vec<(JobId, u64)>>;
    /// The earliest `run_at` of a queued run, and the earliest after `p.after` (when a worker
    /// should look next: a queued run at or before its last claim's horizon that it did not get
    /// is waiting for something else, such as the run before it).
    async fn run_next_at(&self, p: RunNextAtParams) -> StoreResult<NextQueued>;
    /// Claims up to `limit` queued runs whose `run_at` has come, earliest first, each with a new
    /// lease; counts a new attempt.
    async fn run_claim(&self, p: RunClaimParams) -> StoreResult<Vec<ClaimedRun>>;
    /// Records what a running attempt reports (progress, message, checkpoint; the fields
    /// given), fenced by its lease token. False: the lease was lost, nothing written.
    async fn run_report(&self, p: RunReportParams) -> StoreResult<bool>;
    /// Records that the attempt a run is claimed for begins, fenced by its lease token: the
    /// worker calls it before an `at_most_once` task starts (a claim leaves such a run not
    /// begun), so that a rescue tells a run whose node died before it began (put back, nothing
    /// ran) from one that may have run (`lost`). False: the lease was lost, nothing written.
    async fn run_begin(&self, p: RunBeginParams) -> StoreResult<bool>;
    /// Extends leases still held; reports lost leases and cancel requests.
    async fn run_heartbeat(&self, p: RunHeartbeatParams) -> StoreResult<Vec<HeartbeatResult>>;
    /// Records the attempt and moves the run on, fenced by the lease token. False: the lease was
    /// lost and nothing was written.
    async fn run_finish(&self, p: RunFinishParams) -> StoreResult<bool>;
    /// `run_finish` for many attempts in one transaction (a worker's batched completions). Takes
    /// a slice, not a params struct: the caller keeps the batch to retry it after an error.
    /// Each element reports whether that attempt's lease still held.
    async fn run_finish_many(&self, ps: &[RunFinishParams]) -> StoreResult<Vec<bool>>;
    /// Runs whose lease expired: requeued (`at_least_once`) or `lost` (`at_most_once`). A run
    /// that has already used `max_attempts + 2` attempts is `lost` too, so a task that keeps
    /// killing its worker does not loop forever.
    async fn run_rescue(&self, p: RunRescueParams) -> StoreResult<RescueReport>;
    /// Starts a claimed workflow run (see [`WorkflowStartParams`]). False: the lease was lost
    /// and nothing was written.
    ///
    /// From then on the backend keeps the workflow run moving in the transactions that change
    /// its steps: whenever a step run ends (finish, rescue, cancel), the same transaction reads
    /// the run's steps under a lock of the workflow run's row (taken before the step's own row,
    /// by every writer, so that two steps ending at once cannot both miss the other) and applies
    /// [`crate::workflow::settle`]: it queues the steps whose rule now holds, ends those whose
    /// rule cannot, and ends the workflow run with its last step.
    async fn workflow_start(&self, p: WorkflowStartParams) -> StoreResult<bool>;
    /// The step runs of a workflow run, in step order (empty for a plain run).
    async fn run_steps(&self, p: RunStepsParams) -> StoreResult<Vec<Run>>;
    /// Applies a user's action to a workflow run's steps (audited), under the same lock as a
    /// step's end, then settles the run: a run that had ended runs again when steps are set
    /// back. `RunNotFound`; `StepNotFound`; `WorkflowConflict` (nothing changed) when the run
    /// is not a started workflow run, is being cancelled, or the steps' states do not allow the
    /// action. Returns the workflow run after the change.
    async fn workflow_control(&self, p: WorkflowControlParams) -> StoreResult<Run>;
    /// The results (JSON text, `None` when none was recorded) of the named steps of a workflow
    /// run, by step name; unknown names are absent.
    async fn run_step_results(
        &self,
        p: RunStepResultsParams,
    ) -> StoreResult<Vec<(String, Option<String>)>>;
    /// The job document a workflow run started with (`None`: not a workflow run, or not
    /// started yet).
    async fn run_document(&self, p: RunStepsParams) -> StoreResult<Option<JobSpec>>;
    /// Cancels a queued run at once; asks the worker of a running run to stop it (audited).
    /// Cancelling a workflow run cancels its steps that have not started, asks its running
    /// steps to stop, and ends it `cancelled` with its last running step.
    async fn run_cancel(&self, p: RunCancelParams) -> StoreResult<Run>;
    /// Of `ids`, the runs still running that were asked to stop (a cancel, `overlap:
    /// replace`), in id order. Read only: a worker polls it for the runs it holds, so that a
    /// cancel reaches it within a second even when a change notification was missed.
    async fn run_cancel_requested(&self, ids: &[RunId]) -> StoreResult<Vec<RunId>>;
    async fn run_get(&self, p: RunGetParams) -> StoreResult<Option<Run>>;
    /// Top-level runs (a workflow run's steps are listed by [`Store::run_steps`]).
    async fn run_list(&self, p: RunListParams) -> StoreResult<Vec<Run>>;
    /// For every job (of the namespaces asked), its last `per_job` ended top-level runs, newest
    /// first, jobs in id order; `skipped` runs (a due time not run) are left out. One walk of
    /// the `(job_id, id)` index per job, from the newest run: runs not ended yet (a backlog)
    /// are stepped over, not indexed apart, so that ending a run writes no extra index.
    async fn run_recent(&self, p: RunRecentParams) -> StoreResult<Vec<RecentRun>>;
    /// A job's top-level runs that have not ended, the earliest due first (the most overdue
    /// are never left out for later ones).
    async fn run_active_brief(&self, p: RunActiveBriefParams) -> StoreResult<Vec<ActiveRun>>;
    /// Attempts of a run, oldest first.
    async fn attempt_list(&self, p: AttemptListParams) -> StoreResult<Vec<Attempt>>;
    /// Number of runs per state (reads every run: for reports, not for every scrape).
    async fn run_count_by_state(&self) -> StoreResult<Vec<(RunState, u64)>>;
    /// Runs queued and running, cluster-wide, counted through the partial indexes of queued
    /// runs and of leases (not a scan of the run history): for metrics.
    async fn run_totals(&self) -> StoreResult<RunTotals>;
    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// Copies a job in as it was, under a new id (audited as a creation). `JobExists` if the
    /// name is taken.
    async fn job_import(&self, p: JobImportParams) -> StoreResult<Job>;
    /// Copies runs in, in one transaction; a due time the job already has a run for is skipped.
    /// Returns how many were copied.
    async fn run_import(&self, p: RunImportParams) -> StoreResult<u64>;

    /// Creates a token (audited). `TokenExists` if a token not revoked has the name.
    async fn token_create(&self, p: TokenCreateParams) -> StoreResult<Token>;
    /// Tokens by name (without secrets).
    async fn token_list(&self, p: TokenListParams) -> StoreResult<Vec<Token>>;
    /// Revokes the token with this id if it is not revoked yet (audited); `TokenNotFound`
    /// otherwise.
    async fn token_revoke(&self, p: TokenRevokeParams) -> StoreResult<Token>;
    /// The token with this hash if it is neither revoked nor expired.
    async fn token_authenticate(&self, p: TokenAuthenticateParams) -> StoreResult<Option<Token>>;
    /// Queues alerts, each unless one with its key exists (then `None` in its place): the
    /// id of each queued, `pending` and due at once.
    async fn alert_enqueue(&self, p: AlertEnqueueParams) -> StoreResult<Vec<Option<i64>>>;
    /// Claims deliveries that are due (`pending` with `next_attempt_at` reached, or `sending`
    /// with an expired lease), of `channel` if given, oldest first: each becomes `sending`, held
    /// by `node` with a new lease token, its `attempts` counted. Concurrent claims never return
    /// the same delivery.
    async fn alert_claim(&self, p: AlertClaimParams) -> StoreResult<Vec<AlertDelivery>>;
    /// Records an attempt's end (or, with [`AlertOutcome::Release`], that none was made),
    /// fenced by the claim's lease token: `false` (nothing written) when the claim no longer
    /// holds the delivery.
    async fn alert_finish(&self, p: AlertFinishParams) -> StoreResult<bool>;
    /// Deliveries, newest first.
    async fn alert_list(&self, p: AlertListParams) -> StoreResult<Vec<AlertDelivery>>;
    /// Deletes deliveries that ended before `before`; how many.
    async fn alert_prune(&self, p: AlertPruneParams) -> StoreResult<u64>;
    /// How far the alert evaluator has read the activity log (`None`: not started).
    async fn alert_cursor(&self) -> StoreResult<Option<ActivityCursor>>;
    /// Moves the evaluator's position, fenced on the position it read: `false` when another
    /// evaluator moved it meanwhile.
    async fn alert_cursor_set(&self, p: AlertCursorParams) -> StoreResult<bool>;
    /// Creates a session for the token with `token_hash`, fenced on the token working (neither
    /// revoked nor expired) at `now`: `false` and nothing written otherwise. Sessions that have
    /// expired are deleted on the way.
    async fn session_create(&self, p: SessionCreateParams) -> StoreResult<bool>;
    /// The token of the session with this hash, if the session has not expired and the token
    /// still works.
    async fn session_authenticate(&self, p: SessionParams) -> StoreResult<Option<Token>>;
    /// Ends a session (signing out); `false` when there was none.
    async fn session_delete(&self, p: SessionParams) -> StoreResult<bool>;
    /// Audit entries, newest first.
    async fn audit_list(&self, p: AuditListParams) -> StoreResult<Vec<AuditEntry>>;

    /// Appends entries to the activity log as one batch (one row: a node writes a batch every
    /// few milliseconds, not a row per event), in order.
    async fn activity_append(&self, records: Vec<ActivityRecord>) -> StoreResult<()>;
    /// Entries after a position, in order (see [`ActivityCursor`]).
    async fn activity_read(&self, p: ActivityReadParams) -> StoreResult<Vec<ActivityEntry>>;
    /// The position of now: reading after it yields what is appended from now on (and, on
    /// PostgreSQL, possibly entries of transactions still running now).
    async fn activity_head(&self) -> StoreResult<ActivityCursor>;
    /// Whether the batch of the entry at this position is still kept (not pruned).
    async fn activity_contains(&self, cursor: ActivityCursor) -> StoreResult<bool>;
    /// Deletes the batches from before `p.before`, and the oldest beyond `p.keep_at_most`; how
    /// many batches. The newest batch is always kept: a reader at the end of a log that has been
    /// quiet for longer than the retention (an event stream, the alert evaluator) still holds
    /// a position the log knows.
    async fn activity_prune(&self, p: ActivityPruneParams) -> StoreResult<u64>;

    /// Creates or changes a calendar and re-plans the jobs that use it, in one transaction
    /// (see [`CalendarPutParams`]; audited, with each re-planned job). A backend locks the
    /// calendar's row before the jobs' rows, as job writes that name calendars do.
    async fn calendar_put(&self, p: CalendarPutParams) -> StoreResult<StoredCalendar>;
    async fn calendar_get(&self, p: CalendarGetParams) -> StoreResult<Option<StoredCalendar>>;
    /// Calendars by namespace and name.
    async fn calendar_list(&self, p: CalendarListParams) -> StoreResult<Vec<StoredCalendar>>;
    /// The jobs whose triggers name the calendar, by name (read through the index the stores
    /// keep with each job write).
    async fn calendar_jobs(&self, p: CalendarGetParams) -> StoreResult<Vec<Job>>;
    /// Deletes a calendar (audited). `CalendarInUse` (nothing changed) while a job names it;
    /// `CalendarNotFound`; `CalendarVersionConflict`.
    async fn calendar_delete(&self, p: CalendarDeleteParams) -> StoreResult<()>;

    /// Takes leadership if nobody holds it, its lease expired, or the store knows its holder is
    /// gone (a new term); renews it if `p.node_id` holds it (same term, new expiry). Returns
    /// the leader after the attempt, this node or another.
    async fn leader_elect(&self, p: LeaderElectParams) -> StoreResult<Leader>;
    /// Gives leadership up at once if `p.node_id` holds term `p.term`, so another node can take
    /// it without waiting for the lease. False when it did not hold it.
    async fn leader_resign(&self, p: LeaderResignParams) -> StoreResult<bool>;
    /// The leader row, if any (it may have expired).
    async fn leader_get(&self) -> StoreResult<Option<Leader>>;
    /// Creates or refreshes a node's registry row.
    async fn node_heartbeat(&self, p: NodeHeartbeatParams) -> StoreResult<()>;
    /// Nodes by name, then start.
    async fn node_list(&self) -> StoreResult<Vec<NodeInfo>>;
    /// Removes nodes not heard from within `p.after`; returns their ids.
    async fn node_expire(&self, p: NodeExpireParams) -> StoreResult<Vec<String>>;
    /// Removes a node's row (a node that stops).
    async fn node_leave(&self, p: NodeLeaveParams) -> StoreResult<()>;

    /// Changes made through this store by any node (see [`crate::Change`]), for a store that
    /// several nodes share; `None` for one that only this node uses.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::Change>> {
        None
    }

    /// The store's own clock, now: for a store that several nodes share, whose clock dates
    /// what it stores when called without `now`, and which the nodes set their clocks to (see
    /// `kairos_runtime::AlignedClock`). `None` for a store that only this node uses, whose
    /// instants are the node's.
    async fn clock_now(&self) -> StoreResult<Option<crate::ClockReading>> {
        Ok(None)
    }
}
