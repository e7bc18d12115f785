//! Progress and checkpoints: what a running attempt reports, fenced by its lease, kept for the
//! run's later attempts.

use std::sync::Arc;

use jiff::SignedDuration;

use super::{claim, create, fire, t};
use crate::*;

pub async fn run_reports_are_fenced_and_kept_for_later_attempts(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", Some(at)).await;
    fire(&store, &job, at, None).await;
    let c = claim(&store, "n1", 1, at).await.remove(0);
    assert_eq!(c.run.report, None);
    let report = |token: &str, progress, message: Option<&str>, checkpoint: Option<&str>| {
        let store = store.clone();
        let p = RunReportParams {
            run_id: c.run.id,
            lease_token: token.to_owned(),
            progress,
            message: message.map(str::to_owned),
            checkpoint: checkpoint.map(str::to_owned),
            now: Some(at + SignedDuration::from_secs(1)),
        };
        async move { store.run_report(p).await.unwrap() }
    };
    assert!(
        report(
            &c.lease_token,
            Some(0.4),
            Some("half"),
            Some(r#"{"offset":10}"#)
        )
        .await
    );
    // Only what is given changes.
    assert!(report(&c.lease_token, Some(0.6), None, None).await);
    assert!(
        !report("not-the-lease", Some(0.9), None, None).await,
        "fenced by the lease"
    );
    let run = store
        .run_get(RunGetParams { id: c.run.id })
        .await
        .unwrap()
        .unwrap();
    let r = run.report.expect("a report");
    assert_eq!(r.progress, Some(0.6));
    assert_eq!(r.message.as_deref(), Some("half"));
    assert_eq!(r.checkpoint.as_deref(), Some(r#"{"offset":10}"#));
    assert_eq!(r.at, at + SignedDuration::from_secs(1));

    // The node dies: the run is rescued, and its next attempt gets the checkpoint.
    let rescued = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: Some("n1".into()),
            now: Some(at + SignedDuration::from_secs(2)),
        })
        .await
        .unwrap();
    assert_eq!(rescued.requeued, [c.run.id]);
    assert!(
        !report(&c.lease_token, Some(1.0), None, None).await,
        "the old attempt's lease is gone"
    );
    let again = claim(&store, "n2", 1, at + SignedDuration::from_secs(3))
        .await
        .remove(0);
    assert_eq!(again.run.id, c.run.id);
    assert_eq!(again.run.attempt, 2);
    assert_eq!(
        again.run.report.and_then(|r| r.checkpoint).as_deref(),
        Some(r#"{"offset":10}"#)
    );
}
