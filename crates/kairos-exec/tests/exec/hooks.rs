//! Pre- and post-hooks around an attempt.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use kairos_core::run::AttemptStatus;
use kairos_core::spec::{HookSpec, HooksSpec, ShellTask};
use kairos_exec::ExecRequest;

use crate::support::*;

fn hook(script: &str) -> HookSpec {
    HookSpec::Shell(ShellTask {
        script: script.into(),
        process: Default::default(),
        unknown: BTreeMap::new(),
    })
}

#[tokio::test]
async fn failing_pre_hook_skips_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("task-ran");
    let task = shell(&format!("touch {}", marker.display()));
    let req = ExecRequest {
        hooks: HooksSpec {
            pre: Some(hook("echo preparing; exit 4")),
            post: None,
        },
        ..request(task)
    };
    let outcome = execute(req).await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Error {
            message: "pre-hook failed: exit code 4".into()
        }
    );
    assert!(!marker.exists(), "the task must not run");
    assert!(stdout(&outcome).contains(&"preparing".to_owned()));
    assert!(lines(&outcome.output, "kairos").contains(&"pre-hook started".to_owned()));
}

#[tokio::test]
async fn pre_hook_runs_before_the_task_with_run_variables() {
    let req = ExecRequest {
        hooks: HooksSpec {
            pre: Some(hook(r#"echo "pre $KAIROS_JOB $KAIROS_RUN_ID""#)),
            post: None,
        },
        ..request(shell("echo task"))
    };
    let outcome = execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert_eq!(stdout(&outcome), ["pre backup 42", "task"]);
    let kairos = lines(&outcome.output, "kairos");
    assert!(
        kairos.contains(&"pre-hook finished: succeeded".to_owned()),
        "{kairos:?}"
    );
}

#[tokio::test]
async fn post_hook_sees_the_outcome() {
    let req = ExecRequest {
        hooks: HooksSpec {
            pre: None,
            post: Some(hook(
                r#"echo "outcome=$KAIROS_OUTCOME code=$KAIROS_EXIT_CODE job=$KAIROS_JOB""#,
            )),
        },
        ..request(shell("echo working; exit 1"))
    };
    let outcome = execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::ExitCode { code: 1 });
    assert_eq!(outcome.exit_code, Some(1));
    assert_eq!(
        stdout(&outcome),
        ["working", "outcome=exit:1 code=1 job=backup"]
    );
}

#[tokio::test]
async fn post_hook_sees_a_timeout() {
    let req = ExecRequest {
        timeout: Some(SignedDuration::from_secs(1)),
        hooks: HooksSpec {
            pre: None,
            post: Some(hook(
                r#"echo "outcome=$KAIROS_OUTCOME code=${KAIROS_EXIT_CODE-none}""#,
            )),
        },
        ..request(shell("sleep 300"))
    };
    let outcome = execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::TimedOut);
    assert_eq!(stdout(&outcome), ["outcome=timeout code=none"]);
}

#[tokio::test]
async fn failing_post_hook_keeps_the_outcome() {
    let req = ExecRequest {
        hooks: HooksSpec {
            pre: None,
            post: Some(hook("exit 7")),
        },
        ..request(command(&["/bin/true"]))
    };
    let outcome = execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    let kairos = lines(&outcome.output, "kairos");
    assert!(
        kairos
            .iter()
            .any(|l| l.starts_with("post-hook failed: exit code 7")),
        "{kairos:?}"
    );
}

#[tokio::test]
async fn pre_hook_that_cannot_start_fails_the_attempt() {
    let pre = HookSpec::Command(kairos_core::spec::CommandTask {
        argv: vec!["/nonexistent/hook".into()],
        process: Default::default(),
        unknown: BTreeMap::new(),
    });
    let req = ExecRequest {
        hooks: HooksSpec {
            pre: Some(pre),
            post: None,
        },
        ..request(command(&["/bin/true"]))
    };
    let outcome = execute(req).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.starts_with("pre-hook failed: cannot start `/nonexistent/hook`"),
        "{message}"
    );
}
