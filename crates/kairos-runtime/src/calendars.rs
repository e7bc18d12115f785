//! Calendars at run time. A calendar is validated before anything is written; a change
//! re-plans every job that uses it in the same transaction: the runtime plans each job's next
//! due time with the new calendar, the store applies the plans only if they are for exactly
//! the jobs that use the calendar, each still at the version planned for. A write that loses a
//! race is planned again.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kairos_core::calendar::{Calendar, CalendarSpec};
use kairos_core::trigger::Upcoming;
use kairos_store::*;

use crate::jobs::{CALENDAR_ROUNDS, JobError, JobService, contended};
use crate::telemetry::Event;

/// How a calendar write treats the calendar already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarWrite {
    /// Create it; `CalendarExists` if the name is taken.
    Create,
    /// Create it or replace it, whatever its version.
    Upsert,
    /// Replace this version of it (`CalendarVersionConflict` otherwise).
    Replace(i64),
}

/// What a calendar write did.
#[derive(Debug, Clone)]
pub struct CalendarChange {
    pub calendar: StoredCalendar,
    pub created: bool,
    /// The jobs re-planned with it, by name.
    pub replanned: Vec<String>,
}

impl JobService {
    pub async fn calendar_get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<StoredCalendar, JobError> {
        self.context()
            .store
            .calendar_get(get_params(namespace, name))
            .await?
            .ok_or_else(|| {
                StoreError::CalendarNotFound {
                    namespace: namespace.into(),
                    name: name.into(),
                }
                .into()
            })
    }

    /// Calendars of these namespaces (`None`: all), by namespace and name.
    pub async fn calendar_list(
        &self,
        namespaces: Option<Vec<String>>,
    ) -> Result<Vec<StoredCalendar>, JobError> {
        Ok(self
            .context()
            .store
            .calendar_list(CalendarListParams {
                namespaces,
                names: None,
            })
            .await?)
    }

    /// The jobs that use the calendar, by name.
    pub async fn calendar_jobs(&self, namespace: &str, name: &str) -> Result<Vec<Job>, JobError> {
        Ok(self
            .context()
            .store
            .calendar_jobs(get_params(namespace, name))
            .await?)
    }

    /// Validates and writes a calendar, re-planning every job that uses it at once (see the
    /// module). `Invalid` (nothing written) with every problem's field path.
    pub async fn calendar_put(
        &self,
        spec: CalendarSpec,
        write: CalendarWrite,
    ) -> Result<CalendarChange, JobError> {
        let calendar = Arc::new(spec.validate().map_err(JobError::Invalid)?);
        let ctx = self.context();
        let (namespace, name) = (spec.namespace.clone(), spec.name.clone());
        for _ in 0..CALENDAR_ROUNDS {
            let current = ctx
                .store
                .calendar_get(get_params(&namespace, &name))
                .await?;
            let expected_version = match write {
                CalendarWrite::Create => None,
                CalendarWrite::Replace(v) => Some(v),
                CalendarWrite::Upsert => current.as_ref().map(|c| c.version),
            };
            // Also when it is created: a job may name it already (copied in without it).
            let jobs = ctx
                .store
                .calendar_jobs(get_params(&namespace, &name))
                .await?;
            let now = ctx.clock.now();
            // Days and windows as before (a new description, say): every plan stays.
            let same_days = current.as_ref().is_some_and(|c| {
                let days = |s: &CalendarSpec| CalendarSpec {
                    description: None,
                    ..s.clone()
                };
                days(&c.spec) == days(&spec)
            });
            let mut replans = Vec::with_capacity(jobs.len());
            for job in &jobs {
                let (next_fire_at, after) = if same_days {
                    (NextFire::Keep, now)
                } else {
                    self.replan(job, &calendar, now).await?
                };
                replans.push(JobReplan {
                    job_id: job.id,
                    expected_version: job.version,
                    next_fire_at,
                    after,
                });
            }
            let written = ctx
                .store
                .calendar_put(CalendarPutParams {
                    spec: spec.clone(),
                    expected_version,
                    replans,
                    actor: self.actor().to_owned(),
                    now: ctx.clock.store_now(),
                })
                .await;
            match written {
                Err(StoreError::CalendarChanged { .. }) => continue,
                // Created, changed or deleted since it was read: an upsert decides again.
                Err(
                    StoreError::CalendarExists { .. }
                    | StoreError::CalendarNotFound { .. }
                    | StoreError::CalendarVersionConflict { .. },
                ) if write == CalendarWrite::Upsert => {
                    continue;
                }
                written => {
                    let calendar = written?;
                    for job in &jobs {
                        ctx.telemetry.emit(Event::JobChanged {
                            namespace: job.namespace().to_owned(),
                            job: job.name().to_owned(),
                            change: "replanned",
                            version: job.version + 1,
                        });
                    }
                    if !jobs.is_empty() {
                        // New due times, and early runs withdrawn: the scheduler and the
                        // workers holding withdrawn runs find out at once.
                        ctx.scheduler_wake.notify_one();
                        ctx.heartbeat_wake.notify_one();
                    }
                    return Ok(CalendarChange {
                        calendar,
                        created: expected_version.is_none(),
                        replanned: jobs.iter().map(|j| j.name().to_owned()).collect(),
                    });
                }
            }
        }
        Err(contended(&namespace, &name))
    }

    /// The next due time of `job` with `calendar` (new) in place of the stored calendar of its
    /// name, and its other calendars as stored, and the instant it is the first due time
    /// after. A due time that has come but was not fired yet is decided again, not dropped; a
    /// paused job keeps its own (a resume plans again). A job that does not plan (a calendar
    /// gone) keeps its due time: the scheduler stops it.
    async fn replan(
        &self,
        job: &Job,
        calendar: &Arc<Calendar>,
        now: Timestamp,
    ) -> Result<(NextFire, Timestamp), JobError> {
        if job.spec.paused {
            return Ok((NextFire::Keep, now));
        }
        let Ok(mut plan) = job.spec.validate() else {
            return Ok((NextFire::Keep, now));
        };
        let others: Vec<String> = plan
            .calendar_names()
            .into_iter()
            .filter(|n| *n != calendar.name)
            .collect();
        let stored = if others.is_empty() {
            Vec::new()
        } else {
            self.context()
                .store
                .calendar_list(CalendarListParams {
                    namespaces: Some(vec![job.namespace().to_owned()]),
                    names: Some(others),
                })
                .await?
        };
        let mut calendars = self.context().plans.validated(&stored);
        calendars.insert(calendar.name.clone(), calendar.clone());
        if plan
            .resolve_calendars(|n| calendars.get(n).cloned())
            .is_err()
        {
            return Ok((NextFire::Keep, now));
        }
        let after = match job.next_fire_at {
            Some(next) if next <= now => next
                .checked_sub(SignedDuration::from_nanos(1))
                .unwrap_or(next),
            _ => now,
        };
        let next = plan.schedule.next_after(after).map(|f| f.at);
        Ok((NextFire::Set(next), after))
    }

    /// Deletes a calendar no job uses (`CalendarInUse` otherwise, naming them).
    pub async fn calendar_delete(
        &self,
        namespace: &str,
        name: &str,
        expected_version: Option<i64>,
    ) -> Result<(), JobError> {
        let ctx = self.context();
        ctx.store
            .calendar_delete(CalendarDeleteParams {
                namespace: namespace.into(),
                name: name.into(),
                expected_version,
                actor: self.actor().to_owned(),
                now: ctx.clock.store_now(),
            })
            .await?;
        Ok(())
    }

    /// The job's next `count` due times after now, and the times its calendars rule out
    /// between them, with why (see [`kairos_core::trigger::Schedule::preview`]); with the job
    /// and its plan (its triggers' zones).
    pub async fn upcoming(
        &self,
        namespace: &str,
        name: &str,
        count: usize,
    ) -> Result<(Job, Arc<kairos_core::job::JobPlan>, Vec<Upcoming>), JobError> {
        let job = self.get(namespace, name).await?;
        let ctx = self.context();
        let plan = ctx.plans.get(&*ctx.store, &job).await?;
        let preview = plan.schedule.preview(ctx.clock.now(), count);
        Ok((job, plan, preview))
    }
}

fn get_params(namespace: &str, name: &str) -> CalendarGetParams {
    CalendarGetParams {
        namespace: namespace.into(),
        name: name.into(),
    }
}
