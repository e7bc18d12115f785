//! The job document users write (JSON over the API, TOML or JSON in files).
//!
//! The spec keeps values as the user wrote them (durations and instants are strings) so that a
//! stored job reads back exactly as it was written, and so that validation can report *every*
//! problem with its field path instead of stopping at the first. [`JobSpec::validate`] turns a
//! spec into a [`crate::job::JobPlan`], the typed form the scheduler and workers use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The namespace used when a job does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

pub(crate) fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

fn default_expected_exit_codes() -> Vec<i32> {
    vec![0]
}

fn default_max_concurrent() -> u32 {
    1
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A job: *when* (triggers), *what* (a task, or a workflow of steps) and *how* (policies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Unique within the namespace: `^[a-z0-9][a-z0-9_.-]{0,62}$`.
    pub name: String,
    /// Tenant of the job. Default `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// When the job fires. Empty: only manually or by dependency.
    #[serde(default)]
    pub triggers: Vec<TriggerSpec>,
    /// What runs: one task. Exactly one of `task` and `steps` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskSpec>,
    /// What runs: a workflow, a DAG of steps (see [`crate::workflow`]). Exactly one of `task`
    /// and `steps` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::workflow::StepSpec>,
    /// Steps of one workflow run queued or running at once. Default 16. Only with `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_steps: Option<u32>,
    /// Limit for one attempt, e.g. `10m`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Time between SIGTERM and SIGKILL when a command is stopped. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace: Option<String>,
    /// Retry policy. Default: one attempt, no retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Exit codes that count as success for `command` and `shell` tasks. Default `[0]`.
    #[serde(default = "default_expected_exit_codes")]
    pub expected_exit_codes: Vec<i32>,
    /// What happens when a run is due while earlier runs are active. Default `forbid`.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// Active runs allowed at once with `overlap: allow`. Default 1.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// What happens to due times missed while the scheduler was down. Default `latest`.
    #[serde(default)]
    pub catchup: CatchupPolicy,
    /// How far back missed due times are considered. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_window: Option<String>,
    /// Delivery guarantee when a worker dies mid-run. Default `at_least_once`.
    #[serde(default)]
    pub execution: ExecutionMode,
    /// Commands run before and after each attempt.
    #[serde(default, skip_serializing_if = "is_default")]
    pub hooks: HooksSpec,
    /// A paused job creates no runs. Default false.
    #[serde(default)]
    pub paused: bool,
    /// Free-form labels.
    /// Alert rules: who is told when runs of this job fail, recover, go silent or run late
    /// (channels are defined in the server's configuration). See docs/alerts.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::alert::NotifySpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One trigger: exactly one of `cron`, `interval`, `at` (a time), `event` (a topic) or `after`
/// (another job's runs), plus optional bounds, and jitter for times or a filter for events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// Cron expression: 5 fields, 6 with seconds first, or a macro such as `@daily`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA time zone the cron expression is matched in. Default `UTC`. Only with `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Fixed period, e.g. `15m`; ignores wall clocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// One instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// No fire before this instant (RFC 3339). For `interval` it is also the anchor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// No fire after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<String>,
    /// Random delay up to this duration added to each start, e.g. `30s`. Default none. Not
    /// with `event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// A topic: each event posted to it (`POST /api/v1/events/{topic}`) runs the job once per
    /// event id. `start_at` and `end_at` bound when events count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Only events whose payload has these top-level fields with these values (strings,
    /// numbers, booleans, null). Only with `event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub filter: Option<BTreeMap<String, serde_json::Value>>,
    /// Another job of the namespace: each of its runs that ends as `on` says runs this job
    /// once, in the same transaction that ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AfterSpec>,
    /// Calendars of the job's namespace (`/api/v1/calendars`) whose days and windows are not
    /// due times: a due time in one is not fired and not counted as missed; an event posted
    /// in one is not run. Not with `after`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Calendars of the job's namespace: only due times (and events) in one of them count.
    /// Not with `after`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
}

impl TriggerSpec {
    /// The trigger in English words, for people (the web UI's job list): "At 03:00 (Europe/Paris)",
    /// "every 15m", "on event `orders`", "after `extract` succeeds", with its bounds and calendars.
    pub fn describe(&self) -> String {
        let mut text = if let Some(expr) = &self.cron {
            let words = crate::trigger::CronSchedule::parse(expr, self.timezone.as_deref())
                .map(|c| c.describe().trim_end_matches('.').to_owned())
                .unwrap_or_else(|_| format!("cron `{expr}`"));
            format!("{words} ({})", self.timezone.as_deref().unwrap_or("UTC"))
        } else if let Some(every) = &self.interval {
            format!("every {every}")
        } else if let Some(at) = &self.at {
            format!("once at {at}")
        } else if let Some(topic) = &self.event {
            match &self.filter {
                Some(filter) if !filter.is_empty() => {
                    format!("on event `{topic}` matching {} field(s)", filter.len())
                }
                _ => format!("on event `{topic}`"),
            }
        } else if let Some(after) = &self.after {
            let how = match after.on {
                AfterOn::Success => "succeeds",
                AfterOn::Failure => "fails",
                AfterOn::Done => "ends",
            };
            format!("after `{}` {how}", after.job)
        } else {
            "never".to_owned()
        };
        if let Some(from) = &self.start_at {
            text.push_str(&format!(", from {from}"));
        }
        if let Some(until) = &self.end_at {
            text.push_str(&format!(", until {until}"));
        }
        if let Some(jitter) = &self.jitter {
            text.push_str(&format!(", jitter up to {jitter}"));
        }
        if !self.exclude.is_empty() {
            text.push_str(&format!(", except {}", self.exclude.join(", ")));
        }
        if !self.only.is_empty() {
            text.push_str(&format!(", only in {}", self.only.join(", ")));
        }
        text
    }
}

/// A dependency on another job's runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AfterSpec {
    /// The upstream job's name (in this job's namespace).
    pub job: String,
    /// Which of its ends count. Default `success`.
    #[serde(default)]
    pub on: AfterOn,
}

/// Which ends of an upstream job's runs start a dependent job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AfterOn {
    /// The run succeeded.
    #[default]
    Success,
    /// The run failed: `failed`, `timed_out` or `lost` (not `cancelled`).
    Failure,
    /// The run ended, whichever way: `succeeded`, `failed`, `timed_out`, `lost` or
    /// `cancelled` (not `skipped`: a skipped run never ran).
    Done,
}

/// What runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    /// A program and its arguments, run without a shell.
    Command(CommandTask),
    /// A script run by `/bin/sh -c`.
    Shell(ShellTask),
    /// An HTTP request.
    Http(HttpTask),
    /// A Rust function registered by a program that embeds Kairos.
    Function(FunctionTask),
}

/// Process settings shared by `command` and `shell` tasks and by hooks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessSettings {
    /// Working directory. Default: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Variables set for the process (override inherited ones).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files of `KEY=VALUE` lines loaded into the environment, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_files: Vec<String>,
    /// Variables whose values are read from files at run time; values are never logged or stored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_files: BTreeMap<String, String>,
    /// Start from an empty environment instead of the server's. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_env: bool,
    /// Run as this user (and group) instead of the server's; the server must run as root.
    /// Default: the server's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,
    /// Resource limits of the process and everything it starts. Default: none.
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: LimitsSpec,
}

/// The user (and group) a process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    /// A user name or numeric id.
    pub user: String,
    /// A group name or numeric id. Default: the user's primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Resource limits of a process and everything it starts: a per-task cgroup where Kairos can
/// create one, else `setrlimit` (see the docs for what each limit means then).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Memory, e.g. `512MiB` (at least `1MiB`). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU time, e.g. `10m` (each process of the task; at least `1s`). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time: Option<String>,
    /// Open files per process (3 to 1048576). Default: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// Processes and threads at once (1 to 1000000). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandTask {
    /// Program and arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    #[serde(flatten)]
    pub process: ProcessSettings,
    /// Unknown fields, collected so that validation can reject them with their path
    /// (`deny_unknown_fields` does not work together with `flatten`).
    #[serde(flatten, skip_serializing)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShellTask {
    /// Script for `/bin/sh -c`.
    pub script: String,
    #[serde(flatten)]
    pub process: ProcessSettings,
    /// Unknown fields, rejected by validation.
    #[serde(flatten, skip_serializing)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpTask {
    /// Method. Default `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// `http://` or `https://` URL.
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Request timeout; the job's `timeout` applies when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Statuses that count as success. Default: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_statuses: Vec<u16>,
}

fn default_method() -> String {
    "GET".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FunctionTask {
    /// Name the handler was registered under.
    pub name: String,
    /// JSON arguments passed to the handler. Default `null`.
    #[serde(default)]
    pub args: serde_json::Value,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 = no retry). Default 1.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: BackoffSpec,
    /// Outcomes that retry: `exit:N`, `exit:any`, `timeout`, `http:N`, `http:5xx`, `error`, `any`.
    /// Default `["any"]` (every failure retries).
    #[serde(default = "default_retry_on")]
    pub on: Vec<String>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff: BackoffSpec::default(),
            on: default_retry_on(),
        }
    }
}

fn default_max_attempts() -> u32 {
    1
}

fn default_retry_on() -> Vec<String> {
    vec!["any".to_owned()]
}

/// Exponential backoff between attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    /// First delay. Default `10s`.
    #[serde(default = "default_backoff_initial")]
    pub initial: String,
    /// Largest delay. Default `10m`.
    #[serde(default = "default_backoff_max")]
    pub max: String,
    /// Factor between consecutive delays. Default 2.0.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Random spread as a fraction of the delay, 0 to 1. Default 0.1.
    #[serde(default = "default_backoff_jitter")]
    pub jitter: f64,
}

impl Default for BackoffSpec {
    fn default() -> Self {
        Self {
            initial: default_backoff_initial(),
            max: default_backoff_max(),
            multiplier: default_multiplier(),
            jitter: default_backoff_jitter(),
        }
    }
}

fn default_backoff_initial() -> String {
    "10s".to_owned()
}
fn default_backoff_max() -> String {
    "10m".to_owned()
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_backoff_jitter() -> f64 {
    0.1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Skip the new run (recorded as `skipped`) while another is active.
    #[default]
    Forbid,
    /// Run concurrently, up to `max_concurrent`; beyond that, skip.
    Allow,
    /// Start the new run after the active one finishes.
    Queue,
    /// Cancel the active run and start the new one.
    Replace,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CatchupPolicy {
    /// Only the newest due time runs (if within the window); each older missed one is recorded
    /// as a skipped run.
    Skip,
    /// All missed due times within the window coalesce into one run.
    #[default]
    Latest,
    /// One run per missed due time within the window (bounded).
    All,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// A run whose worker died is retried as a new attempt.
    #[default]
    AtLeastOnce,
    /// A run whose worker died is marked `lost`, never repeated.
    AtMostOnce,
}

/// Commands run around each attempt with the same isolation as the task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HooksSpec {
    /// Runs before the task; if it fails, the attempt fails without running the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<HookSpec>,
    /// Runs after the task; sees the outcome in `KAIROS_OUTCOME` and `KAIROS_EXIT_CODE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<HookSpec>,
}

/// A hook: a `command` or `shell` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HookSpec {
    Command(CommandTask),
    Shell(ShellTask),
}

impl JobSpec {
    /// The same job with the defaults written out (`kill_grace`, `catchup_window`, `retry`), as
    /// the API shows it. Two specs that differ only in spelled-out defaults have equal forms.
    pub fn with_defaults(mut self) -> Self {
        use crate::duration::format_duration;
        use crate::job::{DEFAULT_CATCHUP_WINDOW, DEFAULT_KILL_GRACE};
        self.kill_grace
            .get_or_insert_with(|| format_duration(DEFAULT_KILL_GRACE));
        self.catchup_window
            .get_or_insert_with(|| format_duration(DEFAULT_CATCHUP_WINDOW));
        self.retry.get_or_insert_with(RetrySpec::default);
        self
    }

    /// Parses a job from JSON text (a key given twice is an error); see [`JobSpec::from_value`].
    pub fn from_json(input: &str) -> Result<Self, crate::ValidationErrors> {
        Self::from_value(crate::document::parse_json(input.as_bytes())?)
    }

    /// Parses a job from a JSON value, reporting every problem with its field path: each type
    /// error (or unknown field) is recorded and the offending part taken out or replaced by a
    /// stand-in, and the rest parsed again. When there were type errors, the rest is validated
    /// too and its problems added (except those about what was taken out), so that one answer
    /// lists everything. A document without type errors comes back unvalidated: call
    /// [`JobSpec::validate`].
    pub fn from_value(value: serde_json::Value) -> Result<Self, crate::ValidationErrors> {
        use crate::document::{Removed, Step, collect, collect_tagged};
        let mut value = value;
        if !value.is_object() {
            return Err(crate::ValidationErrors::single(
                "",
                "a job document is a JSON object",
            ));
        }
        let mut errs = crate::ValidationErrors::default();
        let mut removed = Removed::default();
        // The tasks and hooks of the job and of each step: internally tagged, read on their own.
        let key = |k: &str| Step::Key(k.to_owned());
        let mut tagged = vec![vec![key("task")]];
        if let Some(steps) = value.get("steps").and_then(serde_json::Value::as_array) {
            tagged
                .extend((0..steps.len()).map(|i| vec![key("steps"), Step::Index(i), key("task")]));
        }
        for at in &tagged {
            collect_tagged(
                &mut value,
                at,
                &["command", "shell", "http", "function"],
                Some(serde_json::json!({"kind": "function", "name": "placeholder"})),
                &mut errs,
                &mut removed,
                |kind, fields, at, errs, removed| match kind {
                    "command" => collect_process::<CommandTask>(fields, at, errs, removed),
                    "shell" => collect_process::<ShellTask>(fields, at, errs, removed),
                    "http" => collect::<HttpTask>(fields, at, errs, removed).is_some(),
                    _ => collect::<FunctionTask>(fields, at, errs, removed).is_some(),
                },
            );
        }
        let mut hooks = vec![vec![key("hooks")]];
        if let Some(steps) = value.get("steps").and_then(serde_json::Value::as_array) {
            hooks
                .extend((0..steps.len()).map(|i| vec![key("steps"), Step::Index(i), key("hooks")]));
        }
        for base in &hooks {
            for hook in ["pre", "post"] {
                let mut at = base.clone();
                at.push(key(hook));
                collect_tagged(
                    &mut value,
                    &at,
                    &["command", "shell"],
                    None,
                    &mut errs,
                    &mut removed,
                    |kind, fields, at, errs, removed| match kind {
                        "command" => collect_process::<CommandTask>(fields, at, errs, removed),
                        _ => collect_process::<ShellTask>(fields, at, errs, removed),
                    },
                );
            }
        }
        let Some(spec) = collect::<JobSpec>(&mut value, "", &mut errs, &mut removed) else {
            return Err(errs);
        };
        if errs.is_empty() {
            return Ok(spec);
        }
        if let Err(more) = spec.validate() {
            errs.errors
                .extend(more.errors.into_iter().filter(|e| !removed.hides(&e.field)));
        }
        errs.into_result(spec)
    }
}

/// Collects a `command` or `shell` task's fields: the process settings first, on their own,
/// because serde loses the path inside a flattened struct (`task.env.A`, not `task`).
fn collect_process<T: serde::de::DeserializeOwned>(
    fields: &mut serde_json::Value,
    at: &str,
    errs: &mut crate::ValidationErrors,
    removed: &mut crate::document::Removed,
) -> bool {
    use crate::document::collect;
    collect::<ProcessSettings>(fields, at, errs, removed).is_some()
        && collect::<T>(fields, at, errs, removed).is_some()
}
