//! Fuzz entry points: each takes arbitrary bytes and must neither panic nor answer a 5xx.
//!
//! The cargo-fuzz targets in `fuzz/` call these functions (run them with `fuzz/run.sh`, on
//! nightly; not in CI), and `tests/corpus.rs` replays the corpus committed under
//! `fuzz/corpus/<target>/` on stable, in CI, so that every input that once found a bug stays a
//! test.
//!
//! | target | what it feeds |
//! | --- | --- |
//! | `cron` | a cron expression (first line) and a time zone (second line): parse, next fire times, DST notes |
//! | `duration` | durations, sizes, token lifetimes and instants |
//! | `job_json` | a job document as JSON: parse, validate, defaults, serialize and parse again |
//! | `job_toml` | a job document as TOML |
//! | `apply_file` | a jobs file for `kairos apply`, as JSON and as TOML |
//! | `api_body` | request bodies for the API's create, replace and token routes, through the router |

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request, header};
use kairos_core::JobSpec;
use tower::ServiceExt;

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// The targets, by name (the corpus directories have these names).
pub const TARGETS: [(&str, Target); 6] = [
    ("cron", cron),
    ("duration", duration),
    ("job_json", job_json),
    ("job_toml", job_toml),
    ("apply_file", apply_file),
    ("api_body", api_body),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

pub fn cron(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let mut lines = text.splitn(2, '\n');
    let expr = lines.next().unwrap_or_default();
    let zone = lines.next();
    let Ok(schedule) = kairos_core::trigger::CronSchedule::parse(expr, zone) else {
        return;
    };
    let mut at: jiff::Timestamp = "2026-03-29T00:00:00Z".parse().unwrap_or_default();
    for _ in 0..8 {
        let Some(next) = schedule.next_after(at) else {
            break;
        };
        assert!(
            next > at,
            "fire times never go backwards: {next} after {at}"
        );
        let _ = schedule.dst_note(next);
        at = next;
    }
}

pub fn duration(data: &[u8]) {
    let Some(text) = text(data) else { return };
    for allow_zero in [false, true] {
        if let Ok(d) = kairos_core::duration::parse_duration(text, allow_zero) {
            assert!(d <= kairos_core::duration::MAX_DURATION);
            let _ = kairos_core::duration::format_duration(d);
        }
    }
    let _ = kairos_core::size::parse_size(text);
    let _ = kairos_core::auth::parse_lifetime(text);
    let _ = kairos_core::job::parse_instant(text);
}

/// A parsed job is validated; a valid one reads back the same after JSON (as the store keeps
/// it), with and without its defaults written out, and finds its next due time.
fn check_job(spec: JobSpec) {
    let Ok(plan) = spec.validate() else {
        return;
    };
    for form in [spec.clone(), spec.clone().with_defaults()] {
        let again = serde_json::to_value(&form).map(JobSpec::from_value);
        assert!(
            matches!(&again, Ok(Ok(again)) if *again == form),
            "a valid job reads back as it was written: {again:?}"
        );
        assert!(form.validate().is_ok(), "defaults keep a job valid");
    }
    let at: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap_or_default();
    let _ = plan.schedule.next_after(at);
}

pub fn job_json(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(spec) = JobSpec::from_json(text) {
        check_job(spec);
    }
}

pub fn job_toml(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(value) = toml::from_str::<toml::Value>(text) else {
        return;
    };
    let Ok(json) = serde_json::to_value(value) else {
        return;
    };
    if let Ok(spec) = JobSpec::from_value(json) {
        check_job(spec);
    }
}

pub fn apply_file(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let documents = [
        kairos_core::document::parse_json(data).ok(),
        toml::from_str::<toml::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok()),
    ];
    for doc in documents.into_iter().flatten() {
        if let Ok(specs) = kairos::cmd::apply::parse_file(doc, "default") {
            let current: Vec<(JobSpec, i64)> = specs.iter().cloned().map(|s| (s, 1)).collect();
            let _ = kairos::cmd::apply::plan(&specs, &current, true);
        }
    }
}

/// One router on a store in a temp directory, kept for the whole process.
struct Api {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a runtime for the fuzz target: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temp dir: {e}"));
        let app = runtime.block_on(async {
            let store = kairos_store_sqlite::SqliteStore::open_file(&dir.path().join("fuzz.db"))
                .await
                .unwrap_or_else(|e| panic!("a store: {e}"));
            let ctx = kairos_runtime::NodeContext::new(
                "fuzz",
                std::sync::Arc::new(store),
                std::sync::Arc::new(kairos_runtime::SystemClock),
            );
            let jobs = kairos_runtime::JobService::new(ctx.clone());
            kairos_api::router(kairos_api::AppState::new(ctx, jobs))
        });
        Api {
            runtime,
            app,
            _dir: dir,
        }
    })
}

pub fn api_body(data: &[u8]) {
    let api = api();
    let routes = [
        (Method::POST, "/api/v1/jobs"),
        (Method::PUT, "/api/v1/jobs/fuzz"),
        (Method::POST, "/api/v1/tokens"),
    ];
    for (method, uri) in routes {
        let req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::IF_MATCH, "*")
            .body(Body::from(data.to_vec()));
        let Ok(req) = req else { continue };
        let Ok(response) = api.runtime.block_on(api.app.clone().oneshot(req));
        let status = response.status();
        assert!(
            !status.is_server_error(),
            "{method} {uri} answered {status} to {:?}",
            String::from_utf8_lossy(data)
        );
    }
}
