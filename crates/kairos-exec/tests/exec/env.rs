//! Environment, env files, secret files, working directory and the `KAIROS_*` variables.

use std::collections::BTreeMap;

use kairos_core::run::AttemptStatus;
use kairos_core::spec::ProcessSettings;

use crate::support::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn inherits_the_environment_with_overrides() {
    let settings = ProcessSettings {
        env: env(&[("GREETING", "hi there")]),
        ..Default::default()
    };
    let outcome = execute(request(shell_with(
        r#"echo "$GREETING"; echo "path=$PATH""#,
        settings,
    )))
    .await;
    let out = stdout(&outcome);
    assert_eq!(out[0], "hi there");
    assert_eq!(out[1], format!("path={}", std::env::var("PATH").unwrap()));
}

#[tokio::test]
async fn clear_env_starts_from_nothing() {
    let settings = ProcessSettings {
        clear_env: true,
        env: env(&[("ONLY", "me")]),
        ..Default::default()
    };
    let outcome = execute(request(command_with(&["/usr/bin/env"], settings))).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    let mut names: Vec<String> = stdout(&outcome)
        .iter()
        .map(|l| l.split('=').next().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "KAIROS_ATTEMPT",
            "KAIROS_JOB",
            "KAIROS_NAMESPACE",
            "KAIROS_RESULT",
            "KAIROS_RUN_ID",
            "KAIROS_SCHEDULED_FOR",
            "ONLY"
        ]
    );
}

#[tokio::test]
async fn kairos_variables_describe_the_run() {
    let script = r#"echo "$KAIROS_JOB|$KAIROS_NAMESPACE|$KAIROS_RUN_ID|$KAIROS_ATTEMPT|$KAIROS_SCHEDULED_FOR""#;
    // The run variables win over a user's attempt to set them.
    let settings = ProcessSettings {
        env: env(&[("KAIROS_JOB", "spoofed")]),
        ..Default::default()
    };
    let outcome = execute(request(shell_with(script, settings))).await;
    assert_eq!(
        stdout(&outcome),
        ["backup|team-a|42|2|2026-11-21T01:02:03Z"]
    );
}

#[tokio::test]
async fn env_files_are_loaded_in_order_and_env_wins() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(
        &dir,
        "first.env",
        "# comment\nA=1\nexport B=\"two words\"\nC='single $quoted'\n\nD=plain # trailing\nE=\"esc\\\"aped\"\n",
    );
    let second = write(&dir, "second.env", "A=from-second\nF=f\n");
    let settings = ProcessSettings {
        env_files: vec![first, second],
        env: env(&[("F", "from-env")]),
        ..Default::default()
    };
    let script = r#"echo "$A|$B|$C|$D|$E|$F""#;
    let outcome = execute(request(shell_with(script, settings))).await;
    assert_eq!(
        stdout(&outcome),
        ["from-second|two words|single $quoted|plain|esc\"aped|from-env"]
    );
}

#[tokio::test]
async fn bad_env_file_is_an_error_without_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "bad.env", "GOOD=value\nhunter2-without-equals\n");
    let settings = ProcessSettings {
        env_files: vec![path.clone()],
        ..Default::default()
    };
    let outcome = execute(request(command_with(&["/bin/true"], settings))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.contains(&path) && message.contains("line 2"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    let settings = ProcessSettings {
        env_files: vec!["/nonexistent/x.env".into()],
        ..Default::default()
    };
    let outcome = execute(request(command_with(&["/bin/true"], settings))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.contains("cannot read env file `/nonexistent/x.env`"),
        "{message}"
    );
}

#[tokio::test]
async fn secret_files_are_read_at_run_time_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "token", "s3cr3t-value\n");
    let settings = ProcessSettings {
        secret_files: [("API_TOKEN".to_owned(), path)].into_iter().collect(),
        ..Default::default()
    };
    let script = r#"[ "$API_TOKEN" = "s3cr3t-value" ] && echo matches"#;
    let outcome = execute(request(shell_with(script, settings))).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert_eq!(stdout(&outcome), ["matches"]);
    assert!(!format!("{outcome:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn unreadable_secret_file_is_an_error() {
    let settings = ProcessSettings {
        secret_files: [("API_TOKEN".to_owned(), "/nonexistent/token".to_owned())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let outcome = execute(request(command_with(&["/bin/true"], settings))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.contains("secret file `/nonexistent/token` for `API_TOKEN`"),
        "{message}"
    );
}

#[tokio::test]
async fn cwd_sets_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    let settings = ProcessSettings {
        cwd: Some(path.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let outcome = execute(request(command_with(&["/bin/pwd"], settings))).await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    assert_eq!(stdout(&outcome), [path.to_string_lossy().into_owned()]);
}

#[tokio::test]
async fn program_is_looked_up_in_the_tasks_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let probe = write(&dir, "kairos-path-probe", "#!/bin/sh\necho \"probe $1\"\n");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = ProcessSettings {
        env: env(&[(
            "PATH",
            &format!("/nonexistent:{}", dir.path().to_str().unwrap()),
        )]),
        ..Default::default()
    };
    let outcome = execute(request(command_with(
        &["kairos-path-probe", "ok"],
        settings,
    )))
    .await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded, "{outcome:?}");
    assert_eq!(stdout(&outcome), ["probe ok"]);
}

#[tokio::test]
async fn the_tasks_path_replaces_the_servers() {
    // `true` is in the server's PATH, but the task's has nothing.
    let settings = ProcessSettings {
        env: env(&[("PATH", "/nonexistent")]),
        ..Default::default()
    };
    let outcome = execute(request(command_with(&["true"], settings))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.starts_with("cannot start `true`: ") && message.ends_with("(os error 2)"),
        "{message}"
    );
}

/// The error message of an attempt whose secret (or env) file cannot be used.
async fn file_error(settings: ProcessSettings) -> String {
    let mut req = request(command_with(&["/bin/true"], settings));
    req.timeout = Some(jiff::SignedDuration::from_secs(20));
    let outcome = execute(req).await;
    match outcome.status {
        AttemptStatus::Error { message } => message,
        other => panic!("expected an error, got {other:?}: {}", outcome.output),
    }
}

fn secret(path: &str) -> ProcessSettings {
    ProcessSettings {
        secret_files: [("S".to_owned(), path.to_owned())].into_iter().collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_fifo_secret_is_refused_at_once_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("s.fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let fifo = fifo.to_string_lossy().into_owned();
    let message = file_error(secret(&fifo)).await;
    assert!(message.contains("a FIFO, not a regular file"), "{message}");
    // The output of the attempt that never started says why, for `run logs`.
    let outcome = execute(request(command_with(&["/bin/true"], secret(&fifo)))).await;
    assert!(
        outcome
            .output
            .contains("kairos task finished: error: cannot read secret file"),
        "{}",
        outcome.output
    );
    let message = file_error(ProcessSettings {
        env_files: vec![fifo],
        ..Default::default()
    })
    .await;
    assert!(message.contains("a FIFO, not a regular file"), "{message}");
}

#[tokio::test]
async fn devices_directories_and_large_files_are_refused() {
    let message = file_error(secret("/dev/zero")).await;
    assert!(message.contains("a character device"), "{message}");
    let dir = tempfile::tempdir().unwrap();
    let message = file_error(secret(dir.path().to_str().unwrap())).await;
    assert!(message.contains("a directory"), "{message}");
    let big = write(&dir, "big", &"x".repeat(64 * 1024 + 1));
    let message = file_error(secret(&big)).await;
    assert!(message.contains("larger than 65536 bytes"), "{message}");
    assert!(!message.contains("xxx"), "{message}");
    let message = file_error(ProcessSettings {
        env_files: vec![big],
        ..Default::default()
    })
    .await;
    assert!(message.contains("larger than 65536 bytes"), "{message}");
    // At the limit is fine.
    let limit = write(&dir, "limit", &"y".repeat(64 * 1024));
    let outcome = execute(request(command_with(&["/bin/true"], secret(&limit)))).await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
}
