//! Leadership after a crash: a leader's session advisory lock tells the others at once that it
//! is gone, so a follower takes over at its next election instead of after the lease; a leader
//! that took over by expiry from a cut-off predecessor cannot be deposed early until it holds
//! the lock itself.
//!
//! A leader's "crash" is `pg_terminate_backend` of its lock session: the server closes the
//! connection, as it does when the process holding it is killed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kairos_store::*;
use kairos_store_postgres::PostgresStore;
use kairos_testkit::postgres::{TempPostgres, temp_postgres};

/// The longest a test waits for the server to notice a closed connection.
const WAIT: Duration = Duration::from_secs(10);

fn t0() -> Timestamp {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

fn at(millis: i64) -> Timestamp {
    t0() + SignedDuration::from_millis(millis)
}

/// An election of `node` with a 10 s lease, on the database's clock (`None`) or at `now`.
fn elect(node: &str, now: Option<Timestamp>) -> LeaderElectParams {
    LeaderElectParams {
        node_id: format!("{node}-id"),
        node_name: node.into(),
        ttl: SignedDuration::from_secs(10),
        now,
    }
}

async fn leader(store: &dyn Store, node: &str, now: Option<Timestamp>) -> (String, i64) {
    let l = store.leader_elect(elect(node, now)).await.unwrap();
    (l.node_name, l.term)
}

fn is(node: &str, term: i64) -> (String, i64) {
    (node.to_owned(), term)
}

/// The schema and its stores: `a` is the testkit's (connections named `<schema>`), the others
/// are named `<schema>_<name>`.
struct Cluster {
    a: TempPostgres,
    admin: tokio_postgres::Client,
}

impl Cluster {
    async fn new() -> Option<Self> {
        let a = temp_postgres().await?;
        let (admin, connection) =
            tokio_postgres::connect(&a.schema.config().url, tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        Some(Self { a, admin })
    }

    async fn node(&self, name: &str) -> PostgresStore {
        PostgresStore::connect(self.a.schema.config_as(name))
            .await
            .unwrap()
    }

    fn application_name(&self, node: &str) -> String {
        match node {
            "a" => self.a.schema.name.clone(),
            other => format!("{}_{other}", self.a.schema.name),
        }
    }

    /// The stores (by name) whose sessions hold a session advisory lock on a bigint key (the
    /// leader lock; claims take transaction locks on two int keys).
    async fn lock_holders(&self) -> Vec<String> {
        let schema = &self.a.schema.name;
        let mut holders: Vec<String> = self
            .admin
            .query(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                   AND (a.application_name = $1 OR starts_with(a.application_name, $1 || '_'))",
                &[schema],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                match name.strip_prefix(&format!("{schema}_")) {
                    Some(node) => node.to_owned(),
                    None => "a".to_owned(),
                }
            })
            .collect();
        holders.sort();
        holders
    }

    /// The backend of `node`'s lock session and the lock's key, while it holds the lock.
    async fn lock_session(&self, node: &str) -> (i32, i64) {
        let row = self
            .admin
            .query_one(
                "SELECT l.pid, l.classid, l.objid FROM pg_locks l \
                 JOIN pg_stat_activity a USING (pid) \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                   AND a.application_name = $1",
                &[&self.application_name(node)],
            )
            .await
            .unwrap();
        let (high, low): (u32, u32) = (row.get(1), row.get(2));
        (row.get(0), (i64::from(high) << 32) | i64::from(low))
    }

    /// Ends `node`'s lock session as a crash of its process would (waiting until it is gone).
    async fn crash_lock_session(&self, node: &str) {
        let (pid, _) = self.lock_session(node).await;
        let ended: bool = self
            .admin
            .query_one("SELECT pg_terminate_backend($1, 5000)", &[&pid])
            .await
            .unwrap()
            .get(0);
        assert!(ended, "the session of {node} ended");
        assert!(
            !self.lock_holders().await.contains(&node.to_owned()),
            "{node} holds no lock"
        );
    }

    /// Whether the leader row says its holder held the lock at its last renewal.
    async fn locked(&self) -> bool {
        self.admin
            .query_one(
                &format!("SELECT locked FROM \"{}\".leader", self.a.schema.name),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_succeeded_at_the_next_election() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a = &*cluster.a.store;
    let b = cluster.node("b").await;
    let first = a.leader_elect(elect("a", None)).await.unwrap();
    assert_eq!((first.node_name.as_str(), first.term), ("a", 1));
    assert!(cluster.locked().await);
    assert_eq!(cluster.lock_holders().await, ["a"]);
    assert_eq!(leader(&b, "b", None).await, is("a", 1));
    assert_eq!(
        cluster.lock_holders().await,
        ["a"],
        "a follower keeps no lock"
    );

    cluster.crash_lock_session("a").await;
    let mut elections = 0;
    let second = loop {
        elections += 1;
        let seen = b.leader_elect(elect("b", None)).await.unwrap();
        if seen.node_name == "b" {
            break seen;
        }
        assert!(
            elections < 2,
            "taken over at the first election or the next"
        );
    };
    assert_eq!(second.term, 2);
    assert!(
        second.elected_at < first.expires_at,
        "before the lease ran out: {second:?} after {first:?}"
    );
    assert!(cluster.locked().await);
    assert_eq!(cluster.lock_holders().await, ["b"]);

    // The old leader is still running: it reconnects its session, finds the lock taken, and
    // can neither renew nor resign the term it lost.
    assert_eq!(leader(a, "a", None).await, is("b", 2));
    let resigned = a
        .leader_resign(LeaderResignParams {
            node_id: "a-id".into(),
            term: 1,
            now: None,
        })
        .await
        .unwrap();
    assert!(!resigned);
    assert_eq!(cluster.lock_holders().await, ["b"]);
    assert_eq!(leader(&b, "b", None).await, is("b", 2), "b renews");
    b.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_racing_for_a_crashed_leaders_lock_agree_on_one() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (b, c) = (cluster.node("b").await, cluster.node("c").await);
    assert_eq!(leader(&*cluster.a.store, "a", None).await, is("a", 1));
    cluster.crash_lock_session("a").await;
    let (seen_b, seen_c) = tokio::join!(
        b.leader_elect(elect("b", None)),
        c.leader_elect(elect("c", None))
    );
    let (seen_b, seen_c) = (seen_b.unwrap(), seen_c.unwrap());
    // Exactly one wins term 2; the other, whose statement may have run before the winner's
    // commit, saw the winner or still the old leader, and sees the winner at its next election.
    let (winner, loser, lost) = match (seen_b.node_name.as_str(), seen_c.node_name.as_str()) {
        ("b", "c") => panic!("two leaders: {seen_b:?} {seen_c:?}"),
        ("b", _) => (seen_b, &c, seen_c),
        (_, "c") => (seen_c, &b, seen_b),
        _ => panic!("nobody took over: {seen_b:?} {seen_c:?}"),
    };
    assert_eq!(winner.term, 2);
    assert!(
        lost == winner || (lost.node_name.as_str(), lost.term) == ("a", 1),
        "{lost:?}"
    );
    let name = if winner.node_name == "b" { "c" } else { "b" };
    assert_eq!(loser.leader_elect(elect(name, None)).await.unwrap(), winner);
    assert_eq!(
        cluster.lock_holders().await,
        [winner.node_name.as_str()],
        "only the new leader holds the lock"
    );
    b.close();
    c.close();
}

/// A leader that stops renewing but whose session lives on (a frozen process, a node cut off
/// from its peers but not from the database) keeps the lock: nobody may take over before its
/// lease runs out. Its successor by expiry holds no lock (`locked` false), so a candidate that
/// grabs the lock when the old session finally ends does not depose it; the successor gets the
/// lock at a later renewal, and from then on a crash of its own is noticed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_holding_the_lock_delays_failover_to_the_lease() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a = &*cluster.a.store;
    let (b, c) = (cluster.node("b").await, cluster.node("c").await);
    assert_eq!(leader(a, "a", Some(at(0))).await, is("a", 1));
    assert_eq!(leader(&b, "b", Some(at(5_000))).await, is("a", 1));
    assert_eq!(
        leader(&b, "b", Some(at(9_999))).await,
        is("a", 1),
        "the lock is held: no early takeover"
    );
    assert_eq!(
        leader(&b, "b", Some(at(10_000))).await,
        is("b", 2),
        "expired"
    );
    assert!(!cluster.locked().await, "b could not get the lock");
    assert_eq!(cluster.lock_holders().await, ["a"]);

    // The zombie's session ends; a third node gets the lock first, but b's row is not locked:
    // the free lock proves nothing about b. c lets the lock go again.
    cluster.crash_lock_session("a").await;
    assert_eq!(leader(&c, "c", Some(at(11_000))).await, is("b", 2));
    assert!(cluster.lock_holders().await.is_empty(), "c released it");

    // b takes the lock at its next renewal; now its own crash is noticed at once.
    assert_eq!(leader(&b, "b", Some(at(12_000))).await, is("b", 2));
    assert!(cluster.locked().await);
    assert_eq!(cluster.lock_holders().await, ["b"]);
    assert_eq!(leader(&c, "c", Some(at(13_000))).await, is("b", 2));
    cluster.crash_lock_session("b").await;
    assert_eq!(
        leader(&c, "c", Some(at(14_000))).await,
        is("c", 3),
        "before b's lease (22 s)"
    );
    assert_eq!(cluster.lock_holders().await, ["c"]);
    // Both former leaders, still running, see c.
    assert_eq!(leader(a, "a", Some(at(15_000))).await, is("c", 3));
    assert_eq!(leader(&b, "b", Some(at(15_000))).await, is("c", 3));
    assert_eq!(cluster.lock_holders().await, ["c"]);
    b.close();
    c.close();
}

/// The zombie comes back instead of dying: it finds its term gone and lets the lock go, so its
/// successor gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_that_comes_back_releases_the_lock() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a = &*cluster.a.store;
    let b = cluster.node("b").await;
    assert_eq!(leader(a, "a", Some(at(0))).await, is("a", 1));
    assert_eq!(leader(&b, "b", Some(at(10_000))).await, is("b", 2));
    assert_eq!(cluster.lock_holders().await, ["a"]);
    assert_eq!(leader(a, "a", Some(at(10_500))).await, is("b", 2));
    assert!(cluster.lock_holders().await.is_empty());
    assert_eq!(leader(&b, "b", Some(at(11_000))).await, is("b", 2));
    assert!(cluster.locked().await);
    assert_eq!(cluster.lock_holders().await, ["b"]);
    b.close();
}

/// A leader whose lock session died while its pooled connections work renews with `locked`
/// set from the lock it actually holds: false while it cannot get it back (nobody may take over
/// early then), true again once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_renews_with_the_lock_it_actually_holds() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a = &*cluster.a.store;
    let b = cluster.node("b").await;
    assert_eq!(leader(a, "a", Some(at(0))).await, is("a", 1));
    let (_, key) = cluster.lock_session("a").await;
    // a's session dies and someone else (another process on the key) takes the lock.
    cluster.crash_lock_session("a").await;
    let taken: bool = cluster
        .admin
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .unwrap()
        .get(0);
    assert!(taken);
    assert_eq!(
        leader(a, "a", Some(at(1_000))).await,
        is("a", 1),
        "a renews"
    );
    assert!(!cluster.locked().await, "without the lock");
    assert_eq!(leader(&b, "b", Some(at(2_000))).await, is("a", 1));

    // The lock is free again: b gets it but may not take over (a did not hold it at its last
    // renewal, so the free lock proves nothing about a's session).
    let released: bool = cluster
        .admin
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap()
        .get(0);
    assert!(released);
    assert_eq!(leader(&b, "b", Some(at(3_000))).await, is("a", 1));
    assert!(cluster.lock_holders().await.is_empty(), "b let it go");

    // a gets it back at its next renewal; then its crash is noticed at once.
    assert_eq!(leader(a, "a", Some(at(4_000))).await, is("a", 1));
    assert!(cluster.locked().await);
    cluster.crash_lock_session("a").await;
    assert_eq!(leader(&b, "b", Some(at(5_000))).await, is("b", 2));
    b.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resignation_releases_the_lock_and_hands_over_at_once() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a = &*cluster.a.store;
    let b = cluster.node("b").await;
    let first = a.leader_elect(elect("a", None)).await.unwrap();
    assert_eq!(leader(&b, "b", None).await, is("a", 1));
    let resigned = a
        .leader_resign(LeaderResignParams {
            node_id: "a-id".into(),
            term: first.term,
            now: None,
        })
        .await
        .unwrap();
    assert!(resigned);
    assert!(cluster.lock_holders().await.is_empty());
    assert_eq!(leader(&b, "b", None).await, is("b", 2));
    assert!(cluster.locked().await);
    assert_eq!(cluster.lock_holders().await, ["b"]);
    b.close();
}

/// A leader whose store closes without resigning (a shutdown that skipped it) closes its lock
/// session too: a follower takes over as soon as the server has noticed, not after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_leader_is_succeeded_before_its_lease_runs_out() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let b = cluster.node("b").await;
    let first = cluster
        .a
        .store
        .leader_elect(elect("a", None))
        .await
        .unwrap();
    cluster.a.postgres.close();
    let takeover = async {
        loop {
            let seen = b.leader_elect(elect("b", None)).await.unwrap();
            if seen.node_name == "b" {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let second = tokio::time::timeout(WAIT, takeover).await.unwrap();
    assert_eq!(second.term, 2);
    assert!(
        second.elected_at < first.expires_at,
        "before the lease ran out"
    );
    b.close();
}

/// The elector gives up on an election that takes too long, dropping its future at any point:
/// during a lock statement, the transaction, or the release. Whatever the point, the lock ends
/// up held only by the leader's store, `locked` tells the truth after each completed renewal,
/// and after the leader resigns no lock is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_given_up_midway_leave_no_stray_lock() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a = &*cluster.a.store;
    let b = cluster.node("b").await;
    let stores: [(&str, &dyn Store); 2] = [("a", a), ("b", &b)];
    for round in 0..120u64 {
        for (name, store) in stores {
            // From 0 to 6 ms: most attempts are cut somewhere along the way.
            let limit = Duration::from_micros((round * 397 + 50) % 6_000);
            let _ = tokio::time::timeout(limit, store.leader_elect(elect(name, None))).await;
        }
        let mut leader = String::new();
        for (name, store) in stores {
            leader = store
                .leader_elect(elect(name, None))
                .await
                .unwrap()
                .node_name;
        }
        // A session dropped with a given-up election ends as the server gets to it (a backend
        // still exiting may show its lock a moment longer); a lock kept by mistake stays.
        let settled = async {
            loop {
                let holders = cluster.lock_holders().await;
                if holders.is_empty() || holders == [leader.as_str()] {
                    return holders;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let holders = tokio::time::timeout(WAIT, settled)
            .await
            .unwrap_or_else(|_| panic!("round {round}: only the leader {leader} keeps the lock"));
        if cluster.locked().await {
            assert_eq!(
                holders,
                [leader.as_str()],
                "round {round}: `locked` is true"
            );
        }
    }
    let leader = a.leader_get().await.unwrap().unwrap();
    let resigning = if leader.node_name == "a" { a } else { &b };
    let resigned = resigning
        .leader_resign(LeaderResignParams {
            node_id: leader.node_id,
            term: leader.term,
            now: None,
        })
        .await
        .unwrap();
    assert!(resigned);
    // Sessions dropped with a given-up election end as the server gets to them.
    let released = async {
        while !cluster.lock_holders().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, released)
        .await
        .expect("no lock is left behind");
    b.close();
}

/// A leader whose lock session ends hears of it on its own change feed at once, not at its next
/// renewal: a follower may take the term at its next election, and the leader, woken, renews
/// first (so nobody takes over early) or finds the term taken and steps down. Nothing else is
/// written meanwhile, so no notification from another node can be what it hears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hears_at_once_that_its_lock_session_ended() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a = &*cluster.a.store;
    assert_eq!(leader(a, "a", None).await, is("a", 1));
    let mut feed = a.changes().expect("PostgreSQL has a change feed");
    // The term's own notification, if it has not been received yet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while feed.try_recv().is_ok() {}

    cluster.crash_lock_session("a").await;
    let heard = tokio::time::timeout(WAIT, feed.recv())
        .await
        .expect("told before the next renewal")
        .unwrap();
    assert_eq!(heard, Change::Leader);
    // Woken, it renews its term without the lock, and then holds it again.
    assert_eq!(leader(a, "a", None).await, is("a", 1));
    assert_eq!(cluster.lock_holders().await, ["a"]);
}
