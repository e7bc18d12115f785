//! Pre- and post-hooks: commands run around an attempt with the same isolation as a task.
//!
//! A hook gets the task's environment rules, the `KAIROS_*` variables and the job's timeout and
//! kill grace; it writes into the attempt's output between marker lines. It reads `KAIROS_STEP`,
//! `KAIROS_PARAMS` and `KAIROS_UPSTREAM_RESULTS` as the task does (from files of its own), but
//! never gets `KAIROS_RESULT`: the attempt's result is the task's alone, and a hook can neither
//! replace nor spoil it. A failing pre-hook fails the attempt (`Error`, "pre-hook failed: ...")
//! and the task does not run. The post-hook sees the outcome (`KAIROS_OUTCOME`,
//! `KAIROS_EXIT_CODE`, `KAIROS_HTTP_STATUS`); its failure is written to the output and does not
//! change the outcome. After a cancel the post-hook is skipped: cancel means "stop now", which
//! includes clean-up work.

use kairos_core::run::{AttemptOutcome, AttemptStatus};
use kairos_core::spec::HookSpec;

use crate::ExecRequest;
use crate::process::{self, ProcessRun};

/// Runs the pre-hook; `Err` holds the outcome that ends the attempt.
pub(crate) async fn pre(hook: &HookSpec, req: &ExecRequest) -> Result<(), AttemptOutcome> {
    let outcome = run("pre-hook", hook, req, Vec::new()).await;
    match outcome.status {
        AttemptStatus::Succeeded => Ok(()),
        AttemptStatus::Cancelled => Err(AttemptOutcome::from_status(AttemptStatus::Cancelled)),
        _ => Err(AttemptOutcome::error(format!(
            "pre-hook failed: {}",
            describe(&outcome)
        ))),
    }
}

/// Runs the post-hook with the task's outcome in its environment.
pub(crate) async fn post(hook: &HookSpec, req: &ExecRequest, task: &AttemptOutcome) {
    if req.cancel.is_cancelled() {
        req.output
            .push_stream_line("kairos", "post-hook skipped: the attempt was cancelled");
        return;
    }
    let mut extra = vec![("KAIROS_OUTCOME".to_owned(), task.status.label())];
    if let Some(code) = task.exit_code {
        extra.push(("KAIROS_EXIT_CODE".to_owned(), code.to_string()));
    }
    if let Some(status) = task.http_status {
        extra.push(("KAIROS_HTTP_STATUS".to_owned(), status.to_string()));
    }
    let outcome = run("post-hook", hook, req, extra).await;
    if !outcome.status.is_success() {
        req.output.push_stream_line(
            "kairos",
            &format!(
                "post-hook failed: {} (the attempt's outcome is unchanged)",
                describe(&outcome)
            ),
        );
    }
}

async fn run(
    role: &str,
    hook: &HookSpec,
    req: &ExecRequest,
    extra_env: Vec<(String, String)>,
) -> AttemptOutcome {
    let (argv, settings) = match hook {
        HookSpec::Command(c) => (process::command_argv(&c.argv), &c.process),
        HookSpec::Shell(s) => (process::shell_argv(&s.script), &s.process),
    };
    req.output
        .push_stream_line("kairos", &format!("{role} started"));
    let outcome = process::run(ProcessRun {
        role,
        argv,
        settings,
        extra_env,
        // The attempt's result is the task's: a hook reads the inputs but writes no result.
        takes_result: false,
        run_vars: req.run_vars,
        expected_exit_codes: &[0],
        timeout: req.timeout,
        kill_grace: req.kill_grace,
        context: &req.context,
        output: &req.output,
        cancel: &req.cancel,
        kill: &req.kill,
        reports: None,
    })
    .await;
    req.output.push_stream_line(
        "kairos",
        &format!("{role} finished: {}", outcome.status.label()),
    );
    outcome
}

/// A failed hook's outcome in words.
fn describe(outcome: &AttemptOutcome) -> String {
    match &outcome.status {
        AttemptStatus::Succeeded => "succeeded".to_owned(),
        AttemptStatus::ExitCode { code } => format!("exit code {code}"),
        AttemptStatus::Signal { signal } => format!("killed by signal {signal}"),
        AttemptStatus::TimedOut => "timed out".to_owned(),
        AttemptStatus::Cancelled => "cancelled".to_owned(),
        AttemptStatus::HttpStatus { status } => format!("HTTP status {status}"),
        AttemptStatus::Error { message } => message.clone(),
    }
}
