//! A node whose clock is wrong, on a cluster's store: set to the database's clock
//! (`AlignedClock`), it fires each due time when the database says it is due.
//!
//! The fake here is the failure mode: a node clock three seconds behind. The database runs on
//! this machine, so its clock is the machine's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kairos_core::JobSpec;
use kairos_runtime::scheduler::Scheduler;
use kairos_runtime::{AlignedClock, Clock, JobService, NodeContext, SystemClock};
use kairos_store::RunListParams;
use kairos_testkit::postgres::temp_postgres;
use tokio_util::sync::CancellationToken;

/// The machine's clock, off by a constant.
struct Skewed(SignedDuration);

#[async_trait::async_trait]
impl Clock for Skewed {
    fn now(&self) -> Timestamp {
        SystemClock.now() + self.0
    }

    fn store_now(&self) -> Option<Timestamp> {
        None
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        SystemClock.sleep_until(deadline - self.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_behind_fires_on_the_database_clock() {
    let Some(pg) = temp_postgres().await else {
        return;
    };
    let skew = SignedDuration::from_secs(-3);
    let clock = Arc::new(AlignedClock::new(Skewed(skew)));
    let offset = clock
        .align(&*pg.store)
        .await
        .unwrap()
        .expect("the database's clock, measured");
    assert!(
        (offset + skew).abs() < SignedDuration::from_millis(50),
        "the offset undoes the skew: {offset:?}"
    );
    assert!(
        (clock.now().duration_since(SystemClock.now())).abs() < SignedDuration::from_millis(50)
    );

    // A node whose clock agrees with the database's within a reading's error keeps its own.
    let synchronized = AlignedClock::new(SystemClock);
    assert_eq!(
        synchronized.align(&*pg.store).await.unwrap(),
        Some(SignedDuration::ZERO)
    );

    let ctx = NodeContext::new("skewed", pg.store.clone(), clock.clone());
    let job = JobService::new(ctx.clone())
        .create(
            JobSpec::from_json(
                r#"{"name":"tick","triggers":[{"cron":"* * * * * *"}],"task":{"kind":"shell","script":"true"}}"#,
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let scheduler = Scheduler::new(ctx.clone());
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { scheduler.run(stop).await }
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.cancel();
    running.await.unwrap();

    let runs = pg
        .store
        .run_list(RunListParams {
            job_id: Some(job.id),
            namespaces: None,
            state: None,
            limit: 100,
            before_id: None,
        })
        .await
        .unwrap();
    assert!(runs.len() >= 2, "{runs:?}");
    for run in &runs {
        // Created ahead of its due time (the look-ahead), by the database's clock.
        let late = run.created_at.duration_since(run.scheduled_for);
        assert!(
            late < SignedDuration::from_millis(500),
            "run for {} created {late:?} after it was due",
            run.scheduled_for
        );
    }
}
