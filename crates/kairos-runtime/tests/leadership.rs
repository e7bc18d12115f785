//! Leadership under a manual clock: two nodes (two contexts, one store) elect one leader, the
//! gate starts and stops the leader's services per term, and a node that lost its term stops
//! them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::SignedDuration;
use kairos_runtime::rescuer::Rescuer;
use kairos_runtime::scheduler::Scheduler;
use kairos_runtime::{Clock as _, Elector, ElectorConfig, Event, LeaderGate, NodeContext};
use kairos_testkit::{Backend, node_context_on};

kairos_testkit::backend_tests! {
    one_leader_per_term_and_the_gate_follows_it,
    a_restarted_node_on_its_own_store_leads_at_once,
}

fn elector(ctx: &NodeContext) -> Elector {
    let gate = LeaderGate::new(
        Arc::new(Scheduler::new(ctx.clone())),
        Arc::new(Rescuer::new(ctx.clone(), Duration::from_secs(5))),
    );
    Elector::new(ctx.clone(), ElectorConfig::default(), gate)
}

async fn one_leader_per_term_and_the_gate_follows_it(backend: Backend) {
    let Some((a_ctx, clock, temp)) = node_context_on(backend, "2026-03-01T00:00:00Z").await else {
        return;
    };
    let b_ctx = NodeContext::new("node-b", temp.store.clone(), Arc::new(clock.clone()));
    let mut a_events = a_ctx.telemetry.subscribe();
    let (mut a, mut b) = (elector(&a_ctx), elector(&b_ctx));

    let leader = a.run_once().await.unwrap();
    assert_eq!(
        (leader.node_id.as_str(), leader.term),
        (a_ctx.node_id.as_str(), 1)
    );
    assert_eq!(a.leading(), Some(1));
    assert!(matches!(
        a_events.try_recv().unwrap(),
        Event::Leadership {
            term: 1,
            leading: true
        }
    ));
    assert_eq!(b.run_once().await.unwrap().node_id, a_ctx.node_id);
    assert_eq!(b.leading(), None);

    // A renews within its lease; B still follows.
    clock.advance(SignedDuration::from_secs(5));
    assert_eq!(a.run_once().await.unwrap().term, 1);
    clock.advance(SignedDuration::from_secs(9));
    assert_eq!(b.run_once().await.unwrap().node_id, a_ctx.node_id);

    // A stalls past its lease: B takes a new term; A, back, finds it lost and stops its
    // services.
    clock.advance(SignedDuration::from_secs(2));
    let leader = b.run_once().await.unwrap();
    assert_eq!(
        (leader.node_id.as_str(), leader.term),
        (b_ctx.node_id.as_str(), 2)
    );
    assert_eq!(b.leading(), Some(2));
    assert_eq!(a.run_once().await.unwrap().term, 2);
    assert_eq!(a.leading(), None);
    assert!(matches!(
        a_events.try_recv().unwrap(),
        Event::Leadership {
            term: 1,
            leading: false
        }
    ));

    // B shuts down: it resigns, so A takes over at once, without waiting for B's lease.
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    b.run(stop).await;
    let leader = a.run_once().await.unwrap();
    assert_eq!(
        (leader.node_id.as_str(), leader.term),
        (a_ctx.node_id.as_str(), 3)
    );
    assert_eq!(a.leading(), Some(3));
    // B left the registry; A is in it.
    let nodes = temp.store.node_list().await.unwrap();
    assert!(nodes.iter().all(|n| n.id != b_ctx.node_id), "{nodes:?}");
}

/// On a store only this process uses (`recover_on_start`), the leader row an earlier process
/// left (it crashed) is stale: a restarted node leads at once instead of waiting out the old
/// lease, so due times fire without a pause.
async fn a_restarted_node_on_its_own_store_leads_at_once(backend: Backend) {
    let Some((ctx, clock, _temp)) = node_context_on(backend, "2026-03-01T00:00:00Z").await else {
        return;
    };
    let crashed = ctx
        .store
        .leader_elect(kairos_store::LeaderElectParams {
            node_id: "crashed-process".into(),
            node_name: ctx.node.clone(),
            ttl: SignedDuration::from_secs(3600),
            now: Some(clock.now()),
        })
        .await
        .unwrap();
    assert_eq!(crashed.term, 1);
    let mut events = ctx.telemetry.subscribe();
    let node = kairos_runtime::Node::start(
        ctx.clone(),
        Arc::new(kairos_testkit::HangingExecutor::default()),
        kairos_runtime::NodeConfig::default(),
    )
    .await;
    kairos_testkit::wait_for_event(&mut events, std::time::Duration::from_secs(20), |e| {
        matches!(e, Event::Leadership { leading: true, .. })
    })
    .await;
    let leader = ctx.store.leader_get().await.unwrap().unwrap();
    assert_eq!(
        (leader.node_id.as_str(), leader.term),
        (ctx.node_id.as_str(), 2)
    );
    node.shutdown().await;
}

/// A leader cut off from the database (its calls hang, as across a partition) stops its
/// services before its lease can expire and another node take over: within `ttl − ttl/5` of
/// the last renewal it sent, however its store calls hang, and not a lease or more later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_stops_its_services_before_its_lease_expires() {
    let Some((pg, proxy)) = kairos_testkit::postgres::temp_postgres_behind_proxy().await else {
        return;
    };
    let ctx = NodeContext::new(
        "node-a",
        pg.store.clone(),
        Arc::new(kairos_runtime::SystemClock),
    );
    let mut events = ctx.telemetry.subscribe();
    let gate = LeaderGate::new(
        Arc::new(Scheduler::new(ctx.clone())),
        Arc::new(Rescuer::new(ctx.clone(), Duration::from_secs(5))),
    );
    let ttl = Duration::from_secs(5);
    let config = ElectorConfig {
        ttl: SignedDuration::try_from(ttl).unwrap(),
        attempt: Duration::from_millis(100),
        address: None,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let elector = tokio::spawn(Elector::new(ctx.clone(), config, gate).run(stop.clone()));
    kairos_testkit::wait_for_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Leadership { leading: true, .. })
    })
    .await;
    // Renewals go out (every 200 ms here); then the node is cut off.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let cut = Instant::now();
    proxy.cut();
    kairos_testkit::wait_for_event(&mut events, Duration::from_secs(15), |e| {
        matches!(e, Event::Leadership { leading: false, .. })
    })
    .await;
    let stepped_down = cut.elapsed();
    // The last renewal was sent before the cut: the services are stopped at `ttl − ttl/5`
    // after it and have ended (or been aborted) `ttl/10` later, before the lease can expire.
    assert!(
        stepped_down <= ttl - ttl / 10 + Duration::from_millis(150),
        "stepped down {stepped_down:?} after the cut (lease {ttl:?})"
    );
    proxy.restore();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), elector).await;
}

/// A leader service that panics is started again for the same term: a leader must not keep
/// renewing a term in which nothing fires or rescues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_service_that_panics_is_started_again() {
    struct Flaky {
        runs: std::sync::atomic::AtomicUsize,
        ran_again: tokio::sync::Notify,
    }
    #[async_trait::async_trait]
    impl kairos_runtime::elector::LeaderService for Flaky {
        async fn run(&self, stop: tokio_util::sync::CancellationToken) {
            let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 {
                panic!("a bug in a leader service");
            }
            self.ran_again.notify_one();
            stop.cancelled().await;
        }
    }
    let Some((ctx, _clock, _temp)) = node_context_on(Backend::Sqlite, "2026-03-01T00:00:00Z").await
    else {
        return;
    };
    let flaky = Arc::new(Flaky {
        runs: std::sync::atomic::AtomicUsize::new(0),
        ran_again: tokio::sync::Notify::new(),
    });
    let gate = LeaderGate::new(
        Arc::new(Scheduler::new(ctx.clone())),
        Arc::new(Rescuer::new(ctx.clone(), Duration::from_secs(5))),
    )
    .with(flaky.clone());
    let config = ElectorConfig {
        attempt: Duration::from_millis(50),
        ..ElectorConfig::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let elector = tokio::spawn(Elector::new(ctx.clone(), config, gate).run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(10), flaky.ran_again.notified())
        .await
        .expect("the service ran again after its panic");
    assert_eq!(flaky.runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), elector)
        .await
        .unwrap()
        .unwrap();
}
