//! Authentication and authorisation through the router (no socket), on a real SQLite file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::Reply;
use kairos_api::auth::AuthMode;
use kairos_api::guard::Access;
use kairos_api::{AppState, router};
use kairos_core::auth::{Principal, Role};
use kairos_runtime::{JobService, ManualClock, TokenRequest};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Setup {
    app: Router,
    state: AppState,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn setup_with(metrics_public: bool) -> Setup {
    let (ctx, clock, dir) = common::context().await;
    let access = Access {
        auth: AuthMode::Required,
        metrics_public,
        stream_recheck: Some(std::time::Duration::from_millis(50)),
        ..Access::default()
    };
    let state = AppState::with_access(ctx.clone(), JobService::new(ctx), access);
    Setup {
        app: router(state.clone()),
        state,
        clock,
        _dir: dir,
    }
}

async fn setup() -> Setup {
    setup_with(false).await
}

impl Setup {
    /// A token without expiry made by the offline admin; returns its secret.
    async fn token(&self, name: &str, role: Role, namespaces: &[&str]) -> String {
        self.token_for(name, role, namespaces, None).await
    }

    /// A token made by the offline admin, living `expires_in`; returns its secret.
    async fn token_for(
        &self,
        name: &str,
        role: Role,
        namespaces: &[&str],
        expires_in: Option<jiff::SignedDuration>,
    ) -> String {
        self.state
            .tokens
            .create(
                &Principal::offline(),
                TokenRequest {
                    name: name.into(),
                    role,
                    namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
                    expires_in,
                },
            )
            .await
            .unwrap()
            .secret
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("authorization", b.as_str()))
            .collect();
        common::call(&self.app, method, uri, body, &headers).await
    }
}

fn job(namespace: &str, name: &str) -> Value {
    json!({"name": name, "namespace": namespace, "task": {"kind": "shell", "script": "true"}})
}

#[tokio::test]
async fn no_bad_expired_or_revoked_token_is_401() {
    let s = setup().await;
    let hour = Some(jiff::SignedDuration::from_hours(1));
    let admin = s.token_for("admin", Role::Admin, &["*"], hour).await;
    let r = s.call(None, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some("Bearer realm=\"kairos\"")
    );
    assert_eq!(r.body["type"], "urn:kairos:problem:unauthorized");
    for bad in [
        "nonsense",
        "kairos_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = s.call(Some(bad), Method::GET, "/api/v1/jobs", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    assert_eq!(
        s.call(Some(&admin), Method::GET, "/api/v1/jobs", None)
            .await
            .status,
        StatusCode::OK
    );
    // A state-changing request without a token changes nothing.
    let r = s
        .call(
            None,
            Method::POST,
            "/api/v1/jobs",
            Some(job("default", "j")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        s.call(Some(&admin), Method::GET, "/api/v1/jobs", None)
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Expired: the token lives one hour.
    s.clock.advance(jiff::SignedDuration::from_mins(61));
    let r = s
        .call(Some(&admin), Method::GET, "/api/v1/jobs", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Revoked: refused at once.
    let other = s.token("other", Role::Admin, &["*"]).await;
    let keeper = s.token("keeper", Role::Admin, &["*"]).await;
    let r = s
        .call(Some(&keeper), Method::DELETE, "/api/v1/tokens/other", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["revoked_at"].is_string());
    let r = s
        .call(Some(&other), Method::GET, "/api/v1/jobs", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn open_routes_and_metrics() {
    let s = setup().await;
    for uri in ["/health", "/ready", "/api/v1/openapi.json"] {
        assert_eq!(
            s.call(None, Method::GET, uri, None).await.status,
            StatusCode::OK,
            "{uri}"
        );
    }
    assert_eq!(
        s.call(None, Method::GET, "/metrics", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let viewer = s.token("viewer", Role::Viewer, &["team-a"]).await;
    assert_eq!(
        s.call(Some(&viewer), Method::GET, "/metrics", None)
            .await
            .status,
        StatusCode::OK
    );
    let public = setup_with(true).await;
    assert_eq!(
        public
            .call(None, Method::GET, "/metrics", None)
            .await
            .status,
        StatusCode::OK
    );
    let doc = s
        .call(None, Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(
        doc.body["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc.body["security"].is_array(), "{}", doc.body["security"]);
    assert!(doc.body["paths"]["/api/v1/tokens"]["post"].is_object());
    assert!(doc.body["paths"]["/api/v1/audit"]["get"].is_object());
}

#[tokio::test]
async fn roles_allow_what_they_say() {
    let s = setup().await;
    let viewer = s.token("viewer", Role::Viewer, &["*"]).await;
    let operator = s.token("operator", Role::Operator, &["*"]).await;
    let r = s
        .call(
            Some(&viewer),
            Method::POST,
            "/api/v1/jobs",
            Some(job("default", "j")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["type"], "urn:kairos:problem:forbidden");
    let r = s
        .call(
            Some(&operator),
            Method::POST,
            "/api/v1/jobs",
            Some(job("default", "j")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .call(
            Some(&operator),
            Method::POST,
            "/api/v1/jobs/j/trigger",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    for (method, uri) in [
        (Method::POST, "/api/v1/jobs/j/pause"),
        (Method::POST, "/api/v1/jobs/j/resume"),
        (Method::POST, "/api/v1/jobs/j/trigger"),
        (Method::DELETE, "/api/v1/jobs/j"),
        (Method::POST, "/api/v1/runs/1/cancel"),
    ] {
        let r = s.call(Some(&viewer), method.clone(), uri, None).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            r.text
        );
    }
    for uri in [
        "/api/v1/jobs/j",
        "/api/v1/jobs/j/runs",
        "/api/v1/runs",
        "/api/v1/audit",
    ] {
        let r = s.call(Some(&viewer), Method::GET, uri, None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
    }
    // Tokens are for admins only.
    for token in [&viewer, &operator] {
        assert_eq!(
            s.call(Some(token), Method::GET, "/api/v1/tokens", None)
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        let body = json!({"name": "x", "role": "viewer"});
        let r = s
            .call(Some(token), Method::POST, "/api/v1/tokens", Some(body))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    // The audit log names who did it.
    let admin = s.token("admin", Role::Admin, &["*"]).await;
    let audit = s
        .call(Some(&admin), Method::GET, "/api/v1/audit?limit=10", None)
        .await;
    let actions: Vec<(String, String)> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("operator".into(), "job.create".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("operator".into(), "job.trigger".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("offline".into(), "token.create".into())),
        "{actions:?}"
    );
}

#[tokio::test]
async fn namespaces_out_of_scope_look_like_404_and_listings_are_filtered() {
    let s = setup().await;
    let admin = s.token("admin", Role::Admin, &["*"]).await;
    for (ns, name) in [("team-a", "a1"), ("team-b", "b1")] {
        let r = s
            .call(
                Some(&admin),
                Method::POST,
                "/api/v1/jobs",
                Some(job(ns, name)),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = s
            .call(
                Some(&admin),
                Method::POST,
                &format!("/api/v1/jobs/{name}/trigger?namespace={ns}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    let b_run = s
        .call(
            Some(&admin),
            Method::GET,
            "/api/v1/runs?namespace=team-b",
            None,
        )
        .await
        .body[0]["id"]
        .as_i64()
        .unwrap();
    let a = s.token("a-operator", Role::Operator, &["team-a"]).await;
    let jobs = s.call(Some(&a), Method::GET, "/api/v1/jobs", None).await;
    let names: Vec<&str> = jobs
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a1"]);
    let runs = s.call(Some(&a), Method::GET, "/api/v1/runs", None).await;
    assert!(
        runs.body
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["namespace"] == "team-a"),
        "{}",
        runs.text
    );
    assert_eq!(runs.body.as_array().unwrap().len(), 1);
    let other = s
        .call(Some(&a), Method::GET, "/api/v1/jobs?namespace=team-b", None)
        .await;
    assert_eq!(other.body, json!([]));
    for (method, uri, body) in [
        (
            Method::GET,
            "/api/v1/jobs/b1?namespace=team-b".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/jobs/b1/trigger?namespace=team-b".to_owned(),
            None,
        ),
        (
            Method::DELETE,
            "/api/v1/jobs/b1?namespace=team-b".to_owned(),
            None,
        ),
        (
            Method::GET,
            "/api/v1/jobs/b1/runs?namespace=team-b".to_owned(),
            None,
        ),
        (Method::GET, format!("/api/v1/runs/{b_run}"), None),
        (Method::GET, format!("/api/v1/runs/{b_run}/output"), None),
        (Method::POST, format!("/api/v1/runs/{b_run}/cancel"), None),
        (
            Method::POST,
            "/api/v1/jobs".to_owned(),
            Some(job("team-b", "b2")),
        ),
    ] {
        let r = s.call(Some(&a), method.clone(), &uri, body).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {}",
            r.text
        );
    }
    // Nothing in team-b changed.
    let b_runs = s
        .call(
            Some(&admin),
            Method::GET,
            "/api/v1/runs?namespace=team-b",
            None,
        )
        .await;
    assert_eq!(b_runs.body[0]["state"], "queued");
    assert_eq!(b_runs.body.as_array().unwrap().len(), 1);
    // The audit log of a scoped token holds its namespaces only.
    let audit = s.call(Some(&a), Method::GET, "/api/v1/audit", None).await;
    assert!(
        audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["namespace"] == "team-a"),
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn tokens_never_grant_more_than_their_creator_has() {
    let s = setup().await;
    let scoped_admin = s.token("a-admin", Role::Admin, &["team-a"]).await;
    let create = |body: Value| {
        let s = &s;
        let token = scoped_admin.clone();
        async move {
            s.call(Some(&token), Method::POST, "/api/v1/tokens", Some(body))
                .await
        }
    };
    let r = create(json!({"name": "wide", "role": "viewer"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = create(json!({"name": "other-ns", "role": "viewer", "namespaces": ["team-b"]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = create(
        json!({"name": "ok", "role": "operator", "namespaces": ["team-a"], "expires_in": "90d"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("kairos_"));
    assert_eq!(r.body["expires_at"], "2026-05-30T00:00:00Z");
    assert_eq!(
        s.call(Some(&secret), Method::GET, "/api/v1/jobs", None)
            .await
            .status,
        StatusCode::OK
    );
    let dup = create(json!({"name": "ok", "role": "viewer", "namespaces": ["team-a"]})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = create(json!({"name": "Bad Name", "role": "king", "namespaces": [], "expires_in": "forever", "x": 1})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    // A token listing never shows a secret or a hash, and a scoped admin sees its scope only.
    s.token("global-viewer", Role::Viewer, &["*"]).await;
    let list = s
        .call(Some(&scoped_admin), Method::GET, "/api/v1/tokens", None)
        .await;
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-admin", "ok"]);
    assert!(!list.text.contains("kairos_"), "{}", list.text);
    let r = s
        .call(
            Some(&scoped_admin),
            Method::DELETE,
            "/api/v1/tokens/global-viewer",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// A stream that outlasts its request (events, followed output) ends once its token is revoked.
#[tokio::test]
async fn revoking_a_token_ends_its_event_stream() {
    use futures::StreamExt;
    let s = setup().await;
    let watcher = s.token("watcher", Role::Viewer, &["*"]).await;
    let req = Request::builder()
        .uri("/api/v1/events")
        .header(header::AUTHORIZATION, format!("Bearer {watcher}"))
        .body(Body::empty())
        .unwrap();
    let resp = s.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    s.state
        .tokens
        .revoke(&Principal::offline(), "watcher")
        .await
        .unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its revoked token");
}

#[tokio::test]
async fn expiring_tokens_make_no_longer_lived_ones_and_actor_names_are_reserved() {
    let s = setup().await;
    let hour = Some(jiff::SignedDuration::from_hours(1));
    let short = s.token_for("short-admin", Role::Admin, &["*"], hour).await;
    for body in [
        json!({"name": "forever", "role": "viewer"}),
        json!({"name": "longer", "role": "viewer", "expires_in": "2h"}),
    ] {
        let r = s
            .call(Some(&short), Method::POST, "/api/v1/tokens", Some(body))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    }
    let r = s
        .call(
            Some(&short),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "shorter", "role": "viewer", "expires_in": "30m"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    for reserved in ["anonymous", "system", "offline"] {
        let r = s
            .call(
                Some(&short),
                Method::POST,
                "/api/v1/tokens",
                Some(json!({"name": reserved, "role": "viewer", "expires_in": "30m"})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{reserved}: {}",
            r.text
        );
    }
}
