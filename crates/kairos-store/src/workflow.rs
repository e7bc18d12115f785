//! What every backend does with a workflow run's steps, as plain decisions on rows: which step
//! runs to create when a workflow run starts, and what to write after one of its steps changed
//! ([`settle`], built on [`kairos_core::workflow::progress`]). The backends read the rows, call
//! these, and apply the result with writes fenced by each row's state.

use kairos_core::run::{RunId, RunState};
use kairos_core::spec::JobSpec;
use kairos_core::workflow::{Dag, RunEnd, StepStatus, Workflow, progress};

use crate::error::{StoreError, StoreResult};

/// One step run as a backend reads it to settle its workflow run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub id: RunId,
    pub step: String,
    pub state: RunState,
}

/// What to write to a workflow run's rows after one of its steps changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settle {
    /// Step runs to move from `scheduled` to `queued` (due now).
    pub release: Vec<RunId>,
    /// Step runs that end without running: the state (`upstream_failed`, `skipped`, or
    /// `cancelled` for a run being cancelled) and why.
    pub decide: Vec<(RunId, RunState, String)>,
    /// The state the workflow run ends in, once no step is left to run.
    pub finish: Option<RunState>,
}

/// One step run to create when a workflow run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInsert {
    pub step: String,
    pub max_attempts: u32,
}

/// The workflow of a job document, from its steps alone (not its triggers, whose time zones
/// depend on the node's tz database): `Internal` if they are not a valid workflow (a workflow
/// run's document was valid when it was stored).
pub fn workflow_of(spec: &JobSpec) -> StoreResult<Workflow> {
    let mut errs = kairos_core::ValidationErrors::default();
    let dag = kairos_core::workflow::validate_steps(&spec.steps, "steps", &mut errs);
    match dag {
        Some(dag) if errs.is_empty() => Ok(Workflow {
            dag,
            max_concurrent_steps: spec
                .max_concurrent_steps
                .unwrap_or(kairos_core::workflow::DEFAULT_MAX_CONCURRENT_STEPS)
                .max(1),
        }),
        _ => Err(StoreError::Internal(format!(
            "the steps of job `{}` are not a valid workflow: {errs}",
            spec.name
        ))),
    }
}

/// Parses a workflow run's stored document (`runs.spec`).
pub fn parse_spec(json: &str) -> StoreResult<JobSpec> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Internal(format!("a workflow run's document does not parse: {e}")))
}

/// The step runs a workflow run starts with, in step order: one per step, each with its own
/// attempt budget (the step's `retry`, else the job's).
pub fn step_inserts(spec: &JobSpec, workflow: &Workflow) -> Vec<StepInsert> {
    let job_attempts = spec.retry.as_ref().map_or(1, |r| r.max_attempts);
    (0..workflow.dag.len())
        .map(|i| StepInsert {
            step: workflow.dag.name(i).to_owned(),
            max_attempts: workflow
                .dag
                .plan(i)
                .retry
                .as_ref()
                .map_or(job_attempts, |r| r.max_attempts),
        })
        .collect()
}

/// A step run's state as the trigger rules see it.
pub fn step_status(state: RunState) -> StepStatus {
    match state {
        RunState::Scheduled => StepStatus::Waiting,
        RunState::Queued | RunState::Running => StepStatus::Active,
        RunState::Succeeded => StepStatus::Succeeded,
        RunState::Skipped => StepStatus::Skipped,
        RunState::UpstreamFailed => StepStatus::UpstreamFailed,
        RunState::Failed | RunState::TimedOut | RunState::Cancelled | RunState::Lost => {
            StepStatus::Failed
        }
    }
}

/// A workflow run's step rows in the DAG's step order, one per step: `Internal` for a row that
/// names no step of the document or a step without a row (Kairos writes neither).
fn by_step<'r>(dag: &Dag, steps: &'r [StepRow]) -> StoreResult<Vec<&'r StepRow>> {
    let mut rows: Vec<Option<&StepRow>> = vec![None; dag.len()];
    for row in steps {
        let i = dag.index_of(&row.step).ok_or_else(|| {
            StoreError::Internal(format!("step run {} names no step of its workflow", row.id))
        })?;
        rows[i] = Some(row);
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| {
                StoreError::Internal(format!(
                    "the workflow run has no step run for step `{}`",
                    dag.name(i)
                ))
            })
        })
        .collect()
}

/// What to write after a step of the workflow run changed: the steps to queue (up to
/// `max_concurrent_steps` active), the steps that end without running, and the run's own end.
/// `cancelling`: the run was asked to cancel (nothing more is queued; it ends `cancelled` with
/// its last active step). A step the document does not know (never written by Kairos) is an
/// `Internal` error.
pub fn settle(workflow: &Workflow, steps: &[StepRow], cancelling: bool) -> StoreResult<Settle> {
    let dag = &workflow.dag;
    let rows = by_step(dag, steps)?;
    let statuses: Vec<StepStatus> = rows.iter().map(|r| step_status(r.state)).collect();
    let id = |i: usize| rows[i].id;
    let p = progress(dag, &statuses, workflow.max_concurrent_steps, cancelling);
    Ok(Settle {
        release: p.release.iter().map(|&i| id(i)).collect(),
        decide: p
            .decide
            .iter()
            .map(|&(i, status)| {
                let rule = dag.rule(i).as_str();
                match status {
                    StepStatus::UpstreamFailed => (
                        id(i),
                        RunState::UpstreamFailed,
                        format!("upstream steps failed (trigger rule `{rule}`)"),
                    ),
                    _ => (
                        id(i),
                        RunState::Skipped,
                        format!("skipped by its trigger rule `{rule}`"),
                    ),
                }
            })
            .chain(p.cancel.iter().map(|&i| {
                (
                    id(i),
                    RunState::Cancelled,
                    "cancelled with its workflow run".to_owned(),
                )
            }))
            .collect(),
        finish: p.finish.map(|end| match end {
            RunEnd::Succeeded => RunState::Succeeded,
            RunEnd::Failed => RunState::Failed,
            RunEnd::Cancelled => RunState::Cancelled,
        }),
    })
}

/// What a user's action writes to a workflow run's steps, each write fenced by the state the
/// step was read in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlWrites {
    /// Steps that end: id, the state read (the fence), the new state (`skipped`,
    /// `succeeded`) and why.
    pub set: Vec<(RunId, RunState, RunState, String)>,
    /// Steps set back to `scheduled` (waiting): id, the state read (the fence), and the
    /// attempts the step may take from now (its budget: `max_attempts` becomes the attempts
    /// used so far plus these).
    pub reset: Vec<(RunId, RunState, u32)>,
}

/// Decides a user's action ([`crate::StepControl`]) on a started workflow run from its
/// document and its steps' rows (`kairos_core::workflow::control`), or refuses it:
/// `StepNotFound` for a step it does not have, `WorkflowConflict` when the steps' states do not
/// allow it. The run's own state (ended, being cancelled) is the caller's to check.
pub fn plan_control(
    run_id: RunId,
    spec: &JobSpec,
    steps: &[StepRow],
    action: &crate::StepControl,
    actor: &str,
) -> StoreResult<ControlWrites> {
    use kairos_core::workflow::{StepAction, control};
    let flow = workflow_of(spec)?;
    let dag = &flow.dag;
    let index = |name: &str| {
        dag.index_of(name).ok_or_else(|| StoreError::StepNotFound {
            run_id,
            step: name.to_owned(),
        })
    };
    let step_action = match action {
        crate::StepControl::Skip(s) => StepAction::Skip(index(s)?),
        crate::StepControl::MarkSucceeded(s) => StepAction::MarkSucceeded(index(s)?),
        crate::StepControl::Rerun(s) => StepAction::Rerun(index(s)?),
        crate::StepControl::RerunFailed => StepAction::RerunFailed,
    };
    let rows = by_step(dag, steps)?;
    let statuses: Vec<StepStatus> = rows.iter().map(|r| step_status(r.state)).collect();
    let running: Vec<bool> = rows.iter().map(|r| r.state == RunState::Running).collect();
    let decided = control(dag, &statuses, &running, step_action)
        .map_err(|message| StoreError::WorkflowConflict { run_id, message })?;
    let budgets = step_inserts(spec, &flow);
    Ok(ControlWrites {
        set: decided
            .set
            .iter()
            .map(|&(i, status)| {
                let (state, why) = match status {
                    StepStatus::Skipped => (RunState::Skipped, "skipped"),
                    _ => (RunState::Succeeded, "marked succeeded"),
                };
                (
                    rows[i].id,
                    rows[i].state,
                    state,
                    format!("{why} by {actor}"),
                )
            })
            .collect(),
        reset: decided
            .reset
            .iter()
            .map(|&i| (rows[i].id, rows[i].state, budgets[i].max_attempts))
            .collect(),
    })
}
