//! `run_as` and `limits` with real processes: a memory hog, a fork bomb and a busy loop stop at
//! their limits and take nothing else down; a task's memory use is its own.
//!
//! Where this machine gives tasks cgroups (v1 or v2 with the memory and pids controllers), the
//! cgroup cases run; the `setrlimit` fallback is checked at the spawner level in the crate's
//! unit tests.

use kairos_core::run::AttemptStatus;
use kairos_core::spec::{LimitsSpec, ProcessSettings, RunAs};

use crate::support::*;

fn with_limits(limits: LimitsSpec) -> ProcessSettings {
    ProcessSettings {
        limits,
        ..ProcessSettings::default()
    }
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(marker) && pid != std::process::id() as i32 {
            found.push(pid);
        }
    }
    found
}

/// Waits until no process with `marker` in its command line is left.
async fn all_gone(marker: &str) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !processes_with(marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {:?}",
            processes_with(marker)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Before the fix, `max_rss_kib` of `true` was the server's own memory (the vfork start counts
/// the parent's pages until `exec`). Here the test process holds 256 MiB while it starts `true`.
#[tokio::test]
async fn a_tasks_memory_use_is_its_own() {
    let ballast: Vec<u8> = vec![1; 256 << 20];
    let outcome = execute(request(command(&["/bin/true"]))).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    let usage = outcome.usage.unwrap();
    match kairos_exec::task_cgroups() {
        Some(cgroups) if cgroups.memory => {
            let kib = usage.max_rss_kib.expect("measured by the task's cgroup");
            assert!(kib < 64 * 1024, "`true` used {kib} KiB");
        }
        _ => assert_eq!(usage.max_rss_kib, None, "not measurable without a cgroup"),
    }
    assert!(ballast.iter().step_by(4096).all(|b| *b == 1));
}

#[tokio::test]
async fn a_memory_hog_stops_at_its_limit() {
    let settings = with_limits(LimitsSpec {
        memory: Some("64MiB".into()),
        ..LimitsSpec::default()
    });
    // `tail` keeps a whole line in memory: 512 MiB without a newline.
    let outcome = execute(request(shell_with(
        "head -c 512M /dev/zero | tail > /dev/null",
        settings,
    )))
    .await;
    assert!(!outcome.status.is_success(), "{outcome:?}");
    let output = &outcome.output;
    assert!(output.contains("limits: memory 64MiB"), "{output}");
    if kairos_exec::task_cgroups().is_some_and(|c| c.memory) {
        assert!(output.contains("went over its memory limit"), "{output}");
        let kib = outcome.usage.unwrap().max_rss_kib.unwrap();
        assert!(kib <= 64 * 1024 + 1024, "peak {kib} KiB");
    }
}

#[tokio::test]
async fn a_fork_bomb_stops_at_its_process_limit_and_leaves_nothing_behind() {
    let marker = "kairos-fork-bomb-marker";
    let settings = with_limits(LimitsSpec {
        processes: Some(16),
        ..LimitsSpec::default()
    });
    let mut req = request(shell_with(
        &format!("b() {{ b | b & }}; b; sleep 30 # {marker}"),
        settings,
    ));
    req.timeout = Some(jiff::SignedDuration::from_secs(3));
    let outcome = execute(req).await;
    assert!(!outcome.status.is_success(), "{outcome:?}");
    if kairos_exec::task_cgroups().is_some_and(|c| c.processes) {
        assert!(
            outcome.output.contains("limits: processes 16 (cgroup"),
            "{}",
            outcome.output
        );
    } else {
        assert!(
            outcome.output.contains("limit not applied: processes 16"),
            "{}",
            outcome.output
        );
    }
    // The node's own processes keep working meanwhile and after.
    assert_eq!(
        run_shell("echo alive").await.status,
        AttemptStatus::Succeeded
    );
    all_gone(marker).await;
}

#[tokio::test]
async fn cpu_time_and_open_files_are_limited_per_process() {
    let settings = with_limits(LimitsSpec {
        cpu_time: Some("1s".into()),
        open_files: Some(64),
        ..LimitsSpec::default()
    });
    let outcome = execute(request(shell_with(
        "ulimit -n; ulimit -t; while :; do :; done",
        settings,
    )))
    .await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Signal {
            signal: libc::SIGXCPU
        },
        "{}",
        outcome.output
    );
    assert_eq!(stdout(&outcome), ["64", "1"]);
}

#[tokio::test]
async fn run_as_switches_user_groups_and_home() {
    if kairos_exec_is_root() {
        let settings = ProcessSettings {
            run_as: Some(RunAs {
                user: "nobody".into(),
                group: None,
            }),
            ..ProcessSettings::default()
        };
        let outcome = execute(request(shell_with(
            r#"id -u; id -g; echo "$USER"; cat /proc/self/status | grep -c '^NoNewPrivs'; touch /root/kairos-run-as-probe"#,
            settings,
        )))
        .await;
        let out = stdout(&outcome);
        assert_eq!(out[0], "65534", "{}", outcome.output);
        assert_eq!(out[2], "nobody");
        assert!(
            !std::path::Path::new("/root/kairos-run-as-probe").exists(),
            "nobody cannot write /root"
        );
        assert!(
            outcome.output.contains("running as user nobody"),
            "{}",
            outcome.output
        );
        // Still dies with the node: the parent death signal is set after the switch.
        let settings = ProcessSettings {
            run_as: Some(RunAs {
                user: "nobody".into(),
                group: None,
            }),
            ..ProcessSettings::default()
        };
        let outcome = execute(request(shell_with(
            "grep -E '^(Uid|Gid)' /proc/self/status",
            settings,
        )))
        .await;
        assert!(outcome.output.contains("65534"), "{}", outcome.output);
    }
    let settings = ProcessSettings {
        run_as: Some(RunAs {
            user: "no-such-user-kairos".into(),
            group: None,
        }),
        ..ProcessSettings::default()
    };
    let outcome = execute(request(command_with(&["/bin/true"], settings))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(
        message.contains("no user `no-such-user-kairos`"),
        "{message}"
    );
}

fn kairos_exec_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A process that leaves the task's session and group (`setsid`) escapes group signals; its
/// cgroup still holds it, so it ends with the task.
#[tokio::test]
async fn a_process_that_left_the_group_ends_with_the_task() {
    if !kairos_exec::task_cgroups().is_some_and(|c| c.memory || c.processes) {
        return;
    }
    let marker = "kairos-escapee-marker";
    let outcome = execute(request(shell(&format!(
        "setsid sh -c 'sleep 300 # {marker}' & echo started"
    ))))
    .await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    all_gone(marker).await;
}
