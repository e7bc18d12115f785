//! `command` and `shell` tasks with real child processes: exit codes, signals, capture, limits.

use std::sync::Arc;

use jiff::SignedDuration;
use kairos_core::run::AttemptStatus;
use kairos_core::spec::ProcessSettings;
use kairos_exec::{Executor, OutputBuffer, TaskExecutor};

use crate::support::*;

#[tokio::test]
async fn exit_zero_succeeds_with_usage() {
    let outcome = execute(request(command(&["/bin/true"]))).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert_eq!(outcome.exit_code, Some(0));
    let usage = outcome.usage.expect("resource usage from wait4");
    assert!(usage.max_rss_kib.is_none_or(|kib| kib > 0), "{usage:?}");
    assert!(usage.user_cpu_us >= 0 && usage.sys_cpu_us >= 0, "{usage:?}");
}

#[tokio::test]
async fn unexpected_exit_code_fails() {
    let outcome = run_shell("exit 3").await;
    assert_eq!(outcome.status, AttemptStatus::ExitCode { code: 3 });
    assert_eq!(outcome.exit_code, Some(3));
}

#[tokio::test]
async fn expected_exit_codes_count_as_success() {
    let req = kairos_exec::ExecRequest {
        expected_exit_codes: vec![0, 3],
        ..request(shell("exit 3"))
    };
    let outcome = execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert_eq!(outcome.exit_code, Some(3));

    let req = kairos_exec::ExecRequest {
        expected_exit_codes: vec![3],
        ..request(shell("exit 0"))
    };
    assert_eq!(
        execute(req).await.status,
        AttemptStatus::ExitCode { code: 0 }
    );
}

#[tokio::test]
async fn signal_not_from_kairos_is_reported() {
    let outcome = run_shell("kill -USR1 $$").await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Signal {
            signal: libc::SIGUSR1
        }
    );
    assert_eq!(outcome.exit_code, None);
    assert!(outcome.usage.is_some());
}

#[tokio::test]
async fn command_runs_without_a_shell() {
    let outcome = execute(request(command(&["/bin/echo", "$HOME", "a  b", "*"]))).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert_eq!(stdout(&outcome), ["$HOME a  b *"]);
}

#[tokio::test]
async fn program_is_looked_up_in_path() {
    let outcome = execute(request(command(&["echo", "found"]))).await;
    assert_eq!(stdout(&outcome), ["found"]);
}

#[tokio::test]
async fn missing_program_is_an_error() {
    let outcome = execute(request(command(&["/nonexistent/kairos-test-program", "x"]))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.contains("cannot start `/nonexistent/kairos-test-program`"),
        "{message}"
    );
    assert!(outcome.usage.is_none());
}

#[tokio::test]
async fn empty_argv_is_an_error() {
    let outcome = execute(request(command(&[]))).await;
    assert!(
        matches!(outcome.status, AttemptStatus::Error { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn stdout_and_stderr_are_timestamped_lines() {
    let outcome = run_shell("echo hello; echo oops >&2; printf 'no newline'").await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert_eq!(stdout(&outcome), ["hello", "no newline"]);
    assert_eq!(lines(&outcome.output, "stderr"), ["oops"]);
    assert!(!outcome.output_truncated);
}

#[tokio::test]
async fn invalid_utf8_is_decoded_lossily() {
    let outcome = run_shell(r"printf 'bad \377 byte\n'").await;
    assert_eq!(stdout(&outcome), ["bad \u{FFFD} byte"]);
}

#[tokio::test]
async fn stdin_is_dev_null() {
    let outcome = run_shell("cat; echo done").await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert_eq!(stdout(&outcome), ["done"]);
}

#[tokio::test]
async fn output_is_capped_keeping_head_and_tail() {
    let output = Arc::new(OutputBuffer::new(2000));
    let script = "i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done";
    let req = kairos_exec::ExecRequest {
        output: Arc::clone(&output),
        ..request(shell(script))
    };
    let outcome = execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert!(outcome.output_truncated);
    let text = &outcome.output;
    assert!(text.contains(" stdout line0\n"), "head kept:\n{text}");
    assert!(text.contains(" stdout line499\n"), "tail kept:\n{text}");
    assert!(!text.contains(" stdout line250\n"), "middle dropped");
    let marker = text
        .lines()
        .find(|l| l.starts_with("... ["))
        .expect("marker line");
    assert!(marker.ends_with(" bytes truncated] ..."), "{marker}");
    assert!(
        text.len() <= 2000 + marker.len() + 1,
        "{} bytes",
        text.len()
    );
    // The marker sits between head and tail.
    let head_end = text.find(marker).unwrap();
    assert!(text[..head_end].contains("line0") && text[head_end..].contains("line499"));
    assert!(output.len_written() > 2000);
    assert!(output.is_closed(), "the executor closes the buffer");
}

#[tokio::test]
async fn child_leads_its_own_session_and_group() {
    let script =
        r#"read -r pid comm state ppid pgrp sid rest < /proc/$$/stat; echo "$pid $pgrp $sid""#;
    let outcome = run_shell(script).await;
    let line = &stdout(&outcome)[0];
    let ids: Vec<&str> = line.split(' ').collect();
    assert_eq!(ids[0], ids[1], "pid == pgid: {line}");
    assert_eq!(ids[0], ids[2], "pid == sid: {line}");
}

#[tokio::test]
async fn timeout_kills_the_whole_group_including_background_children() {
    let req = kairos_exec::ExecRequest {
        timeout: Some(SignedDuration::from_secs(1)),
        ..request(shell("echo pgid=$$; sleep 300 & sleep 300 & wait"))
    };
    let outcome = execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::TimedOut);
    assert!(
        outcome.output.contains("sending SIGTERM"),
        "{}",
        outcome.output
    );
    let pgid = pgid_in(&outcome.output);
    assert!(
        group_gone(pgid).await,
        "group {pgid} still has {:?}",
        live_members(pgid)
    );
}

#[tokio::test]
async fn term_ignoring_process_gets_sigkill_after_grace() {
    let req = kairos_exec::ExecRequest {
        timeout: Some(SignedDuration::from_secs(1)),
        kill_grace: SignedDuration::from_millis(200),
        ..request(shell(
            "trap '' TERM; echo pgid=$$; sleep 300; echo survived",
        ))
    };
    let outcome = execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::TimedOut);
    assert!(
        outcome.output.contains("sending SIGKILL"),
        "{}",
        outcome.output
    );
    assert!(!outcome.output.contains("survived"));
    let pgid = pgid_in(&outcome.output);
    assert!(
        group_gone(pgid).await,
        "group {pgid} still has {:?}",
        live_members(pgid)
    );
}

#[tokio::test]
async fn exiting_leader_takes_its_background_children_along() {
    // The background sleep even holds the output pipes open.
    let outcome = run_shell("echo pgid=$$; sleep 300 & echo leader done").await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert!(stdout(&outcome).contains(&"leader done".to_owned()));
    let pgid = pgid_in(&outcome.output);
    assert!(
        group_gone(pgid).await,
        "group {pgid} still has {:?}",
        live_members(pgid)
    );
}

/// Whether `pid` is a zombie child of this process (exited, never reaped).
fn our_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, after)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[0] == "Z" && fields[1].parse::<u32>().ok() == Some(std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_short_processes_at_once_all_finish_and_none_is_left_a_zombie() {
    let running: Vec<_> = (0..200)
        .map(|_| tokio::spawn(execute(request(shell("echo pgid=$$")))))
        .collect();
    for run in running {
        let outcome = run.await.unwrap();
        assert_eq!(outcome.status, AttemptStatus::Succeeded, "{outcome:?}");
        assert!(outcome.usage.is_some(), "{outcome:?}");
        // The outcome comes back only after the leader was reaped.
        let pid = pgid_in(&outcome.output);
        assert!(!our_zombie(pid), "{pid} is a zombie");
    }
}

#[tokio::test]
async fn cancel_kills_the_group() {
    let req = request(shell("echo pgid=$$; sleep 300 & sleep 300"));
    let (output, cancel) = (Arc::clone(&req.output), req.cancel.clone());
    let running = tokio::spawn(execute(req));
    output_contains(&output, "pgid=").await;
    // Live output is readable while the attempt runs.
    assert!(!output.is_closed());
    let pgid = pgid_in(&output.snapshot());
    cancel.cancel();
    let outcome = running.await.unwrap();
    assert_eq!(outcome.status, AttemptStatus::Cancelled);
    assert!(
        group_gone(pgid).await,
        "group {pgid} still has {:?}",
        live_members(pgid)
    );
}

/// A stop that cannot wait (the worker's lease may have passed to another node) kills the group
/// at once: a process that ignores SIGTERM does not get the kill grace.
#[tokio::test]
async fn kill_stops_the_group_at_once_without_the_grace() {
    let req = kairos_exec::ExecRequest {
        kill_grace: SignedDuration::from_secs(3600),
        ..request(shell("trap '' TERM; echo pgid=$$; sleep 300 & sleep 300"))
    };
    let (output, cancel, kill) = (
        Arc::clone(&req.output),
        req.cancel.clone(),
        req.kill.clone(),
    );
    let running = tokio::spawn(execute(req));
    output_contains(&output, "pgid=").await;
    let pgid = pgid_in(&output.snapshot());
    kill.cancel();
    cancel.cancel();
    // The grace is an hour: only the kill can end it within the test's timeout.
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), running)
        .await
        .expect("killed without waiting for the grace")
        .unwrap();
    assert_eq!(outcome.status, AttemptStatus::Cancelled);
    assert!(
        outcome.output.contains("stopped at once"),
        "{}",
        outcome.output
    );
    assert!(!outcome.output.contains("SIGTERM"), "{}", outcome.output);
    assert!(
        group_gone(pgid).await,
        "group {pgid} still has {:?}",
        live_members(pgid)
    );
}

#[tokio::test]
async fn dropping_the_attempt_kills_the_group() {
    let req = request(shell("echo pgid=$$; sleep 300"));
    let output = Arc::clone(&req.output);
    let executor = TaskExecutor::default();
    let running = tokio::spawn(async move { executor.execute(req).await });
    output_contains(&output, "pgid=").await;
    let pgid = pgid_in(&output.snapshot());
    running.abort();
    let _ = running.await;
    assert!(
        group_gone(pgid).await,
        "group {pgid} still has {:?}",
        live_members(pgid)
    );
}

#[tokio::test]
async fn bad_cwd_is_an_error() {
    let settings = ProcessSettings {
        cwd: Some("/nonexistent/kairos-dir".into()),
        ..Default::default()
    };
    let outcome = execute(request(command_with(&["/bin/true"], settings))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.contains("working directory `/nonexistent/kairos-dir`"),
        "{message}"
    );
}

#[tokio::test]
async fn program_not_in_path_reports_the_errno() {
    let outcome = execute(request(command(&["kairos-test-no-such-program"]))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.starts_with("cannot start `kairos-test-no-such-program`: ")
            && message.ends_with("(os error 2)"),
        "{message}"
    );
}

#[tokio::test]
async fn non_executable_program_reports_the_errno() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-executable");
    std::fs::write(&path, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = path.to_str().unwrap();
    let outcome = execute(request(command(&[path]))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.starts_with(&format!("cannot start `{path}`: "))
            && message.ends_with("(os error 13)"),
        "{message}"
    );
    assert!(outcome.usage.is_none());
}

#[tokio::test]
async fn cwd_that_is_a_file_is_an_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let settings = ProcessSettings {
        cwd: Some(path.into()),
        ..Default::default()
    };
    let outcome = execute(request(command_with(&["/bin/true"], settings))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.contains(&format!("working directory `{path}` is not a directory")),
        "{message}"
    );
}

/// A `SigXxx:` mask of a `/proc/<pid>/status` text.
fn signal_mask(status: &str, field: &str) -> u64 {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(value.trim(), 16).unwrap()
}

#[tokio::test]
async fn child_starts_with_no_blocked_signals_and_default_sigpipe() {
    let outcome = execute(request(command(&[
        "/bin/grep",
        "^Sig",
        "/proc/self/status",
    ])))
    .await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    let child = stdout(&outcome).join("\n");
    assert_eq!(signal_mask(&child, "SigBlk:"), 0, "{child}");
    // What this process ignores stays ignored, except SIGPIPE (ignored by Rust programs).
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(
        signal_mask(&child, "SigIgn:"),
        signal_mask(&ours, "SigIgn:") & !sigpipe,
        "{child}"
    );
}

#[tokio::test]
async fn child_has_no_descriptors_besides_stdio() {
    // 3 is the directory the shell reads to expand `*`.
    let outcome = run_shell("cd /proc/self/fd && echo *").await;
    assert_eq!(stdout(&outcome), ["0 1 2 3"]);
}
