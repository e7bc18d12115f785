//! The activity recorder: every event of this node (see [`crate::telemetry::Event`]) goes to
//! the store's activity log, in batches, so that the event stream of any node of the cluster
//! (`GET /api/v1/events/stream`) can serve it and resume after a position. A batch is written
//! every [`FLUSH_EVERY`] or every [`BATCH`] events, and on shutdown after the other services
//! have stopped: a clean stop loses nothing; a crash loses the events not written yet (those
//! of the last moments, more if the store was slow), never a run: runs are in the store.
//! Entries older than the retention are pruned.

use std::time::Duration;

use kairos_store::ActivityRecord;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::context::NodeContext;
use crate::telemetry::Event;

/// Longest an event waits to be written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Most events per write.
pub const BATCH: usize = 2_000;
/// Events waiting to be written before new ones are dropped (counted, and marked in the log).
const QUEUE: usize = 100_000;
/// How often old entries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most batches kept, whatever their age: a busy cluster records a few events per run, and the
/// log is for following what happens, not for history (the runs are).
pub const MAX_BATCHES: u64 = 100_000;

/// Writes this node's events to the activity log until its token is cancelled.
pub struct ActivityRecorder {
    ctx: NodeContext,
    events: mpsc::Receiver<Event>,
    retention: jiff::SignedDuration,
}

impl ActivityRecorder {
    /// A recorder of `ctx`'s events, keeping entries for `retention`; `None` if one records
    /// them already, or with a retention of zero (no event stream history: nothing is
    /// recorded).
    pub fn new(ctx: NodeContext, retention: Duration) -> Option<Self> {
        if retention.is_zero() {
            return None;
        }
        let (tx, events) = mpsc::channel(QUEUE);
        if !ctx.telemetry.record_to(tx) {
            return None;
        }
        Some(Self {
            ctx,
            events,
            retention: jiff::SignedDuration::try_from(retention)
                .unwrap_or(jiff::SignedDuration::from_hours(1)),
        })
    }

    fn record(&self, event: &Event) -> ActivityRecord {
        ActivityRecord {
            at: self.ctx.clock.now(),
            node: self.ctx.node.clone(),
            kind: event.kind().to_owned(),
            namespace: event.namespace().map(str::to_owned),
            job: event.job().map(str::to_owned),
            run_id: event.run_id(),
            data: serde_json::to_string(event).unwrap_or_else(|_| "{}".into()),
        }
    }

    /// Writes a batch, trying a few times; a batch that cannot be written is dropped (and
    /// said so): the log is for watching, the runs themselves are in the store.
    async fn flush(&self, batch: &mut Vec<ActivityRecord>) {
        if batch.is_empty() {
            return;
        }
        let records = std::mem::take(batch);
        let n = records.len();
        for attempt in 1..=3u32 {
            match self.ctx.store.activity_append(records.clone()).await {
                Ok(()) => {
                    self.ctx.activity_wake.notify_waiters();
                    return;
                }
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, events = n, "writing the activity log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, events = n, "writing the activity log failed; these events are not in the event stream");
                }
            }
        }
    }

    /// Notes events the queue had no room for, as an entry of their own.
    fn note_dropped(&self, batch: &mut Vec<ActivityRecord>) {
        let dropped = self
            .ctx
            .telemetry
            .unrecorded
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            batch.push(ActivityRecord {
                at: self.ctx.clock.now(),
                node: self.ctx.node.clone(),
                kind: "events.dropped".into(),
                namespace: None,
                job: None,
                run_id: None,
                data: format!(r#"{{"type":"events_dropped","count":{dropped}}}"#),
            });
        }
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let mut batch: Vec<ActivityRecord> = Vec::with_capacity(BATCH);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                event = self.events.recv() => {
                    let Some(event) = event else { break };
                    batch.push(self.record(&event));
                    // More that came meanwhile, up to a batch, for at most FLUSH_EVERY.
                    let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
                    while batch.len() < BATCH {
                        match tokio::time::timeout_at(deadline, self.events.recv()).await {
                            Ok(Some(event)) => batch.push(self.record(&event)),
                            Ok(None) | Err(_) => break,
                        }
                    }
                    self.note_dropped(&mut batch);
                    self.flush(&mut batch).await;
                }
                _ = stop.cancelled() => break,
                _ = prune.tick() => {
                    let before = self.ctx.clock.now() - self.retention;
                    // Never past where the alert evaluator has read to: what it has not read
                    // yet stays, however old (up to the log's size limit).
                    let keep_from = match self.ctx.store.alert_cursor().await {
                        Ok(cursor) => cursor.map(|c| c.id),
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the alert position failed; not pruning");
                            continue;
                        }
                    };
                    let limits = kairos_store::ActivityPruneParams {
                        before,
                        keep_at_most: MAX_BATCHES,
                        keep_from,
                    };
                    match self.ctx.store.activity_prune(limits).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(entries = n, "activity log pruned"),
                        Err(e) => tracing::warn!(error = %e, "pruning the activity log failed"),
                    }
                }
            }
        }
        // What is left, after the other services stopped.
        while let Ok(event) = self.events.try_recv() {
            batch.push(self.record(&event));
            if batch.len() >= BATCH {
                self.flush(&mut batch).await;
            }
        }
        self.note_dropped(&mut batch);
        self.flush(&mut batch).await;
    }
}
