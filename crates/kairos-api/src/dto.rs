//! What the API sends and accepts.

use jiff::Timestamp;
use kairos_core::run::{RunOrigin, RunState};
use kairos_core::spec::{ExecutionMode, JobSpec};
use kairos_store::{Attempt, Job, Run};
use serde::{Deserialize, Serialize};

/// A stored job: the document as written, with its defaults written out, plus bookkeeping.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobDto {
    #[serde(flatten)]
    pub spec: JobSpec,
    /// Increments on every change; send it back with PUT (or as `If-Match`).
    pub version: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The next due time (`null`: none left, or paused).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_fire_at: Option<Timestamp>,
}

impl From<Job> for JobDto {
    fn from(job: Job) -> Self {
        let next_fire_at = if job.spec.paused {
            None
        } else {
            job.next_fire_at
        };
        Self {
            spec: job.spec.with_defaults(),
            version: job.version,
            created_at: job.created_at,
            updated_at: job.updated_at,
            next_fire_at,
        }
    }
}

/// Fields of a job the server owns; ignored in a PUT body so that a GET can be edited and sent
/// back as it is.
pub const READ_ONLY_FIELDS: [&str; 4] = ["version", "created_at", "updated_at", "next_fire_at"];

/// A run.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunDto {
    pub id: i64,
    pub job: String,
    pub namespace: String,
    pub state: RunState,
    pub origin: RunOrigin,
    #[schema(value_type = String, format = DateTime)]
    pub scheduled_for: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub run_at: Timestamp,
    pub attempt: u32,
    pub max_attempts: u32,
    pub execution: ExecutionMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub cancel_requested: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Present on `GET /runs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptDto>>,
    /// For a step run: its workflow run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<i64>,
    /// For a step run: the step's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The JSON object a manual trigger gave the run (`KAIROS_PARAMS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<serde_json::Value>,
    /// The JSON document the run's task wrote to `KAIROS_RESULT` (its last attempt that wrote
    /// one).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// A workflow run's steps, in step order; present on `GET /runs/{id}` of a workflow run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepDto>>,
    /// The event the run is for (`origin: event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<RunEventDto>,
    /// The run of another job whose end created this one (`origin: dependency`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_run_id: Option<i64>,
    /// What its task last reported while it ran (`KAIROS_CHECKPOINT_FILE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReportDto>,
}

/// What a run's task last reported.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunReportDto {
    /// 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the last report was written.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Whether a checkpoint was reported (a later attempt resumes from it).
    pub has_checkpoint: bool,
    /// The last checkpoint; present on `GET /runs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<serde_json::Value>,
}

/// The event a run is for.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunEventDto {
    pub id: String,
    pub topic: String,
    /// The payload; present on `GET /runs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
}

/// One step of a workflow run. Its attempts and output are those of its run
/// (`GET /runs/{run_id}`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepDto {
    pub step: String,
    /// The steps it waits for, as the run's document has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    pub trigger_rule: kairos_core::workflow::TriggerRule,
    /// The step run's id.
    pub run_id: i64,
    /// `scheduled` while it waits for its upstream steps; `upstream_failed` or `skipped` when
    /// its trigger rule decided without running it.
    pub state: RunState,
    pub attempt: u32,
    pub max_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl StepDto {
    /// A step run, with its dependencies and rule from the workflow run's document.
    pub fn new(r: Run, document: Option<&kairos_core::JobSpec>) -> Self {
        let name = r.step.unwrap_or_default();
        let spec = document.and_then(|d| d.steps.iter().find(|s| s.name == name));
        Self {
            depends_on: spec.map(|s| s.depends_on.clone()).unwrap_or_default(),
            trigger_rule: spec.map(|s| s.trigger_rule).unwrap_or_default(),
            step: name,
            run_id: r.id,
            state: r.state,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            reason: r.reason,
            node: r.node,
            started_at: r.started_at,
            finished_at: r.finished_at,
            exit_code: r.exit_code,
        }
    }
}

impl From<Run> for RunDto {
    fn from(r: Run) -> Self {
        Self {
            id: r.id,
            job: r.job_name,
            namespace: r.namespace,
            state: r.state,
            origin: r.origin,
            scheduled_for: r.scheduled_for,
            run_at: r.run_at,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            execution: r.execution,
            reason: r.reason,
            node: r.node,
            cancel_requested: r.cancel_requested,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            exit_code: r.exit_code,
            attempts: None,
            parent_id: r.parent_id,
            step: r.step,
            params: r
                .params
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
            result: r
                .result
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
            steps: None,
            event: r.event.map(|e| RunEventDto {
                id: e.id,
                topic: e.topic,
                payload: None,
            }),
            upstream_run_id: r.upstream_run_id,
            report: r.report.map(|p| RunReportDto {
                progress: p.progress,
                message: p.message,
                at: p.at,
                has_checkpoint: p.checkpoint.is_some(),
                checkpoint: None,
            }),
        }
    }
}

/// One attempt of a run (its output is at `/runs/{id}/output`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptDto {
    pub attempt: u32,
    pub node: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: Timestamp,
    /// `succeeded`, `exit:N`, `signal:N`, `http:N`, `timeout`, `cancelled`, `error`, `lost`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub output_bytes: usize,
    pub output_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rss_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_cpu_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sys_cpu_us: Option<i64>,
}

impl From<Attempt> for AttemptDto {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            node: a.node,
            started_at: a.started_at,
            finished_at: a.finished_at,
            status: a.status,
            exit_code: a.exit_code,
            http_status: a.http_status,
            error: a.error,
            output_bytes: a.output.len(),
            output_truncated: a.output_truncated,
            max_rss_kib: a.max_rss_kib,
            user_cpu_us: a.user_cpu_us,
            sys_cpu_us: a.sys_cpu_us,
        }
    }
}
