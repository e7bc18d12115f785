//! Workflows end to end: the real `kairos` binary runs DAGs of real shell steps. The order of
//! the steps is checked from the tasks' own timestamps, never from how long anything took.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::path::Path;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};

/// A shell step that records when it starts and ends (nanoseconds, from the task itself) in
/// `<dir>/<name>`, sleeping `secs` in between, then runs `tail` (its exit status is the step's).
fn timed_step(dir: &Path, name: &str, depends_on: &[&str], secs: f64, tail: &str) -> Value {
    let file = dir.join(name);
    let script = format!(
        "date +%s%N >> '{f}'; sleep {secs}; date +%s%N >> '{f}'; {tail}",
        f = file.display()
    );
    json!({"name": name, "depends_on": depends_on,
           "task": {"kind": "shell", "script": script}})
}

/// (start, end) of every recorded execution of a step, in nanoseconds.
fn spans(dir: &Path, name: &str) -> Vec<(u128, u128)> {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let stamps: Vec<u128> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    stamps.chunks(2).map(|c| (c[0], c[c.len() - 1])).collect()
}

fn step_states(run: &Value) -> Vec<(String, String)> {
    run["steps"]
        .as_array()
        .expect("a workflow run lists its steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn create(server: &Server, job: Value) {
    let (status, _, body) = server.call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{body}");
}

/// A diamond: `extract`, then `left` and `right` side by side, then `load` once both are done.
/// Each step starts only after its upstream steps ended, by the tasks' own clocks; the two
/// middle steps run at the same time; the run succeeds with every step run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_workflow_runs_in_dependency_order() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    create(
        &server,
        json!({"name": "diamond", "steps": [
            timed_step(&marks, "extract", &[], 0.2, "true"),
            timed_step(&marks, "left", &["extract"], 1.0, "true"),
            timed_step(&marks, "right", &["extract"], 1.0, "true"),
            timed_step(&marks, "load", &["left", "right"], 0.1, "true"),
        ]}),
    )
    .await;
    let id = server.trigger("diamond").await;
    let run = server.wait_for_run_state(60, id, "succeeded").await;
    assert_eq!(
        step_states(&run),
        pairs(&[
            ("extract", "succeeded"),
            ("left", "succeeded"),
            ("right", "succeeded"),
            ("load", "succeeded")
        ])
    );
    let [extract, left, right, load] =
        ["extract", "left", "right", "load"].map(|s| spans(&marks, s));
    for (name, s) in [
        ("extract", &extract),
        ("left", &left),
        ("right", &right),
        ("load", &load),
    ] {
        assert_eq!(s.len(), 1, "{name} ran once: {s:?}");
    }
    let (extract, left, right, load) = (extract[0], left[0], right[0], load[0]);
    assert!(left.0 >= extract.1 && right.0 >= extract.1, "after extract");
    assert!(load.0 >= left.1 && load.0 >= right.1, "load after both");
    assert!(
        left.0 < right.1 && right.0 < left.1,
        "independent steps run side by side: {left:?} {right:?}"
    );
    // The workflow run is the job's one run; its steps are not listed as runs of their own.
    let runs = server.runs("diamond").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["id"], id);
    // A step run is a run: its attempts and output are read like any run's.
    let load_id = run["steps"][3]["run_id"].as_i64().unwrap();
    let (status, _, step) = server
        .call(Method::GET, &format!("/api/v1/runs/{load_id}"), None)
        .await;
    assert_eq!(status, 200, "{step}");
    assert_eq!(step["parent_id"], id);
    assert_eq!(step["step"], "load");
    assert_eq!(step["attempts"].as_array().unwrap().len(), 1);
}

/// A failing middle step: the step after it is `upstream_failed` and never runs, an `all_done`
/// step runs anyway, and the workflow run fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_stops_its_dependents_and_all_done_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let mut report = timed_step(&marks, "report", &["load"], 0.0, "true");
    report["trigger_rule"] = json!("all_done");
    create(
        &server,
        json!({"name": "etl", "steps": [
            timed_step(&marks, "extract", &[], 0.0, "true"),
            timed_step(&marks, "transform", &["extract"], 0.0, "exit 3"),
            timed_step(&marks, "load", &["transform"], 0.0, "true"),
            report,
        ]}),
    )
    .await;
    let id = server.trigger("etl").await;
    let run = server.wait_for_run_state(60, id, "failed").await;
    assert_eq!(
        step_states(&run),
        pairs(&[
            ("extract", "succeeded"),
            ("transform", "failed"),
            ("load", "upstream_failed"),
            ("report", "succeeded")
        ])
    );
    assert!(spans(&marks, "load").is_empty(), "load never ran");
    assert_eq!(spans(&marks, "report").len(), 1);
    assert_eq!(run["steps"][1]["exit_code"], 3);
    assert!(
        run["steps"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("upstream"),
        "{run}"
    );
}

/// A cycle is refused before anything is written, and the error names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_is_refused_with_422_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let task = json!({"kind": "shell", "script": "true"});
    let job = json!({"name": "loop", "steps": [
        {"name": "extract", "task": task},
        {"name": "transform", "depends_on": ["extract", "load"], "task": task},
        {"name": "load", "depends_on": ["transform"], "task": task},
        {"name": "ghost", "depends_on": ["nowhere"], "task": task},
    ]});
    let (status, ct, problem) = server.call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(ct, "application/problem+json");
    let errors: Vec<(String, String)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        errors.contains(&(
            "steps".to_owned(),
            "cycle transform → load → transform".to_owned()
        )),
        "{errors:?}"
    );
    assert!(
        errors.contains(&(
            "steps[3].depends_on[0]".to_owned(),
            "unknown step `nowhere`".to_owned()
        )),
        "{errors:?}"
    );
    let (status, _, _) = server.call(Method::GET, "/api/v1/jobs/loop", None).await;
    assert_eq!(status, 404, "nothing was written");
}

/// A failed run, fixed by hand: `rerun-failed` runs the failed step and the step it held back
/// again (the steps that succeeded keep their results), and the run succeeds. Actions the run's
/// state does not allow are refused with 409, unknown steps with 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_failed_completes_a_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let fixed = dir.path().join("fixed");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let mut report = timed_step(&marks, "report", &["load"], 0.0, "true");
    report["trigger_rule"] = json!("all_done");
    create(
        &server,
        json!({"name": "etl", "steps": [
            timed_step(&marks, "extract", &[], 0.0, "true"),
            timed_step(&marks, "transform", &["extract"], 0.0,
                &format!("test -e '{}'", fixed.display())),
            timed_step(&marks, "load", &["transform"], 0.0, "true"),
            report,
        ]}),
    )
    .await;
    let id = server.trigger("etl").await;
    server.wait_for_run_state(60, id, "failed").await;

    std::fs::write(&fixed, "").unwrap();
    let (status, _, run) = server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/rerun-failed"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["state"], "running");
    let run = server.wait_for_run_state(60, id, "succeeded").await;
    assert_eq!(
        step_states(&run),
        pairs(&[
            ("extract", "succeeded"),
            ("transform", "succeeded"),
            ("load", "succeeded"),
            ("report", "succeeded")
        ])
    );
    assert_eq!(spans(&marks, "extract").len(), 1, "extract kept its result");
    assert_eq!(spans(&marks, "transform").len(), 2, "transform ran again");
    assert_eq!(
        spans(&marks, "load").len(),
        1,
        "load ran once, after the fix"
    );
    assert_eq!(spans(&marks, "report").len(), 1, "report kept its result");
    assert_eq!(run["steps"][1]["attempt"], 2);

    for (path, want) in [
        (format!("/api/v1/runs/{id}/rerun-failed"), 409),
        (format!("/api/v1/runs/{id}/steps/load/skip"), 409),
        (format!("/api/v1/runs/{id}/steps/load/mark-succeeded"), 409),
        (format!("/api/v1/runs/{id}/steps/nope/rerun"), 404),
    ] {
        let (status, ct, problem) = server.call(Method::POST, &path, None).await;
        assert_eq!(status, want, "{path}: {problem}");
        assert_eq!(ct, "application/problem+json");
    }
    // Rerunning one step runs it and what is below it again.
    let (status, _, run) = server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/steps/load/rerun"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{run}");
    server
        .wait_for(60, "load and report to run again", || async {
            let (_, _, run) = server
                .call(Method::GET, &format!("/api/v1/runs/{id}"), None)
                .await;
            (run["state"] == "succeeded" && spans(&marks, "report").len() == 2).then_some(())
        })
        .await;
    assert_eq!(spans(&marks, "load").len(), 2);
    assert_eq!(
        spans(&marks, "transform").len(),
        2,
        "above it, nothing ran again"
    );
}

/// `kill -9` of the server while a step runs: after a restart the workflow finishes. The steps
/// that had ended do not run again; the one that was running (killed with its node) runs again
/// as a new attempt and completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_workflow_and_a_restart_finish_it_with_no_step_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]).await;
    create(
        &server,
        json!({"name": "long", "steps": [
            timed_step(&marks, "first", &[], 0.0, "true"),
            timed_step(&marks, "slow", &["first"], 3.0, "true"),
            timed_step(&marks, "last", &["slow"], 0.0, "true"),
        ]}),
    )
    .await;
    let id = server.trigger("long").await;
    server
        .wait_for(60, "the slow step to start", || async {
            let text = std::fs::read_to_string(marks.join("slow")).unwrap_or_default();
            (!text.is_empty()).then_some(())
        })
        .await;
    server.kill9();
    let server = Server::start(&data, &[]).await;
    let run = server.wait_for_run_state(90, id, "succeeded").await;
    assert_eq!(
        step_states(&run),
        pairs(&[
            ("first", "succeeded"),
            ("slow", "succeeded"),
            ("last", "succeeded")
        ])
    );
    assert_eq!(
        spans(&marks, "first").len(),
        1,
        "an ended step does not run again"
    );
    assert_eq!(spans(&marks, "last").len(), 1);
    let slow = std::fs::read_to_string(marks.join("slow")).unwrap();
    let stamps: Vec<&str> = slow.lines().collect();
    // Killed with its node after its start mark, then one full execution: three marks.
    assert_eq!(stamps.len(), 3, "{slow}");
    let slow_id = run["steps"][1]["run_id"].as_i64().unwrap();
    let (_, _, slow_run) = server
        .call(Method::GET, &format!("/api/v1/runs/{slow_id}"), None)
        .await;
    let statuses: Vec<&str> = slow_run["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["lost", "succeeded"], "{slow_run}");
}

/// Parameters from a manual trigger reach every step (`KAIROS_PARAMS`); a step's result
/// (`KAIROS_RESULT`) is kept with its run, returned by the API and handed to the steps after it
/// (`KAIROS_UPSTREAM_RESULTS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_and_results_flow_between_steps() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let produce = r#"day=$(sed 's/.*"day":"\([^"]*\)".*/\1/' "$KAIROS_PARAMS"); printf '{"rows":3,"day":"%s"}' "$day" > "$KAIROS_RESULT""#;
    let consume = format!(
        r#"cat "$KAIROS_UPSTREAM_RESULTS" > '{m}/consumed'; echo "$KAIROS_STEP" > '{m}/step'"#,
        m = marks.display()
    );
    create(
        &server,
        json!({"name": "exchange", "steps": [
            {"name": "produce", "task": {"kind": "shell", "script": produce}},
            {"name": "consume", "depends_on": ["produce"], "task": {"kind": "shell", "script": consume}},
        ]}),
    )
    .await;
    let (status, _, run) = server
        .call(
            Method::POST,
            "/api/v1/jobs/exchange/trigger",
            Some(json!({"params": {"day": "2026-03-01"}})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["params"], json!({"day": "2026-03-01"}));
    let id = run["id"].as_i64().unwrap();
    let run = server.wait_for_run_state(60, id, "succeeded").await;
    let consumed: Value =
        serde_json::from_str(&std::fs::read_to_string(marks.join("consumed")).unwrap()).unwrap();
    assert_eq!(
        consumed,
        json!({"produce": {"rows": 3, "day": "2026-03-01"}})
    );
    assert_eq!(
        std::fs::read_to_string(marks.join("step")).unwrap().trim(),
        "consume"
    );
    let produce_id = run["steps"][0]["run_id"].as_i64().unwrap();
    let (_, _, produced) = server
        .call(Method::GET, &format!("/api/v1/runs/{produce_id}"), None)
        .await;
    assert_eq!(produced["result"], json!({"rows": 3, "day": "2026-03-01"}));
    // Parameters must be an object, and small.
    for (body, field) in [
        (json!({"params": [1, 2]}), "params"),
        (json!({"params": {"big": "x".repeat(70_000)}}), "params"),
        (json!({"extra": 1}), "extra"),
    ] {
        let (status, ct, problem) = server
            .call(Method::POST, "/api/v1/jobs/exchange/trigger", Some(body))
            .await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(ct, "application/problem+json");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    assert_eq!(
        server.runs("exchange").await.len(),
        1,
        "nothing more was written"
    );
}
