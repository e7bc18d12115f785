//! The router without a socket (`oneshot`), on a real SQLite file and a real executor.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::Reply;
use kairos_api::{AppState, router};
use kairos_exec::{FunctionRegistry, TaskExecutor};
use kairos_runtime::scheduler::Scheduler;
use kairos_runtime::worker::Worker;
use kairos_runtime::{JobService, ManualClock, NodeContext, WorkerConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Setup {
    app: Router,
    ctx: NodeContext,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (ctx, clock, dir) = common::context().await;
    let app = router(AppState::new(ctx.clone(), JobService::new(ctx.clone())));
    Setup {
        app,
        ctx,
        clock,
        _dir: dir,
    }
}

impl Setup {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        common::call(&self.app, method, uri, body, headers).await
    }

    async fn jobs_in_store(&self) -> usize {
        self.ctx
            .store
            .job_list(Default::default())
            .await
            .unwrap()
            .len()
    }
}

fn job(name: &str) -> Value {
    json!({
        "name": name,
        "triggers": [{"cron": "0 30 2 * * *", "timezone": "Europe/Berlin"}],
        "task": {"kind": "shell", "script": "echo hello from $KAIROS_JOB"},
        "labels": {"team": "data"}
    })
}

#[tokio::test]
async fn create_get_list_and_conflicts() {
    let s = setup().await;
    let r = s
        .call(Method::POST, "/api/v1/jobs", Some(job("backup")), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["name"], "backup");
    assert_eq!(r.body["namespace"], "default");
    assert_eq!(
        r.body["next_fire_at"], "2026-03-01T01:30:00Z",
        "02:30 Berlin is 01:30 UTC in winter"
    );
    assert_eq!(r.body["created_at"], "2026-03-01T00:00:00Z");
    assert_eq!(r.body["overlap"], "forbid", "defaults are filled in");

    let dup = s
        .call(Method::POST, "/api/v1/jobs", Some(job("backup")), &[])
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.content_type, "application/problem+json");

    let got = s.call(Method::GET, "/api/v1/jobs/backup", None, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["labels"]["team"], "data");
    let list = s.call(Method::GET, "/api/v1/jobs", None, &[]).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    let missing = s.call(Method::GET, "/api/v1/jobs/nope", None, &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.content_type, "application/problem+json");
    assert_eq!(missing.body["status"], 404);
}

#[tokio::test]
async fn bad_jobs_get_every_problem_with_its_path_and_change_nothing() {
    let s = setup().await;
    let bad = json!({
        "name": "Bad Name",
        "triggers": [{"cron": "61 * * * *"}, {"interval": "-5m"}, {"cron": "* * * * *", "timezone": "Mars/Olympus"}],
        "task": {"kind": "command", "argv": [], "evn": {}},
        "timeout": "ten minutes",
        "retry": {"max_attempts": 0, "backoff": {"initial": "soon"}}
    });
    let r = s.call(Method::POST, "/api/v1/jobs", Some(bad), &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.content_type, "application/problem+json");
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for expected in [
        "name",
        "triggers[0].cron",
        "triggers[1].interval",
        "triggers[2].timezone",
        "task.argv",
        "task.evn",
        "timeout",
        "retry.max_attempts",
        "retry.backoff.initial",
    ] {
        assert!(
            fields.contains(&expected),
            "{expected} missing from {fields:?}"
        );
    }
    // Type errors name their path too.
    let typed = s
        .call(Method::POST, "/api/v1/jobs", Some(json!({"name": "x", "task": {"kind": "shell", "script": "true"}, "max_concurrent": "two"})), &[])
        .await;
    assert_eq!(typed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(typed.body["errors"][0]["field"], "max_concurrent");
    let unknown = s
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "x", "task": {"kind": "shell", "script": "true"}, "colour": 1})),
            &[],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown.text.contains("colour"));
    let not_json = s.call(Method::POST, "/api/v1/jobs", None, &[]).await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_json.content_type, "application/problem+json");
    let huge =
        json!({"name": "x", "task": {"kind": "shell", "script": "x".repeat(2 * 1024 * 1024)}});
    let too_big = s.call(Method::POST, "/api/v1/jobs", Some(huge), &[]).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_big.content_type, "application/problem+json");
    assert_eq!(s.jobs_in_store().await, 0, "nothing was written");
    let bad_query = s
        .call(Method::GET, "/api/v1/jobs/x/runs?limit=abc", None, &[])
        .await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_query.content_type, "application/problem+json");
}

#[tokio::test]
async fn replace_requires_the_current_version() {
    let s = setup().await;
    s.call(Method::POST, "/api/v1/jobs", Some(job("j")), &[])
        .await;
    let mut current = s.call(Method::GET, "/api/v1/jobs/j", None, &[]).await.body;
    current["description"] = json!("v2");
    let no_version = {
        let mut b = current.clone();
        b.as_object_mut().unwrap().remove("version");
        s.call(Method::PUT, "/api/v1/jobs/j", Some(b), &[]).await
    };
    assert_eq!(no_version.status, StatusCode::PRECONDITION_REQUIRED);
    // GET, edit, PUT back as it is: read-only fields are ignored.
    let ok = s
        .call(Method::PUT, "/api/v1/jobs/j", Some(current.clone()), &[])
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["version"], 2);
    assert_eq!(ok.body["description"], "v2");
    current["description"] = json!("stale");
    let stale = s
        .call(Method::PUT, "/api/v1/jobs/j", Some(current.clone()), &[])
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.body["type"], "urn:kairos:problem:version-conflict");
    let after = s.call(Method::GET, "/api/v1/jobs/j", None, &[]).await;
    assert_eq!(
        after.body["description"], "v2",
        "a stale write changes nothing"
    );
    // If-Match works too.
    current.as_object_mut().unwrap().remove("version");
    let matched = s
        .call(
            Method::PUT,
            "/api/v1/jobs/j",
            Some(current),
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(matched.status, StatusCode::OK);
    assert_eq!(matched.body["version"], 3);
    let del_stale = s
        .call(Method::DELETE, "/api/v1/jobs/j", None, &[("if-match", "1")])
        .await;
    assert_eq!(del_stale.status, StatusCode::CONFLICT);
    let del = s.call(Method::DELETE, "/api/v1/jobs/j", None, &[]).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(s.jobs_in_store().await, 0);
}

#[tokio::test]
async fn pause_resume_trigger_runs_output_cancel() {
    let s = setup().await;
    s.call(Method::POST, "/api/v1/jobs", Some(job("j")), &[])
        .await;
    let paused = s
        .call(Method::POST, "/api/v1/jobs/j/pause", None, &[])
        .await;
    assert_eq!(paused.body["paused"], true);
    assert_eq!(paused.body["next_fire_at"], Value::Null);
    let resumed = s
        .call(Method::POST, "/api/v1/jobs/j/resume", None, &[])
        .await;
    assert_eq!(resumed.body["paused"], false);
    assert_eq!(resumed.body["version"], 3);

    let triggered = s
        .call(Method::POST, "/api/v1/jobs/j/trigger", None, &[])
        .await;
    assert_eq!(triggered.status, StatusCode::ACCEPTED);
    assert_eq!(triggered.body["state"], "queued");
    assert_eq!(triggered.body["origin"], "manual");
    let id = triggered.body["id"].as_i64().unwrap();

    let executor = Arc::new(TaskExecutor::new(FunctionRegistry::new()));
    let worker = Worker::new(s.ctx.clone(), executor, WorkerConfig::default());
    let mut tasks = tokio::task::JoinSet::new();
    assert_eq!(worker.claim_once(&mut tasks).await.unwrap(), 1);
    while tasks.join_next().await.is_some() {}

    let run = s
        .call(Method::GET, &format!("/api/v1/runs/{id}"), None, &[])
        .await;
    assert_eq!(run.body["state"], "succeeded", "{}", run.text);
    assert_eq!(run.body["attempts"][0]["status"], "succeeded");
    assert_eq!(run.body["attempts"][0]["exit_code"], 0);
    let output = s
        .call(Method::GET, &format!("/api/v1/runs/{id}/output"), None, &[])
        .await;
    assert!(output.content_type.starts_with("text/plain"));
    assert!(output.text.contains("hello from j"), "{}", output.text);
    let followed = s
        .call(
            Method::GET,
            &format!("/api/v1/runs/{id}/output?follow=true"),
            None,
            &[],
        )
        .await;
    assert!(followed.text.contains("hello from j"));

    let runs = s
        .call(
            Method::GET,
            "/api/v1/jobs/j/runs?state=succeeded&limit=10",
            None,
            &[],
        )
        .await;
    assert_eq!(runs.body.as_array().unwrap().len(), 1);
    let bad_state = s
        .call(Method::GET, "/api/v1/jobs/j/runs?state=done", None, &[])
        .await;
    assert_eq!(bad_state.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_state.body["errors"][0]["field"], "state");

    let cancel_done = s
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/cancel"),
            None,
            &[],
        )
        .await;
    assert_eq!(cancel_done.status, StatusCode::CONFLICT);
    s.clock.advance(jiff::SignedDuration::from_secs(1));
    let queued = s
        .call(Method::POST, "/api/v1/jobs/j/trigger", None, &[])
        .await;
    let qid = queued.body["id"].as_i64().unwrap();
    let cancelled = s
        .call(
            Method::POST,
            &format!("/api/v1/runs/{qid}/cancel"),
            None,
            &[],
        )
        .await;
    assert_eq!(cancelled.body["state"], "cancelled");
}

#[tokio::test]
async fn health_ready_metrics_openapi() {
    let s = setup().await;
    assert_eq!(
        s.call(Method::GET, "/health", None, &[]).await.status,
        StatusCode::OK
    );
    let ready = s.call(Method::GET, "/ready", None, &[]).await;
    assert_eq!(ready.body["status"], "ready");
    s.call(Method::POST, "/api/v1/jobs", Some(job("j")), &[])
        .await;
    s.call(Method::POST, "/api/v1/jobs/j/trigger", None, &[])
        .await;
    let scheduler = Scheduler::new(s.ctx.clone());
    scheduler.run_once().await.unwrap();
    let metrics = s.call(Method::GET, "/metrics", None, &[]).await;
    // Cluster-wide gauges have no node label; what this node did carries its name.
    for name in [
        "kairos_tasks_pending 1",
        "kairos_tasks_running 0",
        "kairos_tasks_failed_total{node=\"node-a\"}",
        "kairos_fire_lag_seconds",
        "kairos_run_duration_seconds",
        "kairos_leader{node=\"node-a\"}",
    ] {
        assert!(
            metrics.text.contains(name),
            "{name} missing:\n{}",
            metrics.text
        );
    }
    let doc = s.call(Method::GET, "/api/v1/openapi.json", None, &[]).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc.body["paths"]["/api/v1/jobs/{name}"]["put"].is_object());
    assert!(doc.body["components"]["schemas"]["JobSpec"].is_object());
    let nowhere = s.call(Method::GET, "/nowhere", None, &[]).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert_eq!(nowhere.content_type, "application/problem+json");
}

/// Sends raw body text (not re-serialized, so a duplicate key survives).
async fn post_text(s: &Setup, uri: &str, text: &str) -> Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(text.to_owned()))
        .unwrap();
    let resp = s.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Reply {
        status,
        content_type: String::new(),
        www_authenticate: None,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

fn error_fields(r: &Reply) -> Vec<String> {
    let mut fields: Vec<String> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn duplicate_keys_and_unknown_kinds_are_reported_with_every_other_problem() {
    let s = setup().await;
    let twice = post_text(
        &s,
        "/api/v1/jobs",
        r#"{"name":"a","task":{"kind":"shell","script":"true"},"name":"b"}"#,
    )
    .await;
    assert_eq!(
        twice.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        twice.text
    );
    assert_eq!(error_fields(&twice), ["name"]);
    let unknown_kind = post_text(
        &s,
        "/api/v1/jobs",
        r#"{"name":"Bad Name","triggers":[{"cron":"61 * * * *"}],"task":{"kind":"bogus"}}"#,
    )
    .await;
    assert_eq!(unknown_kind.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_fields(&unknown_kind),
        ["name", "task.kind", "triggers[0].cron"]
    );
    let no_task = post_text(&s, "/api/v1/jobs", r#"{"name":"x"}"#).await;
    assert_eq!(error_fields(&no_task), ["task"]);
    assert_eq!(s.jobs_in_store().await, 0);
}

#[tokio::test]
async fn queries_are_checked_and_if_match_star_is_unconditional() {
    let s = setup().await;
    s.call(Method::POST, "/api/v1/jobs", Some(job("j")), &[])
        .await;
    for uri in [
        "/api/v1/jobs?namespace=BAD!",
        "/api/v1/jobs/j?namespace=BAD!",
        "/api/v1/runs?namespace=Not%20A%20Name",
    ] {
        let r = s.call(Method::GET, uri, None, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.text);
        assert_eq!(r.body["errors"][0]["field"], "namespace", "{uri}");
    }
    for uri in [
        "/api/v1/jobs?namspace=default",
        "/api/v1/jobs/j?verbose=1",
        "/api/v1/jobs/j/runs?limt=5",
        "/api/v1/runs/1?x=1",
        "/api/v1/runs/1/output?follow=true&tail=5",
        "/api/v1/openapi.json?v=2",
    ] {
        let r = s.call(Method::GET, uri, None, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.text);
        assert_eq!(r.content_type, "application/problem+json", "{uri}");
        assert!(r.text.contains("unknown field"), "{uri}: {}", r.text);
    }
    let r = s
        .call(Method::POST, "/api/v1/jobs/j/pause?force=1", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // GET shows the defaults the docs promise.
    let got = s.call(Method::GET, "/api/v1/jobs/j", None, &[]).await;
    assert_eq!(got.body["kill_grace"], "10s");
    assert_eq!(got.body["catchup_window"], "1h");
    assert_eq!(got.body["retry"]["max_attempts"], 1);
    assert_eq!(got.body["retry"]["backoff"]["initial"], "10s");
    assert_eq!(got.body["retry"]["on"], json!(["any"]));
    assert_eq!(got.body["expected_exit_codes"], json!([0]));

    // If-Match: * replaces (or deletes) whatever the version is.
    let mut body = job("j");
    body["description"] = json!("any version");
    let star = s
        .call(
            Method::PUT,
            "/api/v1/jobs/j",
            Some(body),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(star.status, StatusCode::OK, "{}", star.text);
    assert_eq!(star.body["version"], 2);
    assert_eq!(star.body["description"], "any version");
    let missing = s
        .call(
            Method::PUT,
            "/api/v1/jobs/nope",
            Some(job("nope")),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = s
        .call(
            Method::DELETE,
            "/api/v1/jobs/j",
            None,
            &[("if-match", "soon")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let del = s
        .call(Method::DELETE, "/api/v1/jobs/j", None, &[("if-match", "*")])
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.text);
}

#[tokio::test]
async fn calendars_are_created_changed_and_refused_while_in_use() {
    let s = setup().await;
    let holidays = json!({
        "name": "de-holidays",
        "timezone": "Europe/Berlin",
        "dates": ["2026-03-02"],
        "yearly": ["01-01"]
    });
    let r = s
        .call(
            Method::POST,
            "/api/v1/calendars",
            Some(holidays.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["namespace"], "default");
    let dup = s
        .call(Method::POST, "/api/v1/calendars", Some(holidays), &[])
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.body["type"], "urn:kairos:problem:calendar-exists");

    // A bad calendar: every problem with its path, nothing written.
    let bad = s
        .call(
            Method::PUT,
            "/api/v1/calendars/bad",
            Some(
                json!({"name": "bad", "timezone": "Mars/Base", "dates": ["2026-02-30", 7],
                "ranges": [{"from": "2026-01-02T00:00", "to": "2026-01-01T00:00"}]}),
            ),
            &[],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    let mut fields = error_fields(&bad);
    fields.sort();
    assert_eq!(fields, ["dates[0]", "dates[1]", "ranges[0].to", "timezone"]);
    let list = s.call(Method::GET, "/api/v1/calendars", None, &[]).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);

    // A job that names an unknown calendar is refused at its path; one that names a known one
    // skips its days.
    let mut daily = job("report");
    daily["triggers"] = json!([{"cron": "0 9 * * *", "timezone": "Europe/Berlin",
        "exclude": ["nope", "de-holidays"]}]);
    let r = s
        .call(Method::POST, "/api/v1/jobs", Some(daily.clone()), &[])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(error_fields(&r), ["triggers[0].exclude[0]"]);
    daily["triggers"][0]["exclude"] = json!(["de-holidays"]);
    let r = s.call(Method::POST, "/api/v1/jobs", Some(daily), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["next_fire_at"], "2026-03-01T08:00:00Z");
    let next = s
        .call(Method::GET, "/api/v1/jobs/report/next?count=2", None, &[])
        .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);
    let times: Vec<(String, String, bool)> = next.body["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["at"].as_str().unwrap().to_owned(),
                t["local"].as_str().unwrap().to_owned(),
                t["skipped"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        times,
        [
            (
                "2026-03-01T08:00:00Z".into(),
                "2026-03-01T09:00:00+01:00".into(),
                false
            ),
            (
                "2026-03-02T08:00:00Z".into(),
                "2026-03-02T09:00:00+01:00".into(),
                true
            ),
            (
                "2026-03-03T08:00:00Z".into(),
                "2026-03-03T09:00:00+01:00".into(),
                false
            ),
        ]
    );
    assert!(
        next.body["times"][1]["skipped"]
            .as_str()
            .unwrap()
            .contains("de-holidays")
    );

    // Changing the calendar re-plans the job at once; a stale version changes nothing.
    let change = json!({"name": "de-holidays", "timezone": "Europe/Berlin",
        "dates": ["2026-03-01"], "version": 1});
    let r = s
        .call(
            Method::PUT,
            "/api/v1/calendars/de-holidays",
            Some(change.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["jobs"], json!(["report"]));
    let stale = s
        .call(
            Method::PUT,
            "/api/v1/calendars/de-holidays",
            Some(change),
            &[],
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    let job = s.call(Method::GET, "/api/v1/jobs/report", None, &[]).await;
    assert_eq!(job.body["next_fire_at"], "2026-03-02T08:00:00Z");
    assert_eq!(job.body["version"], 2);
    let got = s
        .call(Method::GET, "/api/v1/calendars/de-holidays", None, &[])
        .await;
    assert_eq!(got.body["jobs"], json!(["report"]));
    assert_eq!(got.body["version"], 2);

    let in_use = s
        .call(Method::DELETE, "/api/v1/calendars/de-holidays", None, &[])
        .await;
    assert_eq!(in_use.status, StatusCode::CONFLICT);
    assert_eq!(in_use.body["type"], "urn:kairos:problem:calendar-in-use");
    assert!(in_use.body["detail"].as_str().unwrap().contains("report"));
    let r = s
        .call(Method::DELETE, "/api/v1/jobs/report", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s
        .call(Method::DELETE, "/api/v1/calendars/de-holidays", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let gone = s
        .call(Method::GET, "/api/v1/calendars/de-holidays", None, &[])
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let doc = s.call(Method::GET, "/api/v1/openapi.json", None, &[]).await;
    assert!(doc.body["paths"]["/api/v1/calendars/{name}"]["put"].is_object());
    assert!(doc.body["components"]["schemas"]["CalendarDto"]["properties"]["dates"].is_object());
}
