//! Without `now`, the database's clock rules: stored instants and lease expiries are computed in
//! SQL, never on the node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunOrigin, RunState};
use kairos_core::spec::ExecutionMode;
use kairos_store::*;
use kairos_testkit::postgres::temp_postgres;

/// The database's clock now.
async fn db_now(url: &str) -> Timestamp {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn without_now_the_database_clock_rules() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let url = pg.schema.config().url;
    let store = pg.store.clone();
    let before = db_now(&url).await;
    let job = store
        .job_create(JobCreateParams {
            spec: kairos_store::conformance::spec("j"),
            next_fire_at: Some(before),
            actor: "test".into(),
            now: None,
            calendars: vec![],
        })
        .await
        .unwrap();
    let due = before - SignedDuration::from_secs(1);
    let fired = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: before,
            runs: vec![RunInsert {
                scheduled_for: due,
                run_at: due,
                origin: RunOrigin::Schedule,
                skip: None,
                exclusive: false,
                max_attempts: 1,
                execution: ExecutionMode::AtLeastOnce,
                event: None,
            }],
            cancel_active: false,
            max_active: None,
            next_fire_at: None,
            now: None,
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(fired.inserted.len(), 1);
    let lease = SignedDuration::from_secs(30);
    let claimed = store
        .run_claim(RunClaimParams {
            node: "n1".into(),
            limit: 1,
            lease,
            ahead: SignedDuration::ZERO,
            now: None,
        })
        .await
        .unwrap()
        .remove(0);
    let started = claimed.run.started_at.unwrap();
    assert_eq!(claimed.run.lease_expires_at, Some(started + lease));
    let hb = store
        .run_heartbeat(RunHeartbeatParams {
            leases: vec![(claimed.run.id, claimed.lease_token.clone())],
            lease: SignedDuration::from_secs(3600),
            now: None,
        })
        .await
        .unwrap();
    assert!(hb[0].held);
    let rescued = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: None,
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(rescued, RescueReport::default(), "the lease is current");
    assert!(
        store
            .run_finish(RunFinishParams {
                run_id: claimed.run.id,
                parent_id: None,
                lease_token: claimed.lease_token.clone(),
                attempt: claimed.run.attempt,
                node: "n1".into(),
                started_at: started,
                outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
                next: RunNext::Finish(RunState::Succeeded),
                now: None,
            })
            .await
            .unwrap()
    );
    let after = db_now(&url).await;
    let run = store
        .run_get(RunGetParams { id: claimed.run.id })
        .await
        .unwrap()
        .unwrap();
    let within = |t: Timestamp| before <= t && t <= after;
    assert!(within(job.created_at) && job.created_at == job.updated_at);
    assert!(within(run.created_at), "{run:?}");
    assert!(within(started), "started when claimed: {started}");
    assert!(within(run.finished_at.unwrap()), "{run:?}");
    let attempts = store
        .attempt_list(AttemptListParams { run_id: run.id })
        .await
        .unwrap();
    assert!(within(attempts[0].finished_at));
    let audit = store
        .audit_list(AuditListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(within(audit[0].at));
}
