//! What the services of one node share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kairos_core::ValidationErrors;
use kairos_core::job::JobPlan;
use kairos_core::run::RunId;
use kairos_exec::OutputBuffer;
use std::collections::{BTreeMap, BTreeSet};

use kairos_core::calendar::Calendar;
use kairos_store::{
    CalendarListParams, CalendarVersion, Change, Job, Store, StoreError, StoredCalendar,
};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::telemetry::Telemetry;

/// Output of the attempts running on this node, readable while they run.
#[derive(Debug, Default, Clone)]
pub struct LiveOutputs {
    inner: Arc<Mutex<HashMap<RunId, Arc<OutputBuffer>>>>,
}

impl LiveOutputs {
    pub fn get(&self, run: RunId) -> Option<Arc<OutputBuffer>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run)
            .cloned()
    }

    pub(crate) fn insert(&self, run: RunId, buffer: Arc<OutputBuffer>) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run, buffer);
    }

    /// Attempts running on this node.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets `buffer` as the run's live output, unless a newer attempt's replaced it.
    pub(crate) fn remove(&self, run: RunId, buffer: &Arc<OutputBuffer>) {
        let mut live = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if live.get(&run).is_some_and(|b| Arc::ptr_eq(b, buffer)) {
            live.remove(&run);
        }
    }
}

/// The attempts running on this node that may report over the API (`POST
/// /api/v1/runs/{id}/checkpoint`): each run's attempt token (what its task got as
/// `KAIROS_RUN_TOKEN`) and lease token (what fences its writes).
#[derive(Debug, Default, Clone)]
pub struct RunTokens {
    inner: Arc<Mutex<HashMap<RunId, (String, String)>>>,
}

impl RunTokens {
    /// The lease token of run `run`'s attempt on this node if `token` is its attempt token.
    /// `Err(true)`: the run has an attempt here but the token is not its; `Err(false)`: no
    /// attempt of the run runs here.
    pub fn lease_for(&self, run: RunId, token: &str) -> Result<String, bool> {
        let tokens = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some((attempt, lease)) = tokens.get(&run) else {
            return Err(false);
        };
        // Compared in constant time: the token is a secret.
        let same = attempt.len() == token.len()
            && attempt
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same { Ok(lease.clone()) } else { Err(true) }
    }

    pub(crate) fn insert(&self, run: RunId, attempt: String, lease: String) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run, (attempt, lease));
    }

    /// Forgets run `run`'s attempt token `attempt` (not a newer attempt's).
    pub(crate) fn remove(&self, run: RunId, attempt: &str) {
        let mut tokens = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.get(&run).is_some_and(|(a, _)| a == attempt) {
            tokens.remove(&run);
        }
    }
}

/// Validated plans by `(job id, version)`, with their calendars: a version never changes, so
/// its plan never does (a change of a calendar a job uses raises the job's version in the same
/// transaction, and the calendars are read after the job, so a plan is never made with older
/// calendars than its version's). Saves re-validating (and re-parsing cron expressions) on
/// every fire and every attempt.
#[derive(Debug, Default, Clone)]
pub struct PlanCache {
    inner: Arc<Mutex<HashMap<JobVersion, Arc<JobPlan>>>>,
    /// Validated calendars by `(namespace, name, version)`, so that a change of a calendar
    /// many jobs use validates it once, not once per job.
    calendars: Arc<Mutex<HashMap<CalendarKey, Arc<Calendar>>>>,
}

/// `(job id, version)`.
type JobVersion = (i64, i64);

/// `(namespace, name, version)` of a calendar.
type CalendarKey = (String, String, i64);

/// Entries kept before the cache starts over (old versions are not tracked individually).
const PLAN_CACHE_LIMIT: usize = 200_000;

impl PlanCache {
    /// The plan of this job version, validated and with its calendars, made once.
    pub async fn get(&self, store: &dyn Store, job: &Job) -> Result<Arc<JobPlan>, PlanError> {
        self.get_many(store, &[job])
            .await
            .pop()
            .unwrap_or_else(|| Err(PlanError::Store(StoreError::Internal("no plan".into()))))
    }

    /// [`PlanCache::get`] for many jobs: the calendars of those not cached yet are read in one
    /// query per namespace. One result per job, in order.
    pub async fn get_many(
        &self,
        store: &dyn Store,
        jobs: &[&Job],
    ) -> Vec<Result<Arc<JobPlan>, PlanError>> {
        let mut out: Vec<Result<Arc<JobPlan>, PlanError>> = Vec::with_capacity(jobs.len());
        // Plans still to resolve: index in `out`, the plan, its namespace.
        let mut pending: Vec<(usize, JobPlan)> = Vec::new();
        {
            let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            for (i, job) in jobs.iter().enumerate() {
                if let Some(plan) = map.get(&(job.id, job.version)) {
                    out.push(Ok(plan.clone()));
                    continue;
                }
                match job.spec.validate() {
                    Ok(plan) => {
                        out.push(Err(PlanError::Store(StoreError::Internal(
                            "not planned".into(),
                        ))));
                        pending.push((i, plan));
                    }
                    Err(e) => out.push(Err(PlanError::Invalid(e))),
                }
            }
        }
        let mut wanted: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (i, plan) in &pending {
            wanted
                .entry(jobs[*i].namespace())
                .or_default()
                .extend(plan.calendar_names());
        }
        let mut found: HashMap<&str, Result<Vec<StoredCalendar>, String>> = HashMap::new();
        for (namespace, names) in wanted {
            if names.is_empty() {
                found.insert(namespace, Ok(Vec::new()));
                continue;
            }
            let read = store
                .calendar_list(CalendarListParams {
                    namespaces: Some(vec![namespace.to_owned()]),
                    names: Some(names.into_iter().collect()),
                })
                .await
                .map_err(|e| e.to_string());
            found.insert(namespace, read);
        }
        for (i, mut plan) in pending {
            let job = jobs[i];
            let stored = match found.get(job.namespace()) {
                Some(Ok(stored)) => stored,
                Some(Err(e)) => {
                    out[i] = Err(PlanError::Store(StoreError::Unavailable(format!(
                        "reading the calendars of job `{}`: {e}",
                        job.name()
                    ))));
                    continue;
                }
                None => &Vec::new(),
            };
            let calendars = self.validated(stored);
            if let Err(e) = plan.resolve_calendars(|n| calendars.get(n).cloned()) {
                out[i] = Err(PlanError::Invalid(e));
                continue;
            }
            let plan = Arc::new(plan);
            let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= PLAN_CACHE_LIMIT {
                map.clear();
            }
            map.insert((job.id, job.version), plan.clone());
            out[i] = Ok(plan);
        }
        out
    }

    /// Validates `spec` and resolves the calendars its triggers name from the store (read
    /// now, not cached: a job write is planned with the calendars as they are): the plan, and
    /// the versions of the calendars it was made with (the fence of a job write planned with
    /// it).
    pub async fn plan_spec(
        &self,
        store: &dyn Store,
        spec: &kairos_core::JobSpec,
    ) -> Result<(JobPlan, Vec<CalendarVersion>), PlanError> {
        let mut plan = spec.validate().map_err(PlanError::Invalid)?;
        let names = plan.calendar_names();
        if names.is_empty() {
            return Ok((plan, Vec::new()));
        }
        let stored = store
            .calendar_list(CalendarListParams {
                namespaces: Some(vec![spec.namespace.clone()]),
                names: Some(names),
            })
            .await?;
        let calendars = self.validated(&stored);
        plan.resolve_calendars(|name| calendars.get(name).cloned())
            .map_err(PlanError::Invalid)?;
        let versions = stored
            .iter()
            .map(|c| CalendarVersion {
                name: c.spec.name.clone(),
                version: c.version,
            })
            .collect();
        Ok((plan, versions))
    }

    /// The stored calendars that validate, by name, validated once per version.
    pub(crate) fn validated(&self, stored: &[StoredCalendar]) -> HashMap<String, Arc<Calendar>> {
        let mut cache = self.calendars.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= PLAN_CACHE_LIMIT {
            cache.clear();
        }
        let mut out = HashMap::with_capacity(stored.len());
        for c in stored {
            let key = (c.spec.namespace.clone(), c.spec.name.clone(), c.version);
            let calendar = match cache.get(&key) {
                Some(calendar) => calendar.clone(),
                None => match validated_calendars(std::slice::from_ref(c)).remove(&c.spec.name) {
                    Some(calendar) => {
                        cache.insert(key, calendar.clone());
                        calendar
                    }
                    None => continue,
                },
            };
            out.insert(c.spec.name.clone(), calendar);
        }
        out
    }
}

impl PlanCache {
    /// The plan of this job version for running an attempt, which needs no calendars (its
    /// timeout, retry policy, task): the cached plan, else one validated now (cached only
    /// when the job names no calendars, so that it is complete).
    pub fn for_attempt(&self, job: &Job) -> Result<Arc<JobPlan>, ValidationErrors> {
        let key = (job.id, job.version);
        if let Some(plan) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(plan.clone());
        }
        let plan = Arc::new(job.spec.validate()?);
        if plan.calendar_names().is_empty() {
            let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= PLAN_CACHE_LIMIT {
                map.clear();
            }
            map.insert(key, plan.clone());
        }
        Ok(plan)
    }
}

/// Why a job has no plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The document does not validate, or names calendars that do not exist.
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error(transparent)]
    Store(#[from] kairos_store::StoreError),
}

/// The stored calendars that validate, by name. One that no longer does (a time zone gone
/// from the system's database) is left out: the jobs naming it then fail to plan, loudly,
/// rather than fire on days it meant to exclude.
fn validated_calendars(
    stored: &[kairos_store::StoredCalendar],
) -> HashMap<String, Arc<kairos_core::calendar::Calendar>> {
    stored
        .iter()
        .filter_map(|c| match c.spec.validate() {
            Ok(cal) => Some((c.spec.name.clone(), Arc::new(cal))),
            Err(e) => {
                tracing::error!(calendar = %c.spec.name, error = %e, "stored calendar no longer validates");
                None
            }
        })
        .collect()
}

/// Shared by the services of one node.
#[derive(Clone)]
pub struct NodeContext {
    /// This node's name (owner of leases).
    pub node: String,
    /// This process's identity among the nodes: fresh at every start, so two processes that
    /// share a name are two nodes (leadership and the registry use it).
    pub node_id: String,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub telemetry: Arc<Telemetry>,
    /// Wakes the scheduler when a job changes.
    pub scheduler_wake: Arc<Notify>,
    /// Wakes the worker when runs are queued.
    pub worker_wake: Arc<Notify>,
    /// Asks the worker for a heartbeat now (a run it holds was cancelled or replaced), so the
    /// stop takes effect at once instead of at the next beat.
    pub heartbeat_wake: Arc<Notify>,
    /// Wakes the elector (leadership changed hands).
    pub leader_wake: Arc<Notify>,
    /// Wakes the event streams of this node: the activity recorder wrote a batch.
    pub activity_wake: Arc<Notify>,
    pub live: LiveOutputs,
    pub plans: PlanCache,
    /// Attempt tokens of the attempts running here (see [`RunTokens`]).
    pub run_tokens: RunTokens,
    /// The URL of this node's API, as its tasks reach it (`KAIROS_API_URL`); `None` when the
    /// node serves no API (a library embedding Kairos).
    pub api_url: Option<String>,
    /// The alert channels of this node's configuration, by name: what a job's `notify` may
    /// name.
    pub alert_channels: Arc<Vec<String>>,
}

impl NodeContext {
    /// Wakes the services a change concerns.
    pub fn wake_for(&self, change: Change) {
        match change {
            // A job change may also have withdrawn a run this node claimed ahead (a pause, a
            // new schedule, a delete): a heartbeat finds out at once.
            Change::Jobs => {
                self.scheduler_wake.notify_one();
                self.heartbeat_wake.notify_one();
            }
            Change::Runs => self.worker_wake.notify_one(),
            Change::Cancel => self.heartbeat_wake.notify_one(),
            Change::Leader => self.leader_wake.notify_one(),
            Change::Resync => {
                self.scheduler_wake.notify_one();
                self.worker_wake.notify_one();
                self.heartbeat_wake.notify_one();
                self.leader_wake.notify_one();
            }
        }
    }

    /// Follows the store's change feed (other nodes' writes) until `stop`, waking the services
    /// each change concerns. Nothing to do for a store only this node uses.
    pub async fn follow_changes(self, stop: tokio_util::sync::CancellationToken) {
        let Some(mut changes) = self.store.changes() else {
            return;
        };
        loop {
            let change = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                change = changes.recv() => change,
            };
            match change {
                Ok(change) => self.wake_for(change),
                // Some were dropped while this node was busy: look at everything.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.wake_for(Change::Resync)
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    pub fn new(node: impl Into<String>, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let node = node.into();
        Self {
            telemetry: Arc::new(Telemetry::for_node(&node)),
            node,
            node_id: uuid::Uuid::new_v4().to_string(),
            store,
            clock,
            scheduler_wake: Arc::new(Notify::new()),
            worker_wake: Arc::new(Notify::new()),
            heartbeat_wake: Arc::new(Notify::new()),
            leader_wake: Arc::new(Notify::new()),
            activity_wake: Arc::new(Notify::new()),
            live: LiveOutputs::default(),
            plans: PlanCache::default(),
            run_tokens: RunTokens::default(),
            api_url: None,
            alert_channels: Arc::new(Vec::new()),
        }
    }
}
