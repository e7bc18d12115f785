//! The alert evaluator, a leader service: decides which alerts to raise and queues their
//! deliveries.
//!
//! - **Run ends, rescued runs and skipped due times** come from the activity log, read from
//!   the position kept in the store ([`kairos_store::Store::alert_cursor`]), so that a new
//!   leader goes on where the last one stopped. A position the log no longer holds (pruned, or
//!   the evaluator was off longer than `event_retention`) starts again from the log's end, and
//!   says so. The first leader with alerts starts at the log's end: history raises nothing.
//! - **Silences** (`no_success`) and **late runs** (`sla`) are watched from the store every
//!   [`WATCH_EVERY`]: the last success of each job with a dead-man switch, the active runs of
//!   each job with an SLA.
//!
//! Every alert is queued with a key that names what it is about (`run:42:failure:ops`,
//! `silent:7:<since>:<within>:ops`, `skip:7:<due time>:ops`), so it is delivered once however often it is
//! raised: by a leader that read the same entries again after a crash, by two leaders for a
//! moment, or by the watch and a run's end for the same late run.
//!
//! The rules are read from the job at evaluation time (its current `notify`), and a run's
//! earlier runs from the store at that time: an evaluator that fell behind judges with what it
//! finds then.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kairos_core::ValidationErrors;
use kairos_core::alert::{self, AlertRule, Ended, Raised, When};
use kairos_core::run::{JobId, RunId, RunOrigin, RunState};
use kairos_store::{
    ActivityCursor, ActivityEntry, ActivityReadParams, AlertCursorParams, AlertEnqueueParams,
    AlertInsert, Job, JobListParams, Run, RunActiveBriefParams, RunGetParams, RunListParams,
    StoreError,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{AlertDoc, AlertLinks, AlertRun, AlertsConfig};
use crate::context::NodeContext;

/// Most activity entries read per pass.
const READ_BATCH: u32 = 2000;
/// Time between passes when the log has nothing new.
const POLL: Duration = Duration::from_millis(500);
/// Time between watches of silences and late runs.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);
/// Most active runs of one job the SLA watch looks at (the earliest due).
const SLA_WATCH_LIMIT: u32 = 1000;
/// Earlier runs read to judge a streak (`failures`) or a recovery, beyond the streak itself,
/// in the first page (most runs end as successes or failures: one page is enough).
const HISTORY_MARGIN: u32 = 20;
/// Earlier runs read per page after the first.
const HISTORY_PAGE: u32 = 100;
/// Most earlier runs read for one run's end. Cancelled runs are stepped over (they neither
/// break a streak nor are recovered from), so the read goes past them, up to this.
const HISTORY_MAX: usize = 1000;

/// A rule and where it was written (`notify[0]`, `alerts[1]`).
#[derive(Debug, Clone)]
struct Labelled {
    label: String,
    rule: AlertRule,
}

pub struct Evaluator {
    ctx: NodeContext,
    config: Arc<AlertsConfig>,
    /// The sender's: woken after deliveries are queued.
    sent: Arc<Notify>,
    /// Keys queued (or found queued) by this evaluator: not written again every watch while a
    /// silence or a late run lasts. Forgotten when it grows past [`MAX_KNOWN`].
    known: std::sync::Mutex<HashSet<String>>,
}

/// Most keys [`Evaluator::known`] remembers.
const MAX_KNOWN: usize = 100_000;

/// The alerts of one pass or watch, each key once.
#[derive(Default)]
struct Pending {
    items: Vec<AlertInsert>,
    keys: HashSet<String>,
}

impl Evaluator {
    pub fn new(ctx: NodeContext, config: Arc<AlertsConfig>, sent: Arc<Notify>) -> Self {
        Self {
            ctx,
            config,
            sent,
            known: std::sync::Mutex::new(HashSet::new()),
        }
    }

    /// The leader service: passes over the log, and watches, until `stop`.
    pub async fn run(&self, stop: CancellationToken) {
        let mut next_watch = tokio::time::Instant::now();
        loop {
            let read = match self.pass().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "evaluating alerts failed; trying again");
                    0
                }
            };
            if stop.is_cancelled() {
                return;
            }
            if tokio::time::Instant::now() >= next_watch {
                if let Err(e) = self.watch_until(&stop).await {
                    tracing::warn!(error = %e, "watching silences and late runs failed");
                }
                next_watch = tokio::time::Instant::now() + WATCH_EVERY;
            }
            if read >= READ_BATCH as usize {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// One pass over the log from the stored position: evaluates what it reads, queues the
    /// alerts, then moves the position. Returns how many entries it read.
    pub async fn pass(&self) -> Result<usize, StoreError> {
        let store = &self.ctx.store;
        let stored = store.alert_cursor().await?;
        let from = match stored {
            // Batch 0 is the start of an empty log (its head before anything was written).
            Some(c) if c.id == 0 || store.activity_contains(c).await? => c,
            Some(c) => {
                let head = store.activity_head().await?;
                tracing::warn!(
                    from = ?c, to = ?head,
                    "the activity log no longer holds where alerts were evaluated up to; \
                     going on from its end (alerts in between are not raised)"
                );
                self.move_cursor(stored, head).await?;
                return Ok(0);
            }
            None => {
                let head = store.activity_head().await?;
                self.move_cursor(None, head).await?;
                return Ok(0);
            }
        };
        let entries = store
            .activity_read(ActivityReadParams {
                after: from,
                limit: READ_BATCH,
            })
            .await?;
        let Some(last) = entries.last().map(|e| e.cursor) else {
            return Ok(0);
        };
        let mut alerts = Pending::default();
        let mut jobs = JobCache::default();
        for entry in &entries {
            self.entry(entry, &mut jobs, &mut alerts).await?;
        }
        self.enqueue(alerts).await?;
        self.move_cursor(Some(from), last).await?;
        Ok(entries.len())
    }

    async fn move_cursor(
        &self,
        expected: Option<ActivityCursor>,
        to: ActivityCursor,
    ) -> Result<(), StoreError> {
        let moved = self
            .ctx
            .store
            .alert_cursor_set(AlertCursorParams { expected, to })
            .await?;
        if !moved {
            // Another leader (of a term that just ended) moved it; its alerts are queued, ours
            // are the same ones (same keys): nothing is lost or doubled.
            tracing::info!("the alert position moved under this evaluator");
        }
        Ok(())
    }

    async fn enqueue(&self, alerts: Pending) -> Result<(), StoreError> {
        if alerts.items.is_empty() {
            return Ok(());
        }
        let queued = self
            .ctx
            .store
            .alert_enqueue(AlertEnqueueParams {
                alerts: alerts.items,
                now: self.ctx.clock.store_now(),
            })
            .await?;
        if queued.iter().any(Option::is_some) {
            self.sent.notify_one();
        }
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() + alerts.keys.len() > MAX_KNOWN {
            known.clear();
        }
        known.extend(alerts.keys);
        Ok(())
    }

    async fn entry(
        &self,
        entry: &ActivityEntry,
        jobs: &mut JobCache,
        alerts: &mut Pending,
    ) -> Result<(), StoreError> {
        let r = &entry.record;
        match r.kind.as_str() {
            "run.finished" | "run.changed" => {
                if let Some(id) = r.run_id {
                    self.run_ended(id, jobs, alerts).await?;
                }
            }
            "runs.rescued" => {
                let data: serde_json::Value = serde_json::from_str(&r.data).unwrap_or_default();
                for id in data["lost"].as_array().into_iter().flatten() {
                    if let Some(id) = id.as_i64() {
                        self.run_ended(id, jobs, alerts).await?;
                    }
                }
            }
            "run.skipped" => {
                let (Some(namespace), Some(name)) = (&r.namespace, &r.job) else {
                    return Ok(());
                };
                let data: serde_json::Value = serde_json::from_str(&r.data).unwrap_or_default();
                let Some(due) = data["scheduled_for"]
                    .as_str()
                    .and_then(|s| s.parse::<Timestamp>().ok())
                else {
                    return Ok(());
                };
                let reason = data["reason"].as_str().map(str::to_owned);
                let Some(job) = jobs.by_name(&self.ctx, namespace, name).await? else {
                    return Ok(());
                };
                for rule in self.rules(&job) {
                    if rule.rule.when != When::Skipped {
                        continue;
                    }
                    let doc = self.doc(
                        Raised::Skipped,
                        &rule.label,
                        &job,
                        None,
                        |d| {
                            d.scheduled_for = Some(due);
                            d.reason.clone_from(&reason);
                        },
                        format!(
                            "due time {due} skipped ({})",
                            reason.as_deref().unwrap_or("not run")
                        ),
                    );
                    let key = format!("skip:{}:{}", job.id, due.as_microsecond());
                    self.queue(alerts, &key, Raised::Skipped, &rule.rule, &job, None, &doc);
                }
            }
            "events.dropped" => {
                // A node could not write some of its events: the run ends among them raise no
                // alert. Said loudly, since nothing else will tell.
                tracing::error!(
                    node = %r.node, data = %r.data,
                    "a node dropped activity events; alerts for the run ends among them are not raised"
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// A run (or, for a workflow step, its workflow run) that may have ended.
    async fn run_ended(
        &self,
        id: RunId,
        jobs: &mut JobCache,
        alerts: &mut Pending,
    ) -> Result<(), StoreError> {
        let Some(mut run) = self.ctx.store.run_get(RunGetParams { id }).await? else {
            return Ok(());
        };
        if let Some(parent) = run.parent_id {
            let Some(parent) = self.ctx.store.run_get(RunGetParams { id: parent }).await? else {
                return Ok(());
            };
            run = parent;
        }
        let (true, Some(finished_at)) = (run.state.is_terminal(), run.finished_at) else {
            return Ok(());
        };
        if run.state == RunState::Skipped {
            return Ok(());
        }
        let Some(job) = jobs.by_id(&self.ctx, run.job_id).await? else {
            return Ok(());
        };
        let rules = self.rules(&job);
        if rules.is_empty() {
            return Ok(());
        }
        let history = rules
            .iter()
            .map(|r| match r.rule.when {
                When::Failures(n) => n,
                When::Recovery => 1,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let earlier = if history == 0 {
            Vec::new()
        } else {
            self.earlier(job.id, run.id, history).await?
        };
        let ended = Ended {
            state: run.state,
            scheduled_for: run.scheduled_for,
            started_at: run.started_at,
            finished_at,
        };
        for rule in &rules {
            // A backfill runs past due times on purpose: no SLA applies to it.
            if run.origin == RunOrigin::Backfill && matches!(rule.rule.when, When::Sla { .. }) {
                continue;
            }
            for raised in alert::on_run_end(&rule.rule, &ended, &earlier) {
                let summary = run_summary(raised, &run, &rule.rule);
                let doc = self.doc(
                    raised,
                    &rule.label,
                    &job,
                    Some(&run),
                    |d| {
                        if let Raised::Failures(n) = raised {
                            d.count = Some(n);
                        }
                        d.deadline = sla_deadline(&rule.rule, raised, run.scheduled_for);
                    },
                    summary,
                );
                let key = run_key(&run, raised, &rule.rule);
                self.queue(alerts, &key, raised, &rule.rule, &job, Some(run.id), &doc);
            }
        }
        Ok(())
    }

    /// The states of the job's top-level runs before `run` (by id), newest first: read until
    /// `outcomes` successes or failures are among them, however many cancelled (or unfinished)
    /// runs lie between, or [`HISTORY_MAX`] runs. Read before `run`, not from the newest run,
    /// so that the runs that ended after it (an evaluator that fell behind) are not counted
    /// in place of those before it.
    async fn earlier(
        &self,
        job_id: JobId,
        run: RunId,
        outcomes: u32,
    ) -> Result<Vec<RunState>, StoreError> {
        let mut states = Vec::new();
        let mut found = 0;
        let mut before_id = run;
        let mut limit = outcomes.saturating_add(HISTORY_MARGIN);
        while found < outcomes as usize && states.len() < HISTORY_MAX {
            let page = self
                .ctx
                .store
                .run_list(RunListParams {
                    job_id: Some(job_id),
                    before_id: Some(before_id),
                    limit,
                    ..Default::default()
                })
                .await?;
            for r in &page {
                states.push(r.state);
                found += usize::from(alert::is_outcome(r.state));
            }
            match page.last() {
                Some(last) if page.len() == limit as usize => before_id = last.id,
                _ => break,
            }
            limit = HISTORY_PAGE;
        }
        Ok(states)
    }

    /// Silences and late runs, read from the store.
    pub async fn watch(&self) -> Result<(), StoreError> {
        self.watch_until(&CancellationToken::new()).await
    }

    /// [`Evaluator::watch`], given up when `stop` is cancelled (between jobs).
    async fn watch_until(&self, stop: &CancellationToken) -> Result<(), StoreError> {
        let jobs = self
            .ctx
            .store
            .job_list(JobListParams {
                namespaces: None,
                limit: 0,
            })
            .await?;
        let now = self.ctx.clock.now();
        let mut alerts = Pending::default();
        for job in jobs.iter().filter(|j| !j.spec.paused) {
            if stop.is_cancelled() {
                return Ok(());
            }
            let rules = self.rules(job);
            let watched = rules
                .iter()
                .any(|r| matches!(r.rule.when, When::NoSuccess(_) | When::Sla { .. }));
            if !watched {
                continue;
            }
            if rules
                .iter()
                .any(|r| matches!(r.rule.when, When::NoSuccess(_)))
            {
                self.watch_silence(job, &rules, now, &mut alerts).await?;
            }
            if rules
                .iter()
                .any(|r| matches!(r.rule.when, When::Sla { .. }))
            {
                self.watch_late(job, &rules, now, &mut alerts).await?;
            }
        }
        self.enqueue(alerts).await
    }

    async fn watch_silence(
        &self,
        job: &Job,
        rules: &[Labelled],
        now: Timestamp,
        alerts: &mut Pending,
    ) -> Result<(), StoreError> {
        let last_success = self
            .ctx
            .store
            .run_list(RunListParams {
                job_id: Some(job.id),
                state: Some(RunState::Succeeded),
                limit: 1,
                ..Default::default()
            })
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.finished_at);
        // Since the last success, or since the job was created or last changed (a resume or
        // an edit starts the count again).
        let since = last_success.map_or(job.updated_at, |s| s.max(job.updated_at));
        for rule in rules {
            let When::NoSuccess(within) = rule.rule.when else {
                continue;
            };
            if let Some(since) = alert::silent_since(within, since, now) {
                let doc = self.doc(
                    Raised::NoSuccess,
                    &rule.label,
                    job,
                    None,
                    |d| d.silent_since = Some(since),
                    format!(
                        "no successful run for {:#} (since {since})",
                        round_secs(now.duration_since(since))
                    ),
                );
                // Two switches of different lengths on one channel are two alerts.
                let key = format!(
                    "silent:{}:{}:{}",
                    job.id,
                    since.as_microsecond(),
                    within.as_secs()
                );
                self.queue(alerts, &key, Raised::NoSuccess, &rule.rule, job, None, &doc);
            }
        }
        Ok(())
    }

    async fn watch_late(
        &self,
        job: &Job,
        rules: &[Labelled],
        now: Timestamp,
        alerts: &mut Pending,
    ) -> Result<(), StoreError> {
        // The earliest due first: the most overdue are never left out.
        let active = self
            .ctx
            .store
            .run_active_brief(RunActiveBriefParams {
                job_id: job.id,
                limit: SLA_WATCH_LIMIT,
            })
            .await?;
        // A backfill runs past due times on purpose: no SLA applies to it.
        for brief in active.iter().filter(|r| r.origin != RunOrigin::Backfill) {
            let mut loaded: Option<Run> = None;
            for rule in rules {
                let When::Sla { start, finish } = rule.rule.when else {
                    continue;
                };
                let breaches = alert::sla_breaches(
                    start,
                    finish,
                    brief.scheduled_for,
                    brief.started_at,
                    None,
                    now,
                );
                for raised in breaches {
                    // The whole run (its reason, node, attempt) only for the document.
                    if loaded.is_none() {
                        loaded = self
                            .ctx
                            .store
                            .run_get(RunGetParams { id: brief.run_id })
                            .await?;
                    }
                    let Some(run) = loaded.as_ref() else {
                        continue;
                    };
                    let summary = run_summary(raised, run, &rule.rule);
                    let doc = self.doc(
                        raised,
                        &rule.label,
                        job,
                        Some(run),
                        |d| d.deadline = sla_deadline(&rule.rule, raised, run.scheduled_for),
                        summary,
                    );
                    let key = run_key(run, raised, &rule.rule);
                    self.queue(alerts, &key, raised, &rule.rule, job, Some(run.id), &doc);
                }
            }
        }
        Ok(())
    }

    /// The job's own rules and the server's that apply to it. A stored rule that no longer
    /// passes its checks is left out, not guessed at.
    fn rules(&self, job: &Job) -> Vec<Labelled> {
        let own = job.spec.notify.iter().enumerate().filter_map(|(i, spec)| {
            let label = format!("notify[{i}]");
            let mut errs = ValidationErrors::default();
            spec.validate(&label, &mut errs)
                .map(|rule| Labelled { label, rule })
        });
        let global = self
            .config
            .rules
            .iter()
            .enumerate()
            .filter(|(_, g)| g.applies_to(job.namespace()))
            .map(|(i, g)| Labelled {
                label: format!("alerts[{i}]"),
                rule: g.rule.clone(),
            });
        own.chain(global).collect()
    }

    fn doc(
        &self,
        raised: Raised,
        rule: &str,
        job: &Job,
        run: Option<&Run>,
        fill: impl FnOnce(&mut AlertDoc),
        what: String,
    ) -> AlertDoc {
        let base = self
            .config
            .ui_url
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/');
        let mut doc = AlertDoc {
            alert: raised.as_str().to_owned(),
            summary: format!("Job `{}` ({}): {what}", job.name(), job.namespace()),
            namespace: job.namespace().to_owned(),
            job: job.name().to_owned(),
            rule: rule.to_owned(),
            at: self.ctx.clock.now(),
            run: run.map(|r| AlertRun {
                id: r.id,
                state: r.state.as_str().to_owned(),
                scheduled_for: r.scheduled_for,
                started_at: r.started_at,
                finished_at: r.finished_at,
                attempt: r.attempt,
                exit_code: r.exit_code,
                reason: r.reason.clone(),
                node: r.node.clone(),
            }),
            count: None,
            silent_since: None,
            scheduled_for: None,
            reason: None,
            deadline: None,
            links: AlertLinks {
                job: format!("{base}/jobs/{}/{}", job.namespace(), job.name()),
                run: run.map(|r| format!("{base}/runs/{}", r.id)),
            },
        };
        fill(&mut doc);
        doc
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one alert's parts, all plain values"
    )]
    fn queue(
        &self,
        alerts: &mut Pending,
        key: &str,
        raised: Raised,
        rule: &AlertRule,
        job: &Job,
        run_id: Option<RunId>,
        doc: &AlertDoc,
    ) {
        let payload = match serde_json::to_string(doc) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "an alert could not be written");
                return;
            }
        };
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for channel in &rule.channels {
            let key = format!("{key}:{channel}");
            if known.contains(&key) || !alerts.keys.insert(key.clone()) {
                continue;
            }
            alerts.items.push(AlertInsert {
                key,
                alert: raised.as_str().to_owned(),
                channel: channel.clone(),
                namespace: job.namespace().to_owned(),
                job: job.name().to_owned(),
                run_id,
                payload: payload.clone(),
            });
        }
    }
}

/// Jobs read during one pass, by id and by name.
#[derive(Default)]
struct JobCache {
    by_id: HashMap<i64, Option<Job>>,
}

impl JobCache {
    async fn by_id(&mut self, ctx: &NodeContext, id: i64) -> Result<Option<Job>, StoreError> {
        if let Some(job) = self.by_id.get(&id) {
            return Ok(job.clone());
        }
        let job = ctx
            .store
            .job_get_by_id(kairos_store::JobGetByIdParams { id })
            .await?;
        self.by_id.insert(id, job.clone());
        Ok(job)
    }

    async fn by_name(
        &mut self,
        ctx: &NodeContext,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Job>, StoreError> {
        if let Some(job) = self
            .by_id
            .values()
            .flatten()
            .find(|j| j.namespace() == namespace && j.name() == name)
        {
            return Ok(Some(job.clone()));
        }
        let job = ctx
            .store
            .job_get(kairos_store::JobGetParams {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
            .await?;
        if let Some(job) = &job {
            self.by_id.insert(job.id, Some(job.clone()));
        }
        Ok(job)
    }
}

/// What happened to a run, in words.
fn run_summary(raised: Raised, run: &Run, rule: &AlertRule) -> String {
    let why = match (&run.reason, run.exit_code) {
        (Some(reason), _) => format!(": {reason}"),
        (None, Some(code)) => format!(": exit {code}"),
        (None, None) => String::new(),
    };
    match raised {
        Raised::Failure => format!("run {} {}{why}", run.id, ended_words(run.state)),
        Raised::Failures(n) => format!(
            "{n} failures in a row; run {} {}{why}",
            run.id,
            ended_words(run.state)
        ),
        Raised::Timeout => format!("run {} timed out{why}", run.id),
        Raised::Lost => format!(
            "run {} was lost (its node stopped answering and it was not run again)",
            run.id
        ),
        Raised::Recovery => format!("run {} succeeded after failures", run.id),
        Raised::SlaStart | Raised::SlaFinish => {
            let deadline = sla_deadline(rule, raised, run.scheduled_for)
                .map_or_else(String::new, |d| d.to_string());
            let what = if raised == Raised::SlaStart {
                "start"
            } else {
                "finish"
            };
            format!(
                "run {} (due {}) did not {what} by {deadline}",
                run.id, run.scheduled_for
            )
        }
        Raised::Skipped | Raised::NoSuccess => format!("run {}", run.id),
    }
}

fn ended_words(state: RunState) -> &'static str {
    match state {
        RunState::Failed => "failed",
        RunState::TimedOut => "timed out",
        RunState::Lost => "was lost",
        RunState::Succeeded => "succeeded",
        RunState::Cancelled => "was cancelled",
        _ => "ended",
    }
}

/// The key of an alert about a run: `run:42:failure`, and for an SLA its deadline too
/// (`run:42:sla_start:<µs>`), so that two SLAs of different deadlines are two alerts, and the
/// watch and the run's end raise one.
fn run_key(run: &Run, raised: Raised, rule: &AlertRule) -> String {
    match sla_deadline(rule, raised, run.scheduled_for) {
        Some(deadline) => format!(
            "run:{}:{}:{}",
            run.id,
            raised.as_str(),
            deadline.as_microsecond()
        ),
        None => format!("run:{}:{}", run.id, raised.as_str()),
    }
}

fn sla_deadline(rule: &AlertRule, raised: Raised, due: Timestamp) -> Option<Timestamp> {
    let When::Sla { start, finish } = rule.when else {
        return None;
    };
    let within = match raised {
        Raised::SlaStart => start,
        Raised::SlaFinish => finish,
        _ => None,
    }?;
    due.checked_add(within).ok()
}

fn round_secs(d: SignedDuration) -> SignedDuration {
    SignedDuration::from_secs(d.as_secs())
}
