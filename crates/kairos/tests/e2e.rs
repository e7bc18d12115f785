//! End to end: the real `kairos` binary on a temp data dir, driven over HTTP.
//! These wait on real time (a server fires real seconds) but never assert how long anything took.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Server, processes_in_group};
use reqwest::Method;
use serde_json::{Value, json};

fn seconds(runs: &[Value]) -> Vec<jiff::Timestamp> {
    let mut out: Vec<jiff::Timestamp> = runs
        .iter()
        .map(|r| r["scheduled_for"].as_str().unwrap().parse().unwrap())
        .collect();
    out.sort();
    out
}

/// Asserts that due times are whole seconds, each exactly once, with no gap.
fn assert_every_second_once(times: &[jiff::Timestamp]) {
    let unique: BTreeSet<_> = times.iter().collect();
    assert_eq!(
        unique.len(),
        times.len(),
        "a due time has two runs: {times:?}"
    );
    for pair in times.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]),
            jiff::SignedDuration::from_secs(1),
            "a due time is missing between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_second_job_fires_once_per_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let (status, _, job) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "tick", "triggers": [{"cron": "* * * * * *"}], "task": {"kind": "command", "argv": ["true"]}})),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let runs = server
        .wait_for(30, "five finished runs", || async {
            let runs = server.runs("tick").await;
            let done = runs.iter().filter(|r| r["state"] == "succeeded").count();
            (done >= 5).then_some(runs)
        })
        .await;
    let finished: Vec<Value> = runs
        .into_iter()
        .filter(|r| r["state"] == "succeeded")
        .collect();
    assert_every_second_once(&seconds(&finished));
    for run in &finished {
        assert_eq!(
            run["scheduled_for"].as_str().unwrap().len(),
            "2026-01-01T00:00:00Z".len(),
            "whole seconds"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_neither_repeats_nor_loses_a_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]).await;
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({
                "name": "every-second",
                "triggers": [{"interval": "1s"}],
                "task": {"kind": "shell", "script": "echo $KAIROS_SCHEDULED_FOR"},
                "catchup": "all", "catchup_window": "10m",
                "overlap": "allow", "max_concurrent": 1000
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    server
        .wait_for(30, "three runs", || async {
            (server.runs("every-second").await.len() >= 3).then_some(())
        })
        .await;
    server.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await; // down for a few due times
    let server = Server::start(&data, &[]).await;
    // The catch-up of the missed seconds may come before or after this first look: wait for
    // three more runs, and for at least eight in all (three before the kill, the seconds it
    // was down, and some after), whichever is later.
    let first_after_restart = server.runs("every-second").await.len();
    server
        .wait_for(30, "runs after the restart", || async {
            let n = server.runs("every-second").await.len();
            (n >= first_after_restart + 3 && n >= 8).then_some(())
        })
        .await;
    // Everything, including the missed seconds and anything that was running at the kill, ends.
    let runs = server
        .wait_for(60, "all runs finished", || async {
            let runs = server.runs("every-second").await;
            let active = runs
                .iter()
                .filter(|r| r["state"] == "queued" || r["state"] == "running")
                .count();
            // New runs keep coming each second; wait for a moment where at most the newest is active.
            (active <= 1).then_some(runs)
        })
        .await;
    let times = seconds(&runs);
    assert!(times.len() >= 8, "{} runs", times.len());
    assert_every_second_once(&times);
    assert!(
        runs.iter()
            .all(|r| ["succeeded", "queued", "running"].contains(&r["state"].as_str().unwrap())),
        "{runs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_shell_task_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let script = format!(
        "echo $$ > {}; sleep 300 & (trap '' TERM; sleep 300) & sleep 300; wait",
        pidfile.display()
    );
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "hang", "task": {"kind": "shell", "script": script}, "timeout": "1s", "kill_grace": "500ms"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = server.trigger("hang").await;
    let run = server.wait_for_run_state(30, id, "timed_out").await;
    assert_eq!(run["attempts"][0]["status"], "timeout");
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let left = server
        .wait_for(10, "the process group to be gone", || async {
            let left = processes_in_group(pgid);
            left.is_empty().then_some(left)
        })
        .await;
    assert!(left.is_empty());
}

/// A server killed with SIGKILL takes along what its tasks started, not only their main
/// processes (which die with it through the parent death signal): its guard kills their
/// process groups at once, before the lease lets another node run the task again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_server_leaves_no_task_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut server = Server::start(&dir.path().join("data"), &[]).await;
    let script = format!(
        "echo $$ > {}.tmp; mv {0}.tmp {0}; sleep 300 & (trap '' TERM; sleep 300) & sleep 300; wait",
        pidfile.display()
    );
    let (status, _, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "spawner", "task": {"kind": "shell", "script": script}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    server.trigger("spawner").await;
    let pgid: i32 = server
        .wait_for(30, "the task to start", || async {
            std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
        })
        .await;
    // The shell and its three children.
    server
        .wait_for(10, "the task's processes", || async {
            (processes_in_group(pgid).len() >= 4).then_some(())
        })
        .await;
    server.kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_in_group(pgid);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left running after the server was killed: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_json_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let (status, ct, body) = server
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "x", "triggers": [{"cron": "99 * * * *", "timezone": "Nowhere/Land"}], "task": {"kind": "shell", "script": ""}})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(ct, "application/problem+json");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"triggers[0].timezone") || fields.contains(&"triggers[0].cron"),
        "{fields:?}"
    );
    assert!(fields.contains(&"task.script"), "{fields:?}");
    let (status, _, jobs) = server.call(Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(status, 200);
    assert_eq!(jobs, json!([]), "nothing was written");

    // A stale version is refused and changes nothing.
    let job = json!({"name": "v", "triggers": [{"interval": "1h"}], "task": {"kind": "shell", "script": "true"}});
    server
        .call(Method::POST, "/api/v1/jobs", Some(job.clone()))
        .await;
    let mut v2 = job.clone();
    v2["description"] = json!("two");
    v2["version"] = json!(1);
    let (status, _, _) = server
        .call(Method::PUT, "/api/v1/jobs/v", Some(v2.clone()))
        .await;
    assert_eq!(status, 200);
    v2["description"] = json!("stale");
    let (status, ct, problem) = server.call(Method::PUT, "/api/v1/jobs/v", Some(v2)).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(ct, "application/problem+json");
    let (_, _, current) = server.call(Method::GET, "/api/v1/jobs/v", None).await;
    assert_eq!(current["description"], "two");
    assert_eq!(current["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_kills_running_tasks_after_the_grace_and_their_runs_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("kairos.toml");
    std::fs::write(&config, "shutdown_grace = \"1s\"\n").unwrap();
    let pidfile = dir.path().join("pid");
    let mut server = Server::start(&data, &["--config", config.to_str().unwrap()]).await;
    let script = format!(
        "if [ -e {p}.done ]; then exit 0; fi; echo $$ > {p}; touch {p}.done; sleep 300",
        p = pidfile.display()
    );
    server.create_shell_job("long", &script).await;
    let id = server.trigger("long").await;
    server
        .wait_for(30, "the task to start", || async {
            pidfile.exists().then_some(())
        })
        .await;
    let status = server
        .terminate(Duration::from_secs(30))
        .await
        .expect("the server exits after SIGTERM");
    let first_log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{first_log}");
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        processes_in_group(pgid).is_empty(),
        "the task's process group was killed"
    );
    // The run was released, not lost: after a restart it runs again and completes.
    let server = Server::start(&data, &[]).await;
    let run = server.wait_for_run_state(30, id, "succeeded").await;
    assert_eq!(
        run["attempts"].as_array().unwrap().len(),
        1,
        "the released attempt does not count: {run}\n{first_log}"
    );
}

/// A short lease is renewed often enough: a task that runs for several leases runs once, as one
/// attempt, and is never rescued while it runs (a heartbeat that stayed at 10 s whatever the
/// lease once let the rescuer start the same run three times at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_longer_than_a_short_lease_runs_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("kairos.toml");
    std::fs::write(&config, "lease = \"3s\"\n").unwrap();
    let starts = dir.path().join("starts");
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]).await;
    let script = format!(
        "echo \"start $$\" >> {f}; sleep 8; echo \"end $$\" >> {f}",
        f = starts.display()
    );
    server.create_shell_job("long", &script).await;
    let id = server.trigger("long").await;
    let run = server.wait_for_run_state(40, id, "succeeded").await;
    let log = std::fs::read_to_string(&starts).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "one start and one end: {log}");
    assert!(
        lines[0].starts_with("start") && lines[1].starts_with("end"),
        "{log}"
    );
    assert_eq!(run["attempt"], 1, "{run}");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_data_dirs_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _server = Server::start(&data, &[]).await;
    let bin = env!("CARGO_BIN_EXE_kairos");
    let out = std::process::Command::new(bin)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another Kairos node"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("kairos.db"), vec![0x42u8; 8192]).unwrap();
    let out = std::process::Command::new(bin)
        .args(["server", "--data-dir"])
        .arg(&corrupt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt") || err.contains("not a database"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = std::process::Command::new(bin)
        .args(["server", "--data-dir"])
        .arg(file.join("sub"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot create data directory"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_a_running_task_and_json_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let server = Server::start(&dir.path().join("data"), &["--log-format", "json"]).await;
    // The task prints a line, waits for the test to open the gate, then prints another.
    let script = format!(
        "echo first; while [ ! -e {g} ]; do sleep 0.05; done; echo second",
        g = gate.display()
    );
    server.create_shell_job("talk", &script).await;
    let id = server.trigger("talk").await;
    server.wait_for_run_state(30, id, "running").await;
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args([
            "run",
            "logs",
            &id.to_string(),
            "--follow",
            "--server",
            &server.url,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first line arrives while the run is still running.
    let mut reader = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert!(line.contains("stdout first"), "{line}");
    let (_, _, run) = server
        .call(Method::GET, &format!("/api/v1/runs/{id}"), None)
        .await;
    assert_eq!(run["state"], "running");
    std::fs::write(&gate, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(rest.contains("stdout second"), "{rest}");
    assert!(
        follow.wait().unwrap().success(),
        "the stream ends when the run finishes"
    );

    let log = std::fs::read_to_string(&server.log).unwrap();
    let first = log.lines().next().expect("a log line");
    let parsed: Value = serde_json::from_str(first).expect("--log-format json writes JSON lines");
    assert!(parsed["level"].is_string(), "{parsed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_keeps_its_place_past_the_output_cap_and_never_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    // About 2.5 MB of output: well past the 1 MiB cap.
    let script = format!(
        "echo start; while [ ! -e {g} ]; do sleep 0.05; done; i=0; \
         while [ $i -lt 40000 ]; do echo \"line $i padding-padding-padding\"; i=$((i+1)); done; echo last-line",
        g = gate.display()
    );
    server.create_shell_job("big", &script).await;
    let id = server.trigger("big").await;
    server.wait_for_run_state(30, id, "running").await;
    let follow = {
        let http = server.http.clone();
        let url = format!("{}/api/v1/runs/{id}/output?follow=true", server.url);
        tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&gate, "").unwrap();
    let text = tokio::time::timeout(Duration::from_secs(60), follow)
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(
        text.matches("stdout start").count(),
        1,
        "nothing is sent twice"
    );
    assert_eq!(
        text.matches("line 39999 ").count(),
        1,
        "the last lines arrive once"
    );
    assert!(
        text.contains("stdout last-line"),
        "the stream reaches the end"
    );
    let lines: Vec<u32> = text
        .lines()
        .filter_map(|l| {
            l.split_once("stdout line ")
                .and_then(|(_, r)| r.split(' ').next()?.parse().ok())
        })
        .collect();
    assert!(
        lines.windows(2).all(|w| w[0] < w[1]),
        "lines arrive in order, without repeats"
    );
}

/// A backfill of ten days of a daily job: a dry run lists ten due times and writes nothing; the
/// backfill creates exactly ten runs, which run one at a time (`overlap: forbid`); a repeat
/// creates none; a bad range is refused with its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_ten_days_runs_exactly_ten_runs_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let job = json!({"name": "etl", "triggers": [{"cron": "0 2 * * *"}],
        "task": {"kind": "shell", "script": "sleep 0.2"}});
    let (status, _, body) = server.call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{body}");
    let range = json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-10T23:59:59Z"});
    let mut dry = range.clone();
    dry["dry_run"] = json!(true);
    let (status, _, planned) = server
        .call(Method::POST, "/api/v1/jobs/etl/backfill", Some(dry))
        .await;
    assert_eq!(status, 200, "{planned}");
    assert_eq!(planned["created"].as_array().unwrap().len(), 10);
    assert!(
        server.runs("etl").await.is_empty(),
        "a dry run writes nothing"
    );

    let (status, _, created) = server
        .call(
            Method::POST,
            "/api/v1/jobs/etl/backfill",
            Some(range.clone()),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let created = created["created"].as_array().unwrap().clone();
    assert_eq!(created.len(), 10);
    let runs = server
        .wait_for(90, "ten backfilled runs to succeed", || async {
            let runs = server.runs("etl").await;
            (runs.len() == 10 && runs.iter().all(|r| r["state"] == "succeeded")).then_some(runs)
        })
        .await;
    let mut due = seconds(&runs);
    due.dedup();
    let expected: Vec<jiff::Timestamp> = (1..=10)
        .map(|d| format!("2026-01-{d:02}T02:00:00Z").parse().unwrap())
        .collect();
    assert_eq!(due, expected, "one run per due time of the range");
    assert!(runs.iter().all(|r| r["origin"] == "backfill"));
    // One at a time: ordered by due time, each started after the one before had finished.
    let mut by_due = runs.clone();
    by_due.sort_by_key(|r| r["scheduled_for"].as_str().unwrap().to_owned());
    let instant =
        |r: &Value, f: &str| -> jiff::Timestamp { r[f].as_str().unwrap().parse().unwrap() };
    for pair in by_due.windows(2) {
        assert!(
            instant(&pair[1], "started_at") >= instant(&pair[0], "finished_at"),
            "{} started before {} finished",
            pair[1]["id"],
            pair[0]["id"]
        );
    }

    let (status, _, again) = server
        .call(Method::POST, "/api/v1/jobs/etl/backfill", Some(range))
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["created"], json!([]));
    assert_eq!(again["existing"].as_array().unwrap().len(), 10);

    let (status, ct, problem) = server
        .call(
            Method::POST,
            "/api/v1/jobs/etl/backfill",
            Some(json!({"from": "2026-01-10T00:00:00Z", "to": "2026-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(problem["errors"][0]["field"], "to");
    let (status, _, problem) = server
        .call(
            Method::POST,
            "/api/v1/jobs/etl/backfill",
            Some(json!({"from": "yesterday", "to": "2026-01-01T00:00:00Z", "extra": 1})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        server.runs("etl").await.len(),
        10,
        "nothing more was written"
    );
}
