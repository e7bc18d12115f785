//! Kairos executors: run one attempt of a task and describe how it ended.
//!
//! # Overview
//!
//! [`Executor::execute`] takes an [`ExecRequest`] (the task, hooks, limits, run context, a live
//! [`OutputBuffer`] and a cancellation token) and returns an [`AttemptOutcome`]: a value, never
//! an error. Retry and overlap decisions are pure functions of that value. [`TaskExecutor`]
//! dispatches on the task kind:
//!
//! - `command` (argv, no shell) and `shell` (`/bin/sh -c script`): a child process, see below.
//! - `http`: one request through a shared reqwest client (rustls with the ring provider).
//! - `function`: a handler from the [`FunctionRegistry`] of the embedding program.
//!
//! Around every kind, an optional pre-hook and post-hook run as processes with the same
//! isolation.
//!
//! # Process model
//!
//! Every task or hook process is started from one long-lived spawner thread (on Linux with a
//! vfork-style `clone` that does not copy the server's memory; elsewhere with `fork`) and, before
//! `exec`: becomes the leader of a new session and process group (`setsid`), and on Linux asks
//! for `SIGKILL` when its parent dies (`PR_SET_PDEATHSIG`). On Linux its signal mask is empty,
//! caught signals and `SIGPIPE` are back to their default action, and it inherits no file
//! descriptor besides 0, 1 and 2. `argv[0]` is looked up in the `PATH` of the task's environment. Its stdin is
//! `/dev/null`; stdout and stderr are read line by line (UTF-8, lossy) into the output as
//! `<RFC 3339 UTC, ms> <stdout|stderr> <line>`. The environment is the server's (or empty with
//! `clear_env`), then `env_files`, `env`, `secret_files`, then Kairos's variables, which a job
//! cannot override:
//!
//! | variable | value | set for |
//! | --- | --- | --- |
//! | `KAIROS_JOB`, `KAIROS_NAMESPACE`, `KAIROS_RUN_ID`, `KAIROS_ATTEMPT`, `KAIROS_SCHEDULED_FOR` | the run and attempt | every process |
//! | `KAIROS_STEP` | the workflow step's name | a step's task and hooks |
//! | `KAIROS_PARAMS` | path of a file holding the JSON object a manual trigger gave the run | the task and hooks of a run with params |
//! | `KAIROS_UPSTREAM_RESULTS` | path of a file holding `{"<upstream step>": <its result or null>, ...}` | the task and hooks of a step with upstream steps |
//! | `KAIROS_RESULT` | path of a file, not created, where the task may write one JSON document (at most [`MAX_RESULT_BYTES`](kairos_core::run::MAX_RESULT_BYTES)): the attempt's result | every task; never a hook |
//!
//! Where Kairos does not set one of the last four, it is absent. A process that is no run's
//! ([`ExecRequest::run_vars`] `false`: an alert channel's command) gets none of these.
//! The files are in a private
//! directory made for each process in the server's temp directory (mode 0700, owned by the
//! `run_as` user if there is one; inputs read-only) and removed when the process ended. Hooks
//! read the same inputs but leave no result: the attempt's result is the task's. See the
//! `exchange` module for how a result planted to trick the server (a symbolic link, a FIFO, a
//! hard link to someone else's file) is refused. (`http` and `function` tasks have no files to
//! exchange: their outcomes hold no result.)
//!
//! The leader's exit is noticed without reaping it (on Linux through a pidfd watched by tokio's
//! reactor; elsewhere, or without pidfds, by a waiter thread), then the rest of the group is
//! killed and the leader reaped with `wait4`, which gives the exit status and resource usage
//! (max RSS, user and system CPU). On timeout or cancel the group gets `SIGTERM`, then `SIGKILL`
//! after the kill grace.
//!
//! # Invariants
//!
//! - **A child never outlives its timeout or its node.** The whole group is signalled, so
//!   grandchildren die with the task; background processes left behind when the leader exits
//!   are killed at once; if the attempt's future is dropped, the group is killed; if the node
//!   dies, the kernel kills the leader (`PR_SET_PDEATHSIG`) and the pipes it leaves make any
//!   survivors' writes fail. The limit: a process that puts itself into another session or
//!   group (`setsid`, `setpgid`, double-forking daemons) escapes group signals.
//! - **A signal never reaches a recycled pid.** The group is signalled only while its leader is
//!   unreaped (a zombie at worst), so its pid, which is the group id, cannot be reused.
//! - **Results are bounded and only the task's.** At most
//!   [`MAX_RESULT_BYTES`](kairos_core::run::MAX_RESULT_BYTES) of a regular file the task's user
//!   owns are read, through `O_NOFOLLOW|O_NONBLOCK`, on a blocking thread; the exchange
//!   directory does not outlive its process.
//! - **Output is bounded.** Each attempt keeps at most its limit ([`DEFAULT_OUTPUT_LIMIT`]):
//!   head and tail, with a `... [N bytes truncated] ...` marker between them.
//! - **Secrets stay secret.** Values from `secret_files` (and env files) are never logged nor
//!   put into outcomes or error messages; errors name the file and variable only.
//!
//! # Failure handling
//!
//! | what happened | status |
//! | --- | --- |
//! | exit code in `expected_exit_codes` / expected HTTP status / handler `Ok` | `Succeeded` |
//! | other exit code | `ExitCode` |
//! | killed by a signal Kairos did not send | `Signal` |
//! | HTTP response with another status | `HttpStatus` |
//! | timeout (process, request or handler) | `TimedOut` |
//! | cancellation token cancelled | `Cancelled` |
//! | cannot start (missing or non-executable program, bad cwd, unreadable env or secret file, exchange directory cannot be made), connection error, handler `Err` or panic, unknown function, failed pre-hook | `Error` |
//! | a process that would succeed left a `KAIROS_RESULT` larger than 64 KiB, not valid JSON, or not a regular file of its own (a symbolic link, FIFO, directory, ...) | `Error` ("KAIROS_RESULT: ..."), with its exit code and output |
//!
//! Once Kairos has signalled a process because of a timeout or cancel, the status is `TimedOut`
//! or `Cancelled` however the process then exits. A post-hook failure is written into the
//! output and leaves the outcome unchanged. An attempt that failed otherwise keeps its status
//! when its result is unusable: the result is dropped, with a `kairos` line in the output saying
//! why. A valid result is kept in [`AttemptOutcome::result`] (as compact JSON) whatever the
//! status; no file, no result.

mod cgroup;
mod env;
mod exchange;
mod function;
mod group;
mod hooks;
mod http;
mod identity;
mod limits;
mod output;
mod process;
pub mod reaper;
mod spawn;
mod sys;
#[cfg(target_os = "linux")]
mod vfork;

use std::sync::Arc;

use kairos_core::run::{AttemptOutcome, AttemptStatus};
use kairos_core::spec::{HooksSpec, TaskSpec};
use tokio_util::sync::CancellationToken;

pub use env::{EnvError, MAX_FILE_BYTES, read_regular_file};
pub use exchange::parse_report;
pub use function::{FunctionCall, FunctionRegistry};
pub use output::{DEFAULT_OUTPUT_LIMIT, OutputBuffer};

/// What per-task cgroups give on this machine (see the `cgroup` module): `None` when tasks run
/// without them (limits then use `setrlimit`, and task memory is not measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCgroups {
    /// cgroup v2 (else v1).
    pub v2: bool,
    /// The memory controller: memory limits for whole tasks and their peak memory.
    pub memory: bool,
    /// The pids controller: process limits for whole tasks.
    pub processes: bool,
}

/// Turns per-task cgroups off for this process (limits then use `setrlimit`, and task memory
/// is not measured). Effective only before the first task or [`task_cgroups`] call.
pub fn disable_task_cgroups() {
    cgroup::disable();
}

/// Finds (once) whether tasks get cgroups of their own. Blocking: reads `/proc` and may create
/// directories; call it from a blocking thread or at start-up.
pub fn task_cgroups() -> Option<TaskCgroups> {
    cgroup::setup().as_ref().ok().map(|setup| TaskCgroups {
        v2: setup.version() == cgroup::Version::V2,
        memory: setup.has_memory(),
        processes: setup.has_pids(),
    })
}

/// Which run and attempt an execution belongs to; exported to processes as `KAIROS_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContext {
    pub job: String,
    pub namespace: String,
    pub run_id: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub scheduled_for: jiff::Timestamp,
    /// A workflow step's name (`KAIROS_STEP`).
    pub step: Option<String>,
    /// The JSON object a manual trigger gave the run (`KAIROS_PARAMS` names a file holding it).
    pub params: Option<String>,
    /// For a workflow step: a JSON object of its upstream steps' results by step name, `null`
    /// for a step that wrote none (`KAIROS_UPSTREAM_RESULTS` names a file holding it).
    pub upstream_results: Option<String>,
    /// The event the run is for (`KAIROS_EVENT` names a file holding its payload;
    /// `KAIROS_EVENT_ID` and `KAIROS_EVENT_TOPIC` are set).
    pub event: Option<EventInput>,
    /// The run of another job whose end created this run (`KAIROS_UPSTREAM_RUN_ID`).
    pub upstream_run_id: Option<i64>,
    /// That run's result document, if it wrote one (`KAIROS_UPSTREAM_RESULT` names a file
    /// holding it).
    pub upstream_result: Option<String>,
    /// The last checkpoint an earlier attempt of the run reported (`KAIROS_CHECKPOINT` names a
    /// file holding it).
    pub checkpoint: Option<String>,
    /// The attempt's own token, for the task to report over the API (`KAIROS_RUN_TOKEN`), and
    /// the API's URL (`KAIROS_API_URL`).
    pub run_token: Option<String>,
    pub api_url: Option<String>,
}

/// What a running task reported through its checkpoint file (`KAIROS_CHECKPOINT_FILE`): the
/// fields of one line, each `None` when the line did not give it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskReport {
    /// 0 to 1.
    pub progress: Option<f64>,
    pub message: Option<String>,
    /// JSON text.
    pub checkpoint: Option<String>,
}

/// Where a task's reports go while it runs.
pub type ReportSink = tokio::sync::mpsc::UnboundedSender<TaskReport>;

/// The event a run was created for, as its processes see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventInput {
    pub id: String,
    pub topic: String,
    /// The payload, JSON text.
    pub payload: String,
}

/// One attempt to execute.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub task: TaskSpec,
    pub hooks: HooksSpec,
    /// Limit for the task, and for each hook. `None`: no limit.
    pub timeout: Option<jiff::SignedDuration>,
    /// Time between SIGTERM and SIGKILL when a process is stopped (for functions: between
    /// cancelling the call's token and aborting it).
    pub kill_grace: jiff::SignedDuration,
    /// Exit codes that count as success for `command` and `shell` tasks; empty means `[0]`.
    pub expected_exit_codes: Vec<i32>,
    pub context: RunContext,
    /// Live output, readable while the attempt runs; closed when `execute` returns.
    pub output: Arc<OutputBuffer>,
    /// Cancelled: stop the attempt (the process group is killed), status `Cancelled`.
    pub cancel: CancellationToken,
    /// Cancelled: stop the attempt at once, without the kill grace (SIGKILL to the process
    /// group, a function aborted). The worker uses it when its lease may have passed to another
    /// node, where the run may start again: the task must not outlive the lease.
    pub kill: CancellationToken,
    /// Receives what a `command` or `shell` task reports through its checkpoint file while it
    /// runs (read every half second, and once more after it ended). `None`:
    /// the task gets no checkpoint file.
    pub reports: Option<ReportSink>,
    /// Whether the processes are a run's: they get the run's `KAIROS_*` variables and
    /// exchange files (`KAIROS_RESULT`, ...). `false` for a process that is no run's (an alert
    /// channel's command): it gets none of them, not even from the server's environment, and
    /// leaves no result. Default `true`.
    pub run_vars: bool,
}

impl ExecRequest {
    /// A request with no hooks, no timeout, a 10 s kill grace, `expected_exit_codes = [0]`, a
    /// fresh output buffer of [`DEFAULT_OUTPUT_LIMIT`] and a fresh cancellation token.
    pub fn new(task: TaskSpec, context: RunContext) -> Self {
        Self {
            task,
            hooks: HooksSpec::default(),
            timeout: None,
            kill_grace: jiff::SignedDuration::from_secs(10),
            expected_exit_codes: vec![0],
            context,
            output: Arc::new(OutputBuffer::new(DEFAULT_OUTPUT_LIMIT)),
            cancel: CancellationToken::new(),
            kill: CancellationToken::new(),
            reports: None,
            run_vars: true,
        }
    }
}

/// Runs attempts. Implementations return an outcome for every request; they do not fail.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn execute(&self, req: ExecRequest) -> AttemptOutcome;
}

/// The production executor: commands, shell scripts, HTTP requests and registered functions,
/// with pre- and post-hooks.
#[derive(Debug, Clone)]
pub struct TaskExecutor {
    functions: FunctionRegistry,
    http: http::HttpClient,
}

impl TaskExecutor {
    pub fn new(functions: FunctionRegistry) -> Self {
        Self {
            functions,
            http: http::HttpClient::new(),
        }
    }

    /// The registry `function` tasks are looked up in (shared with the caller's clone).
    pub fn functions(&self) -> &FunctionRegistry {
        &self.functions
    }

    async fn run_attempt(&self, req: &ExecRequest) -> AttemptOutcome {
        let pre = match &req.hooks.pre {
            Some(pre) => hooks::pre(pre, req).await,
            None => Ok(()),
        };
        if let Err(outcome) = pre {
            return outcome;
        }
        let outcome = self.run_task(req).await;
        // An error's reason goes into the output too, so that `run logs` of an attempt that
        // never started says why (error messages never hold secret values).
        let line = match &outcome.status {
            AttemptStatus::Error { message } => format!("task finished: error: {message}"),
            status => format!("task finished: {}", status.label()),
        };
        req.output.push_stream_line("kairos", &line);
        if let Some(post) = &req.hooks.post {
            hooks::post(post, req, &outcome).await;
        }
        outcome
    }

    async fn run_task(&self, req: &ExecRequest) -> AttemptOutcome {
        let expected: &[i32] = if req.expected_exit_codes.is_empty() {
            &[0]
        } else {
            &req.expected_exit_codes
        };
        let (argv, settings) = match &req.task {
            TaskSpec::Command(c) => (process::command_argv(&c.argv), &c.process),
            TaskSpec::Shell(s) => (process::shell_argv(&s.script), &s.process),
            TaskSpec::Http(h) => return self.http.run(h, req).await,
            TaskSpec::Function(f) => return function::run(&self.functions, f, req).await,
        };
        process::run(process::ProcessRun {
            role: "task",
            argv,
            settings,
            extra_env: Vec::new(),
            takes_result: req.run_vars,
            run_vars: req.run_vars,
            expected_exit_codes: expected,
            timeout: req.timeout,
            kill_grace: req.kill_grace,
            context: &req.context,
            output: &req.output,
            cancel: &req.cancel,
            kill: &req.kill,
            reports: req.reports.as_ref(),
        })
        .await
    }
}

impl Default for TaskExecutor {
    fn default() -> Self {
        Self::new(FunctionRegistry::new())
    }
}

#[async_trait::async_trait]
impl Executor for TaskExecutor {
    async fn execute(&self, req: ExecRequest) -> AttemptOutcome {
        let outcome = self.run_attempt(&req).await;
        tracing::debug!(
            job = %req.context.job,
            namespace = %req.context.namespace,
            run_id = req.context.run_id,
            attempt = req.context.attempt,
            outcome = %outcome.status.label(),
            "attempt finished"
        );
        let outcome = AttemptOutcome {
            output: req.output.snapshot(),
            output_truncated: req.output.is_truncated(),
            ..outcome
        };
        req.output.close();
        outcome
    }
}
