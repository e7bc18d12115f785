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
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// Longest single sleep, so that a wall-clock jump (NTP, suspend) is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(30);

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

    async fn sleep_until(&self, deadline: Timestamp) {
        loop {
            let left = deadline.duration_since(self.now());
            if left <= SignedDuration::ZERO {
                return;
            }
            let left = Duration::try_from(left).unwrap_or(MAX_SLEEP).min(MAX_SLEEP);
            tokio::time::sleep(left).await;
        }
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
