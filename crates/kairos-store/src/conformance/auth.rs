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
            expected_version: None,
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
            expected_version: None,
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

async fn session(store: &Arc<dyn Store>, id_hash: &str, now: &str) -> Option<Token> {
    store
        .session_authenticate(SessionParams {
            id_hash: id_hash.into(),
            now: Some(t(now)),
        })
        .await
        .unwrap()
}

async fn new_session(
    store: &Arc<dyn Store>,
    id_hash: &str,
    token_hash: &str,
    expires_at: &str,
    now: &str,
) -> bool {
    store
        .session_create(SessionCreateParams {
            id_hash: id_hash.into(),
            token_hash: token_hash.into(),
            expires_at: t(expires_at),
            now: Some(t(now)),
        })
        .await
        .unwrap()
}

/// A session stands for its token until it expires, is deleted, or the token stops working;
/// one is never made for a token that does not work.
pub async fn sessions_live_only_while_their_token_works(store: Arc<dyn Store>) {
    let ci = store
        .token_create(token_params("ci", "aa", Some(t("2026-03-02T00:00:00Z"))))
        .await
        .unwrap();
    let ops = store
        .token_create(token_params("ops", "bb", None))
        .await
        .unwrap();
    let noon = "2026-03-01T12:00:00Z";
    assert!(new_session(&store, "s1", "aa", "2026-03-01T13:00:00Z", T0).await);
    assert!(new_session(&store, "s2", "aa", "2026-03-05T00:00:00Z", T0).await);
    assert!(new_session(&store, "s3", "bb", "2026-03-05T00:00:00Z", T0).await);
    assert!(
        !new_session(&store, "s4", "zz", "2026-03-05T00:00:00Z", T0).await,
        "no such token"
    );
    assert_eq!(session(&store, "s1", noon).await, Some(ci.clone()));
    assert_eq!(session(&store, "s3", noon).await, Some(ops.clone()));
    assert_eq!(session(&store, "nope", noon).await, None);
    // The session's own expiry, then its token's.
    assert_eq!(session(&store, "s1", "2026-03-01T13:00:00Z").await, None);
    assert_eq!(
        session(&store, "s2", "2026-03-01T23:59:59Z").await,
        Some(ci)
    );
    assert_eq!(session(&store, "s2", "2026-03-02T00:00:00Z").await, None);
    assert!(
        !new_session(
            &store,
            "s5",
            "aa",
            "2026-03-05T00:00:00Z",
            "2026-03-02T00:00:00Z"
        )
        .await,
        "an expired token"
    );
    // Revoking the token ends its sessions and refuses new ones.
    revoke(&store, ops.id, noon).await.unwrap();
    assert_eq!(session(&store, "s3", noon).await, None);
    assert!(!new_session(&store, "s6", "bb", "2026-03-05T00:00:00Z", noon).await);
    // Signing out.
    let ops2 = store
        .token_create(token_params("ops", "cc", None))
        .await
        .unwrap();
    assert!(new_session(&store, "s7", "cc", "2026-03-05T00:00:00Z", noon).await);
    assert_eq!(session(&store, "s7", noon).await, Some(ops2));
    let delete = |id: &str| {
        let store = store.clone();
        let id = id.to_owned();
        async move {
            store
                .session_delete(SessionParams {
                    id_hash: id,
                    now: Some(t(noon)),
                })
                .await
                .unwrap()
        }
    };
    assert!(delete("s7").await);
    assert!(!delete("s7").await);
    assert_eq!(session(&store, "s7", noon).await, None);
    // An id is one session: creating it again is refused, whoever asks.
    let again = store
        .session_create(SessionCreateParams {
            id_hash: "s2".into(),
            token_hash: "cc".into(),
            expires_at: t("2026-03-05T00:00:00Z"),
            now: Some(t(noon)),
        })
        .await;
    assert!(again.is_err() || !again.unwrap(), "s2 is taken");
}
