use kairos_core::run::{JobId, RunId};

/// Errors of every store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job `{namespace}/{name}` already exists")]
    JobExists { namespace: String, name: String },
    #[error("job `{namespace}/{name}` not found")]
    JobNotFound { namespace: String, name: String },
    #[error("run {0} not found")]
    RunNotFound(RunId),
    /// The job a write refers to by id was deleted meanwhile (trigger-now racing a delete).
    #[error("job {0} no longer exists")]
    JobGone(JobId),
    #[error(
        "job `{namespace}/{name}` is at version {actual}, not {expected}; reload it and apply the change again"
    )]
    VersionConflict {
        namespace: String,
        name: String,
        expected: i64,
        actual: i64,
    },
    #[error("a token named `{0}` exists already")]
    TokenExists(String),
    #[error("token `{0}` not found")]
    TokenNotFound(String),
    #[error("run {run_id} is {state} and cannot be {action}")]
    InvalidRunState {
        run_id: RunId,
        state: String,
        action: &'static str,
    },
    /// A workflow run has no step of this name.
    #[error("run {run_id} has no step `{step}`")]
    StepNotFound { run_id: RunId, step: String },
    /// A user's action on a workflow run that its state does not allow (nothing changed).
    #[error("run {run_id}: {message}")]
    WorkflowConflict { run_id: RunId, message: String },
    /// A job document the store's own data refuses (an `after` trigger naming a job that does
    /// not exist, or closing a cycle), with the field paths; nothing was written.
    #[error("{0}")]
    Invalid(kairos_core::ValidationErrors),
    /// A job other jobs run after cannot be deleted (unless forced).
    #[error(
        "job `{namespace}/{name}` has jobs that run after it ({}); delete or change them first, or force the delete",
        dependents.join(", ")
    )]
    HasDependents {
        namespace: String,
        name: String,
        dependents: Vec<String>,
    },
    /// An event's jobs kept changing while it was posted; posting it again (same id) is safe.
    #[error(
        "event `{id}`: {jobs} job(s) changed while it was posted, again and again; post it again with the same id (runs already created are not created twice)"
    )]
    EventContended { id: String, jobs: usize },
    #[error("calendar `{namespace}/{name}` not found")]
    CalendarNotFound { namespace: String, name: String },
    #[error("calendar `{namespace}/{name}` already exists")]
    CalendarExists { namespace: String, name: String },
    #[error(
        "calendar `{namespace}/{name}` is at version {actual}, not {expected}; reload it and apply the change again"
    )]
    CalendarVersionConflict {
        namespace: String,
        name: String,
        expected: i64,
        actual: i64,
    },
    /// A calendar that jobs name cannot be deleted.
    #[error(
        "calendar `{namespace}/{name}` is used by job(s) {}; remove it from their triggers first",
        jobs.join(", ")
    )]
    CalendarInUse {
        namespace: String,
        name: String,
        jobs: Vec<String>,
    },
    /// A write planned with a calendar (or with the jobs that use one) that changed meanwhile;
    /// nothing was written, planning again and retrying is safe.
    #[error("calendar `{namespace}/{name}` or the jobs that use it changed meanwhile; try again")]
    CalendarChanged { namespace: String, name: String },
    /// The data directory is held by another node.
    #[error("{0}")]
    Locked(String),
    /// The data could not be read or written (corrupt file, unwritable directory, I/O error).
    #[error("{0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The fence of a write decided on a job's version: `VersionConflict` unless the job (read in
/// the write's transaction, where it cannot change) is at `expected`; `None` accepts any.
pub fn check_version(
    namespace: &str,
    name: &str,
    expected: Option<i64>,
    actual: i64,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != actual => Err(StoreError::VersionConflict {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}
