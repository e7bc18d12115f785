//! Events through the job service under a manual clock, on each backend: each subscribed job
//! gets one run per event id, with its overlap policy, also when many events arrive at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

#[allow(dead_code, reason = "each test file uses part of the shared setup")]
mod common;

use common::{setup, spec};
use kairos_core::run::{RunOrigin, RunState};
use kairos_runtime::EventRequest;
use kairos_testkit::Backend;
use serde_json::json;

kairos_testkit::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_events_each_get_their_run,
    events_follow_the_overlap_policy_and_their_id,
}

fn subscriber(name: &str, extra: &str) -> kairos_core::JobSpec {
    spec(&format!(
        r#"{{"name":"{name}","triggers":[{{"event":"t"}}],"task":{{"kind":"shell","script":"true"}}{extra}}}"#
    ))
}

fn event(id: &str) -> EventRequest {
    EventRequest {
        topic: "t".into(),
        id: Some(id.into()),
        payload: json!({"id": id}),
        namespaces: None,
    }
}

/// Many events posted at once, as a busy API gets them: every event gets exactly one run of
/// each job (an `allow` job runs them all; a `forbid` job records the ones it skips), none is
/// lost to the fences that keep the overlap decisions right.
async fn concurrent_events_each_get_their_run(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(subscriber(
            "many",
            r#","overlap":"allow","max_concurrent":1000"#,
        ))
        .await
        .unwrap();
    s.jobs.create(subscriber("one", "")).await.unwrap();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..60 {
        let jobs = s.jobs.clone();
        posts.spawn(async move { jobs.emit(event(&format!("e{i}"))).await });
    }
    while let Some(done) = posts.join_next().await {
        let emitted = done.unwrap().unwrap();
        assert_eq!(emitted.runs.len(), 2, "{emitted:?}");
        assert!(emitted.runs.iter().all(|r| r.created));
    }
    let many = s.runs("many").await;
    assert_eq!(many.len(), 60);
    assert!(many.iter().all(|r| r.state == RunState::Queued));
    let one = s.runs("one").await;
    assert_eq!(one.len(), 60);
    // `forbid`: the first event's run is queued, the others arrived while it was active.
    assert_eq!(
        one.iter().filter(|r| r.state == RunState::Queued).count(),
        1,
        "{one:?}"
    );
    assert!(
        one.iter()
            .filter(|r| r.state != RunState::Queued)
            .all(|r| r.state == RunState::Skipped && r.reason.as_deref() == Some("overlap"))
    );
}

async fn events_follow_the_overlap_policy_and_their_id(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.jobs
        .create(subscriber("queued", r#","overlap":"queue""#))
        .await
        .unwrap();
    s.jobs
        .create(subscriber("replaced", r#","overlap":"replace""#))
        .await
        .unwrap();
    let first = s.jobs.emit(event("a")).await.unwrap();
    let again = s.jobs.emit(event("a")).await.unwrap();
    assert_eq!(
        again
            .runs
            .iter()
            .map(|r| (r.run_id, r.created))
            .collect::<Vec<_>>(),
        first
            .runs
            .iter()
            .map(|r| (r.run_id, false))
            .collect::<Vec<_>>(),
        "a repeated id is the same runs, and replaces nothing"
    );
    let second = s.jobs.emit(event("b")).await.unwrap();
    let queued = s.runs("queued").await;
    assert_eq!(queued.len(), 2);
    assert!(
        queued
            .iter()
            .all(|r| r.exclusive && r.state == RunState::Queued)
    );
    assert!(queued.iter().all(|r| r.origin == RunOrigin::Event));
    let replaced = s.runs("replaced").await;
    let by_id = |id| replaced.iter().find(|r| r.id == id).unwrap();
    assert_eq!(by_id(first.runs[1].run_id).state, RunState::Cancelled);
    assert_eq!(by_id(second.runs[1].run_id).state, RunState::Queued);
    // A paused job gets none; an invalid event writes nothing.
    s.jobs.set_paused("default", "queued", true).await.unwrap();
    let third = s.jobs.emit(event("c")).await.unwrap();
    assert_eq!(third.runs.len(), 1);
    let bad = s
        .jobs
        .emit(EventRequest {
            topic: "not a topic".into(),
            ..event("d")
        })
        .await;
    assert!(matches!(bad, Err(kairos_runtime::JobError::Invalid(_))));
    assert_eq!(s.runs("replaced").await.len(), 3);
}
