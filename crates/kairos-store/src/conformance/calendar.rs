//! Calendars: the documents and their version fence; the index of the jobs that name one; the
//! fence a job write planned with calendars carries; a calendar change that re-plans its jobs
//! in one transaction, also against concurrent job writes; the fire fenced by the version a
//! round was planned with.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::auth::AuditAction;
use kairos_core::calendar::CalendarSpec;
use kairos_core::spec::JobSpec;

use super::{T0, fire, insert, t};
use crate::*;

fn calendar(name: &str, dates: &[&str]) -> CalendarSpec {
    CalendarSpec {
        name: name.into(),
        dates: dates.iter().map(|d| (*d).to_owned()).collect(),
        ..CalendarSpec::default()
    }
}

/// A job whose trigger excludes `calendar`.
fn job_using(name: &str, calendar: &str) -> JobSpec {
    JobSpec::from_json(&format!(
        r#"{{"name":"{name}","triggers":[{{"cron":"0 9 * * *","exclude":["{calendar}"]}}],
            "task":{{"kind":"shell","script":"true"}}}}"#
    ))
    .expect("valid job")
}

async fn put(
    store: &Arc<dyn Store>,
    spec: CalendarSpec,
    expected_version: Option<i64>,
    replans: Vec<JobReplan>,
) -> StoreResult<StoredCalendar> {
    store
        .calendar_put(CalendarPutParams {
            spec,
            expected_version,
            replans,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await
}

async fn create_job(
    store: &Arc<dyn Store>,
    spec: JobSpec,
    next: Option<Timestamp>,
    calendars: Vec<CalendarVersion>,
) -> StoreResult<Job> {
    store
        .job_create(JobCreateParams {
            spec,
            next_fire_at: next,
            calendars,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await
}

fn get(name: &str) -> CalendarGetParams {
    CalendarGetParams {
        namespace: "default".into(),
        name: name.into(),
    }
}

async fn delete(store: &Arc<dyn Store>, name: &str, expected: Option<i64>) -> StoreResult<()> {
    store
        .calendar_delete(CalendarDeleteParams {
            namespace: "default".into(),
            name: name.into(),
            expected_version: expected,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await
}

fn v(name: &str, version: i64) -> CalendarVersion {
    CalendarVersion {
        name: name.into(),
        version,
    }
}

pub async fn calendar_put_get_list_delete(store: Arc<dyn Store>) {
    let created = put(&store, calendar("h", &["2026-12-25"]), None, vec![])
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.spec.dates, ["2026-12-25"]);
    let again = put(&store, calendar("h", &[]), None, vec![]).await;
    assert!(
        matches!(again, Err(StoreError::CalendarExists { .. })),
        "{again:?}"
    );
    let stale = put(&store, calendar("h", &[]), Some(7), vec![]).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::CalendarVersionConflict {
                expected: 7,
                actual: 1,
                ..
            })
        ),
        "{stale:?}"
    );
    let missing = put(&store, calendar("nope", &[]), Some(1), vec![]).await;
    assert!(
        matches!(missing, Err(StoreError::CalendarNotFound { .. })),
        "{missing:?}"
    );
    let changed = put(&store, calendar("h", &["2026-12-26"]), Some(1), vec![])
        .await
        .unwrap();
    assert_eq!(changed.version, 2);
    assert_eq!(changed.created_at, created.created_at);
    let got = store.calendar_get(get("h")).await.unwrap().unwrap();
    assert_eq!(got, changed);

    let other = CalendarSpec {
        namespace: "other".into(),
        ..calendar("a", &[])
    };
    put(&store, other, None, vec![]).await.unwrap();
    put(&store, calendar("b", &[]), None, vec![]).await.unwrap();
    let names = |cs: Vec<StoredCalendar>| -> Vec<String> {
        cs.into_iter()
            .map(|c| format!("{}/{}", c.spec.namespace, c.spec.name))
            .collect()
    };
    let all = store
        .calendar_list(CalendarListParams::default())
        .await
        .unwrap();
    assert_eq!(names(all), ["default/b", "default/h", "other/a"]);
    let scoped = store
        .calendar_list(CalendarListParams {
            namespaces: Some(vec!["default".into()]),
            names: Some(vec!["h".into(), "a".into()]),
        })
        .await
        .unwrap();
    assert_eq!(names(scoped), ["default/h"]);

    let stale = delete(&store, "h", Some(1)).await;
    assert!(
        matches!(stale, Err(StoreError::CalendarVersionConflict { .. })),
        "{stale:?}"
    );
    delete(&store, "h", Some(2)).await.unwrap();
    assert!(store.calendar_get(get("h")).await.unwrap().is_none());
    let gone = delete(&store, "h", None).await;
    assert!(
        matches!(gone, Err(StoreError::CalendarNotFound { .. })),
        "{gone:?}"
    );

    let audit = store
        .audit_list(AuditListParams {
            namespaces: Some(vec!["default".into()]),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let seen: Vec<(AuditAction, Option<i64>, Option<i64>)> = audit
        .iter()
        .rev()
        .map(|e| (e.action, e.version_before, e.version_after))
        .collect();
    assert_eq!(
        seen,
        [
            (AuditAction::CalendarCreate, None, Some(1)),
            (AuditAction::CalendarUpdate, Some(1), Some(2)),
            (AuditAction::CalendarCreate, None, Some(1)),
            (AuditAction::CalendarDelete, Some(2), None),
        ]
    );
}

pub async fn calendar_job_writes_are_fenced_and_indexed(store: Arc<dyn Store>) {
    // A job naming a calendar that does not exist is not written.
    let missing = create_job(&store, job_using("j", "h"), None, vec![]).await;
    assert!(
        matches!(missing, Err(StoreError::CalendarChanged { .. })),
        "{missing:?}"
    );
    let listed = store.job_list(JobListParams::default()).await.unwrap();
    assert!(listed.is_empty());

    put(&store, calendar("h", &[]), None, vec![]).await.unwrap();
    // Planned with a version the calendar no longer has: not written.
    let stale = create_job(&store, job_using("j", "h"), None, vec![v("h", 2)]).await;
    assert!(
        matches!(stale, Err(StoreError::CalendarChanged { .. })),
        "{stale:?}"
    );
    let job = create_job(&store, job_using("j", "h"), None, vec![v("h", 1)])
        .await
        .unwrap();
    let users = store.calendar_jobs(get("h")).await.unwrap();
    assert_eq!(users.iter().map(|j| j.id).collect::<Vec<_>>(), [job.id]);

    let in_use = delete(&store, "h", None).await;
    match in_use {
        Err(StoreError::CalendarInUse { jobs, .. }) => assert_eq!(jobs, ["j"]),
        other => panic!("expected CalendarInUse, got {other:?}"),
    }
    // An update planned with a stale calendar is refused too; one without it drops the index.
    let update = |spec: JobSpec, version: i64, calendars: Vec<CalendarVersion>| {
        let store = store.clone();
        async move {
            store
                .job_update(JobUpdateParams {
                    namespace: "default".into(),
                    name: "j".into(),
                    expected_version: version,
                    spec,
                    next_fire_at: NextFire::Keep,
                    calendars,
                    actor: "test".into(),
                    now: Some(t(T0)),
                })
                .await
        }
    };
    let stale = update(job_using("j", "h"), 1, vec![v("h", 5)]).await;
    assert!(
        matches!(stale, Err(StoreError::CalendarChanged { .. })),
        "{stale:?}"
    );
    let plain = super::spec("j");
    update(plain, 1, vec![]).await.unwrap();
    assert!(store.calendar_jobs(get("h")).await.unwrap().is_empty());
    delete(&store, "h", None).await.unwrap();
    // A deleted job leaves no trace in the index either.
    put(&store, calendar("h", &[]), None, vec![]).await.unwrap();
    update(job_using("j", "h"), 2, vec![v("h", 1)])
        .await
        .unwrap();
    store
        .job_delete(JobDeleteParams {
            namespace: "default".into(),
            name: "j".into(),
            expected_version: None,
            force: false,
            actor: "test".into(),
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    delete(&store, "h", None).await.unwrap();
}

pub async fn calendar_put_replans_its_jobs_in_one_transaction(store: Arc<dyn Store>) {
    put(&store, calendar("h", &[]), None, vec![]).await.unwrap();
    let due = t("2026-03-02T09:00:00Z");
    let job = create_job(&store, job_using("j", "h"), Some(due), vec![v("h", 1)])
        .await
        .unwrap();
    let bystander = super::create(&store, "other", Some(due)).await;
    // Fired ahead of its due time (look-ahead): a run created before `due`.
    let early = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_version: Some(job.version),
            expected_next_fire_at: due,
            runs: vec![insert(due)],
            cancel_active: false,
            max_active: None,
            next_fire_at: Some(t("2026-03-03T09:00:00Z")),
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    assert!(early.applied);
    let replan = |version: i64, next: Timestamp| JobReplan {
        job_id: job.id,
        expected_version: version,
        next_fire_at: NextFire::Set(Some(next)),
        after: t(T0),
    };
    let holiday = calendar("h", &["2026-03-02"]);
    // Not the jobs that use it (one missing, one too many), or a stale job version: refused,
    // nothing written.
    for replans in [
        vec![],
        vec![
            replan(1, t("2026-03-03T09:00:00Z")),
            JobReplan {
                job_id: bystander.id,
                ..replan(1, due)
            },
        ],
        vec![replan(7, t("2026-03-03T09:00:00Z"))],
    ] {
        let refused = put(&store, holiday.clone(), Some(1), replans).await;
        assert!(
            matches!(refused, Err(StoreError::CalendarChanged { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(
        store.calendar_get(get("h")).await.unwrap().unwrap().version,
        1
    );
    let unchanged = store
        .job_get_by_id(JobGetByIdParams { id: job.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unchanged.version, 1);

    let next = t("2026-03-03T09:00:00Z");
    // An hour after the job was written: a re-plan must not look like an edit of it.
    let changed = store
        .calendar_put(CalendarPutParams {
            spec: holiday,
            expected_version: Some(1),
            replans: vec![replan(1, next)],
            actor: "test".into(),
            now: Some(t(T0) + jiff::SignedDuration::from_hours(1)),
        })
        .await
        .unwrap();
    assert_eq!(changed.version, 2);
    let replanned = store
        .job_get_by_id(JobGetByIdParams { id: job.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replanned.version, 2);
    assert_eq!(replanned.next_fire_at, Some(next));
    assert_eq!(
        replanned.updated_at, unchanged.updated_at,
        "a re-plan is not a change of the job's document"
    );
    // The run created ahead for the day that is now a holiday is withdrawn.
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(runs.is_empty(), "{runs:?}");
    let untouched = store
        .job_get_by_id(JobGetByIdParams { id: bystander.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched.version, bystander.version);
    let audit = store
        .audit_list(AuditListParams {
            namespaces: Some(vec!["default".into()]),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit[0].action, AuditAction::CalendarUpdate);
    assert_eq!(audit[1].action, AuditAction::JobReplan);
    assert_eq!(audit[1].job.as_deref(), Some("j"));

    // Only the due times after the plan's `after` are decided again: an early run at or
    // before it stays.
    let later = t("2026-03-04T09:00:00Z");
    let early = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_version: Some(2),
            expected_next_fire_at: next,
            runs: vec![insert(next)],
            cancel_active: false,
            max_active: None,
            next_fire_at: Some(later),
            now: Some(t(T0)),
        })
        .await
        .unwrap();
    assert!(early.applied);
    let kept = JobReplan {
        expected_version: 2,
        after: next,
        ..replan(2, later)
    };
    put(
        &store,
        calendar("h", &["2026-03-02", "2026-03-05"]),
        Some(2),
        vec![kept],
    )
    .await
    .unwrap();
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].scheduled_for, next);
}

pub async fn calendar_fire_and_resume_are_fenced_by_the_planned_version(store: Arc<dyn Store>) {
    let due = t("2026-03-02T09:00:00Z");
    let job = super::create(&store, "j", Some(due)).await;
    // A round planned with another version (a calendar changed since) does not apply.
    let stale = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_version: Some(job.version + 1),
            expected_next_fire_at: due,
            runs: vec![insert(due)],
            cancel_active: false,
            max_active: None,
            next_fire_at: Some(due + SignedDuration::from_hours(24)),
            now: Some(due),
        })
        .await
        .unwrap();
    assert!(!stale.applied);
    assert!(
        fire(
            &store,
            &job,
            due,
            Some(due + SignedDuration::from_hours(24))
        )
        .await
        .applied
    );
    let paused = super::set_paused(&store, "j", true, None, due).await;
    let resume = |version: i64| {
        let store = store.clone();
        async move {
            store
                .job_set_paused(JobSetPausedParams {
                    namespace: "default".into(),
                    name: "j".into(),
                    paused: false,
                    expected_version: Some(version),
                    next_fire_at: Some(due + SignedDuration::from_hours(48)),
                    actor: "test".into(),
                    now: Some(due),
                })
                .await
        }
    };
    let stale = resume(paused.version - 1).await;
    assert!(
        matches!(stale, Err(StoreError::VersionConflict { .. })),
        "{stale:?}"
    );
    let resumed = resume(paused.version).await.unwrap();
    assert!(!resumed.spec.paused);
}

/// A calendar change planned with the jobs that used it, racing a job write that starts to use
/// it planned with the calendar's old version: whichever commits first, the other's fence
/// fails, so no job is ever left planned with a calendar version it did not see. (On
/// PostgreSQL the job write share-locks the calendar; the change's update waits for it, then
/// finds the new user.)
pub async fn calendar_concurrent_change_and_job_write_never_both_apply(store: Arc<dyn Store>) {
    for round in 0..20 {
        let cal = format!("c{round}");
        put(&store, calendar(&cal, &[]), None, vec![])
            .await
            .unwrap();
        let change = {
            let store = store.clone();
            let cal = cal.clone();
            tokio::spawn(async move {
                put(&store, calendar(&cal, &["2026-12-25"]), Some(1), vec![]).await
            })
        };
        let write = {
            let store = store.clone();
            let cal = cal.clone();
            tokio::spawn(async move {
                create_job(
                    &store,
                    job_using(&format!("j{round}"), &cal),
                    None,
                    vec![v(&cal, 1)],
                )
                .await
            })
        };
        let (change, write) = (change.await.unwrap(), write.await.unwrap());
        match (&change, &write) {
            (Ok(c), Err(StoreError::CalendarChanged { .. })) => assert_eq!(c.version, 2),
            (Err(StoreError::CalendarChanged { .. }), Ok(_)) => {
                let c = store.calendar_get(get(&cal)).await.unwrap().unwrap();
                assert_eq!(c.version, 1, "round {round}");
            }
            other => panic!("round {round}: exactly one applies, got {other:?}"),
        }
    }
}
