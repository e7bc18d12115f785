//! Event triggers: the topics index kept with each job's document, and an event's runs keyed
//! by `(job_id, event_id)` and fenced by the job's version, its pause and the overlap count.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{RunOrigin, RunState};
use kairos_core::spec::JobSpec;

use super::{T0, claim, t};
use crate::*;

/// A job `name` of `namespace` subscribed to `topic` (with a filter when given).
fn subscriber(namespace: &str, name: &str, topic: &str, extra: &str) -> JobSpec {
    JobSpec::from_json(&format!(
        r#"{{"name":"{name}","namespace":"{namespace}","triggers":[{{"event":"{topic}"{extra}}}],
           "task":{{"kind":"shell","script":"true"}}}}"#
    ))
    .expect("valid subscriber")
}

async fn create(store: &Arc<dyn Store>, spec: JobSpec) -> Job {
    store
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec,
            next_fire_at: None,
            now: Some(t(T0)),
            calendars: vec![],
        })
        .await
        .unwrap()
}

async fn targets(
    store: &Arc<dyn Store>,
    topic: &str,
    event_id: &str,
    namespaces: Option<Vec<String>>,
) -> Vec<EventTarget> {
    store
        .event_targets(EventTargetsParams {
            topic: topic.into(),
            event_id: event_id.into(),
            namespaces,
        })
        .await
        .unwrap()
}

fn names(targets: &[EventTarget]) -> Vec<String> {
    targets
        .iter()
        .map(|t| format!("{}/{}", t.job.namespace(), t.job.name()))
        .collect()
}

fn event(id: &str, topic: &str, payload: &str) -> Arc<RunEvent> {
    Arc::new(RunEvent {
        id: id.into(),
        topic: topic.into(),
        payload: payload.into(),
    })
}

/// The params of one job's run for `event` at `at`.
fn fire_params(job: &Job, event: &Arc<RunEvent>, at: Timestamp) -> EventFireParams {
    EventFireParams {
        job_id: job.id,
        expected_version: job.version,
        run: RunInsert {
            origin: RunOrigin::Event,
            event: Some(event.clone()),
            ..super::insert(at)
        },
        cancel_active: false,
        max_active: None,
        now: Some(at),
    }
}

async fn fire_one(store: &Arc<dyn Store>, p: EventFireParams) -> Option<i64> {
    store.event_fire_many(&[p]).await.unwrap().remove(0)
}

pub async fn event_targets_follow_each_jobs_triggers(store: Arc<dyn Store>) {
    let a = create(&store, subscriber("default", "a", "user.signup", "")).await;
    create(
        &store,
        subscriber("default", "b", "user.signup", r#","filter":{"plan":"pro"}"#),
    )
    .await;
    create(&store, subscriber("default", "c", "order.paid", "")).await;
    create(&store, super::spec("timed")).await;
    create(&store, subscriber("other", "d", "user.signup", "")).await;
    let paused = create(&store, subscriber("default", "e", "user.signup", "")).await;
    store
        .job_set_paused(JobSetPausedParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: paused.name().into(),
            paused: true,
            next_fire_at: None,
            now: Some(t(T0)),
            expected_version: None,
        })
        .await
        .unwrap();

    let found = targets(&store, "user.signup", "e1", None).await;
    assert_eq!(names(&found), ["default/a", "default/b", "other/d"]);
    assert!(found.iter().all(|t| t.existing.is_none() && t.active == 0));
    assert_eq!(
        names(&targets(&store, "user.signup", "e1", Some(vec!["default".into()])).await),
        ["default/a", "default/b"]
    );
    assert!(
        targets(&store, "nobody.listens", "e1", None)
            .await
            .is_empty()
    );

    // An update that drops the trigger, and a delete, leave the index at once.
    store
        .job_update(JobUpdateParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: "a".into(),
            expected_version: a.version,
            spec: subscriber("default", "a", "order.paid", ""),
            next_fire_at: NextFire::Keep,
            now: Some(t(T0)),
            calendars: vec![],
        })
        .await
        .unwrap();
    store
        .job_delete(JobDeleteParams {
            actor: "test".into(),
            namespace: "other".into(),
            name: "d".into(),
            expected_version: None,
            now: Some(t(T0)),
            force: false,
        })
        .await
        .unwrap();
    assert_eq!(
        names(&targets(&store, "user.signup", "e1", None).await),
        ["default/b"]
    );
    assert_eq!(
        names(&targets(&store, "order.paid", "e1", None).await),
        ["default/a", "default/c"]
    );
}

pub async fn event_runs_are_keyed_by_event_id(store: Arc<dyn Store>) {
    let at = t(T0);
    let job = create(&store, subscriber("default", "a", "t", "")).await;
    let e1 = event("e1", "t", r#"{"n":1}"#);
    let first = fire_one(&store, fire_params(&job, &e1, at))
        .await
        .expect("the event's run");
    // The same event again (any instant): no second run.
    assert_eq!(fire_one(&store, fire_params(&job, &e1, at)).await, None);
    let later = at + SignedDuration::from_secs(5);
    assert_eq!(fire_one(&store, fire_params(&job, &e1, later)).await, None);
    // Another event at the same instant is another run; so is a manual run at that instant.
    let e2 = event("e2", "t", r#"{"n":2}"#);
    let second = fire_one(&store, fire_params(&job, &e2, at))
        .await
        .expect("a second event's run");
    assert_ne!(first, second);
    let manual = store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id: job.id,
            run: RunInsert {
                origin: RunOrigin::Manual,
                ..super::insert(at)
            },
            params: None,
            actor: "test".into(),
            now: Some(at),
        })
        .await
        .unwrap();
    assert!(manual.event.is_none());
    assert!(manual.id != first && manual.id != second);

    let run = store
        .run_get(RunGetParams { id: first })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.origin, RunOrigin::Event);
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.event.as_ref(), Some(&*e1));
    let found = targets(&store, "t", "e1", None).await;
    assert_eq!(found[0].existing.as_ref().map(|r| r.id), Some(first));
    assert_eq!(found[0].active, 3);

    // A worker gets the event with the run.
    let claimed = claim(&store, "n1", 10, at).await;
    let c = claimed.iter().find(|c| c.run.id == first).unwrap();
    assert_eq!(c.run.event.as_ref(), Some(&*e1));
    let c = claimed.iter().find(|c| c.run.id == manual.id).unwrap();
    assert_eq!(c.run.event, None);
}

pub async fn event_fire_is_fenced_by_version_pause_and_count(store: Arc<dyn Store>) {
    let at = t(T0);
    let job = create(&store, subscriber("default", "a", "t", "")).await;
    let e = |id: &str| event(id, "t", "{}");

    // The job changed since the decision: nothing.
    let stale = Job {
        version: job.version - 1,
        ..job.clone()
    };
    assert_eq!(
        fire_one(&store, fire_params(&stale, &e("e1"), at)).await,
        None
    );

    // A run for another event makes the count 1: a decision made at 0 does not hold.
    fire_one(&store, fire_params(&job, &e("e2"), at))
        .await
        .unwrap();
    let counted = EventFireParams {
        max_active: Some(0),
        ..fire_params(&job, &e("e3"), at)
    };
    assert_eq!(fire_one(&store, counted).await, None);
    let counted = EventFireParams {
        max_active: Some(1),
        ..fire_params(&job, &e("e3"), at)
    };
    let e3 = fire_one(&store, counted).await.expect("the count held");

    // `replace` cancels the active runs first.
    let replacing = EventFireParams {
        cancel_active: true,
        ..fire_params(&job, &e("e4"), at)
    };
    let e4 = fire_one(&store, replacing).await.unwrap();
    let run = |id| {
        let store = store.clone();
        async move { store.run_get(RunGetParams { id }).await.unwrap().unwrap() }
    };
    assert_eq!(run(e3).await.state, RunState::Cancelled);
    assert_eq!(run(e3).await.reason.as_deref(), Some("replaced"));
    assert_eq!(run(e4).await.state, RunState::Queued);

    // A skipped run holds its event id too.
    let skipped = EventFireParams {
        run: RunInsert {
            skip: Some(kairos_core::run::SkipReason::Overlap),
            ..fire_params(&job, &e("e5"), at).run
        },
        ..fire_params(&job, &e("e5"), at)
    };
    let e5 = fire_one(&store, skipped).await.unwrap();
    assert_eq!(run(e5).await.state, RunState::Skipped);
    assert_eq!(
        fire_one(&store, fire_params(&job, &e("e5"), at)).await,
        None
    );

    // A paused job gets nothing.
    let paused = store
        .job_set_paused(JobSetPausedParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: "a".into(),
            paused: true,
            next_fire_at: None,
            now: Some(at),
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(
        fire_one(&store, fire_params(&paused, &e("e6"), at)).await,
        None
    );
    // Each element of a batch on its own: the first applies, the stale one does not.
    let other = create(&store, subscriber("default", "b", "t", "")).await;
    let results = store
        .event_fire_many(&[
            fire_params(&other, &e("e7"), at),
            fire_params(&stale, &e("e7"), at),
        ])
        .await
        .unwrap();
    assert!(results[0].is_some());
    assert_eq!(results[1], None);
}

/// The same event posted to two nodes at once: one run. Each round races two posts of a new
/// event id for two jobs (as two nodes would send them), on separate connections.
pub async fn event_fire_concurrent_posts_create_one_run(store: Arc<dyn Store>) {
    let at = t(T0);
    let a = create(&store, subscriber("default", "a", "t", "")).await;
    let b = create(&store, subscriber("default", "b", "t", "")).await;
    for round in 0..25 {
        let e = event(&format!("e{round}"), "t", "{}");
        let post = |store: Arc<dyn Store>, ps: Vec<EventFireParams>| {
            tokio::spawn(async move { store.event_fire_many(&ps).await.unwrap() })
        };
        // One node posts for a then b, the other for b then a (their batches overlap).
        let one = post(
            store.clone(),
            vec![fire_params(&a, &e, at), fire_params(&b, &e, at)],
        );
        let two = post(
            store.clone(),
            vec![fire_params(&b, &e, at), fire_params(&a, &e, at)],
        );
        let (one, two) = (one.await.unwrap(), two.await.unwrap());
        let for_a = [one[0], two[1]];
        let for_b = [one[1], two[0]];
        for (job, got) in [("a", for_a), ("b", for_b)] {
            assert_eq!(
                got.iter().flatten().count(),
                1,
                "round {round}: job {job} got one run: {got:?}"
            );
        }
        let found = targets(&store, "t", &e.id, None).await;
        assert!(found.iter().all(|t| t.existing.is_some()));
    }
    let runs = store
        .run_list(RunListParams {
            job_id: Some(a.id),
            namespaces: None,
            state: None,
            limit: 1000,
            before_id: None,
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 25);
}

/// A workflow run created by an event hands the event to each step.
pub async fn event_reaches_the_steps_of_a_workflow(store: Arc<dyn Store>) {
    let at = t(T0);
    let spec = JobSpec::from_json(
        r#"{"name":"flow","triggers":[{"event":"t"}],"steps":[
            {"name":"a","task":{"kind":"shell","script":"true"}},
            {"name":"b","depends_on":["a"],"task":{"kind":"shell","script":"true"}}]}"#,
    )
    .unwrap();
    let job = create(&store, spec).await;
    let e = event("e1", "t", r#"{"user":"ann"}"#);
    fire_one(&store, fire_params(&job, &e, at)).await.unwrap();
    let c = claim(&store, "n1", 10, at).await.remove(0);
    assert!(
        store
            .workflow_start(WorkflowStartParams {
                run_id: c.run.id,
                lease_token: c.lease_token.clone(),
                spec: c.job.spec.clone(),
                now: Some(at),
            })
            .await
            .unwrap()
    );
    let step = claim(&store, "n1", 10, at).await.remove(0);
    assert_eq!(step.run.step.as_deref(), Some("a"));
    assert_eq!(step.run.event.as_ref(), Some(&*e));
    // The steps are outside the event's key: the workflow run alone holds it.
    let found = targets(&store, "t", "e1", None).await;
    assert_eq!(found[0].existing.as_ref().map(|r| r.id), Some(c.run.id));
}
