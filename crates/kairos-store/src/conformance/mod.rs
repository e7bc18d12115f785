//! Behaviour every store backend must have.
//!
//! A backend's test file only calls [`conformance_tests!`](crate::conformance_tests) with a
//! factory that returns a fresh, empty store. Every case uses explicit instants (`now: Some`),
//! never the wall clock (except [`the_store_clock_rules_without_now`], which is about it).
//!
//! Cases are grouped by area, one module each: [`jobs`] (definitions, version fence, pause,
//! withdrawal of early runs), [`fire`] (scheduling rounds, the `next_fire_at` fence), [`claim`],
//! [`lease`] (heartbeat and finish, fenced by the lease token), [`rescue`] (expired leases),
//! [`runs`] (trigger-now, bulk insert, cancel, lists), [`backfill`] (held runs and their
//! release), [`workflow`] (step runs and how their ends move a workflow run on), [`event`] (the
//! topics index, an event's runs and their key), [`dependency`] (runs created as other jobs'
//! runs end; the checks on job writes), [`calendar`] (calendars, the jobs they re-plan, the
//! fences of job writes planned with them), [`auth`] (tokens, audit log), [`alert`] (alert
//! deliveries and the alert evaluator's position) and [`cluster`] (leadership, node registry,
//! the store's clock). This module holds the macro and the helpers the cases share; every case
//! is re-exported here, so that the macro names it as `$crate::conformance::<case>`.
//!
//! Every case runs on a multi-thread runtime (two workers). The concurrent ones race calls in
//! `tokio::spawn`ed tasks, which on PostgreSQL hold separate pooled connections, and repeat each
//! race for many rounds so that different interleavings are likely; each asserts what must hold
//! *whatever* the interleaving, and which interleavings are possible is stated with the case.

#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a failed step panics with its location"
)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{AttemptOutcome, AttemptStatus, RunOrigin};
use kairos_core::spec::{ExecutionMode, JobSpec};

use crate::*;

pub mod activity;
pub mod alert;
pub mod auth;
pub mod backfill;
pub mod calendar;
pub mod claim;
pub mod cluster;
pub mod dependency;
pub mod event;
pub mod fire;
pub mod jobs;
pub mod lease;
mod notify;
pub mod report;
pub mod rescue;
pub mod runs;
pub mod workflow;

pub use activity::*;
pub use alert::*;
pub use auth::*;
pub use backfill::*;
pub use calendar::*;
pub use claim::*;
pub use cluster::*;
pub use dependency::*;
pub use event::*;
pub use fire::*;
pub use jobs::*;
pub use lease::*;
pub use notify::*;
pub use report::*;
pub use rescue::*;
pub use runs::*;
pub use workflow::*;

/// Generates one `#[tokio::test]` per conformance case. `$make` is an expression evaluating to
/// an async closure (or fn) returning `Arc<dyn Store>`.
///
/// `conformance_tests!(optional $make)` is for a backend that needs a service which may be
/// absent: `$make` returns `Option<G>`, where `G` is the store (`Arc<dyn Store>`) or a guard
/// that lends it (`G: Borrow<Arc<dyn Store>>`) and is dropped when the case ends. `None` skips
/// the case (the factory says why).
#[macro_export]
macro_rules! conformance_tests {
    (@cases $($mode:ident)?; $make:expr) => {
        $crate::__conformance_cases!($($mode)? $make;
            // jobs
            job_create_get_list, job_update_is_fenced_by_version,
            job_update_concurrent_one_wins, job_delete_removes_runs, job_pause_resume,
            job_due_reads_next_fire_at, ids_are_never_reused,
            early_runs_are_withdrawn_by_pause_and_reschedule,
            // fire
            job_fire_is_exactly_once, job_fire_concurrent_applies_once,
            job_fire_replace_cancels_active, job_fire_many_and_active_counts, job_fire_vs_update,
            job_fire_overlap_fence_counts_runs_added_meanwhile,
            // claim
            run_exclusive_runs_one_at_a_time, run_exclusive_queue_drains_in_due_time_order,
            run_claim_concurrent_never_doubles,
            run_claim_concurrent_exclusive, run_claim_never_skips_runs_behind_the_last_batch,
            run_claim_fills_a_short_walk_from_behind_the_last_batch,
            run_claim_takes_an_exclusive_run_queued_after_claims_without_one,
            run_import_settles_runs_that_were_running,
            // lease
            run_claim_lease_and_finish, run_retry_waits_for_run_at, run_release_keeps_attempt, run_release_after_a_cancel_request_ends_cancelled, run_finish_stores_any_output,
            run_finish_many_fences_each_lease,
            run_finish_many_takes_each_run_once, run_finish_many_fences_each_token_of_a_run,
            run_heartbeat_never_shortens_a_lease,
            // report
            run_reports_are_fenced_and_kept_for_later_attempts,
            // rescue
            run_rescue_expired_leases, run_rescue_puts_back_at_most_once_runs_that_never_began,
            run_rescue_gives_up_on_runs_that_keep_losing_their_lease,
            run_rescue_vs_heartbeat,
            // runs
            run_cancel_states, run_list_filters_and_counts, run_recent_lists_each_jobs_last_ended_runs,
            run_active_brief_lists_a_jobs_unended_runs_earliest_due_first, run_insert_is_idempotent,
            run_insert_for_a_deleted_job_is_job_gone, run_insert_many_skips_existing_due_times,
            run_insert_is_fenced_by_the_jobs_version,
            // backfill
            run_backfill_holds_runs_for_due_times_without_one,
            run_release_is_fenced_by_the_active_count,
            run_release_concurrent_never_exceeds_the_decision,
            // auth
            token_create_authenticate_revoke, audit_records_every_change_with_its_change, sessions_live_only_while_their_token_works,
            // cluster
            leader_terms_are_fenced, leader_concurrent_candidates_agree_on_one_per_term,
            nodes_join_refresh_leave_and_expire, the_store_clock_rules_without_now,
            // workflow
            workflow_start_creates_steps_and_queues_the_roots,
            workflow_step_ends_move_the_run_on,
            workflow_run_succeeds_when_every_step_succeeds_or_is_skipped,
            workflow_max_concurrent_steps_holds_ready_steps_back,
            workflow_concurrent_step_ends_queue_the_join_once,
            workflow_cancel_stops_its_steps_and_ends_with_the_last,
            workflow_rescued_step_moves_the_run_on,
            workflow_cancelled_before_its_start_leaves_no_step_waiting,
            workflow_step_retry_after_a_cancel_request_ends_it,
            workflow_rerun_failed_completes_the_run,
            workflow_skip_and_mark_succeeded_decide_steps_by_hand,
            workflow_rerun_a_step_runs_it_and_its_downstream_again,
            workflow_params_reach_every_step_and_results_are_kept,
            // event
            event_targets_follow_each_jobs_triggers, event_runs_are_keyed_by_event_id,
            event_fire_is_fenced_by_version_pause_and_count,
            event_fire_concurrent_posts_create_one_run, event_reaches_the_steps_of_a_workflow,
            // dependency
            dependency_runs_follow_each_matching_end, dependency_runs_are_once_per_upstream_run,
            dependency_checks_refuse_unknown_jobs_cycles_and_deletes,
            dependency_concurrent_writes_never_close_a_cycle,
            // calendar
            calendar_put_get_list_delete, calendar_job_writes_are_fenced_and_indexed,
            calendar_put_replans_its_jobs_in_one_transaction,
            calendar_fire_and_resume_are_fenced_by_the_planned_version,
            calendar_concurrent_change_and_job_write_never_both_apply,
            // activity
            activity_is_read_in_order_after_a_position,
            activity_concurrent_appends_are_each_read_once,
            // alert
            alert_enqueue_is_once_per_key,
            alert_claim_takes_due_deliveries_oldest_first_under_a_lease,
            alert_finish_is_fenced_by_the_lease_token, alert_retry_waits_and_failed_ends_it,
            alert_list_filters_and_pages, alert_prune_deletes_deliveries_that_ended_before,
            alert_cursor_is_compare_and_set, alert_enqueue_concurrent_queues_each_key_once,
            alert_claim_concurrent_never_doubles,
            alert_cursor_concurrent_one_wins,
            // notify
            changes_are_announced_on_the_feed,
        );
    };
    (optional $make:expr) => {
        $crate::conformance_tests!(@cases optional; $make);
    };
    ($make:expr) => {
        $crate::conformance_tests!(@cases; $make);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (optional $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(made) = ($make)().await else {
                    return;
                };
                let store: ::std::sync::Arc<dyn $crate::Store> = ::std::sync::Arc::clone(
                    ::std::borrow::Borrow::<::std::sync::Arc<dyn $crate::Store>>::borrow(&made),
                );
                $crate::conformance::$name(store).await;
                drop(made);
            }
        )*
    };
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::Store> = ($make)().await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

fn t(s: &str) -> Timestamp {
    s.parse().expect("test instant")
}

const T0: &str = "2026-03-01T00:00:00Z";

/// A minimal valid job spec.
pub fn spec(name: &str) -> JobSpec {
    JobSpec::from_json(&format!(
        r#"{{"name":"{name}","triggers":[{{"interval":"1m"}}],"task":{{"kind":"shell","script":"true"}}}}"#
    ))
    .expect("valid spec")
}

async fn create(store: &Arc<dyn Store>, name: &str, next: Option<Timestamp>) -> Job {
    store
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec: spec(name),
            next_fire_at: next,
            now: Some(t(T0)),
            calendars: vec![],
        })
        .await
        .expect("create job")
}

fn insert(at: Timestamp) -> RunInsert {
    RunInsert {
        scheduled_for: at,
        run_at: at,
        origin: RunOrigin::Schedule,
        skip: None,
        exclusive: false,
        max_attempts: 3,
        execution: ExecutionMode::AtLeastOnce,
        event: None,
    }
}

/// Queues `run` for job `job_id` (a manual insert) at `now`.
async fn queue(
    store: &Arc<dyn Store>,
    job_id: kairos_core::run::JobId,
    run: RunInsert,
    now: Timestamp,
) -> Run {
    store
        .run_insert(RunInsertParams {
            expected_version: None,
            job_id,
            run,
            params: None,
            actor: "test".into(),
            now: Some(now),
        })
        .await
        .expect("run insert")
}

async fn fire(
    store: &Arc<dyn Store>,
    job: &Job,
    at: Timestamp,
    next: Option<Timestamp>,
) -> JobFireResult {
    store
        .job_fire(JobFireParams {
            job_id: job.id,
            expected_next_fire_at: at,
            runs: vec![insert(at)],
            cancel_active: false,
            max_active: None,
            next_fire_at: next,
            now: Some(at),
            expected_version: None,
        })
        .await
        .expect("fire")
}

async fn claim(store: &Arc<dyn Store>, node: &str, limit: u32, now: Timestamp) -> Vec<ClaimedRun> {
    store
        .run_claim(RunClaimParams {
            node: node.into(),
            limit,
            lease: SignedDuration::from_secs(30),
            ahead: SignedDuration::ZERO,
            now: Some(now),
        })
        .await
        .expect("claim")
}

/// Renews the lease of `c` for `lease` at `now`.
async fn heartbeat(
    store: &Arc<dyn Store>,
    c: &ClaimedRun,
    lease: SignedDuration,
    now: Timestamp,
) -> HeartbeatResult {
    store
        .run_heartbeat(RunHeartbeatParams {
            leases: vec![(c.run.id, c.lease_token.clone())],
            lease,
            now: Some(now),
        })
        .await
        .expect("heartbeat")
        .remove(0)
}

/// Pauses or resumes job `name` of the default namespace (`next_fire_at` on resume).
async fn set_paused(
    store: &Arc<dyn Store>,
    name: &str,
    paused: bool,
    next_fire_at: Option<Timestamp>,
    now: Timestamp,
) -> Job {
    store
        .job_set_paused(JobSetPausedParams {
            actor: "test".into(),
            namespace: "default".into(),
            name: name.into(),
            paused,
            next_fire_at,
            now: Some(now),
            expected_version: None,
        })
        .await
        .expect("pause or resume")
}

/// Records that `c`'s attempt begins, as a worker does before an `at_most_once` task starts.
async fn begin(store: &Arc<dyn Store>, c: &ClaimedRun) -> bool {
    store
        .run_begin(RunBeginParams {
            run_id: c.run.id,
            lease_token: c.lease_token.clone(),
        })
        .await
        .expect("begin")
}

async fn finish(store: &Arc<dyn Store>, c: &ClaimedRun, next: RunNext, now: Timestamp) -> bool {
    store
        .run_finish(RunFinishParams {
            run_id: c.run.id,
            parent_id: None,
            lease_token: c.lease_token.clone(),
            attempt: c.run.attempt,
            node: "n1".into(),
            started_at: now,
            outcome: AttemptOutcome::from_status(AttemptStatus::Succeeded),
            next,
            now: Some(now),
        })
        .await
        .expect("finish")
}
