//! Firing: one scheduling round creates its runs and advances `next_fire_at` in one
//! transaction, fenced by the expected `next_fire_at`; a due time never gets a second run.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::auth::AuditAction;
use kairos_core::run::{RunState, SkipReason};
use kairos_core::spec::JobSpec;

use super::{T0, claim, create, fire, insert, spec, t};
use crate::*;

pub async fn job_fire_is_exactly_once(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let next = t("2026-03-01T00:02:00Z");
    let job = create(&store, "j", Some(at)).await;
    let first = fire(&store, &job, at, Some(next)).await;
    assert!(first.applied);
    assert_eq!(first.inserted.len(), 1);
    let after = store
        .job_get_by_id(JobGetByIdParams { id: job.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.next_fire_at,
        Some(next),
        "next_fire_at advances in the same transaction"
    );
    assert_eq!(after.version, 1, "firing is not a definition change");

    // A second scheduler with the old view: the fence holds, nothing is written.
    let second = fire(&store, &job, at, Some(next)).await;
    assert_eq!(
        second,
        JobFireResult {
            applied: false,
            inserted: vec![]
        }
    );

    // Even with a matching fence, an existing due time is never inserted twice.
    let dup = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: next,
            runs: vec![insert(at), insert(next)],
            cancel_active: false,
            max_active: None,
            next_fire_at: None,
            now: Some(next),
            expected_version: None,
        })
        .await
        .unwrap();
    assert!(dup.applied);
    assert_eq!(dup.inserted.len(), 1, "the run for {at} exists already");
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].scheduled_for, next, "newest first");
    assert_eq!(runs[1].scheduled_for, at);
    assert!(
        runs.iter()
            .all(|r| r.state == RunState::Queued && r.attempt == 0)
    );
    assert_eq!(runs[0].job_name, "j");

    // Skipped runs carry their reason and are finished at once.
    let job2 = create(&store, "k", Some(at)).await;
    let mut skipped = insert(at);
    skipped.skip = Some(SkipReason::Overlap);
    store
        .job_fire(JobFireParams {
            job_id: job2.id,
            expected_next_fire_at: at,
            runs: vec![skipped],
            cancel_active: false,
            max_active: None,
            next_fire_at: Some(next),
            now: Some(at),
            expected_version: None,
        })
        .await
        .unwrap();
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job2.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs[0].state, RunState::Skipped);
    assert_eq!(runs[0].reason.as_deref(), Some("overlap"));
    assert_eq!(runs[0].finished_at, Some(at));
    assert!(
        claim(&store, "n1", 10, next)
            .await
            .iter()
            .all(|c| c.run.job_id != job2.id)
    );
}

pub async fn job_fire_concurrent_applies_once(store: Arc<dyn Store>) {
    let at = t("2026-03-01T00:01:00Z");
    let job = create(&store, "j", Some(at)).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            fire(&store, &job, at, Some(t("2026-03-01T00:02:00Z"))).await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        if task.await.unwrap().applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
}

pub async fn job_fire_replace_cancels_active(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let b = t("2026-03-01T00:02:00Z");
    let c = t("2026-03-01T00:03:00Z");
    let job = create(&store, "j", Some(a)).await;
    fire(&store, &job, a, Some(b)).await;
    let running = claim(&store, "n1", 1, a).await;
    assert_eq!(running.len(), 1);
    fire(&store, &job, b, Some(c)).await; // queued behind
    let replaced = store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: c,
            runs: vec![insert(c)],
            cancel_active: true,
            max_active: None,
            next_fire_at: None,
            now: Some(c),
            expected_version: None,
        })
        .await
        .unwrap();
    assert!(replaced.applied);
    let runs = store
        .run_list(RunListParams {
            job_id: Some(job.id),
            ..Default::default()
        })
        .await
        .unwrap();
    let by_time = |ts| runs.iter().find(|r| r.scheduled_for == ts).unwrap();
    assert_eq!(by_time(c).state, RunState::Queued);
    assert_eq!(by_time(b).state, RunState::Cancelled);
    assert_eq!(by_time(b).reason.as_deref(), Some("replaced"));
    assert_eq!(by_time(a).state, RunState::Running);
    assert!(
        by_time(a).cancel_requested,
        "the running one is asked to stop"
    );
}

pub async fn job_fire_many_and_active_counts(store: Arc<dyn Store>) {
    let a = t("2026-03-01T00:01:00Z");
    let b = t("2026-03-01T00:02:00Z");
    let one = create(&store, "one", Some(a)).await;
    let two = create(&store, "two", Some(a)).await;
    let three = create(&store, "three", Some(b)).await;
    let next_at = |after: Timestamp| {
        let store = store.clone();
        async move { store.run_next_at(RunNextAtParams { after }).await.unwrap() }
    };
    assert_eq!(next_at(a).await, NextQueued::default());
    let fire = |job: &Job, expected: Timestamp| JobFireParams {
        job_id: job.id,
        expected_next_fire_at: expected,
        runs: vec![insert(a)],
        cancel_active: false,
        max_active: None,
        next_fire_at: Some(b),
        now: Some(a),
        expected_version: None,
    };
    // `three` is fenced out: its next_fire_at is not `a`.
    let results = store
        .job_fire_many(&[fire(&one, a), fire(&two, a), fire(&three, a)])
        .await
        .unwrap();
    assert_eq!(
        results.iter().map(|r| r.applied).collect::<Vec<_>>(),
        vec![true, true, false]
    );
    assert_eq!(results[0].inserted.len(), 1);
    assert!(results[2].inserted.is_empty());
    assert_eq!(
        store
            .job_get_by_id(JobGetByIdParams { id: one.id })
            .await
            .unwrap()
            .unwrap()
            .next_fire_at,
        Some(b)
    );
    assert_eq!(
        store
            .job_get_by_id(JobGetByIdParams { id: three.id })
            .await
            .unwrap()
            .unwrap()
            .next_fire_at,
        Some(b)
    );
    let mut counts = store
        .run_active_counts(RunActiveCountsParams {
            job_ids: vec![one.id, two.id, three.id],
        })
        .await
        .unwrap();
    counts.sort();
    assert_eq!(counts, vec![(one.id, 1), (two.id, 1)]);
    assert!(
        store
            .run_active_counts(RunActiveCountsParams::default())
            .await
            .unwrap()
            .is_empty()
    );
    // Queued runs at `a` (two) and, for `three`, a retry-like run at `b`.
    store
        .run_insert(RunInsertParams {
            expected_version: None,
            params: None,
            actor: "test".into(),
            job_id: three.id,
            run: insert(b),
            now: Some(a),
        })
        .await
        .unwrap();
    let before_a = t("2026-03-01T00:00:59Z");
    assert_eq!(
        next_at(before_a).await,
        NextQueued {
            earliest: Some(a),
            earliest_after: Some(a)
        }
    );
    assert_eq!(
        next_at(a).await,
        NextQueued {
            earliest: Some(a),
            earliest_after: Some(b)
        },
        "`after` is exclusive"
    );
    assert_eq!(
        next_at(b).await,
        NextQueued {
            earliest: Some(a),
            earliest_after: None
        }
    );
}
/// The spec of `name` with an interval trigger of `every` (`spec` has `1m`).
fn spec_every(name: &str, every: &str) -> JobSpec {
    JobSpec::from_json(&format!(
        r#"{{"name":"{name}","triggers":[{{"interval":"{every}"}}],"task":{{"kind":"shell","script":"true"}}}}"#
    ))
    .expect("valid spec")
}

/// How a fire and an update of one job came out of a race.
struct FireVsUpdate {
    fired: JobFireResult,
    updated: StoreResult<Job>,
}

/// Races, on separate connections, the fire of due time `due` (fenced by `next_fire_at`,
/// advancing it to `due + 1m`, at `fire_now`) with an update of the same job made from the
/// view the caller read before the fire (version 1, `next_fire_at = due`) that writes `spec`
/// and `next_fire_at`, at `update_now`. `update_first` only changes which is spawned first.
async fn race_fire_and_update(
    store: &Arc<dyn Store>,
    job: &Job,
    spec: JobSpec,
    next_fire_at: NextFire,
    (due, fire_now, update_now): (Timestamp, Timestamp, Timestamp),
    update_first: bool,
) -> FireVsUpdate {
    let fire = {
        let store = store.clone();
        let p = JobFireParams {
            job_id: job.id,
            expected_next_fire_at: due,
            runs: vec![insert(due)],
            cancel_active: false,
            max_active: None,
            next_fire_at: Some(due + SignedDuration::from_mins(1)),
            now: Some(fire_now),
            expected_version: None,
        };
        async move { store.job_fire(p).await }
    };
    let update = {
        let store = store.clone();
        let p = JobUpdateParams {
            actor: "editor".into(),
            namespace: job.namespace().into(),
            name: job.name().into(),
            expected_version: job.version,
            spec,
            next_fire_at,
            now: Some(update_now),
            calendars: vec![],
        };
        async move { store.job_update(p).await }
    };
    let (fired, updated) = if update_first {
        let updated = tokio::spawn(update);
        let fired = tokio::spawn(fire);
        (fired.await.unwrap(), updated.await.unwrap())
    } else {
        let fired = tokio::spawn(fire);
        let updated = tokio::spawn(update);
        (fired.await.unwrap(), updated.await.unwrap())
    };
    FireVsUpdate {
        fired: fired.expect("a fire racing an update never fails"),
        updated,
    }
}

/// A fire racing an update of the same job, on separate connections, in three kinds: one that
/// keeps the triggers and says so (`NextFire::Keep`, as the job service does), one that keeps
/// the triggers but writes back the `next_fire_at` it read before the fire (`Set` with a stale
/// value: the update is fenced by version, and a fire does not change the version), and one
/// that changes the triggers (a new `next_fire_at`). Odd rounds fire ahead of the due time
/// (look-ahead), even rounds when it is due.
///
/// Whatever the interleaving:
/// - the update applies (nothing else changed the version): version 2, one audit entry;
/// - the fire never fails; at most one run exists for the due time (the unique key), and no
///   other run;
/// - `Keep` never rewinds: the fire applies, `next_fire_at` is the fire's, its run stays;
/// - otherwise `next_fire_at` is the value of whichever wrote last. A stale `Set` that lands
///   after the fire rewinds the advance; that is safe, not silent loss: the run the fire
///   created stays (fired when due), or is withdrawn by that same update (fired ahead: the
///   update moved `next_fire_at`), and the next fire of `due` — which the rewind makes the
///   scheduler do — is a no-op on the unique key or creates the one run again. The case
///   proves both by firing `due` again after a rewind, in some rounds with `cancel_active` (as
///   for `overlap: replace`, which sees the due time's own run active): that run must be left
///   alone, not cancelled with nothing to replace it (the due time would be lost);
/// - a fire that applied keeps its run, unless the update came after it and withdrew it as an
///   early run (fired ahead, and the update moved `next_fire_at` or changed the triggers); a
///   fire fenced out (the update changed `next_fire_at` first) wrote nothing.
pub async fn job_fire_vs_update(store: Arc<dyn Store>) {
    const ROUNDS: u32 = 30;
    let due = t("2026-03-01T01:00:00Z");
    let advanced = due + SignedDuration::from_mins(1);
    let rescheduled = due + SignedDuration::from_mins(2);
    // (fire first, update first) for the stale and the moving update, over the rounds.
    let mut seen = [[0u32; 2]; 2];
    for round in 0..ROUNDS {
        let early = round % 2 == 1;
        let (fire_now, update_now) = if early {
            (
                due - SignedDuration::from_millis(200),
                due - SignedDuration::from_millis(100),
            )
        } else {
            (due, due + SignedDuration::from_millis(100))
        };
        let times = (due, fire_now, update_now);
        let update_first = round % 4 >= 2;
        // As the scheduler fires a job with `overlap: replace` whose run is active.
        let replace = (round / 4) % 2 == 0;
        for kind in ["keep", "stale", "move"] {
            let name = format!("{kind}-{round}");
            let job = create(&store, &name, Some(due)).await;
            let (new_spec, new_next) = match kind {
                "keep" => (spec(&name), NextFire::Keep),
                "stale" => (spec(&name), NextFire::Set(Some(due))),
                _ => (spec_every(&name, "2m"), NextFire::Set(Some(rescheduled))),
            };
            let race =
                race_fire_and_update(&store, &job, new_spec, new_next, times, update_first).await;
            let ctx = format!("round {round} ({name}, early: {early}, replace: {replace})");
            let updated = match race.updated {
                Ok(job) => job,
                Err(e) => panic!("{ctx}: the update must apply, got {e:?}"),
            };
            assert_eq!(updated.version, 2, "{ctx}");
            let stored = store
                .job_get_by_id(JobGetByIdParams { id: job.id })
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{ctx}: the job vanished"));
            assert_eq!(
                stored.version, 2,
                "{ctx}: a fire is not a definition change"
            );
            assert_eq!(stored.spec, updated.spec, "{ctx}");
            let runs = store
                .run_list(RunListParams {
                    job_id: Some(job.id),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(runs.len() <= 1, "{ctx}: one run per due time: {runs:?}");
            assert!(
                runs.iter().all(|r| r.scheduled_for == due),
                "{ctx}: {runs:?}"
            );
            if race.fired.applied {
                let times: Vec<_> = race.fired.inserted.iter().map(|(_, at)| *at).collect();
                assert_eq!(times, [due], "{ctx}: the fire created its run");
            } else {
                assert!(
                    race.fired.inserted.is_empty(),
                    "{ctx}: fenced out, wrote nothing"
                );
            }
            // Which came first, from what each saw and left behind.
            let fire_first = match kind {
                "keep" => {
                    assert!(race.fired.applied, "{ctx}: Keep never fences out the fire");
                    assert_eq!(
                        stored.next_fire_at,
                        Some(advanced),
                        "{ctx}: Keep never rewinds the fire's advance"
                    );
                    // Either order leaves the same; nothing is withdrawn.
                    false
                }
                "stale" => {
                    assert!(
                        race.fired.applied,
                        "{ctx}: an update that keeps next_fire_at never fences out the fire"
                    );
                    assert!(
                        stored.next_fire_at == Some(advanced) || stored.next_fire_at == Some(due),
                        "{ctx}: next_fire_at is the fire's or the update's: {:?}",
                        stored.next_fire_at
                    );
                    let first = stored.next_fire_at == Some(due);
                    seen[0][usize::from(!first)] += 1;
                    first
                }
                _ => {
                    assert_eq!(
                        stored.next_fire_at,
                        Some(rescheduled),
                        "{ctx}: the new schedule's next_fire_at, whichever came first"
                    );
                    let first = race.fired.applied;
                    seen[1][usize::from(!first)] += 1;
                    first
                }
            };
            let withdrawn = fire_first && early;
            let expect_run = race.fired.applied && !withdrawn;
            assert_eq!(
                runs.len(),
                usize::from(expect_run),
                "{ctx}: fire first: {fire_first}, fire applied: {}; runs: {runs:?}",
                race.fired.applied
            );
            if let Some(run) = runs.first() {
                assert_eq!(run.id, race.fired.inserted[0].0, "{ctx}");
                assert_eq!(run.state, RunState::Queued, "{ctx}");
            }
            // A rewound next_fire_at makes the scheduler fire `due` again: the run for it, if
            // still there, is left alone, and none is added beside it. With `overlap: replace`
            // the scheduler sees that run active and asks to cancel active runs: it must not
            // cancel the due time's own run, which nothing would replace (the unique key keeps
            // the round's run out).
            if stored.next_fire_at == Some(due) {
                let again = store
                    .job_fire(JobFireParams {
                        job_id: job.id,
                        expected_next_fire_at: due,
                        runs: vec![insert(due)],
                        cancel_active: replace && !withdrawn,
                        max_active: None,
                        next_fire_at: Some(advanced),
                        now: Some(update_now),
                        expected_version: None,
                    })
                    .await
                    .unwrap();
                assert!(again.applied, "{ctx}");
                assert_eq!(
                    again.inserted.len(),
                    usize::from(withdrawn),
                    "{ctx}: the due time gets its run back only if it was withdrawn"
                );
                let runs = store
                    .run_list(RunListParams {
                        job_id: Some(job.id),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(runs.len(), 1, "{ctx}: one run for the due time: {runs:?}");
                assert_eq!(
                    (runs[0].state, runs[0].reason.as_deref()),
                    (RunState::Queued, None),
                    "{ctx}: fired again, the due time keeps its run"
                );
            }
            let audit = store
                .audit_list(AuditListParams {
                    namespaces: Some(vec!["default".into()]),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap();
            let updates: Vec<_> = audit
                .iter()
                .filter(|e| {
                    e.action == AuditAction::JobUpdate && e.job.as_deref() == Some(name.as_str())
                })
                .map(|e| (e.version_before, e.version_after))
                .collect();
            assert_eq!(updates, [(Some(1), Some(2))], "{ctx}: one update entry");
        }
    }
    // Not asserted (scheduling decides), but a run that never saw both orders proved less.
    eprintln!("job_fire_vs_update: [stale, move] x [fire first, update first] = {seen:?}");
}

fn manual(at: Timestamp) -> RunInsert {
    RunInsert {
        origin: kairos_core::run::RunOrigin::Manual,
        ..insert(at)
    }
}

fn fenced_fire(job: &Job, due: Timestamp, max_active: u64) -> JobFireParams {
    JobFireParams {
        job_id: job.id,
        expected_next_fire_at: due,
        runs: vec![insert(due)],
        cancel_active: false,
        max_active: Some(max_active),
        next_fire_at: Some(due + SignedDuration::from_mins(1)),
        now: Some(due),
        expected_version: None,
    }
}

/// The overlap fence: a fire decided on a count of active runs applies only if the count has
/// not grown once the fire holds the job; otherwise nothing is written and `next_fire_at`
/// stays. Raced against trigger-now on separate connections, a manual run is either counted
/// by the fire (which then does not apply) or created after it (a larger id).
pub async fn job_fire_overlap_fence_counts_runs_added_meanwhile(store: Arc<dyn Store>) {
    let due = t("2026-03-01T00:01:00Z");
    let job = create(&store, "fenced", Some(due)).await;
    let trigger = |at: Timestamp| RunInsertParams {
        expected_version: None,
        job_id: job.id,
        run: manual(at),
        params: None,
        actor: "test".into(),
        now: Some(at),
    };
    store.run_insert(trigger(t(T0))).await.unwrap();
    let refused = store.job_fire(fenced_fire(&job, due, 0)).await.unwrap();
    assert_eq!(
        refused,
        JobFireResult::default(),
        "one active run, not zero"
    );
    let stored = store
        .job_get_by_id(JobGetByIdParams { id: job.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.next_fire_at,
        Some(due),
        "a refused fire moves nothing"
    );
    let fired = store.job_fire(fenced_fire(&job, due, 1)).await.unwrap();
    assert!(fired.applied);
    assert_eq!(fired.inserted.len(), 1);

    for round in 0..30u32 {
        let name = format!("race-{round}");
        let job = create(&store, &name, Some(due)).await;
        let fire = {
            let (store, p) = (store.clone(), fenced_fire(&job, due, 0));
            tokio::spawn(async move { store.job_fire(p).await.unwrap() })
        };
        let manual_run = {
            let store = store.clone();
            let p = RunInsertParams {
                expected_version: None,
                job_id: job.id,
                run: manual(due - SignedDuration::from_secs(1)),
                params: None,
                actor: "test".into(),
                now: Some(due),
            };
            tokio::spawn(async move { store.run_insert(p).await.unwrap() })
        };
        let (fired, manual_run) = (fire.await.unwrap(), manual_run.await.unwrap());
        if let Some((run_id, _)) = fired.inserted.first() {
            assert!(
                manual_run.id > *run_id,
                "round {round}: the fire applied with a count of 0, so the manual run came after it"
            );
        } else {
            assert!(!fired.applied, "round {round}: {fired:?}");
        }
    }
}
