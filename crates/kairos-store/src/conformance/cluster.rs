//! Leadership, the node registry, and the database's clock (`now: None`).

use std::sync::Arc;

use jiff::SignedDuration;

use super::{T0, claim, create, insert, t};
use crate::*;

fn elect(node: &str, at: &str) -> LeaderElectParams {
    LeaderElectParams {
        node_id: format!("{node}-id"),
        node_name: node.into(),
        ttl: SignedDuration::from_secs(10),
        now: Some(t(at)),
    }
}

async fn resign(store: &Arc<dyn Store>, node: &str, term: i64, at: &str) -> bool {
    store
        .leader_resign(LeaderResignParams {
            node_id: format!("{node}-id"),
            term,
            now: Some(t(at)),
        })
        .await
        .unwrap()
}

/// One leader at a time; a term changes hands only when the lease expired or was resigned; a
/// node that lost its term can neither renew nor resign it.
pub async fn leader_terms_are_fenced(store: Arc<dyn Store>) {
    assert_eq!(store.leader_get().await.unwrap(), None);
    let a = store
        .leader_elect(elect("a", "2026-03-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!((a.node_name.as_str(), a.term), ("a", 1));
    assert_eq!(a.expires_at, t("2026-03-01T00:00:10Z"));
    // Another candidate sees the holder.
    let seen = store
        .leader_elect(elect("b", "2026-03-01T00:00:01Z"))
        .await
        .unwrap();
    assert_eq!((seen.node_name.as_str(), seen.term), ("a", 1));
    // The holder renews: same term, later expiry, same election time.
    let renewed = store
        .leader_elect(elect("a", "2026-03-01T00:00:05Z"))
        .await
        .unwrap();
    assert_eq!(renewed.term, 1);
    assert_eq!(renewed.elected_at, a.elected_at);
    assert_eq!(renewed.expires_at, t("2026-03-01T00:00:15Z"));
    // Still held at its expiry instant minus a microsecond; taken over after it.
    let seen = store
        .leader_elect(elect("b", "2026-03-01T00:00:14.999999Z"))
        .await
        .unwrap();
    assert_eq!(seen.node_name, "a");
    let b = store
        .leader_elect(elect("b", "2026-03-01T00:00:16Z"))
        .await
        .unwrap();
    assert_eq!((b.node_name.as_str(), b.term), ("b", 2));
    // The old leader comes back: it cannot renew a term it lost, nor resign it.
    let seen = store
        .leader_elect(elect("a", "2026-03-01T00:00:17Z"))
        .await
        .unwrap();
    assert_eq!((seen.node_name.as_str(), seen.term), ("b", 2));
    assert!(!resign(&store, "a", 1, "2026-03-01T00:00:17Z").await);
    assert!(!resign(&store, "a", 2, "2026-03-01T00:00:17Z").await);
    // A resignation hands over at once.
    assert!(resign(&store, "b", 2, "2026-03-01T00:00:18Z").await);
    assert!(
        !resign(&store, "b", 2, "2026-03-01T00:00:18Z").await,
        "once"
    );
    let a = store
        .leader_elect(elect("a", "2026-03-01T00:00:18Z"))
        .await
        .unwrap();
    assert_eq!((a.node_name.as_str(), a.term), ("a", 3));
    assert_eq!(store.leader_get().await.unwrap(), Some(a));
}

/// Candidates racing on separate connections: every one of them sees the same leader and term,
/// once for a free row and once for an expired one (other candidates: a holder whose lease
/// expired unclaimed may renew its own term).
pub async fn leader_concurrent_candidates_agree_on_one_per_term(store: Arc<dyn Store>) {
    for (round, at) in [(1i64, "2026-03-01T00:00:00Z"), (2, "2026-03-01T00:01:00Z")] {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .leader_elect(elect(&format!("r{round}n{i}"), at))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut leaders = Vec::new();
        for task in tasks {
            leaders.push(task.await.unwrap());
        }
        let first = leaders[0].clone();
        assert_eq!(first.term, round, "{leaders:?}");
        assert!(leaders.iter().all(|l| *l == first), "{leaders:?}");
    }
}

fn heartbeat(id: &str, name: &str, at: &str) -> NodeHeartbeatParams {
    NodeHeartbeatParams {
        id: id.into(),
        name: name.into(),
        address: Some(format!("http://{name}:7433")),
        version: "0.1.0".into(),
        started_at: t(T0),
        running: 2,
        now: Some(t(at)),
    }
}

/// Nodes join with a heartbeat, refresh it, leave, and are expired when silent. Two processes
/// with one name are two nodes.
pub async fn nodes_join_refresh_leave_and_expire(store: Arc<dyn Store>) {
    store
        .node_heartbeat(heartbeat("a1", "alpha", "2026-03-01T00:00:00Z"))
        .await
        .unwrap();
    store
        .node_heartbeat(heartbeat("a2", "alpha", "2026-03-01T00:00:05Z"))
        .await
        .unwrap();
    store
        .node_heartbeat(heartbeat("b1", "beta", "2026-03-01T00:00:05Z"))
        .await
        .unwrap();
    store
        .node_heartbeat(NodeHeartbeatParams {
            running: 7,
            ..heartbeat("b1", "beta", "2026-03-01T00:00:20Z")
        })
        .await
        .unwrap();
    let nodes = store.node_list().await.unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2", "b1"]);
    let b = &nodes[2];
    assert_eq!(b.running, 7);
    assert_eq!(b.last_heartbeat, t("2026-03-01T00:00:20Z"));
    assert_eq!(b.started_at, t(T0));
    assert_eq!(b.address.as_deref(), Some("http://beta:7433"));
    let expired = store
        .node_expire(NodeExpireParams {
            after: SignedDuration::from_secs(30),
            now: Some(t("2026-03-01T00:00:32Z")),
        })
        .await
        .unwrap();
    assert_eq!(expired, ["a1"]);
    store
        .node_leave(NodeLeaveParams { id: "a2".into() })
        .await
        .unwrap();
    let ids: Vec<String> = store
        .node_list()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, ["b1"]);
}

/// With `now: None` the store's own clock rules: leases, leadership and due times are dated
/// by it, consistently across calls.
pub async fn the_store_clock_rules_without_now(store: Arc<dyn Store>) {
    let leader = store
        .leader_elect(LeaderElectParams {
            now: None,
            ..elect("a", T0)
        })
        .await
        .unwrap();
    assert_eq!(leader.term, 1);
    assert_eq!(
        leader.expires_at.duration_since(leader.elected_at),
        SignedDuration::from_secs(10)
    );
    assert!(
        leader.elected_at > t(T0),
        "the store's clock, not the test's"
    );
    let seen = store
        .leader_elect(LeaderElectParams {
            now: None,
            ..elect("b", T0)
        })
        .await
        .unwrap();
    assert_eq!(seen.node_name, "a", "not expired by the store's clock");

    // A run due in the (test's) past is claimed by the store's clock, with a lease dated by it.
    let job = create(&store, "clock", Some(t(T0))).await;
    store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id: job.id,
            run: insert(t(T0)),
            params: None,
            actor: "test".into(),
            now: None,
        })
        .await
        .unwrap();
    let claimed = store
        .run_claim(RunClaimParams {
            node: "a".into(),
            limit: 10,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::ZERO,
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let run = &claimed[0].run;
    let started = run.started_at.unwrap();
    assert!(started >= leader.elected_at);
    assert_eq!(
        run.lease_expires_at.unwrap().duration_since(started),
        SignedDuration::from_secs(30)
    );
    let beat = store
        .run_heartbeat(RunHeartbeatParams {
            leases: vec![(run.id, claimed[0].lease_token.clone())],
            lease: SignedDuration::from_secs(30),
            now: None,
        })
        .await
        .unwrap();
    assert!(beat[0].held);
    // Not expired by the store's clock; expired by a clock a minute later.
    let report = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: None,
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(report, RescueReport::default());
    let later = started.checked_add(SignedDuration::from_secs(60)).unwrap();
    let report = store
        .run_rescue(RunRescueParams {
            limit: 10,
            orphaned_node: None,
            now: Some(later),
        })
        .await
        .unwrap();
    assert_eq!(report.requeued, [run.id]);
    // Requeued for the rescue's instant: not claimable before it.
    assert!(claim(&store, "a", 10, t(T0)).await.is_empty());
    assert_eq!(claim(&store, "a", 10, later).await.len(), 1);
}
