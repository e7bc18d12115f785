//! API tokens (stored hashed, revoked by id, expiry by the request's clock) and the audit log
//! (one entry per change, written with it).

use std::sync::Arc;

use jiff::Timestamp;
use kairos_core::auth::{AuditAction, Role, Scope};

use super::{T0, create, insert, set_paused, spec, t};
use crate::*;

fn token_params(name: &str, hash: &str, expires_at: Option<Timestamp>) -> TokenCreateParams {
    TokenCreateParams {
        name: name.into(),
        role: Role::Operator,
        scope: Scope::parse(&["team-a".into(), "team-b".into()]).unwrap(),
        hash: hash.into(),
        expires_at,
        actor: "root".into(),
        now: Some(t(T0)),
    }
}

async fn revoke(store: &Arc<dyn Store>, id: i64, now: &str) -> StoreResult<Token> {
    store
        .token_revoke(TokenRevokeParams {
            id,
            actor: "root".into(),
            now: Some(t(now)),
        })
        .await
}

async fn authenticate(store: &Arc<dyn Store>, hash: &str, now: &str) -> Option<Token> {
    store
        .token_authenticate(TokenAuthenticateParams {
            hash: hash.into(),
            now: Some(t(now)),
        })
        .await
        .unwrap()
}

pub async fn token_create_authenticate_revoke(store: Arc<dyn Store>) {
    let ci = store
        .token_create(token_params("ci", "aa", None))
        .await
        .unwrap();
    assert_eq!(ci.name, "ci");
    assert_eq!(ci.role, Role::Operator);
    assert!(ci.scope.allows("team-b") && !ci.scope.allows("team-c"));
    assert_eq!(ci.created_by, "root");
    assert_eq!(ci.created_at, t(T0));
    let err = store
        .token_create(token_params("ci", "bb", None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TokenExists(ref n) if n == "ci"),
        "{err:?}"
    );
    let found = authenticate(&store, "aa", "2026-03-02T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(found, ci);
    assert!(
        authenticate(&store, "zz", "2026-03-02T00:00:00Z")
            .await
            .is_none()
    );

    // Expiry is judged by the clock of the request.
    store
        .token_create(token_params("short", "cc", Some(t("2026-03-01T01:00:00Z"))))
        .await
        .unwrap();
    assert!(
        authenticate(&store, "cc", "2026-03-01T00:59:59Z")
            .await
            .is_some()
    );
    assert!(
        authenticate(&store, "cc", "2026-03-01T01:00:00Z")
            .await
            .is_none()
    );

    // Revoked: refused at once, revoked once, and the name is free again.
    let revoked = revoke(&store, ci.id, "2026-03-01T00:10:00Z").await.unwrap();
    assert_eq!(revoked.revoked_at, Some(t("2026-03-01T00:10:00Z")));
    assert!(
        authenticate(&store, "aa", "2026-03-01T00:10:00Z")
            .await
            .is_none()
    );
    let again = revoke(&store, ci.id, "2026-03-01T00:11:00Z")
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::TokenNotFound(_)), "{again:?}");
    let successor = store
        .token_create(token_params("ci", "dd", None))
        .await
        .unwrap();
    // Revoking the old id again never touches the token that took its name.
    revoke(&store, ci.id, "2026-03-01T00:12:00Z")
        .await
        .unwrap_err();
    assert!(
        authenticate(&store, "dd", "2026-03-01T00:12:00Z")
            .await
            .is_some()
    );
    assert_ne!(successor.id, ci.id);
    let names = |tokens: Vec<Token>| tokens.into_iter().map(|t| t.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.token_list(TokenListParams::default()).await.unwrap()),
        ["ci", "short"]
    );
    assert_eq!(
        names(
            store
                .token_list(TokenListParams {
                    include_revoked: true
                })
                .await
                .unwrap()
        ),
        ["ci", "ci", "short"]
    );
}

pub async fn audit_records_every_change_with_its_change(store: Arc<dyn Store>) {
    let job = create(&store, "j", None).await;
    let updated = store
        .job_update(JobUpdateParams {
            actor: "alice".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: 1,
            spec: spec("j"),
            next_fire_at: NextFire::Set(None),
            now: Some(t(T0)),
            calendars: vec![],
        })
        .await
        .unwrap();
    // A stale write changes nothing and records nothing.
    store
        .job_update(JobUpdateParams {
            actor: "mallory".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: 1,
            spec: spec("j"),
            next_fire_at: NextFire::Set(None),
            now: Some(t(T0)),
            calendars: vec![],
        })
        .await
        .unwrap_err();
    set_paused(&store, "j", true, None, t(T0)).await;
    set_paused(&store, "j", false, None, t(T0)).await;
    let at = t("2026-03-01T00:05:00Z");
    let run = store
        .run_insert(RunInsertParams {
            params: None,
            actor: "bob".into(),
            job_id: job.id,
            run: insert(at),
            now: Some(at),
        })
        .await
        .unwrap();
    // The same due time again: no new run, no entry.
    store
        .run_insert(RunInsertParams {
            params: None,
            actor: "bob".into(),
            job_id: job.id,
            run: insert(at),
            now: Some(at),
        })
        .await
        .unwrap();
    store
        .run_cancel(RunCancelParams {
            actor: "carol".into(),
            run_id: run.id,
            now: Some(at),
        })
        .await
        .unwrap();
    store
        .token_create(token_params("ci", "aa", None))
        .await
        .unwrap();
    store
        .job_delete(JobDeleteParams {
            actor: "dave".into(),
            namespace: "default".into(),
            name: "j".into(),
            expected_version: None,
            now: Some(at),
            force: false,
        })
        .await
        .unwrap();

    let all = store
        .audit_list(AuditListParams {
            include_global: true,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let seen: Vec<(&str, AuditAction, Option<i64>, Option<i64>)> = all
        .iter()
        .rev()
        .map(|e| {
            (
                e.actor.as_str(),
                e.action,
                e.version_before,
                e.version_after,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("test", AuditAction::JobCreate, None, Some(1)),
            (
                "alice",
                AuditAction::JobUpdate,
                Some(1),
                Some(updated.version)
            ),
            ("test", AuditAction::JobPause, Some(2), Some(3)),
            ("test", AuditAction::JobResume, Some(3), Some(4)),
            ("bob", AuditAction::JobTrigger, None, None),
            ("carol", AuditAction::RunCancel, None, None),
            ("root", AuditAction::TokenCreate, None, None),
            ("dave", AuditAction::JobDelete, Some(4), None),
        ]
    );
    let trigger = all
        .iter()
        .find(|e| e.action == AuditAction::JobTrigger)
        .unwrap();
    assert_eq!(trigger.run_id, Some(run.id));
    assert_eq!(trigger.namespace.as_deref(), Some("default"));
    assert_eq!(trigger.job.as_deref(), Some("j"));
    assert_eq!(trigger.at, at);
    let token = all
        .iter()
        .find(|e| e.action == AuditAction::TokenCreate)
        .unwrap();
    assert_eq!(token.namespace, None);
    assert!(token.detail.as_deref().unwrap().contains("ci"), "{token:?}");
    assert!(
        !token.detail.as_deref().unwrap().contains("aa"),
        "no hash in the log"
    );

    // Filters: by namespace (no global entries unless asked), and paging.
    let scoped = store
        .audit_list(AuditListParams {
            namespaces: Some(vec!["default".into()]),
            include_global: false,
            limit: 100,
            before_id: None,
        })
        .await
        .unwrap();
    assert_eq!(scoped.len(), 7);
    let elsewhere = store
        .audit_list(AuditListParams {
            namespaces: Some(vec!["other".into()]),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(elsewhere.is_empty());
    let page = store
        .audit_list(AuditListParams {
            include_global: true,
            limit: 2,
            before_id: Some(all[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        [all[2].id, all[3].id]
    );
}
