//! The plans of hot statements, made as PostgreSQL makes them under load: generic (a prepared
//! statement's plan after its fifth run) and on statistics taken before the data came. Each
//! statement must reach the rows it names through the index that keys them, whatever the
//! statistics say: a plan that walks a job's history or every running run gets slower with
//! every run the cluster keeps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::RunOrigin;
use kairos_core::spec::ExecutionMode;
use kairos_store::*;
use kairos_store_postgres::plans;
use kairos_testkit::postgres::{TempPostgres, connect, temp_postgres};

const JOBS: usize = 20;
const RUNS_PER_JOB: i64 = 100;

fn run_at(at: Timestamp) -> RunInsert {
    RunInsert {
        scheduled_for: at,
        run_at: at,
        origin: RunOrigin::Manual,
        skip: None,
        exclusive: false,
        max_attempts: 1,
        execution: ExecutionMode::AtLeastOnce,
        event: None,
    }
}

/// A schema analyzed while empty, then given `JOBS` jobs with `RUNS_PER_JOB` runs each, all
/// claimed (running): the statistics still say there are no runs at all.
async fn history(pg: &TempPostgres) -> tokio_postgres::Client {
    let client = connect(&pg.schema.base_url).await.unwrap();
    client
        .batch_execute(&format!(
            "SET search_path = {0}; ANALYZE {0}.runs; ANALYZE {0}.jobs;",
            pg.schema.name
        ))
        .await
        .unwrap();
    let t0: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    for j in 0..JOBS {
        let job = pg
            .store
            .job_create(JobCreateParams {
                spec: kairos_store::conformance::spec(&format!("history-{j}")),
                next_fire_at: None,
                actor: "test".into(),
                now: Some(t0),
                calendars: vec![],
            })
            .await
            .unwrap();
        pg.store
            .run_insert_many(RunInsertManyParams {
                job_id: job.id,
                runs: (0..RUNS_PER_JOB)
                    .map(|i| run_at(t0 + SignedDuration::from_secs(i)))
                    .collect(),
                now: Some(t0),
            })
            .await
            .unwrap();
    }
    let claimed = pg
        .store
        .run_claim(RunClaimParams {
            node: "n1".into(),
            limit: 10_000,
            lease: SignedDuration::from_secs(60),
            ahead: SignedDuration::ZERO,
            now: Some(t0 + SignedDuration::from_hours(1)),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), JOBS * RUNS_PER_JOB as usize);
    client
}

/// The generic plan of `sql` (its parameters all NULL: a generic plan does not look at them).
async fn generic_plan(client: &tokio_postgres::Client, sql: &str) -> String {
    let params = (1..=64)
        .rev()
        .find(|n| sql.contains(&format!("${n}")))
        .unwrap_or(0);
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan; DEALLOCATE ALL; PREPARE checked AS {sql}"
        ))
        .await
        .unwrap();
    let nulls = vec!["NULL"; params].join(", ");
    let rows = client
        .query(&format!("EXPLAIN EXECUTE checked({nulls})"), &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_batch_of_finishes_locks_each_run_by_its_primary_key() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let client = history(&pg).await;
    let plan = generic_plan(&client, plans::FINISH_MANY).await;
    assert!(
        !plan.contains("runs_leases") && !plan.contains("Seq Scan on runs"),
        "the finish walks the running runs:\n{plan}"
    );
    assert!(plan.contains("runs_pkey"), "{plan}");
}

#[tokio::test]
async fn a_fire_looks_up_the_due_times_it_repeats_by_their_key() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let client = history(&pg).await;
    let plan = generic_plan(&client, plans::LOCK_RUNS).await;
    assert!(
        plan.contains("Index Scan using runs_due"),
        "the fire does not probe runs_due:\n{plan}"
    );
    assert!(
        !plan.contains("Seq Scan on runs") && !plan.contains("on runs_job "),
        "the fire walks the jobs' history:\n{plan}"
    );
}

#[tokio::test]
async fn a_heartbeat_locks_each_run_by_its_primary_key() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let client = history(&pg).await;
    let plan = generic_plan(&client, plans::HEARTBEAT).await;
    assert!(
        !plan.contains("runs_leases") && !plan.contains("Seq Scan on runs"),
        "the heartbeat walks the running runs:\n{plan}"
    );
    assert!(plan.contains("runs_pkey"), "{plan}");
}

/// Every claim reads the exclusive rule's facts (as a claim does, with sorting off): the jobs
/// with a due waiting exclusive run through their partial index, and each one's head through
/// the index in due-time order; never by walking the queue or the running runs.
#[tokio::test]
async fn the_exclusive_facts_read_only_the_waiting_exclusive_runs() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let client = history(&pg).await;
    client.batch_execute("SET enable_sort = off").await.unwrap();
    let plan = generic_plan(&client, plans::EXCLUSIVE_WAITING).await;
    assert!(
        plan.contains("runs_queued_exclusive_due") && plan.contains("runs_queued_exclusive "),
        "the facts do not read the exclusive indexes:\n{plan}"
    );
    assert!(
        !plan.contains("Seq Scan on runs")
            && !plan.contains("runs_queued ")
            && !plan.contains("Sort"),
        "the facts walk other runs or sort:\n{plan}"
    );
}

/// A claim from a position walks the queue's index on both sides of the position (with sorting
/// off, as a claim's transaction has it), and the claim without exclusive runs asks whether one
/// is waiting through their partial index; neither walks the running runs or a job's history.
#[tokio::test]
async fn a_claim_walks_the_queue_in_its_order() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let client = history(&pg).await;
    client.batch_execute("SET enable_sort = off").await.unwrap();
    for (sql, plain) in [(plans::CLAIM_FROM, false), (plans::CLAIM_PLAIN_FROM, true)] {
        let plan = generic_plan(&client, sql).await;
        assert_eq!(
            plan.matches("Index Scan using runs_queued on runs").count(),
            2,
            "the claim does not walk the queue from both ends:\n{plan}"
        );
        assert_eq!(
            plan.contains("runs_queued_exclusive_due"),
            plain,
            "the guard on waiting exclusive runs:\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan on runs")
                && !plan.contains("runs_leases")
                && !plan.contains("runs_job ")
                && !plan.contains("Sort"),
            "the claim walks other runs or sorts:\n{plan}"
        );
    }
}
