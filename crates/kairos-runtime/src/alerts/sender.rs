//! The sender: claims due deliveries and sends each to its channel, on the leader.
//!
//! # Model
//!
//! Each channel has [`MAX_SENDING_PER_CHANNEL`] slots, and the sender [`MAX_SENDING`] in all. A
//! pass claims, for each channel configured on this node in turn, at most as many due
//! deliveries of that channel as it has free slots (and the sender has): the slots are taken
//! before the claim, with a lease ([`Sender::lease`]). Each delivery claimed goes to a task of
//! its own, which makes one attempt at once ([`channels::send`]) and records how it ended with
//! `alert_finish`, fenced by the claim's lease token: delivered, a retry after
//! [`channels::backoff`], or failed. A channel whose claim filled its free slots may have more
//! due: it is claimed again at once while it has room, and the loop claims again as soon as a
//! slot frees up. The loop itself only claims and waits, so a channel that hangs holds up
//! nothing but its own deliveries, and scheduling never waits for alerts (the sender is a
//! service of its own).
//!
//! Deliveries to a channel this node does not configure are not claimed: they wait for a leader
//! that has it (during a rolling change of the configuration), and stay pending if none has.
//!
//! # Invariants
//!
//! - **What is claimed is attempted at once, and only attempts are charged.** A claim counts
//!   an attempt (`attempts`); since a claim never takes more than the free slots, nothing
//!   claimed waits for one. A delivery claimed but not attempted after all (the claim took so
//!   long that the attempt might outlast the lease; the sender stopped) is handed back with
//!   [`AlertOutcome::Release`], which takes the attempt back, so a delivery gets its
//!   [`channels::MAX_ATTEMPTS`] attempts. An attempt cut short by a stop is handed back the
//!   same way (it did not fail: the sender stopped). So `attempts` counts the attempts made,
//!   and one in progress (or cut short by a crash, which the lease ends).
//! - **Whatever happens, the store says where a delivery is.** An attempt's end is written with
//!   the lease token; a claim that lost its delivery (the lease expired and another node took
//!   it) writes nothing. A delivery whose sender died stays `sending` until its lease expires,
//!   then is claimed again: deliveries are at least once, and receivers deduplicate by
//!   `Kairos-Delivery`.
//! - **Stopping interrupts, and does not wait for the store.** When the loop stops (leadership
//!   ends, often because the store cannot be reached), the attempts in progress are cancelled
//!   (HTTP requests dropped, processes signalled) and their deliveries handed back, due at once,
//!   for the next leader, each with writes that get [`STOP_WRITE_LIMIT`] once the stop came;
//!   what is not written by then is left to the lease. [`Sender::run`] returns within
//!   [`STOP_LIMIT`] of the stop.
//!
//! # Failure handling
//!
//! A store error in a pass is logged and the pass retried after [`STORE_PAUSE`]; a failed
//! `alert_finish` is retried a few times (not after a stop), then left to the lease. Deliveries
//! ended longer than [`AlertsConfig::retention`] ago are deleted about once an hour.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kairos_exec::Executor;
use kairos_store::{
    AlertClaimParams, AlertDelivery, AlertFinishParams, AlertOutcome, AlertPruneParams, StoreError,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::channels::{self, KILL_GRACE, SendResult};
use super::{AlertsConfig, Channel, DEFAULT_CHANNEL_TIMEOUT, DEFAULT_RETENTION};
use crate::context::NodeContext;

/// Most attempts in progress at once.
pub const MAX_SENDING: usize = 16;
/// Most attempts in progress at once to one channel.
pub const MAX_SENDING_PER_CHANNEL: usize = 4;
/// Shortest lease of a claim.
const MIN_LEASE: Duration = Duration::from_secs(120);
/// Lease left over after an attempt's longest time, for writing its end.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Longest wait between two passes without a wake-up (deliveries queued or retried by other
/// nodes, leases expired).
const POLL: Duration = Duration::from_secs(1);
/// Pause after a store error.
pub const STORE_PAUSE: Duration = Duration::from_secs(5);
/// Writes of an attempt's end tried before it is left to the lease.
const FINISH_TRIES: u32 = 3;
/// Longest a write of a delivery's end may still take once the sender stopped; then it is left
/// to the lease (a stop often means the store cannot be reached).
pub const STOP_WRITE_LIMIT: Duration = Duration::from_secs(2);
/// Longest [`Sender::run`] waits for its tasks once stopped: an attempt's kill grace, then one
/// write, with a margin. A task still running then is aborted (its delivery is left to the
/// lease).
pub const STOP_LIMIT: Duration =
    Duration::from_secs(KILL_GRACE.as_secs() + STOP_WRITE_LIMIT.as_secs() + 1);
/// Time between two prunes of ended deliveries.
const PRUNE_EVERY: SignedDuration = SignedDuration::from_hours(1);
/// Time an attempt may take beyond its channel's timeout and kill grace (reading a secret file,
/// writing the command's document) before the sender drops it.
const ATTEMPT_SLACK: Duration = Duration::from_secs(5);

/// Sends alert deliveries; one per leader.
pub struct Sender {
    shared: Arc<Shared>,
    waker: Arc<Notify>,
    last_prune: Mutex<Option<Timestamp>>,
    /// The channel a pass starts with, one further at each pass: when the sender's slots run
    /// short, no channel always comes last.
    first: AtomicUsize,
}

/// What the sender's tasks share.
struct Shared {
    ctx: NodeContext,
    config: Arc<AlertsConfig>,
    executor: Arc<dyn Executor>,
    lease: Duration,
    /// The sender's slots.
    sending: Arc<Semaphore>,
    /// Each configured channel's slots, in the order of `config.channels`.
    channel_slots: Vec<Arc<Semaphore>>,
    /// The earliest retry this sender scheduled and has not woken for yet.
    next_retry: Mutex<Option<Timestamp>>,
}

/// Slots taken for a claim: one of the channel's and one of the sender's per delivery.
struct Slots {
    channel: OwnedSemaphorePermit,
    sender: OwnedSemaphorePermit,
}

impl Slots {
    fn count(&self) -> usize {
        self.channel.num_permits().min(self.sender.num_permits())
    }

    /// One delivery's slots, taken from these.
    fn split_one(&mut self) -> Option<Slots> {
        Some(Slots {
            channel: self.channel.split(1)?,
            sender: self.sender.split(1)?,
        })
    }
}

/// What a claim pass did.
#[derive(Debug, Default)]
struct Pass {
    claimed: usize,
    /// A channel ran out of free slots while more of its deliveries may be due: claim again
    /// when a slot frees up.
    starved: bool,
}

/// How a claimed delivery's turn ended.
enum Ending {
    /// An attempt was made.
    Attempted(SendResult),
    /// Handed back unsent (or cut short by a stop), due again at `at`, the attempt not charged.
    Released { at: Timestamp, why: &'static str },
}

impl Sender {
    pub fn new(ctx: NodeContext, config: Arc<AlertsConfig>, executor: Arc<dyn Executor>) -> Self {
        let lease = lease_for(&config.channels);
        let channel_slots = config
            .channels
            .iter()
            .map(|_| Arc::new(Semaphore::new(MAX_SENDING_PER_CHANNEL)))
            .collect();
        Self {
            shared: Arc::new(Shared {
                ctx,
                config,
                executor,
                lease,
                sending: Arc::new(Semaphore::new(MAX_SENDING)),
                channel_slots,
                next_retry: Mutex::new(None),
            }),
            waker: Arc::new(Notify::new()),
            last_prune: Mutex::new(None),
            first: AtomicUsize::new(0),
        }
    }

    /// Wakes the sender: deliveries were queued.
    pub fn waker(&self) -> Arc<Notify> {
        self.waker.clone()
    }

    /// The lease of a claim: 3 × the longest attempt (a channel's timeout, the kill grace and a
    /// slack of 5 s) + 30 s, at least 2 min. An attempt starts as soon as it is claimed; the
    /// rest leaves room for a store slow to answer the claim or to take the attempt's end.
    pub fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// One pass: claims what is due and sends it, claiming again as slots free up until nothing
    /// more is due, and waits for every attempt to end. How many deliveries it claimed.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let mut tasks = JoinSet::new();
        let cancel = CancellationToken::new();
        let mut claimed = 0;
        let result = loop {
            match self.claim(&mut tasks, &cancel).await {
                Ok(pass) => {
                    claimed += pass.claimed;
                    if !pass.starved {
                        break Ok(claimed);
                    }
                    // A channel had no free slot left: claim again once one frees up.
                    match tasks.join_next().await {
                        Some(done) => reaped(done),
                        None => break Ok(claimed),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        while let Some(done) = tasks.join_next().await {
            reaped(done);
        }
        result
    }

    /// Deletes deliveries that ended more than [`AlertsConfig::retention`] ago; how many.
    pub async fn prune_once(&self) -> Result<u64, StoreError> {
        let retention = match self.shared.config.retention {
            // Unset (a config made with `Default`): keeping nothing would empty the history.
            Duration::ZERO => DEFAULT_RETENTION,
            retention => retention,
        };
        let now = self.shared.ctx.clock.now();
        let before = now.checked_sub(signed(retention)).unwrap_or(Timestamp::MIN);
        let pruned = self
            .shared
            .ctx
            .store
            .alert_prune(AlertPruneParams { before })
            .await?;
        if pruned > 0 {
            tracing::info!(pruned, %before, "pruned ended alert deliveries");
        }
        Ok(pruned)
    }

    /// Runs until `stop`: a pass whenever woken ([`Sender::waker`]), a retry it scheduled is
    /// due, a slot frees up while a channel had none left, or every second; a prune about once
    /// an hour. On `stop`, attempts in progress are cancelled and their deliveries handed back
    /// (see the module's docs); returns within [`STOP_LIMIT`], whatever the store does.
    pub async fn run(&self, stop: CancellationToken) {
        let clock = self.shared.ctx.clock.clone();
        let mut tasks = JoinSet::new();
        while !stop.is_cancelled() {
            // The store may not answer (leadership is often lost for that reason): nothing
            // here holds up the stop. A claim given up may have claimed deliveries, which are
            // then left to their lease.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = self.prune_if_due() => {}
            }
            let claimed = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                claimed = self.claim(&mut tasks, &stop) => claimed,
            };
            let (pause, starved) = match claimed {
                Ok(pass) => (POLL, pass.starved),
                Err(e) => {
                    tracing::error!(error = %e, "claiming alert deliveries failed; retrying");
                    (STORE_PAUSE, false)
                }
            };
            let now = clock.now();
            let retry = self.shared.take_next_retry(now, pause);
            let poll = tokio::time::sleep(pause);
            let retry_due = async {
                match retry {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(poll, retry_due);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = self.waker.notified() => break,
                    _ = &mut poll => break,
                    _ = &mut retry_due => break,
                    Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                        reaped(done);
                        // A slot freed up: claim again if a channel had none left.
                        if starved {
                            break;
                        }
                    }
                }
            }
        }
        // `stop` cancelled the attempts in progress: they hand their deliveries back, each
        // with writes bounded by `STOP_WRITE_LIMIT`. A task that does not end in time (a
        // secret file's read stuck on a hung file system) is aborted.
        let drained = async {
            while let Some(done) = tasks.join_next().await {
                reaped(done);
            }
        };
        if tokio::time::timeout(STOP_LIMIT, drained).await.is_err() {
            tracing::error!(
                left = tasks.len(),
                "alert deliveries did not end in time after the sender stopped; they are claimed again once their leases expire"
            );
            tasks.shutdown().await;
        }
    }

    async fn prune_if_due(&self) {
        let now = self.shared.ctx.clock.now();
        {
            let mut last = self.last_prune.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| now.duration_since(at) < PRUNE_EVERY) {
                return;
            }
            // Also after a failure: the next try is in an hour, not at every pass.
            *last = Some(now);
        }
        if let Err(e) = self.prune_once().await {
            tracing::error!(error = %e, "pruning alert deliveries failed");
        }
    }

    /// Claims, channel by channel, as many due deliveries as each has free slots for (claiming
    /// again while a claim comes back full and slots are left), and starts a task for each.
    async fn claim(
        &self,
        tasks: &mut JoinSet<()>,
        cancel: &CancellationToken,
    ) -> Result<Pass, StoreError> {
        let channels = &self.shared.config.channels;
        let mut pass = Pass::default();
        if channels.is_empty() {
            return Ok(pass);
        }
        let first = self.first.fetch_add(1, Ordering::Relaxed) % channels.len();
        for index in (first..channels.len()).chain(0..first) {
            loop {
                let Some(slots) = self.shared.free_slots(index) else {
                    pass.starved = true;
                    break;
                };
                let room = slots.count();
                let claimed = self.shared.claim_for(index, slots, tasks, cancel).await?;
                pass.claimed += claimed;
                if claimed < room {
                    break;
                }
            }
        }
        Ok(pass)
    }
}

impl Shared {
    /// The free slots of channel `index` (as many as it and the sender have), taken; `None`
    /// when there are none.
    fn free_slots(&self, index: usize) -> Option<Slots> {
        let channel = &self.channel_slots[index];
        let room = channel
            .available_permits()
            .min(self.sending.available_permits());
        let room = u32::try_from(room).ok().filter(|n| *n > 0)?;
        Some(Slots {
            channel: channel.clone().try_acquire_many_owned(room).ok()?,
            sender: self.sending.clone().try_acquire_many_owned(room).ok()?,
        })
    }

    /// Claims up to `slots.count()` due deliveries of channel `index` and starts a task for
    /// each, with one of the slots; the slots left over are freed. How many it claimed.
    async fn claim_for(
        self: &Arc<Self>,
        index: usize,
        mut slots: Slots,
        tasks: &mut JoinSet<()>,
        cancel: &CancellationToken,
    ) -> Result<usize, StoreError> {
        let channel = &self.config.channels[index];
        let limit = u32::try_from(slots.count()).unwrap_or(u32::MAX);
        let claimed_at = self.ctx.clock.now();
        let deliveries = self
            .ctx
            .store
            .alert_claim(AlertClaimParams {
                node: self.ctx.node.clone(),
                channel: Some(channel.name.clone()),
                limit,
                lease: signed(self.lease),
                now: self.ctx.clock.store_now(),
            })
            .await?;
        let claimed = deliveries.len();
        for delivery in deliveries {
            let Some(held) = slots.split_one() else {
                // A store that returned more than the limit: left to the lease.
                tracing::error!(
                    delivery = delivery.id,
                    "an alert claim returned more deliveries than asked for"
                );
                continue;
            };
            let shared = self.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                let channel = &shared.config.channels[index];
                let ending = shared.turn(channel, &delivery, claimed_at, &cancel).await;
                shared.end(&delivery, ending, &cancel).await;
                // Held until its end is written, so that a claim never takes past the limits.
                drop(held);
            });
        }
        Ok(claimed)
    }

    /// A claimed delivery's turn: one attempt, unless the lease ran short or the sender
    /// stopped.
    async fn turn(
        &self,
        channel: &Channel,
        delivery: &AlertDelivery,
        claimed_at: Timestamp,
        cancel: &CancellationToken,
    ) -> Ending {
        let now = self.ctx.clock.now();
        if cancel.is_cancelled() {
            return interrupted(now);
        }
        let waited = Duration::try_from(now.duration_since(claimed_at)).unwrap_or_default();
        if self.lease.saturating_sub(waited) < attempt_limit(channel) + LEASE_MARGIN {
            return Ending::Released {
                at: now,
                why: "its claim took so long that the attempt might outlast the lease",
            };
        }
        let attempt = channels::send(&*self.executor, channel, delivery, now, cancel);
        let result = match tokio::time::timeout(attempt_limit(channel), attempt).await {
            Ok(result) => result,
            // The executor keeps its timeouts; this is a backstop (the attempt's future is
            // dropped, which kills a command's process group).
            Err(_) => {
                SendResult::retryable(format!("timed out after {:#}", signed(channel.timeout)))
            }
        };
        if cancel.is_cancelled() && matches!(result, SendResult::Failed { .. }) {
            return interrupted(self.ctx.clock.now());
        }
        Ending::Attempted(result)
    }

    /// Records how a delivery's turn ended.
    async fn end(&self, delivery: &AlertDelivery, ending: Ending, stop: &CancellationToken) {
        let now = self.ctx.clock.now();
        let outcome = match ending {
            Ending::Attempted(result) => {
                result.into_outcome(delivery.attempts, now, rand::random::<f64>())
            }
            Ending::Released { at, why } => {
                tracing::info!(
                    delivery = delivery.id,
                    channel = %delivery.channel,
                    %at,
                    "alert delivery handed back unsent: {why}"
                );
                AlertOutcome::Release { at }
            }
        };
        log(delivery, &outcome);
        let counted = match &outcome {
            AlertOutcome::Delivered { .. } => Some("delivered"),
            AlertOutcome::Retry { .. } => Some("retry"),
            AlertOutcome::Failed { .. } => Some("failed"),
            AlertOutcome::Release { .. } => None,
        };
        if let Some(outcome) = counted {
            self.ctx.telemetry.alert_attempt(&delivery.channel, outcome);
        }
        if let AlertOutcome::Retry { at, .. } | AlertOutcome::Release { at } = &outcome {
            let mut next = self.next_retry.lock().unwrap_or_else(|p| p.into_inner());
            *next = Some(next.map_or(*at, |n| n.min(*at)));
        }
        self.finish(delivery, outcome, stop).await;
    }

    /// Writes a delivery's end, retrying a failed write a few times; once `stop` is cancelled,
    /// a write gets [`STOP_WRITE_LIMIT`] and is not retried.
    async fn finish(
        &self,
        delivery: &AlertDelivery,
        outcome: AlertOutcome,
        stop: &CancellationToken,
    ) {
        let Some(lease_token) = delivery.lease_token.clone() else {
            tracing::error!(
                delivery = delivery.id,
                "a claimed alert delivery has no lease token"
            );
            return;
        };
        let left_to_lease = "the delivery is claimed again once its lease expires";
        for attempt in 1..=FINISH_TRIES {
            let write = self.ctx.store.alert_finish(AlertFinishParams {
                id: delivery.id,
                lease_token: lease_token.clone(),
                outcome: outcome.clone(),
                now: self.ctx.clock.store_now(),
            });
            let Some(written) = until_stopped(write, stop).await else {
                tracing::warn!(
                    delivery = delivery.id,
                    "recording an alert delivery's end took too long after the sender stopped; {left_to_lease}"
                );
                return;
            };
            match written {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        delivery = delivery.id,
                        channel = %delivery.channel,
                        "alert delivery's lease was lost; its attempt is not recorded"
                    );
                    return;
                }
                Err(e) if attempt < FINISH_TRIES && !stop.is_cancelled() => {
                    tracing::warn!(delivery = delivery.id, error = %e, "recording an alert attempt failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(
                        delivery = delivery.id,
                        error = %e,
                        "recording an alert attempt failed; {left_to_lease}"
                    );
                    return;
                }
            }
        }
    }

    /// The earliest retry scheduled, if it is due before the next poll (`pause` from `now`);
    /// a later one stays for a later pass (the poll claims it anyway).
    fn take_next_retry(&self, now: Timestamp, pause: Duration) -> Option<Timestamp> {
        let mut next = self.next_retry.lock().unwrap_or_else(|p| p.into_inner());
        let at = (*next)?;
        if at <= channels::after(now, pause) {
            *next = None;
            Some(at)
        } else {
            None
        }
    }
}

/// A turn cut short by the sender's stop: handed back, due at once (`now`).
fn interrupted(now: Timestamp) -> Ending {
    Ending::Released {
        at: now,
        why: "the alert sender stopped",
    }
}

/// `fut`'s output; once `stop` is cancelled, only if it comes within [`STOP_WRITE_LIMIT`].
async fn until_stopped<F: Future>(fut: F, stop: &CancellationToken) -> Option<F::Output> {
    tokio::pin!(fut);
    tokio::select! {
        biased;
        out = &mut fut => Some(out),
        _ = stop.cancelled() => tokio::time::timeout(STOP_WRITE_LIMIT, fut).await.ok(),
    }
}

/// The longest one attempt to `channel` may take.
fn attempt_limit(channel: &Channel) -> Duration {
    channel.timeout + KILL_GRACE + ATTEMPT_SLACK
}

/// A claim's lease for these channels (see [`Sender::lease`]).
fn lease_for(channels: &[Channel]) -> Duration {
    let longest = channels
        .iter()
        .map(attempt_limit)
        .max()
        .unwrap_or(DEFAULT_CHANNEL_TIMEOUT + KILL_GRACE + ATTEMPT_SLACK);
    (longest.saturating_mul(3) + LEASE_MARGIN).max(MIN_LEASE)
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn reaped(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(
            "an alert delivery's task panicked; the delivery is claimed again once its lease expires"
        );
    }
}

fn log(delivery: &AlertDelivery, outcome: &AlertOutcome) {
    let (id, channel, alert, attempt) = (
        delivery.id,
        delivery.channel.as_str(),
        delivery.alert.as_str(),
        delivery.attempts,
    );
    match outcome {
        AlertOutcome::Delivered { status } => {
            tracing::info!(
                delivery = id,
                channel,
                alert,
                attempt,
                status,
                "alert delivered"
            );
        }
        AlertOutcome::Retry { at, error, status } => {
            tracing::warn!(delivery = id, channel, alert, attempt, status, %at, error = %error, "alert not delivered; will retry");
        }
        AlertOutcome::Failed { error, status } => {
            tracing::error!(delivery = id, channel, alert, attempt, status, error = %error, "alert delivery failed");
        }
        // Logged where it is decided, with why.
        AlertOutcome::Release { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::ChannelKind;

    fn channel(name: &str, timeout: u64) -> Channel {
        Channel {
            name: name.into(),
            kind: ChannelKind::Command {
                argv: vec!["true".into()],
            },
            timeout: Duration::from_secs(timeout),
        }
    }

    #[test]
    fn the_lease_covers_the_longest_attempt_with_room_for_a_slow_store() {
        assert_eq!(lease_for(&[]), MIN_LEASE);
        assert_eq!(lease_for(&[channel("a", 10)]), MIN_LEASE);
        // 3 × (60 + 5 + 5) + 30.
        let lease = lease_for(&[channel("a", 10), channel("b", 60)]);
        assert_eq!(lease, Duration::from_secs(240));
        assert!(lease > attempt_limit(&channel("b", 60)) * 2 + LEASE_MARGIN);
    }
}
