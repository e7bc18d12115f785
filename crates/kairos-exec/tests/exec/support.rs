//! Shared test setup: requests, task builders, output parsing and process-group checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use kairos_core::run::AttemptOutcome;
use kairos_core::spec::{CommandTask, ProcessSettings, ShellTask, TaskSpec};
use kairos_exec::{ExecRequest, Executor, OutputBuffer, RunContext, TaskExecutor};

/// Upper bound for waits on conditions (never reached when the code works).
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn context() -> RunContext {
    RunContext {
        job: "backup".into(),
        namespace: "team-a".into(),
        run_id: 42,
        attempt: 2,
        scheduled_for: "2026-11-21T01:02:03Z".parse().unwrap(),
        step: None,
        params: None,
        upstream_results: None,
        event: None,
        upstream_run_id: None,
        upstream_result: None,
        checkpoint: None,
        run_token: None,
        api_url: None,
    }
}

/// A request with a safety-net timeout (so a broken test cannot hang) and a short kill grace.
pub fn request(task: TaskSpec) -> ExecRequest {
    ExecRequest {
        timeout: Some(SignedDuration::from_secs(30)),
        kill_grace: SignedDuration::from_millis(300),
        ..ExecRequest::new(task, context())
    }
}

pub fn shell(script: &str) -> TaskSpec {
    shell_with(script, ProcessSettings::default())
}

pub fn shell_with(script: &str, process: ProcessSettings) -> TaskSpec {
    TaskSpec::Shell(ShellTask {
        script: script.into(),
        process,
        unknown: BTreeMap::new(),
    })
}

pub fn command(argv: &[&str]) -> TaskSpec {
    command_with(argv, ProcessSettings::default())
}

pub fn command_with(argv: &[&str], process: ProcessSettings) -> TaskSpec {
    TaskSpec::Command(CommandTask {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        process,
        unknown: BTreeMap::new(),
    })
}

pub async fn execute(req: ExecRequest) -> AttemptOutcome {
    TaskExecutor::default().execute(req).await
}

pub async fn run_shell(script: &str) -> AttemptOutcome {
    execute(request(shell(script))).await
}

/// The text of every captured line of `stream`, checking each line's format on the way:
/// `<RFC 3339 UTC with milliseconds> <stream> <text>`.
pub fn lines(output: &str, stream: &str) -> Vec<String> {
    output
        .lines()
        .filter(|line| !line.starts_with("... ["))
        .filter_map(|line| {
            let (stamp, rest) = line.split_once(' ').expect("line has a timestamp");
            assert_eq!(
                stamp.len(),
                24,
                "timestamp `{stamp}` has millisecond precision"
            );
            assert!(
                stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
                "UTC stamp: {stamp}"
            );
            stamp.parse::<jiff::Timestamp>().expect("timestamp parses");
            let (s, text) = rest.split_once(' ').unwrap_or((rest, ""));
            (s == stream).then(|| text.to_owned())
        })
        .collect()
}

pub fn stdout(outcome: &AttemptOutcome) -> Vec<String> {
    lines(&outcome.output, "stdout")
}

/// Reads `pgid=N` printed by a script.
pub fn pgid_in(output: &str) -> i32 {
    output
        .split("pgid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pgid in output:\n{output}"))
}

/// Live (non-zombie) processes whose process group is `pgid`, from `/proc`.
pub fn live_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may contain spaces.
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        let (state, group) = (fields[0], fields[2].parse::<i32>().unwrap_or(0));
        if group == pgid && state != "Z" && state != "X" {
            members.push(pid);
        }
    }
    members
}

/// Waits until no live process is left in group `pgid`; false if some are still alive after
/// [`PATIENCE`]. (SIGKILL is delivered asynchronously, so a short wait is normal.)
pub async fn group_gone(pgid: i32) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if live_members(pgid).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits until the output contains `needle`.
pub async fn output_contains(output: &Arc<OutputBuffer>, needle: &str) {
    let wait = async {
        loop {
            let seen = output.version();
            if output.snapshot().contains(needle) {
                return;
            }
            output.changed_since(seen).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("output appears");
}
