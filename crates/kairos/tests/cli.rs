//! The CLI, run as the real binary against a real server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::process::{Command, Output};

use common::Server;
use reqwest::Method;
use serde_json::Value;

fn kairos(args: &[&str], server: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kairos"));
    cmd.args(args)
        .env_remove("KAIROS_SERVER")
        .env_remove("KAIROS_NAMESPACE");
    if let Some(url) = server {
        cmd.env("KAIROS_SERVER", url);
    }
    cmd.output().expect("run kairos")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn next_prints_rfc3339_lines_with_dst_notes() {
    let out = kairos(
        &[
            "next",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2026-03-27T00:00:00Z",
            "-n",
            "4",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], "2026-03-27T02:30:00+01:00");
    assert_eq!(lines[1], "2026-03-28T02:30:00+01:00");
    assert!(
        lines[2].starts_with("2026-03-29T03:00:00+02:00 "),
        "the gap moves it, with a note: {}",
        lines[2]
    );
    assert!(lines[2].contains("DST"));
    assert_eq!(lines[3], "2026-03-30T02:30:00+02:00");
    for line in &lines {
        let stamp = line.split(' ').next().unwrap();
        stamp
            .parse::<jiff::Timestamp>()
            .expect("each line starts with an RFC 3339 timestamp");
    }

    let fall_back = kairos(
        &[
            "next",
            "0 * * * *",
            "--tz",
            "America/New_York",
            "--from",
            "2026-11-01T04:30:00Z",
            "-n",
            "3",
        ],
        None,
    );
    let lines: Vec<String> = stdout(&fall_back).lines().map(str::to_owned).collect();
    assert!(
        lines[0].starts_with("2026-11-01T01:00:00-04:00"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("2026-11-01T01:00:00-05:00"),
        "the repeated hour fires twice: {lines:?}"
    );
    assert!(
        lines[2].starts_with("2026-11-01T02:00:00-05:00"),
        "{lines:?}"
    );

    let json = kairos(
        &[
            "next",
            "@daily",
            "-n",
            "2",
            "--from",
            "2026-01-01T12:00:00Z",
            "--json",
        ],
        None,
    );
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["at"], "2026-01-02T00:00:00+00:00");
    assert_eq!(v[1]["utc"], "2026-01-03T00:00:00Z");

    for bad in [
        vec!["next", "61 * * * *"],
        vec!["next", "* * *"],
        vec!["next", "@daily", "--tz", "Mars/Base"],
        vec!["next", "@daily", "--from", "yesterday"],
        vec!["next", "0 0 30 2 *"],
        vec!["next", "@yearly", "--from", "9998-06-01T00:00:00Z"],
        vec!["next", "@yearly", "--from", "9999-12-31T23:59:59Z"],
    ] {
        let out = kairos(&bad, None);
        assert!(!out.status.success(), "{bad:?} should fail");
        assert!(
            stderr(&out).starts_with("error: "),
            "{bad:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"));
    }
    let out = kairos(&["next", "@yearly", "--from", "9998-06-01T00:00:00Z"], None);
    assert!(
        stderr(&out).contains("no fire times after 9998-06-01T00:00:00Z"),
        "{}",
        stderr(&out)
    );
    let out = kairos(&["next", "@yearly", "--from", "9999-12-31T23:59:59Z"], None);
    assert!(stderr(&out).contains("out of range"), "{}", stderr(&out));
    // Fewer left than asked: the ones there are, and a note.
    let out = kairos(
        &[
            "next",
            "@yearly",
            "--from",
            "4998-06-01T00:00:00Z",
            "-n",
            "5",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("only 2 of 5 shown"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_plans_creates_updates_prunes_and_refuses_invalid_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let url = server.url.clone();
    let file = dir.path().join("jobs.toml");
    std::fs::write(
        &file,
        r#"
[[jobs]]
name = "alpha"
triggers = [{ interval = "1h" }]
task = { kind = "shell", script = "echo alpha" }

[[jobs]]
name = "beta"
triggers = [{ cron = "0 3 * * *", timezone = "Europe/Berlin" }]
task = { kind = "command", argv = ["true"] }
"#,
    )
    .unwrap();
    let apply = |args: &[&str]| {
        let mut all = vec!["apply", "-f", file.to_str().unwrap()];
        all.extend_from_slice(args);
        kairos(&all, Some(&url))
    };
    let dry = apply(&["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("create     default/alpha"),
        "{}",
        stdout(&dry)
    );
    assert!(stdout(&dry).contains("dry run"));
    let (_, _, jobs) = server.call(Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(
        jobs.as_array().unwrap().len(),
        0,
        "a dry run changes nothing"
    );

    let first = apply(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let again = apply(&[]);
    assert!(
        stdout(&again).contains("unchanged  default/alpha (version 1)"),
        "{}",
        stdout(&again)
    );
    assert!(stdout(&again).contains("applied: 0 change(s)"));

    // Change one job, drop the other: update, and with --prune, delete.
    std::fs::write(
        &file,
        r#"
[[jobs]]
name = "alpha"
triggers = [{ interval = "2h" }]
task = { kind = "shell", script = "echo alpha" }
"#,
    )
    .unwrap();
    let no_prune = apply(&["--json", "--dry-run"]);
    let plan: Value = serde_json::from_slice(&no_prune.stdout).unwrap();
    assert_eq!(plan.as_array().unwrap().len(), 1);
    assert_eq!(plan[0]["action"], "update");
    assert_eq!(plan[0]["from_version"], 1);
    let pruned = apply(&["--prune"]);
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    assert!(
        stdout(&pruned).contains("update     default/alpha (version 1 -> 2)"),
        "{}",
        stdout(&pruned)
    );
    assert!(
        stdout(&pruned).contains("delete     default/beta (version 1)"),
        "{}",
        stdout(&pruned)
    );
    let (_, _, jobs) = server.call(Method::GET, "/api/v1/jobs", None).await;
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["triggers"][0]["interval"], "2h");
    assert_eq!(jobs[0]["version"], 2);

    // An invalid file: every problem with its path, and nothing is sent.
    std::fs::write(
        &file,
        r#"
[[jobs]]
name = "alpha"
triggers = [{ interval = "2h" }]
task = { kind = "shell", script = "echo changed" }

[[jobs]]
name = "gamma"
triggers = [{ cron = "0 25 * * *" }]
task = { kind = "shell", script = "true" }
"#,
    )
    .unwrap();
    let invalid = apply(&[]);
    assert!(!invalid.status.success());
    assert!(
        stderr(&invalid).contains("jobs[1].triggers[0].cron"),
        "{}",
        stderr(&invalid)
    );
    let (_, _, job) = server.call(Method::GET, "/api/v1/jobs/alpha", None).await;
    assert_eq!(job["task"]["script"], "echo alpha", "nothing was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_and_run_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let url = server.url.clone();
    let job_file = dir.path().join("job.json");
    std::fs::write(&job_file, r#"{"name": "greet", "task": {"kind": "shell", "script": "echo hi from $KAIROS_JOB; echo oops >&2"}}"#).unwrap();
    let created = kairos(
        &["job", "create", "-f", job_file.to_str().unwrap()],
        Some(&url),
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let dup = kairos(
        &["job", "create", "-f", job_file.to_str().unwrap()],
        Some(&url),
    );
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("exists"), "{}", stderr(&dup));

    let ls = kairos(&["job", "ls"], Some(&url));
    assert!(stdout(&ls).starts_with("NAME"), "{}", stdout(&ls));
    assert!(stdout(&ls).contains("greet"));
    let triggered = kairos(&["job", "trigger", "greet", "--json"], Some(&url));
    let run: Value = serde_json::from_slice(&triggered.stdout).unwrap();
    let id = run["id"].as_i64().unwrap().to_string();
    server
        .wait_for_run_state(30, id.parse().unwrap(), "succeeded")
        .await;
    let logs = kairos(&["run", "logs", &id], Some(&url));
    assert!(
        stdout(&logs).contains("stdout hi from greet"),
        "{}",
        stdout(&logs)
    );
    assert!(stdout(&logs).contains("stderr oops"), "{}", stdout(&logs));
    let follow = kairos(&["run", "logs", &id, "--follow"], Some(&url));
    assert!(stdout(&follow).contains("hi from greet"));
    let get = kairos(&["run", "get", &id], Some(&url));
    assert!(stdout(&get).contains("succeeded"), "{}", stdout(&get));
    let runs = kairos(&["run", "ls", "--job", "greet", "--json"], Some(&url));
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let pause = kairos(&["job", "pause", "greet", "--json"], Some(&url));
    let job: Value = serde_json::from_slice(&pause.stdout).unwrap();
    assert_eq!(job["paused"], true);
    let rm = kairos(&["job", "rm", "greet"], Some(&url));
    assert!(rm.status.success());
    let gone = kairos(&["job", "get", "greet"], Some(&url));
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
    let unreachable = kairos(&["job", "ls"], Some("http://127.0.0.1:1"));
    assert!(!unreachable.status.success());
    assert!(
        stderr(&unreachable).contains("cannot reach"),
        "{}",
        stderr(&unreachable)
    );
}

/// A workflow run from the CLI: `run get` shows its steps as a tree (indented by depth, with
/// what each waits for), `run logs --step` prints one step's output; `job backfill` lists a
/// dry run's due times and creates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_runs_and_backfills_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let url = server.url.clone();
    let job_file = dir.path().join("flow.json");
    std::fs::write(
        &job_file,
        r#"{"name": "flow", "triggers": [{"cron": "0 2 * * *"}], "steps": [
            {"name": "extract", "task": {"kind": "shell", "script": "echo extracted"}},
            {"name": "load", "depends_on": ["extract"], "task": {"kind": "shell", "script": "echo loaded"}},
            {"name": "report", "depends_on": ["load"], "trigger_rule": "all_done",
             "task": {"kind": "shell", "script": "echo reported"}}]}"#,
    )
    .unwrap();
    let created = kairos(
        &["job", "create", "-f", job_file.to_str().unwrap()],
        Some(&url),
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let triggered = kairos(&["job", "trigger", "flow", "--json"], Some(&url));
    let run: Value = serde_json::from_slice(&triggered.stdout).unwrap();
    let id = run["id"].as_i64().unwrap();
    server.wait_for_run_state(60, id, "succeeded").await;
    let get = kairos(&["run", "get", &id.to_string()], Some(&url));
    let text = stdout(&get);
    let lines: Vec<&str> = text.lines().collect();
    let row = |step: &str| {
        *lines
            .iter()
            .find(|l| l.trim_start().starts_with(step))
            .unwrap_or_else(|| panic!("no row for {step} in:\n{text}"))
    };
    assert!(row("extract").starts_with("extract"), "{text}");
    assert!(row("load").starts_with("  load"), "{text}");
    assert!(row("report").starts_with("    report"), "{text}");
    assert!(row("report").contains("load (all_done)"), "{text}");
    assert!(row("load").contains("succeeded"), "{text}");
    let logs = kairos(
        &["run", "logs", &id.to_string(), "--step", "load"],
        Some(&url),
    );
    assert!(stdout(&logs).contains("loaded"), "{}", stdout(&logs));
    assert!(!stdout(&logs).contains("extracted"), "{}", stdout(&logs));
    let missing = kairos(
        &["run", "logs", &id.to_string(), "--step", "nope"],
        Some(&url),
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no step `nope`"),
        "{}",
        stderr(&missing)
    );

    // By hand: a step that ended is not skipped (409, said plainly); a rerun runs it and the
    // step below it again.
    let skip = kairos(&["run", "skip", &id.to_string(), "load"], Some(&url));
    assert!(!skip.status.success());
    assert!(stderr(&skip).contains("has ended"), "{}", stderr(&skip));
    let rerun = kairos(&["run", "rerun", &id.to_string(), "load"], Some(&url));
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert!(stdout(&rerun).contains("is running"), "{}", stdout(&rerun));
    server.wait_for_run_state(60, id, "succeeded").await;
    let again = kairos(&["run", "rerun-failed", &id.to_string()], Some(&url));
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no failed steps"),
        "{}",
        stderr(&again)
    );

    let dry = kairos(
        &[
            "job",
            "backfill",
            "flow",
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-03T23:00:00Z",
            "--dry-run",
        ],
        Some(&url),
    );
    assert!(dry.status.success(), "{}", stderr(&dry));
    let out = stdout(&dry);
    for day in ["2026-01-01", "2026-01-02", "2026-01-03"] {
        assert!(out.contains(day), "{out}");
    }
    assert_eq!(
        server.runs("flow").await.len(),
        1,
        "a dry run writes nothing"
    );
    let backfill = kairos(
        &[
            "job",
            "backfill",
            "flow",
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-03T23:00:00Z",
        ],
        Some(&url),
    );
    assert!(backfill.status.success(), "{}", stderr(&backfill));
    server
        .wait_for(60, "three backfilled workflow runs to succeed", || async {
            let runs = server.runs("flow").await;
            (runs.len() == 4 && runs.iter().all(|r| r["state"] == "succeeded")).then_some(())
        })
        .await;
}

/// `apply -f DIR --watch --prune`: a directory of files is one set of jobs, applied again on
/// every change; an invalid edit is reported and changes nothing (the last good state stays);
/// removing a file's job deletes it (with `--prune`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_watch_keeps_a_directory_of_jobs_in_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    let job = |name: &str, script: &str| {
        format!(
            "[[jobs]]\nname = \"{name}\"\ntask = {{ kind = \"shell\", script = \"{script}\" }}\n"
        )
    };
    std::fs::write(jobs.join("a.toml"), job("alpha", "echo one")).unwrap();
    std::fs::write(jobs.join("notes.txt"), "not a jobs file").unwrap();
    let out = dir.path().join("watch.out");
    let err = dir.path().join("watch.err");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["apply", "-f", jobs.to_str().unwrap(), "--watch", "--prune"])
        .env("KAIROS_SERVER", &server.url)
        .env_remove("KAIROS_NAMESPACE")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let get = |name: &'static str| {
        let server = &server;
        async move {
            let (status, _, job) = server
                .call(Method::GET, &format!("/api/v1/jobs/{name}"), None)
                .await;
            (status == 200).then_some(job)
        }
    };
    server
        .wait_for(30, "alpha to be created", || get("alpha"))
        .await;

    // A second file, and a change to the first: both applied.
    std::fs::write(
        jobs.join("b.json"),
        r#"[{"name": "beta", "task": {"kind": "shell", "script": "true"}}]"#,
    )
    .unwrap();
    std::fs::write(jobs.join("a.toml"), job("alpha", "echo two")).unwrap();
    server
        .wait_for(30, "beta to be created", || get("beta"))
        .await;
    server
        .wait_for(30, "alpha to be updated", || async {
            get("alpha")
                .await
                .filter(|j| j["task"]["script"] == "echo two")
        })
        .await;

    // An invalid edit: reported, nothing changes, the watch goes on.
    std::fs::write(jobs.join("a.toml"), job("Alpha!", "echo three")).unwrap();
    server
        .wait_for(30, "the invalid edit to be reported", || async {
            let text = std::fs::read_to_string(&err).unwrap_or_default();
            text.contains("a.toml: jobs[0].name").then_some(())
        })
        .await;
    let alpha = get("alpha").await.unwrap();
    assert_eq!(
        alpha["task"]["script"], "echo two",
        "the last good state stays"
    );
    assert_eq!(alpha["version"], 2);

    // Fixed, with beta's file gone: alpha updated, beta deleted (--prune).
    std::fs::write(jobs.join("a.toml"), job("alpha", "echo four")).unwrap();
    std::fs::remove_file(jobs.join("b.json")).unwrap();
    server
        .wait_for(30, "beta to be deleted", || async {
            get("beta").await.is_none().then_some(())
        })
        .await;
    assert_eq!(get("alpha").await.unwrap()["task"]["script"], "echo four");
    child.kill().unwrap();
    child.wait().unwrap();
    let plans = std::fs::read_to_string(&out).unwrap();
    assert!(plans.contains("create     default/beta"), "{plans}");
    assert!(plans.contains("delete     default/beta"), "{plans}");
}
