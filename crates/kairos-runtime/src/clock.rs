//! Time enters Kairos only through a [`Clock`], so that scheduling logic runs under a manual
//! clock in tests and never sleeps on the real one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;

/// A source of the current instant and a way to wait for a later one.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// The `now` passed to store calls: `None` when the store's own clock should rule.
    fn store_now(&self) -> Option<Timestamp>;
    /// Returns at or after `deadline`, or earlier if the caller races it against other events.
    async fn sleep_until(&self, deadline: Timestamp);
    /// Whether this is the process's wall clock, whose instants every user of it shares (a
    /// manual clock is a timeline of its own).
    fn is_wall(&self) -> bool {
        false
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// Longest single sleep, so that a wall-clock jump (NTP, suspend) is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The last stretch of a sleep that the precise timer takes over from tokio's (see
/// [`precise`]).
const PRECISE_WINDOW: SignedDuration = SignedDuration::from_millis(4);

#[async_trait::async_trait]
impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one production read of the wall clock"
    )]
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn store_now(&self) -> Option<Timestamp> {
        None
    }

    fn is_wall(&self) -> bool {
        true
    }

    /// tokio's timer has a resolution of 1 ms and rounds up, so a sleep on it ends up to a
    /// millisecond (and a wake-up) late. Sleeps wait on it until [`PRECISE_WINDOW`] before the
    /// deadline, and on the precise timer for the rest: runs start within tens of microseconds
    /// of their due time instead of about a millisecond after it.
    async fn sleep_until(&self, deadline: Timestamp) {
        loop {
            let left = deadline.duration_since(self.now());
            if left <= SignedDuration::ZERO {
                return;
            }
            let timer = precise::Timer::get();
            if left <= PRECISE_WINDOW
                && let Some(timer) = timer
            {
                timer.at(deadline).cancelled().await;
                continue;
            }
            // Without the timer thread, tokio's timer takes the whole sleep.
            let coarse = match timer {
                Some(_) => left.checked_sub(PRECISE_WINDOW).unwrap_or(left),
                None => left,
            };
            let coarse = Duration::try_from(coarse)
                .unwrap_or(MAX_SLEEP)
                .clamp(Duration::from_millis(1), MAX_SLEEP);
            tokio::time::sleep(coarse).await;
        }
    }
}

/// A timer thread that wakes sleepers at their wall-clock deadline with the precision of the
/// operating system's timers. Sleepers with the same deadline (runs due in the same instant)
/// share one entry and are woken together. It serves every runtime in the process (wakers are
/// runtime-agnostic) and sleeps without a deadline while nobody waits.
mod precise {
    use std::collections::BTreeMap;
    use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
    use std::time::Duration;

    use jiff::Timestamp;
    use tokio_util::sync::CancellationToken;

    /// Longest wait without looking at the wall clock again (it may be stepped).
    const MAX_WAIT: Duration = Duration::from_millis(50);

    pub(super) struct Timer {
        due: Mutex<BTreeMap<Timestamp, CancellationToken>>,
        changed: Condvar,
    }

    impl Timer {
        /// The process's timer, started on first use; `None` if its thread cannot be started
        /// (callers then sleep on tokio's timer).
        pub(super) fn get() -> Option<&'static Timer> {
            static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
            *TIMER.get_or_init(|| {
                let timer: &'static Timer = Box::leak(Box::new(Timer {
                    due: Mutex::default(),
                    changed: Condvar::new(),
                }));
                std::thread::Builder::new()
                    .name("kairos-timer".into())
                    .spawn(move || timer.run())
                    .map_err(|e| tracing::warn!(error = %e, "cannot start the timer thread"))
                    .ok()
                    .map(|_| timer)
            })
        }

        /// A token cancelled once the wall clock has reached `deadline`.
        pub(super) fn at(&self, deadline: Timestamp) -> CancellationToken {
            let mut due = self.lock();
            let earliest = due.keys().next().is_none_or(|first| deadline < *first);
            let token = due.entry(deadline).or_default().clone();
            drop(due);
            if earliest {
                self.changed.notify_one();
            }
            token
        }

        fn lock(&self) -> MutexGuard<'_, BTreeMap<Timestamp, CancellationToken>> {
            self.due.lock().unwrap_or_else(|p| p.into_inner())
        }

        #[allow(
            clippy::disallowed_methods,
            reason = "the timer thread measures the wall clock it wakes sleepers by"
        )]
        fn run(&self) {
            let mut expired = Vec::new();
            let mut due = self.lock();
            loop {
                let now = Timestamp::now();
                while let Some(entry) = due.first_entry() {
                    if *entry.key() > now {
                        break;
                    }
                    expired.push(entry.remove());
                }
                if !expired.is_empty() {
                    drop(due);
                    for token in expired.drain(..) {
                        token.cancel();
                    }
                    due = self.lock();
                    continue;
                }
                due = match due.keys().next() {
                    None => self.changed.wait(due).unwrap_or_else(|p| p.into_inner()),
                    Some(first) => {
                        let wait = Duration::try_from(first.duration_since(now))
                            .unwrap_or(Duration::ZERO)
                            .min(MAX_WAIT);
                        self.changed
                            .wait_timeout(due, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
            }
        }
    }
}

/// The node's clock set to the store's: `inner`'s instants plus an offset measured against the
/// store's clock ([`kairos_store::Store::clock_now`]). A cluster's store dates what it stores
/// by its own clock; with their clocks set to it, its nodes also agree on when a job is due
/// (the leader's scheduler) and when a run claimed ahead begins (each worker), whatever their
/// own clocks say. Without this, a node whose clock is `d` behind fires and starts runs `d`
/// late, and a new leader whose clock is ahead of the old one's takes due times for missed
/// (which `catchup: latest` skips).
///
/// A reading puts the store's clock at the middle of its statement's round trip; one whose
/// round trip took longer than [`ALIGN_MAX_ROUND_TRIP`] is not precise enough and is dropped,
/// and a reading within its own error (half its round trip, plus a millisecond) of the offset
/// in use changes nothing, so that the clocks of a synchronized cluster are left alone (offset
/// zero) instead of jittering with every reading. [`AlignedClock::align`] sets the offset in
/// one step: for the start, before the node's services run. [`AlignedClock::keep_aligned`]
/// then reads again every [`ALIGN_EVERY`] and moves the offset at most [`ALIGN_MAX_STEP`] per
/// reading: everything dated on this clock while the node runs (a lease's give-up instant, a
/// sleep until a run's due time) moves by no more than that at once. Leases are also measured
/// on the monotonic clock, which no offset moves.
#[derive(Debug, Default)]
pub struct AlignedClock<C = SystemClock> {
    inner: C,
    /// The store's clock minus `inner`'s, in microseconds.
    offset_us: std::sync::atomic::AtomicI64,
}

/// The longest round trip whose reading of the store's clock is kept.
pub const ALIGN_MAX_ROUND_TRIP: Duration = Duration::from_millis(100);

/// How often [`AlignedClock::keep_aligned`] reads the store's clock.
pub const ALIGN_EVERY: Duration = Duration::from_secs(10);

/// The most [`AlignedClock::keep_aligned`] moves the offset per reading.
pub const ALIGN_MAX_STEP: SignedDuration = SignedDuration::from_millis(50);

/// How many readings in a row may fail or be dropped before the node warns that its clock is
/// not set to the store's.
const ALIGN_WARN_AFTER: u32 = 6;

/// The offset to use after a reading that puts the store's clock `measured` ahead of the
/// node's, with `round_trip`, while `current` is in use: `current` if the reading is within its
/// own error of it, else `measured`, at most `max_step` away from `current` (`None`: any step).
pub fn next_offset(
    current: SignedDuration,
    measured: SignedDuration,
    round_trip: Duration,
    max_step: Option<SignedDuration>,
) -> SignedDuration {
    let error = SignedDuration::try_from(round_trip / 2)
        .unwrap_or(SignedDuration::MAX)
        .saturating_add(SignedDuration::from_millis(1));
    let change = measured.saturating_sub(current);
    if change.abs() <= error {
        return current;
    }
    let change = match max_step {
        Some(step) => change.clamp(-step.abs(), step.abs()),
        None => change,
    };
    current.saturating_add(change)
}

/// What one reading of the store's clock came to.
enum Reading {
    /// Nothing to read: the store's clock is the node's.
    NoClock,
    /// Too slow to tell.
    Dropped,
    /// The offset in use after it.
    Set(SignedDuration),
}

impl<C: Clock> AlignedClock<C> {
    /// `inner`, not yet aligned (offset zero).
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            offset_us: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// The store's clock minus the node's, as in use.
    pub fn offset(&self) -> SignedDuration {
        SignedDuration::from_micros(self.offset_us.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn set_offset(&self, offset: SignedDuration) {
        self.offset_us.store(
            i64::try_from(offset.as_micros()).unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Reads the store's clock and sets the offset to it in one step (see the type's doc).
    /// Returns the offset in use after the reading; `None` when there was nothing to read (the
    /// store's clock is the node's, or `inner` hands the store its instants) or the reading was
    /// dropped (too slow to tell).
    pub async fn align(
        &self,
        store: &dyn kairos_store::Store,
    ) -> kairos_store::StoreResult<Option<SignedDuration>> {
        Ok(match self.align_by(store, None).await? {
            Reading::Set(offset) => Some(offset),
            Reading::NoClock | Reading::Dropped => None,
        })
    }

    async fn align_by(
        &self,
        store: &dyn kairos_store::Store,
        max_step: Option<SignedDuration>,
    ) -> kairos_store::StoreResult<Reading> {
        if self.inner.store_now().is_some() {
            return Ok(Reading::NoClock);
        }
        let Some(reading) = store.clock_now().await? else {
            return Ok(Reading::NoClock);
        };
        let received = self.inner.now();
        if reading.round_trip > ALIGN_MAX_ROUND_TRIP {
            tracing::debug!(
                round_trip = ?reading.round_trip,
                "the store's clock answered too slowly to align with"
            );
            return Ok(Reading::Dropped);
        }
        // The reading was taken about half its round trip before it arrived.
        let half = SignedDuration::try_from(reading.round_trip / 2).unwrap_or(SignedDuration::ZERO);
        let ours = received.checked_sub(half).unwrap_or(received);
        let measured = reading.at.duration_since(ours);
        let before = self.offset();
        let offset = next_offset(before, measured, reading.round_trip, max_step);
        self.set_offset(offset);
        if (offset - before).abs() > SignedDuration::from_millis(100)
            || (measured - offset).abs() > SignedDuration::from_secs(1)
        {
            tracing::info!(
                offset_ms = offset.as_millis(),
                measured_ms = measured.as_millis(),
                "this node's clock is set to the store's"
            );
        }
        Ok(Reading::Set(offset))
    }

    /// Reads the store's clock every [`ALIGN_EVERY`] until `stop`, moving the offset at most
    /// [`ALIGN_MAX_STEP`] each time; warns when readings keep failing.
    pub async fn keep_aligned(
        &self,
        store: std::sync::Arc<dyn kairos_store::Store>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut failed = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(ALIGN_EVERY) => {}
            }
            match self.align_by(&*store, Some(ALIGN_MAX_STEP)).await {
                Ok(Reading::Set(_)) => failed = 0,
                Ok(Reading::NoClock) => return,
                Ok(Reading::Dropped) => failed += 1,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the store's clock");
                    failed += 1;
                }
            }
            if failed == ALIGN_WARN_AFTER {
                tracing::warn!(
                    offset_ms = self.offset().as_millis(),
                    "this node's clock has not been checked against the store's for a minute \
                     (the store is slow or unreachable): due times follow the node's clock \
                     with the last offset measured"
                );
            }
        }
    }
}

#[async_trait::async_trait]
impl<C: Clock> Clock for AlignedClock<C> {
    fn now(&self) -> Timestamp {
        let now = self.inner.now();
        now.checked_add(self.offset()).unwrap_or(now)
    }

    fn store_now(&self) -> Option<Timestamp> {
        self.inner.store_now()
    }

    /// Sleeps on `inner` until its instant for `deadline` (and on, should the offset have
    /// shrunk meanwhile).
    async fn sleep_until(&self, deadline: Timestamp) {
        while self.now() < deadline {
            let theirs = deadline.checked_sub(self.offset()).unwrap_or(deadline);
            self.inner.sleep_until(theirs).await;
        }
    }

    fn is_wall(&self) -> bool {
        self.inner.is_wall()
    }
}

/// A clock that moves only when told to. Sleepers wake when an advance passes their deadline.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<(Mutex<Timestamp>, Notify)>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            inner: Arc::new((Mutex::new(start), Notify::new())),
        }
    }

    pub fn set(&self, t: Timestamp) {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
        self.inner.1.notify_waiters();
    }

    pub fn advance(&self, d: SignedDuration) {
        let now = self.now();
        self.set(now.checked_add(d).unwrap_or(now));
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store_now(&self) -> Option<Timestamp> {
        Some(self.now())
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        loop {
            let notified = self.inner.1.notified();
            if self.now() >= deadline {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading within its own error of the offset in use changes nothing (a synchronized
    /// cluster stays at zero); beyond it, the offset follows, by at most the step asked.
    #[test]
    fn the_offset_moves_only_beyond_a_readings_error_and_by_bounded_steps() {
        let ms = SignedDuration::from_millis;
        let rt = Duration::from_millis(4);
        // Error: half the round trip (2 ms) plus 1 ms.
        assert_eq!(next_offset(ms(0), ms(3), rt, None), ms(0));
        assert_eq!(next_offset(ms(0), ms(-3), rt, None), ms(0));
        assert_eq!(next_offset(ms(0), ms(4), rt, None), ms(4));
        assert_eq!(next_offset(ms(10), ms(12), rt, None), ms(10));
        assert_eq!(next_offset(ms(0), ms(3_000), rt, None), ms(3_000));
        assert_eq!(next_offset(ms(0), ms(3_000), rt, Some(ms(50))), ms(50));
        assert_eq!(next_offset(ms(3_000), ms(0), rt, Some(ms(50))), ms(2_950));
        assert_eq!(next_offset(ms(0), ms(20), rt, Some(ms(50))), ms(20));
        // A slow reading has a wide error.
        assert_eq!(
            next_offset(ms(0), ms(40), Duration::from_millis(90), None),
            ms(0)
        );
    }

    /// The precise timer wakes every sleeper, at or after its deadline, including many that
    /// share one (no assertion on how soon: that is a benchmark's business).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn system_clock_sleeps_end_at_or_after_their_deadlines() {
        let clock = SystemClock;
        let start = clock.now();
        let mut sleepers = tokio::task::JoinSet::new();
        for i in 0..200_i64 {
            // Ten distinct deadlines, 20 sleepers each; some start inside the precise window.
            let deadline = start + SignedDuration::from_millis(2 + (i % 10) * 3);
            sleepers.spawn(async move {
                clock.sleep_until(deadline).await;
                (deadline, clock.now())
            });
        }
        while let Some(done) = sleepers.join_next().await {
            let (deadline, woke) = done.unwrap();
            assert!(woke >= deadline, "woke at {woke}, before {deadline}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn manual_clock_wakes_sleepers_on_advance() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let c = clock.clone();
        let sleeper = tokio::spawn(async move {
            c.sleep_until("2026-01-01T00:01:00Z".parse().unwrap()).await;
        });
        tokio::task::yield_now().await;
        clock.advance(SignedDuration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(SignedDuration::from_secs(30));
        sleeper.await.unwrap();
    }
}
