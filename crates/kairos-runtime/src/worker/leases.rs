//! The leases a worker holds, their renewal, and the rule that keeps one run from executing on
//! two nodes at once: an attempt whose lease was not renewed in time is killed before the lease
//! can expire in the store (see [`kairos_core::lease`]).
//!
//! The keeper runs beside the claim loop, in loops of its own: heartbeats (every third of the
//! lease; each renewal runs beside the beat, waited for until what it renews to has passed, so
//! that neither a slow store nor one renewal that hangs holds up the next) and expiry
//! (wakes at the earliest point an attempt must be given up). Neither waits for a claim, an
//! attempt or a result being recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use jiff::Timestamp;
use kairos_core::lease::LeaseTiming;
use kairos_core::run::RunId;
use kairos_store::{RunHeartbeatParams, StoreError};
use tokio_util::sync::CancellationToken;

use crate::context::NodeContext;

/// Why an attempt was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopCause {
    /// A user or `overlap: replace` cancelled the run.
    Cancelled,
    /// The node is shutting down: release the run so it runs again.
    Shutdown,
    /// The store says the lease is gone; the run belongs to someone else now.
    LeaseLost,
    /// The lease could not be renewed in time; it may expire and be rescued any moment.
    LeaseExpired,
}

impl StopCause {
    /// The run may be (or soon be) someone else's: the attempt ends at once and its result is
    /// not recorded.
    pub(super) fn lost_lease(self) -> bool {
        matches!(self, StopCause::LeaseLost | StopCause::LeaseExpired)
    }
}

/// When an attempt must have been stopped unless a renewal holds, on two clocks: the node's
/// [`crate::Clock`] (which tests drive by hand) and the monotonic clock, which a step of the
/// wall clock (NTP, a virtual machine resumed) neither delays nor hastens. Whichever passes
/// first stops the attempt: a wall clock set back must not let a task outlive its lease.
#[derive(Debug, Clone, Copy)]
pub(super) struct StopAt {
    at: Timestamp,
    by: Instant,
}

impl StopAt {
    /// For a claim or renewal that holds, sent at `sent` by the node's clock and `sent_by` by
    /// the monotonic one.
    pub(super) fn after(timing: &LeaseTiming, sent: Timestamp, sent_by: Instant) -> Self {
        Self {
            at: timing.stop_at(sent),
            by: sent_by + (timing.lease() - timing.margin()).unsigned_abs(),
        }
    }

    fn passed(&self, now: Timestamp) -> bool {
        now >= self.at || Instant::now() >= self.by
    }

    fn latest(self, other: Self) -> Self {
        Self {
            at: self.at.max(other.at),
            by: self.by.max(other.by),
        }
    }

    fn earliest(self, other: Self) -> Self {
        Self {
            at: self.at.min(other.at),
            by: self.by.min(other.by),
        }
    }
}

/// One claimed run's lease, shared by the keeper and the attempt.
pub(super) struct Lease {
    pub run_id: RunId,
    pub token: String,
    /// Stops the attempt (process group: TERM, KILL after the grace).
    pub cancel: CancellationToken,
    /// Stops it at once (KILL): the lease may pass to another node.
    pub kill: CancellationToken,
    cause: Mutex<Option<StopCause>>,
    /// The attempt has begun (a run claimed ahead waits for its due time until then).
    started: AtomicBool,
    /// When the attempt must have been stopped unless a renewal holds.
    stop_at: Mutex<StopAt>,
}

impl Lease {
    /// A lease claimed by a request sent at `sent`.
    pub(super) fn new(run_id: RunId, token: String, stop_at: StopAt) -> Self {
        Self {
            run_id,
            token,
            cancel: CancellationToken::new(),
            kill: CancellationToken::new(),
            cause: Mutex::new(None),
            started: AtomicBool::new(false),
            stop_at: Mutex::new(stop_at),
        }
    }

    /// Stops the attempt; the first cause is the one kept, except that a lost lease always
    /// wins over a shutdown (the run is, or may soon be, someone else's: its result is dropped)
    /// and always kills at once, whatever stopped it before (a task that ignores the SIGTERM
    /// of a shutdown must not outlive the lease).
    pub(super) fn stop(&self, cause: StopCause) {
        {
            let mut slot = self.cause.lock().unwrap_or_else(|p| p.into_inner());
            match *slot {
                Some(StopCause::Shutdown) if cause.lost_lease() => *slot = Some(cause),
                Some(_) => {}
                None => *slot = Some(cause),
            }
        }
        if cause.lost_lease() {
            self.kill.cancel();
        }
        self.cancel.cancel();
    }

    pub(super) fn cause(&self) -> Option<StopCause> {
        *self.cause.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the attempt as begun at `now`. False when it must not begin: it was stopped, or
    /// its lease is no longer safe (then it is stopped now).
    pub(super) fn begin(&self, now: Timestamp) -> bool {
        if self.stop_at().passed(now) {
            self.stop(StopCause::LeaseExpired);
        }
        // Under the cause lock, so that `stop_unstarted` either sees the attempt begun or has
        // cancelled it before it begins: never both.
        let _cause = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        self.started.store(true, Ordering::SeqCst);
        !self.cancel.is_cancelled()
    }

    /// Stops the attempt if it has not begun (it waits for its due time); an attempt that has
    /// begun is left to run.
    pub(super) fn stop_unstarted(&self, cause: StopCause) {
        let mut slot = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        if self.started.load(Ordering::SeqCst) {
            return;
        }
        slot.get_or_insert(cause);
        // Still under the lock: `begin` sees the cancel.
        self.cancel.cancel();
    }

    fn stop_at(&self) -> StopAt {
        *self.stop_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn renewed(&self, stop_at: StopAt) {
        let mut at = self.stop_at.lock().unwrap_or_else(|p| p.into_inner());
        *at = at.latest(stop_at);
    }
}

/// The leases of one worker.
pub(super) struct Leases {
    pub timing: LeaseTiming,
    held: Mutex<HashMap<RunId, Arc<Lease>>>,
}

impl Leases {
    pub(super) fn new(timing: LeaseTiming) -> Self {
        Self {
            timing,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Arc<Lease>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(&self, lease: Arc<Lease>) {
        self.held().insert(lease.run_id, lease);
    }

    /// Forgets `lease`, unless the run is held under a newer lease by now (the run was
    /// requeued and claimed again before this attempt's task got here).
    pub(super) fn remove(&self, lease: &Lease) {
        let mut held = self.held();
        if held
            .get(&lease.run_id)
            .is_some_and(|l| l.token == lease.token)
        {
            held.remove(&lease.run_id);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.held().len()
    }

    pub(super) fn all(&self) -> Vec<Arc<Lease>> {
        self.held().values().cloned().collect()
    }

    /// Renews every lease held; stops attempts that were cancelled or whose lease is gone.
    pub(super) async fn heartbeat_once(&self, ctx: &NodeContext) -> Result<(), StoreError> {
        // The leases as sent: results are matched to them, not to whatever holds the run by
        // the time they come back.
        let sent_leases: Vec<Arc<Lease>> = self.all();
        if sent_leases.is_empty() {
            return Ok(());
        }
        let leases: Vec<(RunId, String)> = sent_leases
            .iter()
            .map(|l| (l.run_id, l.token.clone()))
            .collect();
        // The store dates the renewal no earlier than this.
        let (sent, sent_by) = (ctx.clock.now(), Instant::now());
        let results = ctx
            .store
            .run_heartbeat(RunHeartbeatParams {
                leases,
                lease: self.timing.lease(),
                now: ctx.clock.store_now(),
            })
            .await?;
        let stop_at = StopAt::after(&self.timing, sent, sent_by);
        // Stores report each lease in the order given.
        for (lease, r) in sent_leases.iter().zip(results) {
            if r.run_id != lease.run_id {
                continue;
            }
            if !r.held {
                tracing::warn!(run_id = r.run_id, "lease lost; stopping the attempt");
                lease.stop(StopCause::LeaseLost);
            } else {
                lease.renewed(stop_at);
                if r.cancel_requested {
                    lease.stop(StopCause::Cancelled);
                }
            }
        }
        Ok(())
    }

    /// Stops the attempts whose runs were asked to stop (see [`CANCEL_POLL`]).
    pub(super) async fn poll_cancels(&self, ctx: &NodeContext) -> Result<(), StoreError> {
        let held: Vec<Arc<Lease>> = self
            .held()
            .values()
            .filter(|l| !l.cancel.is_cancelled())
            .cloned()
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        let ids: Vec<RunId> = held.iter().map(|l| l.run_id).collect();
        let asked = tokio::time::timeout(CANCEL_POLL, ctx.store.run_cancel_requested(&ids))
            .await
            .map_err(|_| StoreError::Unavailable("timed out".into()))??;
        for lease in held
            .iter()
            .filter(|l| asked.binary_search(&l.run_id).is_ok())
        {
            lease.stop(StopCause::Cancelled);
        }
        Ok(())
    }

    /// Stops every attempt whose lease was not renewed in time. Returns the earliest point a
    /// lease still held must be renewed by.
    pub(super) fn expire_once(&self, now: Timestamp) -> Option<StopAt> {
        let mut earliest: Option<StopAt> = None;
        for lease in self.held().values() {
            if lease.cancel.is_cancelled() && lease.cause().is_some_and(StopCause::lost_lease) {
                continue;
            }
            let at = lease.stop_at();
            if at.passed(now) {
                tracing::error!(
                    run_id = lease.run_id,
                    "lease not renewed in time (store unreachable?): killing the attempt"
                );
                lease.stop(StopCause::LeaseExpired);
            } else {
                earliest = Some(earliest.map_or(at, |e| e.earliest(at)));
            }
        }
        earliest
    }
}

/// Heartbeats and expiry until `stop`.
pub(super) async fn keep(leases: Arc<Leases>, ctx: NodeContext, stop: CancellationToken) {
    let beat = leases.timing.heartbeat().unsigned_abs();
    // A renewal holds from when it was sent, so it is worth waiting for until the point it
    // would renew to has passed; cut off at the beat, a store that answers every renewal in
    // more than a third of the lease (but in time) would have every attempt killed.
    let worth = (leases.timing.lease() - leases.timing.margin()).unsigned_abs();
    let heartbeats = async {
        let mut tick = tokio::time::interval(beat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Renewals run beside the beat: one that hangs (a connection dropped without a word)
        // does not hold up the next, which goes out at the next beat on another connection.
        // At most `RENEWALS_IN_FLIGHT`: a new one replaces the oldest, which can only give a
        // point earlier than the new one's (each holds from when it was sent).
        let mut renewals = tokio::task::JoinSet::new();
        let mut oldest_first: std::collections::VecDeque<tokio::task::AbortHandle> =
            Default::default();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                Some(done) = renewals.join_next_with_id(), if !renewals.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    oldest_first.retain(|h| h.id() != id);
                    continue;
                }
                // A cancel or `overlap: replace` on this node: act now, not at the next beat.
                _ = ctx.heartbeat_wake.notified() => {}
                _ = tick.tick() => {}
            }
            if oldest_first.len() >= RENEWALS_IN_FLIGHT
                && let Some(oldest) = oldest_first.pop_front()
            {
                tracing::warn!(
                    "a lease renewal still waiting for the store is given up for a new one"
                );
                oldest.abort();
            }
            let (leases, ctx) = (leases.clone(), ctx.clone());
            let handle = renewals.spawn(async move {
                match tokio::time::timeout(worth, leases.heartbeat_once(&ctx)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "heartbeat failed"),
                    Err(_) => tracing::error!(timeout = ?worth, "heartbeat timed out"),
                }
            });
            oldest_first.push_back(handle);
        }
    };
    let expiry = async {
        loop {
            let now = ctx.clock.now();
            // With nothing held, a lease claimed meanwhile cannot need stopping before the
            // next look: it has almost its whole lease ahead.
            let look = leases.timing.heartbeat();
            let next = leases.expire_once(now).unwrap_or_else(|| StopAt {
                at: now.checked_add(look).unwrap_or(Timestamp::MAX),
                by: Instant::now() + look.unsigned_abs(),
            });
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = ctx.clock.sleep_until(next.at) => {}
                _ = tokio::time::sleep_until(next.by) => {}
            }
        }
    };
    // The fallback for a cancel whose notification this node missed (a change feed that is
    // down or silently cut off): the runs it holds are asked about every second, a read.
    let cancels = async {
        let mut tick = tokio::time::interval(CANCEL_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = leases.poll_cancels(&ctx).await {
                tracing::debug!(error = %e, "asking for cancel requests failed");
            }
        }
    };
    tokio::join!(heartbeats, expiry, cancels);
}

/// Lease renewals waiting for the store at once, at most (each waits up to `lease − margin`,
/// a little over two beats).
const RENEWALS_IN_FLIGHT: usize = 3;

/// How often a node asks whether the runs it holds were asked to stop.
const CANCEL_POLL: Duration = Duration::from_secs(1);
