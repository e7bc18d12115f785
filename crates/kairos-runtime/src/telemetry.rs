//! Typed events: each one is logged, counted in metrics and broadcast (to the event stream and
//! to tests that wait for things) from one place, [`Telemetry::emit`].

use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{RunId, RunState, SkipReason};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::broadcast;

/// Something that happened on this node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    JobChanged {
        namespace: String,
        job: String,
        change: &'static str,
        version: i64,
    },
    RunQueued {
        run_id: RunId,
        namespace: String,
        job: String,
        scheduled_for: Timestamp,
    },
    RunSkipped {
        namespace: String,
        job: String,
        scheduled_for: Timestamp,
        reason: SkipReason,
    },
    RunStarted {
        run_id: RunId,
        namespace: String,
        job: String,
        attempt: u32,
        lag_ms: i64,
    },
    RunRetrying {
        run_id: RunId,
        namespace: String,
        job: String,
        attempt: u32,
        run_at: Timestamp,
    },
    RunFinished {
        run_id: RunId,
        namespace: String,
        job: String,
        attempt: u32,
        state: RunState,
        outcome: String,
        duration_ms: i64,
    },
    RunReleased {
        run_id: RunId,
        namespace: String,
        job: String,
    },
    RunsRescued {
        requeued: Vec<RunId>,
        lost: Vec<RunId>,
    },
    /// This node became leader for `term`, or stopped leading it.
    Leadership { term: i64, leading: bool },
    /// A user changed a run: cancelled it (`run.cancel`) or acted on a workflow run's steps
    /// (`run.skip_step`, ...; the audit action); `state` is the run's state after it.
    RunChanged {
        run_id: RunId,
        namespace: String,
        job: String,
        change: &'static str,
        state: RunState,
    },
    /// This node joined the cluster (its first heartbeat in the registry).
    NodeJoined { node_id: String, node: String },
    /// This node left the cluster (a clean stop).
    NodeLeft { node_id: String, node: String },
    /// The leader removed nodes not heard from (crashed or cut off).
    NodesExpired { node_ids: Vec<String> },
}

impl Event {
    /// The namespace the event belongs to (`None` for events about runs by id only).
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Event::JobChanged { namespace, .. }
            | Event::RunQueued { namespace, .. }
            | Event::RunSkipped { namespace, .. }
            | Event::RunStarted { namespace, .. }
            | Event::RunRetrying { namespace, .. }
            | Event::RunFinished { namespace, .. }
            | Event::RunReleased { namespace, .. }
            | Event::RunChanged { namespace, .. } => Some(namespace),
            Event::RunsRescued { .. }
            | Event::Leadership { .. }
            | Event::NodeJoined { .. }
            | Event::NodeLeft { .. }
            | Event::NodesExpired { .. } => None,
        }
    }

    /// Its kind in the activity log and the event stream (`run.finished`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::JobChanged { .. } => "job.changed",
            Event::RunQueued { .. } => "run.queued",
            Event::RunSkipped { .. } => "run.skipped",
            Event::RunStarted { .. } => "run.started",
            Event::RunRetrying { .. } => "run.retrying",
            Event::RunFinished { .. } => "run.finished",
            Event::RunReleased { .. } => "run.released",
            Event::RunChanged { .. } => "run.changed",
            Event::RunsRescued { .. } => "runs.rescued",
            Event::Leadership { .. } => "leader.changed",
            Event::NodeJoined { .. } => "node.joined",
            Event::NodeLeft { .. } => "node.left",
            Event::NodesExpired { .. } => "nodes.expired",
        }
    }

    /// Every kind, for checking a filter.
    pub const KINDS: [&'static str; 13] = [
        "job.changed",
        "run.queued",
        "run.skipped",
        "run.started",
        "run.retrying",
        "run.finished",
        "run.released",
        "run.changed",
        "runs.rescued",
        "leader.changed",
        "node.joined",
        "node.left",
        "nodes.expired",
    ];

    /// The job it is about, if one.
    pub fn job(&self) -> Option<&str> {
        match self {
            Event::JobChanged { job, .. }
            | Event::RunQueued { job, .. }
            | Event::RunSkipped { job, .. }
            | Event::RunStarted { job, .. }
            | Event::RunRetrying { job, .. }
            | Event::RunFinished { job, .. }
            | Event::RunReleased { job, .. }
            | Event::RunChanged { job, .. } => Some(job),
            _ => None,
        }
    }

    /// The run it is about, if one.
    pub fn run_id(&self) -> Option<RunId> {
        match self {
            Event::RunQueued { run_id, .. }
            | Event::RunStarted { run_id, .. }
            | Event::RunRetrying { run_id, .. }
            | Event::RunFinished { run_id, .. }
            | Event::RunReleased { run_id, .. }
            | Event::RunChanged { run_id, .. } => Some(*run_id),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    channel: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Kairos's metrics (names `kairos_<noun>_<unit>[_total]`).
#[derive(Debug)]
pub struct Metrics {
    pub tasks_pending: Gauge,
    pub tasks_running: Gauge,
    tasks_failed: Counter,
    runs: Family<OutcomeLabels, Counter>,
    runs_skipped: Family<ReasonLabels, Counter>,
    fire_lag: Histogram,
    run_duration: Histogram,
    runs_rescued: Counter,
    leader: Gauge,
    leader_term: Gauge,
    alert_attempts: Family<AlertLabels, Counter>,
}

/// Events and metrics of one node.
#[derive(Debug)]
pub struct Telemetry {
    pub metrics: Metrics,
    registry: Registry,
    events: broadcast::Sender<Event>,
    /// The activity recorder's queue, once one runs (see [`crate::activity`]).
    recorder: std::sync::OnceLock<tokio::sync::mpsc::Sender<Event>>,
    /// Events the recorder's queue had no room for.
    pub(crate) unrecorded: std::sync::atomic::AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Counts one attempt to send an alert delivery to `channel`: `delivered`, `retry` or
    /// `failed`.
    pub fn alert_attempt(&self, channel: &str, outcome: &str) {
        self.metrics
            .alert_attempts
            .get_or_create(&AlertLabels {
                channel: channel.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Telemetry of a node without a name (tests, embedders): per-node metrics carry no
    /// `node` label.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// Telemetry of node `name`: the metrics of what this node does (runs it finished, its
    /// fire lag, leadership) carry a `node` label; cluster-wide ones (`tasks_pending`,
    /// `tasks_running`) do not, so that every node reports the same series.
    pub fn for_node(name: &str) -> Self {
        Self::build(Some(name))
    }

    fn build(node: Option<&str>) -> Self {
        let metrics = Metrics {
            tasks_pending: Gauge::default(),
            tasks_running: Gauge::default(),
            tasks_failed: Counter::default(),
            runs: Family::default(),
            runs_skipped: Family::default(),
            fire_lag: Histogram::new(exponential_buckets(0.0005, 2.0, 20)),
            run_duration: Histogram::new(exponential_buckets(0.001, 2.0, 24)),
            runs_rescued: Counter::default(),
            leader: Gauge::default(),
            leader_term: Gauge::default(),
            alert_attempts: Family::default(),
        };
        let mut root = Registry::with_prefix("kairos");
        root.register(
            "tasks_pending",
            "Runs queued and waiting for a worker (cluster-wide)",
            metrics.tasks_pending.clone(),
        );
        root.register(
            "tasks_running",
            "Runs being executed (cluster-wide)",
            metrics.tasks_running.clone(),
        );
        let registry = match node {
            Some(name) => root.sub_registry_with_label((
                std::borrow::Cow::Borrowed("node"),
                std::borrow::Cow::Owned(name.to_owned()),
            )),
            None => &mut root,
        };
        registry.register(
            "tasks_failed",
            "Runs that ended failed, timed out or lost",
            metrics.tasks_failed.clone(),
        );
        registry.register("runs", "Finished runs by outcome", metrics.runs.clone());
        registry.register(
            "runs_skipped",
            "Due times skipped, by reason",
            metrics.runs_skipped.clone(),
        );
        registry.register(
            "fire_lag_seconds",
            "Start of an attempt minus its due time",
            metrics.fire_lag.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Duration of attempts",
            metrics.run_duration.clone(),
        );
        registry.register(
            "runs_rescued",
            "Runs whose lease expired and were rescued",
            metrics.runs_rescued.clone(),
        );
        registry.register(
            "leader",
            "1 while this node is the leader (fires triggers, rescues runs), else 0",
            metrics.leader.clone(),
        );
        registry.register(
            "leader_term",
            "The term this node last led",
            metrics.leader_term.clone(),
        );
        registry.register(
            "alert_attempts",
            "Attempts to send alert deliveries, by channel and outcome (delivered, retry, failed)",
            metrics.alert_attempts.clone(),
        );
        let (events, _) = broadcast::channel(4096);
        Self {
            metrics,
            registry: root,
            events,
            recorder: std::sync::OnceLock::new(),
            unrecorded: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Receives every event emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Prometheus text exposition of all metrics.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("metrics encoding failed");
        }
        out
    }

    /// Logs, counts and broadcasts one event.
    pub fn emit(&self, event: Event) {
        let m = &self.metrics;
        match &event {
            Event::JobChanged {
                namespace,
                job,
                change,
                version,
            } => {
                tracing::info!(%namespace, %job, change, version, "job changed");
            }
            Event::RunQueued {
                run_id,
                namespace,
                job,
                scheduled_for,
            } => {
                tracing::debug!(run_id, %namespace, %job, %scheduled_for, "run queued");
            }
            Event::RunSkipped {
                namespace,
                job,
                scheduled_for,
                reason,
            } => {
                m.runs_skipped
                    .get_or_create(&ReasonLabels {
                        reason: reason.as_str().into(),
                    })
                    .inc();
                tracing::info!(%namespace, %job, %scheduled_for, reason = reason.as_str(), "due time skipped");
            }
            Event::RunStarted {
                run_id,
                namespace,
                job,
                attempt,
                lag_ms,
            } => {
                m.fire_lag.observe((*lag_ms).max(0) as f64 / 1000.0);
                tracing::info!(run_id, %namespace, %job, attempt, lag_ms, "run started");
            }
            Event::RunRetrying {
                run_id,
                namespace,
                job,
                attempt,
                run_at,
            } => {
                tracing::info!(run_id, %namespace, %job, attempt, %run_at, "attempt failed; retry queued");
            }
            Event::RunFinished {
                run_id,
                namespace,
                job,
                attempt,
                state,
                outcome,
                duration_ms,
            } => {
                m.runs
                    .get_or_create(&OutcomeLabels {
                        outcome: state.as_str().into(),
                    })
                    .inc();
                m.run_duration
                    .observe((*duration_ms).max(0) as f64 / 1000.0);
                if matches!(
                    state,
                    RunState::Failed | RunState::TimedOut | RunState::Lost
                ) {
                    m.tasks_failed.inc();
                }
                tracing::info!(run_id, %namespace, %job, attempt, state = state.as_str(), %outcome, duration_ms, "run finished");
            }
            Event::RunReleased { run_id, .. } => {
                tracing::info!(run_id, "run released at shutdown; it will run again");
            }
            Event::RunsRescued { requeued, lost } => {
                m.runs_rescued.inc_by((requeued.len() + lost.len()) as u64);
                for _ in lost {
                    m.runs
                        .get_or_create(&OutcomeLabels {
                            outcome: "lost".into(),
                        })
                        .inc();
                    m.tasks_failed.inc();
                }
                tracing::warn!(?requeued, ?lost, "runs rescued after their lease expired");
            }
            Event::Leadership { term, leading } => {
                m.leader.set(i64::from(*leading));
                m.leader_term.set(*term);
                if *leading {
                    tracing::info!(term, "leading: firing triggers and rescuing runs");
                } else {
                    tracing::warn!(term, "no longer leading");
                }
            }
            Event::RunChanged {
                run_id,
                change,
                state,
                ..
            } => {
                tracing::info!(run_id, change, %state, "run changed");
            }
            Event::NodeJoined { node_id, node } => {
                tracing::info!(%node_id, %node, "joined the cluster");
            }
            Event::NodeLeft { node_id, node } => {
                tracing::info!(%node_id, %node, "left the cluster");
            }
            Event::NodesExpired { node_ids } => {
                tracing::warn!(?node_ids, "nodes not heard from were removed");
            }
        }
        if let Some(recorder) = self.recorder.get()
            && recorder.try_send(event.clone()).is_err()
        {
            self.unrecorded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = self.events.send(event);
    }

    /// Sends every event from now on to `recorder` too (once per node; false if one is set).
    pub(crate) fn record_to(&self, recorder: tokio::sync::mpsc::Sender<Event>) -> bool {
        self.recorder.set(recorder).is_ok()
    }
}

/// Milliseconds between two instants (negative if `to` is before `from`).
pub fn millis_between(from: Timestamp, to: Timestamp) -> i64 {
    let d: SignedDuration = to.duration_since(from);
    d.as_millis() as i64
}
