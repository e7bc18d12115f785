//! The change feed: writes on one node reach every node on the schema through LISTEN/NOTIFY,
//! only changes of note are sent, and a feed whose connection drops reconnects and says
//! `Resync`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunOrigin, RunState, SkipReason};
use kairos_core::spec::ExecutionMode;
use kairos_store::*;
use kairos_store_postgres::PostgresStore;
use kairos_testkit::postgres::{TempPostgres, temp_postgres};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// How long a notification may take to arrive before the test fails (it takes milliseconds).
const WAIT: Duration = Duration::from_secs(10);

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn t0() -> Timestamp {
    t("2026-03-01T00:00:00Z")
}

fn secs(n: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(n)
}

/// The next change on `feed`, failing the test if none comes within [`WAIT`].
async fn next(feed: &mut Receiver<Change>) -> Change {
    tokio::time::timeout(WAIT, feed.recv())
        .await
        .expect("a change within the timeout")
        .expect("the feed is open")
}

/// The next `n` changes.
async fn take(feed: &mut Receiver<Change>, n: usize) -> Vec<Change> {
    let mut changes = Vec::with_capacity(n);
    for _ in 0..n {
        changes.push(next(feed).await);
    }
    changes
}

/// Node A (the testkit's store) and node B, a second store on the same schema whose connections
/// are named `<schema>_b`.
async fn two_nodes() -> Option<(TempPostgres, PostgresStore)> {
    let a = temp_postgres().await?;
    let b = PostgresStore::connect(a.schema.config_as("b"))
        .await
        .expect("node B connects");
    Some((a, b))
}

/// A connection for looking at, and ending, the stores' sessions.
async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The backends of connections named `application_name` whose last statement was a LISTEN.
async fn listeners(admin: &tokio_postgres::Client, application_name: &str) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            &[&application_name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn run(at: Timestamp) -> RunInsert {
    RunInsert {
        scheduled_for: at,
        run_at: at,
        origin: RunOrigin::Manual,
        skip: None,
        exclusive: false,
        max_attempts: 3,
        execution: ExecutionMode::AtLeastOnce,
        event: None,
    }
}

async fn create(store: &dyn Store, name: &str) -> Job {
    store
        .job_create(JobCreateParams {
            spec: kairos_store::conformance::spec(name),
            next_fire_at: Some(secs(60)),
            actor: "test".into(),
            now: Some(t0()),
            calendars: vec![],
        })
        .await
        .unwrap()
}

async fn trigger(store: &dyn Store, job: &Job, at: Timestamp) -> Run {
    store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id: job.id,
            run: run(at),
            params: None,
            actor: "test".into(),
            now: Some(at),
        })
        .await
        .unwrap()
}

async fn claim(store: &dyn Store, now: Timestamp) -> Vec<ClaimedRun> {
    store
        .run_claim(RunClaimParams {
            node: "a".into(),
            limit: 10,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::ZERO,
            now: Some(now),
        })
        .await
        .unwrap()
}

async fn finish(store: &dyn Store, c: &ClaimedRun, next: RunNext, now: Timestamp) -> bool {
    store
        .run_finish(RunFinishParams {
            run_id: c.run.id,
            parent_id: None,
            lease_token: c.lease_token.clone(),
            attempt: c.run.attempt,
            node: "a".into(),
            started_at: now,
            outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
            next,
            now: Some(now),
        })
        .await
        .unwrap()
}

async fn fire(
    store: &dyn Store,
    job: &Job,
    expected: Timestamp,
    runs: Vec<RunInsert>,
    cancel_active: bool,
    next: Timestamp,
) -> JobFireResult {
    store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: expected,
            runs,
            cancel_active,
            max_active: None,
            next_fire_at: Some(next),
            now: Some(expected),
            expected_version: None,
        })
        .await
        .unwrap()
}

fn elect(node: &str, now: Timestamp) -> LeaderElectParams {
    LeaderElectParams {
        node_id: node.into(),
        node_name: node.into(),
        ttl: SignedDuration::from_secs(10),
        now: Some(now),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_node_reach_the_feed_of_every_node() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let mut on_b = b.changes().expect("PostgreSQL has a change feed");
    let mut on_a = a.store.changes().expect("PostgreSQL has a change feed");

    let job = create(&*a.store, "j").await;
    assert_eq!(next(&mut on_b).await, Change::Jobs);
    assert_eq!(
        next(&mut on_a).await,
        Change::Jobs,
        "a node hears its own writes"
    );

    // Trigger-now queues a run.
    trigger(&*a.store, &job, secs(1)).await;
    assert_eq!(next(&mut on_b).await, Change::Runs);

    // A claim changes nothing others wait for; the cancel of the running run does.
    let claimed = claim(&*a.store, secs(1)).await;
    assert_eq!(claimed.len(), 1);
    let cancelled = a
        .store
        .run_cancel(RunCancelParams {
            run_id: claimed[0].run.id,
            actor: "test".into(),
            now: Some(secs(2)),
        })
        .await
        .unwrap();
    assert!(cancelled.cancel_requested);
    assert_eq!(next(&mut on_b).await, Change::Cancel);
    assert_eq!(take(&mut on_a, 2).await, [Change::Runs, Change::Cancel]);

    // And the other way round.
    create(&b, "k").await;
    assert_eq!(next(&mut on_a).await, Change::Jobs);
    assert_eq!(next(&mut on_b).await, Change::Jobs);
    b.close();
}

/// Every writer, once doing something of note and once not: the feed holds exactly the
/// changes of note, in commit order (a no-op that notified would shift the sequence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_changes_of_note_are_sent() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let store = &*a.store;
    let mut feed = b.changes().unwrap();
    let mut expected = Vec::new();

    let job = create(store, "j").await;
    expected.push(Change::Jobs);

    // Fires: applied with a queued run; fenced (stale); applied with a skipped run only.
    let fired = fire(store, &job, secs(60), vec![run(secs(60))], false, secs(120)).await;
    assert!(fired.applied);
    expected.push(Change::Runs);
    let stale = fire(store, &job, secs(60), vec![run(secs(60))], false, secs(120)).await;
    assert!(!stale.applied);
    let mut skipped = run(secs(120));
    skipped.skip = Some(SkipReason::Overlap);
    let fired = fire(store, &job, secs(120), vec![skipped], false, secs(180)).await;
    assert_eq!(fired.inserted.len(), 1);

    // Trigger-now of a due time that has its run already; a bulk enqueue.
    trigger(store, &job, secs(60)).await;
    let created = store
        .run_insert_many(RunInsertManyParams {
            job_id: job.id,
            runs: vec![run(secs(61)), run(secs(62))],
            now: Some(secs(61)),
        })
        .await
        .unwrap();
    assert_eq!(created.len(), 2);
    expected.push(Change::Runs);

    // Claims and heartbeats: nothing. A success: nothing; a retry and a release: queued again.
    let claimed = claim(store, secs(62)).await;
    assert_eq!(claimed.len(), 3);
    store
        .run_heartbeat(RunHeartbeatParams {
            leases: vec![(claimed[0].run.id, claimed[0].lease_token.clone())],
            lease: SignedDuration::from_secs(30),
            now: Some(secs(63)),
        })
        .await
        .unwrap();
    let done = RunNext::Finish(RunState::Succeeded);
    assert!(finish(store, &claimed[0], done, secs(64)).await);
    let retry = RunNext::Retry { run_at: secs(70) };
    assert!(finish(store, &claimed[1], retry, secs(64)).await);
    expected.push(Change::Runs);
    assert!(
        !finish(store, &claimed[1], RunNext::Release, secs(64)).await,
        "a lost lease changes nothing"
    );
    assert!(finish(store, &claimed[2], RunNext::Release, secs(64)).await);
    expected.push(Change::Runs);

    // Rescue: nothing expired, nothing sent; an expired lease requeued.
    let claimed = claim(store, secs(70)).await;
    assert_eq!(claimed.len(), 2);
    let rescue = |now| RunRescueParams {
        limit: 10,
        orphaned_node: None,
        now: Some(now),
    };
    assert!(
        store
            .run_rescue(rescue(secs(71)))
            .await
            .unwrap()
            .requeued
            .is_empty()
    );
    assert_eq!(
        store
            .run_rescue(rescue(secs(200)))
            .await
            .unwrap()
            .requeued
            .len(),
        2
    );
    expected.push(Change::Runs);

    // Cancel of a queued run: nothing to wake; `replace` with a running run: its worker.
    let queued = trigger(store, &job, secs(300)).await;
    expected.push(Change::Runs);
    store
        .run_cancel(RunCancelParams {
            run_id: queued.id,
            actor: "test".into(),
            now: Some(secs(301)),
        })
        .await
        .unwrap();
    assert_eq!(claim(store, secs(300)).await.len(), 2);
    let fired = fire(
        store,
        &job,
        secs(180),
        vec![run(secs(180))],
        true,
        secs(240),
    )
    .await;
    assert!(fired.applied);
    expected.extend([Change::Runs, Change::Cancel]);

    // Leadership: a new term; a renewal (nothing); a resignation; a failed one (nothing).
    let leader = store.leader_elect(elect("n1", secs(400))).await.unwrap();
    expected.push(Change::Leader);
    store.leader_elect(elect("n1", secs(401))).await.unwrap();
    store.leader_elect(elect("n2", secs(402))).await.unwrap();
    let resign = |node: &str| LeaderResignParams {
        node_id: node.into(),
        term: leader.term,
        now: Some(secs(403)),
    };
    assert!(store.leader_resign(resign("n1")).await.unwrap());
    expected.push(Change::Leader);
    assert!(!store.leader_resign(resign("n1")).await.unwrap());

    // Job writes: pause, pause again (a no-op), resume, update, delete.
    let paused = |paused| JobSetPausedParams {
        namespace: "default".into(),
        name: "j".into(),
        paused,
        next_fire_at: Some(secs(600)),
        actor: "test".into(),
        now: Some(secs(500)),
        expected_version: None,
    };
    store.job_set_paused(paused(true)).await.unwrap();
    store.job_set_paused(paused(true)).await.unwrap();
    let job = store.job_set_paused(paused(false)).await.unwrap();
    expected.extend([Change::Jobs, Change::Jobs]);
    store
        .job_update(JobUpdateParams {
            namespace: "default".into(),
            name: "j".into(),
            expected_version: job.version,
            spec: kairos_store::conformance::spec("j"),
            next_fire_at: NextFire::Set(Some(secs(660))),
            actor: "test".into(),
            now: Some(secs(501)),
            calendars: vec![],
        })
        .await
        .unwrap();
    store
        .job_delete(JobDeleteParams {
            namespace: "default".into(),
            name: "j".into(),
            expected_version: None,
            actor: "test".into(),
            now: Some(secs(502)),
            force: false,
        })
        .await
        .unwrap();
    expected.extend([Change::Jobs, Change::Jobs]);

    // The last one marks the end: nothing came after it either.
    assert_eq!(take(&mut feed, expected.len()).await, expected);
    assert_eq!(feed.try_recv(), Err(TryRecvError::Empty));
    b.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_loses_its_connection_reconnects_and_resyncs() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let admin = admin(&a.schema.config().url).await;
    let b_name = format!("{}_b", a.schema.name);
    let mut feed = b.changes().unwrap();
    let before = listeners(&admin, &b_name).await;
    assert_eq!(before.len(), 1, "one listener per store: {before:?}");

    let ended: bool = admin
        .query_one("SELECT pg_terminate_backend($1, 5000)", &[&before[0]])
        .await
        .unwrap()
        .get(0);
    assert!(ended);
    assert_eq!(next(&mut feed).await, Change::Resync);
    let after = listeners(&admin, &b_name).await;
    assert_eq!(after.len(), 1, "listening again: {after:?}");
    assert_ne!(after, before, "on a new connection");

    // Later notifications still arrive.
    create(&*a.store, "j").await;
    assert_eq!(next(&mut feed).await, Change::Jobs);

    // Twice over, the second time while a write is being made.
    admin
        .execute("SELECT pg_terminate_backend($1, 5000)", &[&after[0]])
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await, Change::Resync);
    create(&*a.store, "k").await;
    assert_eq!(next(&mut feed).await, Change::Jobs);
    b.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_ends_with_its_store() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let admin = admin(&a.schema.config().url).await;
    let b_name = format!("{}_b", a.schema.name);

    // Closed: the feed ends, and its listener's connection goes.
    let mut feed = b.changes().unwrap();
    b.close();
    let ended = tokio::time::timeout(WAIT, feed.recv()).await.unwrap();
    assert_eq!(ended, Err(RecvError::Closed));
    let mut later = b.changes().unwrap();
    assert_eq!(
        later.recv().await,
        Err(RecvError::Closed),
        "a closed store's feed"
    );
    wait_until_gone(&admin, &b_name).await;

    // Dropped (every clone): the same.
    let c = PostgresStore::connect(a.schema.config_as("c"))
        .await
        .unwrap();
    let c_name = format!("{}_c", a.schema.name);
    let mut feed = c.changes().unwrap();
    assert_eq!(listeners(&admin, &c_name).await.len(), 1);
    let clone = c.clone();
    drop(c);
    create(&clone, "still-open").await;
    assert_eq!(next(&mut feed).await, Change::Jobs, "a clone keeps it open");
    drop(clone);
    let ended = tokio::time::timeout(WAIT, feed.recv()).await.unwrap();
    assert_eq!(ended, Err(RecvError::Closed));
    wait_until_gone(&admin, &c_name).await;
}

/// Waits until no listener named `application_name` is left.
async fn wait_until_gone(admin: &tokio_postgres::Client, application_name: &str) {
    let gone = async {
        while !listeners(admin, application_name).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("the listener's connection closes");
}

/// Steps a workflow run queues (its start, a step's end) are queued runs for every node; the
/// end of its last step queues nothing; cancelling it asks its running steps to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_a_workflow_run_queues_reach_other_nodes() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let store = &*a.store;
    let mut feed = b.changes().unwrap();
    let spec = kairos_core::spec::JobSpec::from_json(
        r#"{"name":"flow","steps":[
            {"name":"one","task":{"kind":"shell","script":"true"}},
            {"name":"two","depends_on":["one"],"task":{"kind":"shell","script":"true"}}]}"#,
    )
    .unwrap();
    let job = store
        .job_create(JobCreateParams {
            spec,
            next_fire_at: None,
            actor: "test".into(),
            now: Some(t0()),
            calendars: vec![],
        })
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await, Change::Jobs);
    let flow_run = trigger(store, &job, secs(1)).await;
    assert_eq!(next(&mut feed).await, Change::Runs);
    let claimed = claim(store, secs(1)).await;
    let start = |c: &ClaimedRun| WorkflowStartParams {
        run_id: c.run.id,
        lease_token: c.lease_token.clone(),
        spec: c.job.spec.clone(),
        now: Some(secs(1)),
    };
    assert!(store.workflow_start(start(&claimed[0])).await.unwrap());
    assert_eq!(next(&mut feed).await, Change::Runs, "the root step");
    let step_end = |c: &ClaimedRun| RunFinishParams {
        run_id: c.run.id,
        parent_id: c.run.parent_id,
        lease_token: c.lease_token.clone(),
        attempt: c.run.attempt,
        node: "a".into(),
        started_at: secs(2),
        outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
        next: RunNext::Finish(RunState::Succeeded),
        now: Some(secs(2)),
    };
    let one = claim(store, secs(2)).await;
    assert!(store.run_finish(step_end(&one[0])).await.unwrap());
    assert_eq!(next(&mut feed).await, Change::Runs, "the step it released");
    let two = claim(store, secs(2)).await;
    assert!(store.run_finish(step_end(&two[0])).await.unwrap());
    assert_eq!(
        store
            .run_get(RunGetParams { id: flow_run.id })
            .await
            .unwrap()
            .unwrap()
            .state,
        RunState::Succeeded
    );

    create(store, "marker").await;
    assert_eq!(next(&mut feed).await, Change::Jobs, "nothing before");

    // Another run, cancelled while its first step runs.
    trigger(store, &job, secs(3)).await;
    assert_eq!(next(&mut feed).await, Change::Runs);
    let claimed = claim(store, secs(3)).await;
    assert!(store.workflow_start(start(&claimed[0])).await.unwrap());
    assert_eq!(next(&mut feed).await, Change::Runs);
    assert_eq!(claim(store, secs(3)).await.len(), 1);
    let cancelled = store
        .run_cancel(RunCancelParams {
            run_id: claimed[0].run.id,
            actor: "test".into(),
            now: Some(secs(4)),
        })
        .await
        .unwrap();
    assert_eq!(cancelled.state, RunState::Running, "until its step ends");
    assert_eq!(next(&mut feed).await, Change::Cancel);
    let steps = store
        .run_steps(RunStepsParams {
            run_id: claimed[0].run.id,
        })
        .await
        .unwrap();
    assert!(steps[0].cancel_requested);
    assert_eq!(steps[1].state, RunState::Cancelled);
    b.close();
}
