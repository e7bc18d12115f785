//! The sender: claims due deliveries and sends each to its channel, on the leader.
//!
//! # Model
//!
//! A pass claims up to [`CLAIM_BATCH`] due deliveries with a lease ([`Sender::lease`]) and
//! hands each to a task of its own, which waits for a free slot (at most
//! [`MAX_SENDING_PER_CHANNEL`] sends per channel and [`MAX_SENDING`] in all), makes one attempt
//! ([`channels::send`]) and records how it ended with `alert_finish`, fenced by the claim's
//! lease token: delivered, a retry after [`channels::backoff`], or failed. The loop itself
//! only claims and waits, so a channel that hangs holds up nothing but its own deliveries, and
//! scheduling never waits for alerts (the sender is a service of its own).
//!
//! # Invariants
//!
//! - **A held delivery is sent before its lease runs out.** A channel holds at most
//!   [`MAX_HELD_PER_CHANNEL`] claimed deliveries (sending or waiting for a slot) and the sender
//!   [`MAX_HELD`]; the lease covers waiting for a slot and the attempt
//!   (3 × (longest timeout + kill grace) + 30 s, at least 2 min). A delivery that waited so long
//!   that its attempt might outlast the lease is given back unsent (retried at once). A
//!   delivery claimed for a channel already holding its share is given back too, retried after
//!   one attempt's time: its claim counted an attempt, which the store cannot take back.
//! - **Whatever happens, the store says where a delivery is.** An attempt's end is written with
//!   the lease token; a claim that lost its delivery (the lease expired and another node took
//!   it) writes nothing. A delivery whose sender died stays `sending` until its lease expires,
//!   then is claimed again: deliveries are at least once, and receivers deduplicate by
//!   `Kairos-Delivery`.
//! - **Stopping interrupts, it does not lose.** When the loop stops (leadership ends), the
//!   attempts in progress are cancelled (HTTP requests dropped, processes signalled) and their
//!   deliveries given back, due at once, for the next leader.
//!
//! # Failure handling
//!
//! A store error in a pass is logged and the pass retried after [`STORE_PAUSE`]; a failed
//! `alert_finish` is retried a few times, then left to the lease. Deliveries ended longer than
//! [`AlertsConfig::retention`] ago are deleted about once an hour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kairos_exec::Executor;
use kairos_store::{
    AlertClaimParams, AlertDelivery, AlertFinishParams, AlertOutcome, AlertPruneParams, StoreError,
};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::channels::{self, KILL_GRACE, SendResult};
use super::{AlertsConfig, Channel, DEFAULT_CHANNEL_TIMEOUT, DEFAULT_RETENTION};
use crate::context::NodeContext;

/// Most deliveries one claim takes.
pub const CLAIM_BATCH: u32 = 32;
/// Most deliveries held at once (sending or waiting for a slot).
pub const MAX_HELD: usize = CLAIM_BATCH as usize;
/// Most attempts in progress at once.
pub const MAX_SENDING: usize = 16;
/// Most attempts in progress at once to one channel.
pub const MAX_SENDING_PER_CHANNEL: usize = 4;
/// Most deliveries one channel holds (sending or waiting for one of its slots): a waiting one
/// starts within one attempt's time.
pub const MAX_HELD_PER_CHANNEL: usize = 2 * MAX_SENDING_PER_CHANNEL;
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
}

/// What the sender's tasks share.
struct Shared {
    ctx: NodeContext,
    config: Arc<AlertsConfig>,
    executor: Arc<dyn Executor>,
    lease: Duration,
    sending: Semaphore,
    held: Mutex<Held>,
    /// The earliest retry this sender scheduled and has not woken for yet.
    next_retry: Mutex<Option<Timestamp>>,
}

/// Deliveries held, in all and by channel.
#[derive(Default)]
struct Held {
    total: usize,
    channels: HashMap<String, ChannelSlots>,
}

struct ChannelSlots {
    sending: Arc<Semaphore>,
    held: usize,
}

/// One held delivery: released when dropped (also when its task panics).
struct Hold {
    shared: Arc<Shared>,
    channel: String,
    sending: Arc<Semaphore>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.shared.held();
        held.total = held.total.saturating_sub(1);
        if let Some(slots) = held.channels.get_mut(&self.channel) {
            slots.held = slots.held.saturating_sub(1);
            if slots.held == 0 {
                held.channels.remove(&self.channel);
            }
        }
    }
}

/// How a held delivery's turn ended.
enum Ending {
    /// An attempt was made (or could not be: a channel not configured here).
    Attempted(SendResult),
    /// Given back unsent, due again at the time given.
    GivenBack { at: Timestamp, reason: String },
}

impl Sender {
    pub fn new(ctx: NodeContext, config: Arc<AlertsConfig>, executor: Arc<dyn Executor>) -> Self {
        let lease = lease_for(&config.channels);
        Self {
            shared: Arc::new(Shared {
                ctx,
                config,
                executor,
                lease,
                sending: Semaphore::new(MAX_SENDING),
                held: Mutex::default(),
                next_retry: Mutex::new(None),
            }),
            waker: Arc::new(Notify::new()),
            last_prune: Mutex::new(None),
        }
    }

    /// Wakes the sender: deliveries were queued.
    pub fn waker(&self) -> Arc<Notify> {
        self.waker.clone()
    }

    /// The lease of a claim: waiting for a slot (at most two attempts' time, see the module's
    /// docs) and one attempt, with a margin; at least 2 min.
    pub fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// One pass: claims what is due and sends it, waiting for every attempt to end. How many
    /// deliveries it claimed.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let mut tasks = JoinSet::new();
        let claimed = self
            .claim(&mut tasks, &CancellationToken::new())
            .await
            .map(|(n, _)| n);
        while let Some(done) = tasks.join_next().await {
            reaped(done);
        }
        claimed
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
    /// due, a slot frees up while all are held, or every second; a prune about once an hour.
    /// On `stop`, attempts in progress are cancelled and their deliveries given back.
    pub async fn run(&self, stop: CancellationToken) {
        let clock = self.shared.ctx.clock.clone();
        let mut tasks = JoinSet::new();
        loop {
            if stop.is_cancelled() {
                break;
            }
            self.prune_if_due().await;
            let (pause, more) = match self.claim(&mut tasks, &stop).await {
                Ok((_, more)) => (POLL, more),
                Err(e) => {
                    tracing::error!(error = %e, "claiming alert deliveries failed; retrying");
                    (STORE_PAUSE, false)
                }
            };
            if more {
                // A full batch: more may be due at once.
                tokio::task::yield_now().await;
                continue;
            }
            let full = self.shared.held().total >= MAX_HELD;
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
                        // A slot freed up: claim again only if none was left.
                        if full {
                            break;
                        }
                    }
                }
            }
        }
        // `stop` cancelled the attempts in progress: wait for them to give their deliveries
        // back.
        while let Some(done) = tasks.join_next().await {
            reaped(done);
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

    /// Claims as many deliveries as there is room for and starts a task for each: how many it
    /// claimed, and whether that was a full claim (more may be due).
    async fn claim(
        &self,
        tasks: &mut JoinSet<()>,
        cancel: &CancellationToken,
    ) -> Result<(usize, bool), StoreError> {
        let shared = &self.shared;
        let room = MAX_HELD.saturating_sub(shared.held().total);
        if room == 0 {
            return Ok((0, false));
        }
        let limit = u32::try_from(room).unwrap_or(CLAIM_BATCH).min(CLAIM_BATCH);
        let claimed_at = shared.ctx.clock.now();
        let deliveries = shared
            .ctx
            .store
            .alert_claim(AlertClaimParams {
                node: shared.ctx.node.clone(),
                limit,
                lease: signed(shared.lease),
                now: shared.ctx.clock.store_now(),
            })
            .await?;
        let claimed = deliveries.len();
        for delivery in deliveries {
            let shared = shared.clone();
            let cancel = cancel.clone();
            // Held now, not in the task, so that the next pass's room counts it.
            let hold = shared.hold(&delivery.channel);
            tasks.spawn(async move {
                let ending = match &hold {
                    Some(hold) => shared.turn(&delivery, hold, claimed_at, &cancel).await,
                    None => shared.busy(&delivery),
                };
                shared.end(&delivery, ending).await;
                // Held until its end is written, so that a pass does not claim past the limits.
                drop(hold);
            });
        }
        Ok((claimed, claimed == limit as usize))
    }
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a delivery for `channel`; `None` when the channel holds its share already.
    fn hold(self: &Arc<Self>, channel: &str) -> Option<Hold> {
        let mut held = self.held();
        let slots = held
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| ChannelSlots {
                sending: Arc::new(Semaphore::new(MAX_SENDING_PER_CHANNEL)),
                held: 0,
            });
        if slots.held >= MAX_HELD_PER_CHANNEL {
            return None;
        }
        slots.held += 1;
        let sending = slots.sending.clone();
        held.total += 1;
        Some(Hold {
            shared: self.clone(),
            channel: channel.to_owned(),
            sending,
        })
    }

    /// A delivery claimed while its channel held its share: given back, due once an attempt
    /// in progress may have ended.
    fn busy(&self, delivery: &AlertDelivery) -> Ending {
        let timeout = self
            .config
            .channel(&delivery.channel)
            .map_or(DEFAULT_CHANNEL_TIMEOUT, |c| c.timeout);
        let at = channels::after(self.ctx.clock.now(), timeout + KILL_GRACE);
        Ending::GivenBack {
            at,
            reason: format!(
                "not sent: channel `{}` had {MAX_HELD_PER_CHANNEL} deliveries in progress",
                delivery.channel
            ),
        }
    }

    /// A held delivery's turn: waits for a slot, then makes one attempt.
    async fn turn(
        &self,
        delivery: &AlertDelivery,
        hold: &Hold,
        claimed_at: Timestamp,
        cancel: &CancellationToken,
    ) -> Ending {
        let Some(channel) = self.config.channel(&delivery.channel) else {
            // Another leader's configuration may have it (a rolling change).
            return Ending::Attempted(SendResult::retryable(format!(
                "channel `{}` is not configured on node `{}`",
                delivery.channel, self.ctx.node
            )));
        };
        let slots = async {
            let channel_slot = hold.sending.acquire().await;
            let slot = self.sending.acquire().await;
            (channel_slot, slot)
        };
        let _slots = tokio::select! {
            biased;
            _ = cancel.cancelled() => return self.interrupted(),
            slots = slots => slots,
        };
        let now = self.ctx.clock.now();
        let waited = Duration::try_from(now.duration_since(claimed_at)).unwrap_or_default();
        if self.lease.saturating_sub(waited) < attempt_limit(channel) + LEASE_MARGIN {
            return Ending::GivenBack {
                at: now,
                reason: "not sent: no free slot before its lease ran short".to_owned(),
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
            return self.interrupted();
        }
        Ending::Attempted(result)
    }

    fn interrupted(&self) -> Ending {
        Ending::GivenBack {
            at: self.ctx.clock.now(),
            reason: "interrupted: the alert sender stopped".to_owned(),
        }
    }

    /// Records how a delivery's turn ended.
    async fn end(&self, delivery: &AlertDelivery, ending: Ending) {
        let now = self.ctx.clock.now();
        let outcome = match ending {
            Ending::Attempted(result) => {
                result.into_outcome(delivery.attempts, now, rand::random::<f64>())
            }
            Ending::GivenBack { at, reason } => AlertOutcome::Retry {
                at,
                error: reason,
                status: None,
            },
        };
        log(delivery, &outcome);
        if let AlertOutcome::Retry { at, .. } = &outcome {
            let mut next = self.next_retry.lock().unwrap_or_else(|p| p.into_inner());
            *next = Some(next.map_or(*at, |n| n.min(*at)));
        }
        self.finish(delivery, outcome).await;
    }

    async fn finish(&self, delivery: &AlertDelivery, outcome: AlertOutcome) {
        let Some(lease_token) = delivery.lease_token.clone() else {
            tracing::error!(
                delivery = delivery.id,
                "a claimed alert delivery has no lease token"
            );
            return;
        };
        for attempt in 1..=FINISH_TRIES {
            let written = self
                .ctx
                .store
                .alert_finish(AlertFinishParams {
                    id: delivery.id,
                    lease_token: lease_token.clone(),
                    outcome: outcome.clone(),
                    now: self.ctx.clock.store_now(),
                })
                .await;
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
                Err(e) if attempt < FINISH_TRIES => {
                    tracing::warn!(delivery = delivery.id, error = %e, "recording an alert attempt failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::error!(
                        delivery = delivery.id,
                        error = %e,
                        "recording an alert attempt failed; the delivery is claimed again once its lease expires"
                    );
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
    fn the_lease_covers_waiting_for_a_slot_and_the_longest_attempt() {
        assert_eq!(lease_for(&[]), MIN_LEASE);
        assert_eq!(lease_for(&[channel("a", 10)]), MIN_LEASE);
        // 3 × (60 + 5 + 5) + 30.
        let lease = lease_for(&[channel("a", 10), channel("b", 60)]);
        assert_eq!(lease, Duration::from_secs(240));
        assert!(lease > attempt_limit(&channel("b", 60)) * 2 + LEASE_MARGIN);
    }
}
