//! Data exchange with a process: `KAIROS_STEP`, the params and upstream results files, the
//! task's `KAIROS_RESULT`, and what a task can plant in place of its result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::SignedDuration;
use kairos_core::run::{AttemptOutcome, AttemptStatus};
use kairos_core::spec::{HookSpec, HooksSpec, ProcessSettings, RunAs, ShellTask, TaskSpec};
use kairos_exec::{ExecRequest, RunContext};

use crate::support::*;

const PARAMS: &str = r#"{"date": "2026-11-20", "full": true}"#;
const UPSTREAM: &str = r#"{"extract":{"rows":3},"check":null}"#;

/// A request for `task` with a run context changed by `edit`.
fn request_with(task: TaskSpec, edit: impl FnOnce(&mut RunContext)) -> ExecRequest {
    let mut req = request(task);
    edit(&mut req.context);
    req
}

async fn run_with_context(script: &str, edit: impl FnOnce(&mut RunContext)) -> AttemptOutcome {
    execute(request_with(shell(script), edit)).await
}

/// The message of an `Error` outcome.
fn error_message(outcome: &AttemptOutcome) -> &str {
    match &outcome.status {
        AttemptStatus::Error { message } => message,
        other => panic!("expected an error, got {other:?}:\n{}", outcome.output),
    }
}

/// The exchange directory, from the `KAIROS_RESULT` path a script printed as `result=PATH`.
fn exchange_dir(outcome: &AttemptOutcome) -> PathBuf {
    let path = stdout(outcome)
        .iter()
        .find_map(|line| line.strip_prefix("result=").map(str::to_owned))
        .unwrap_or_else(|| panic!("no result= line:\n{}", outcome.output));
    Path::new(&path).parent().unwrap().to_owned()
}

#[tokio::test]
async fn the_params_file_holds_the_runs_params() {
    let outcome = run_with_context(
        r#"cat "$KAIROS_PARAMS"; echo; stat -c '%a' "$KAIROS_PARAMS" "$(dirname "$KAIROS_PARAMS")""#,
        |c| c.params = Some(PARAMS.into()),
    )
    .await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    // Read-only input, private directory.
    assert_eq!(stdout(&outcome), [PARAMS, "400", "700"]);
}

#[tokio::test]
async fn variables_kairos_does_not_set_are_absent_even_if_the_job_sets_them() {
    let settings = ProcessSettings {
        env: [
            ("KAIROS_PARAMS", "/etc/passwd"),
            ("KAIROS_UPSTREAM_RESULTS", "/etc/passwd"),
            ("KAIROS_STEP", "spoofed"),
            ("KAIROS_RESULT", "/etc/passwd"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..ProcessSettings::default()
    };
    let script = r#"echo "${KAIROS_PARAMS-unset} ${KAIROS_UPSTREAM_RESULTS-unset} ${KAIROS_STEP-unset}"; echo "result=$KAIROS_RESULT""#;
    let outcome = execute(request(shell_with(script, settings))).await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    assert_eq!(stdout(&outcome)[0], "unset unset unset");
    // KAIROS_RESULT is always Kairos's own file.
    assert!(exchange_dir(&outcome).starts_with(std::env::temp_dir()));
    assert_eq!(outcome.result, None);
}

#[tokio::test]
async fn the_upstream_results_file_and_the_step_name() {
    let outcome = run_with_context(
        r#"echo "step=$KAIROS_STEP"; cat "$KAIROS_UPSTREAM_RESULTS""#,
        |c| {
            c.step = Some("load".into());
            c.upstream_results = Some(UPSTREAM.into());
        },
    )
    .await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    assert_eq!(stdout(&outcome), ["step=load", UPSTREAM]);
}

#[tokio::test]
async fn a_result_written_by_the_task_comes_back_in_the_outcome() {
    let outcome = run_shell(
        r#"printf '{ "rows": 3,\n  "file": "out.csv" }\n' > "$KAIROS_RESULT"; echo "result=$KAIROS_RESULT""#,
    )
    .await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"{"file":"out.csv","rows":3}"#)
    );
    // Without a result, none.
    let outcome = run_shell("true").await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert_eq!(outcome.result, None);
}

#[tokio::test]
async fn a_result_that_is_too_large_fails_the_attempt() {
    let outcome =
        run_shell(r#"head -c 70000 /dev/zero | tr '\0' 1 > "$KAIROS_RESULT"; echo done"#).await;
    assert_eq!(
        error_message(&outcome),
        "KAIROS_RESULT: the result is 70000 bytes; at most 65536"
    );
    // What the process did is kept.
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(stdout(&outcome), ["done"]);
    assert!(
        outcome.output.contains(
            "kairos task finished: error: KAIROS_RESULT: the result is 70000 bytes; at most 65536"
        ),
        "{}",
        outcome.output
    );
    assert_eq!(outcome.result, None);
}

#[tokio::test]
async fn a_result_that_is_not_json_fails_a_successful_attempt_only() {
    let outcome = run_shell(r#"echo '{"rows": 3' > "$KAIROS_RESULT""#).await;
    let message = error_message(&outcome);
    assert!(
        message.starts_with("KAIROS_RESULT: not valid JSON: EOF while parsing"),
        "{message}"
    );
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.result, None);

    // A failed attempt keeps its own status; the output says the result was dropped.
    let outcome = run_shell(r#"echo 'not json' > "$KAIROS_RESULT"; exit 3"#).await;
    assert_eq!(outcome.status, AttemptStatus::ExitCode { code: 3 });
    assert_eq!(outcome.result, None);
    let kairos = lines(&outcome.output, "kairos");
    assert!(
        kairos
            .iter()
            .any(|l| l.starts_with("KAIROS_RESULT: not valid JSON: ")
                && l.ends_with("; the result is dropped")),
        "{kairos:?}"
    );
}

#[tokio::test]
async fn a_symbolic_link_planted_as_the_result_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.json");
    std::fs::write(&secret, r#"{"secret": "leaked-value"}"#).unwrap();
    for target in [secret.to_str().unwrap(), "/etc/hostname"] {
        let outcome = run_shell(&format!(r#"ln -s {target} "$KAIROS_RESULT""#)).await;
        assert_eq!(
            error_message(&outcome),
            "KAIROS_RESULT: result.json is a symbolic link, not a regular file; not read"
        );
        assert_eq!(outcome.result, None);
        assert!(!format!("{outcome:?}").contains("leaked-value"));
    }
}

#[tokio::test]
async fn a_fifo_or_a_directory_planted_as_the_result_is_refused_at_once() {
    for (plant, what) in [
        ("mkfifo", "a FIFO"),
        // A writer waiting on the FIFO changes nothing.
        (
            "mkfifo \"$KAIROS_RESULT\" && (echo '{}' > \"$KAIROS_RESULT\" &) && true",
            "a FIFO",
        ),
        ("mkdir", "a directory"),
    ] {
        let script = if plant.contains("KAIROS_RESULT") {
            plant.to_owned()
        } else {
            format!(r#"{plant} "$KAIROS_RESULT""#)
        };
        let outcome = tokio::time::timeout(PATIENCE, run_shell(&script))
            .await
            .expect("the attempt ends");
        assert_eq!(
            error_message(&outcome),
            format!("KAIROS_RESULT: result.json is {what}, not a regular file; not read"),
            "{script}"
        );
    }
}

#[tokio::test]
async fn the_directory_is_gone_after_the_attempt_and_links_in_it_are_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    let kept = outside.path().join("kept");
    std::fs::write(&kept, "still here").unwrap();
    let script = format!(
        r#"echo "result=$KAIROS_RESULT"; d=$(dirname "$KAIROS_RESULT"); [ -d "$d" ] && echo exists; ln -s {} "$d/link"; mkdir "$d/sub"; echo x > "$d/sub/file""#,
        outside.path().display()
    );
    let outcome = run_shell(&script).await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    assert!(stdout(&outcome).contains(&"exists".to_owned()));
    let dir = exchange_dir(&outcome);
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(kept.exists(), "the removal followed a link");
}

#[tokio::test]
async fn the_directory_is_gone_after_a_timeout_and_a_cancel() {
    let script =
        r#"echo "result=$KAIROS_RESULT"; echo '{"partial": ' > "$KAIROS_RESULT"; sleep 300"#;
    let mut req = request(shell(script));
    req.timeout = Some(SignedDuration::from_millis(500));
    let outcome = execute(req).await;
    assert_eq!(
        outcome.status,
        AttemptStatus::TimedOut,
        "{}",
        outcome.output
    );
    assert!(!exchange_dir(&outcome).exists());
    // A partial result of a stopped task is dropped, saying so.
    assert!(
        outcome.output.contains("the result is dropped"),
        "{}",
        outcome.output
    );

    let req = request(shell(script));
    let (output, cancel) = (req.output.clone(), req.cancel.clone());
    let running = tokio::spawn(execute(req));
    output_contains(&output, "result=").await;
    cancel.cancel();
    let outcome = running.await.unwrap();
    assert_eq!(
        outcome.status,
        AttemptStatus::Cancelled,
        "{}",
        outcome.output
    );
    assert!(!exchange_dir(&outcome).exists());
}

fn hook(script: &str) -> HookSpec {
    HookSpec::Shell(ShellTask {
        script: script.into(),
        process: ProcessSettings::default(),
        unknown: BTreeMap::new(),
    })
}

#[tokio::test]
async fn hooks_read_the_inputs_but_write_no_result() {
    let script = r#"echo "$0 $KAIROS_STEP $(cat "$KAIROS_PARAMS") $(cat "$KAIROS_UPSTREAM_RESULTS") ${KAIROS_RESULT-none}""#;
    let req = ExecRequest {
        hooks: HooksSpec {
            pre: Some(hook(&script.replace("$0", "pre"))),
            post: Some(hook(&script.replace("$0", "post"))),
        },
        ..request_with(shell(r#"echo '"task"' > "$KAIROS_RESULT""#), |c| {
            c.step = Some("load".into());
            c.params = Some(r#"{"a":1}"#.into());
            c.upstream_results = Some(r#"{"b":2}"#.into());
        })
    };
    let outcome = execute(req).await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    assert_eq!(
        stdout(&outcome),
        [
            r#"pre load {"a":1} {"b":2} none"#,
            r#"post load {"a":1} {"b":2} none"#
        ]
    );
    assert_eq!(outcome.result.as_deref(), Some(r#""task""#));
}

#[tokio::test]
async fn a_task_run_as_another_user_reads_its_params_and_writes_its_result() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: run_as needs a root server");
        return;
    }
    let settings = ProcessSettings {
        run_as: Some(RunAs {
            user: "nobody".into(),
            group: None,
        }),
        ..ProcessSettings::default()
    };
    let script = r#"echo "result=$KAIROS_RESULT"; id -u; stat -c '%u %a' "$(dirname "$KAIROS_RESULT")" "$KAIROS_PARAMS"; cat "$KAIROS_PARAMS" > "$KAIROS_RESULT""#;
    let req = request_with(shell_with(script, settings), |c| {
        c.params = Some(PARAMS.into());
    });
    let outcome = execute(req).await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    assert_eq!(
        &stdout(&outcome)[1..],
        ["65534", "65534 700", "65534 400"],
        "{}",
        outcome.output
    );
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"{"date":"2026-11-20","full":true}"#)
    );
    assert!(!exchange_dir(&outcome).exists());

    // A file of the server's linked in as the result is someone else's: not read.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.json");
    std::fs::write(&secret, r#"{"secret": "leaked-value"}"#).unwrap();
    let settings = ProcessSettings {
        run_as: Some(RunAs {
            user: "nobody".into(),
            group: None,
        }),
        ..ProcessSettings::default()
    };
    // nobody may not link a file it cannot read (protected_hardlinks); the test links it as
    // root through the directory, which it learns from the task.
    let req = request(shell_with(
        r#"echo "result=$KAIROS_RESULT"; while [ ! -e "$KAIROS_RESULT" ]; do sleep 0.05; done"#,
        settings,
    ));
    let output = req.output.clone();
    let running = tokio::spawn(execute(req));
    output_contains(&output, "result=").await;
    let printed = output.snapshot();
    let result = printed
        .split("result=")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap()
        .to_owned();
    std::fs::hard_link(&secret, &result).unwrap();
    let outcome = running.await.unwrap();
    assert_eq!(
        error_message(&outcome),
        "KAIROS_RESULT: result.json belongs to uid 0, not to the task's user (uid 65534); not read"
    );
    assert!(!format!("{outcome:?}").contains("leaked-value"));
}
