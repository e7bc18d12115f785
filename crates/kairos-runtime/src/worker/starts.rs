//! Attempts claimed ahead of their due time that have not begun, by due time: while some of
//! them are due, the node is starting them, and the completer holds its next write back.
//!
//! Runs due in the same instant (a herd: a thousand cron jobs on a whole second) all wake at
//! their due time and begin one after another on the runtime's threads, a few milliseconds for
//! the whole herd. The first ones end (a short task) while the rest are still waking, and the
//! completer would record them at once: the store's work (on PostgreSQL, encoding a statement
//! and a server process on the same cores) then competes with the starts still to come. On W2
//! with three nodes on PostgreSQL that write cost the herd's p99 about half of its lateness.
//! The cost: while a herd starts, the record of a run that ended waits up to 20 ms (its slot
//! is free already; its lease is held until it is recorded), and so does what waits for that
//! record: the next run of an `overlap: queue` job, a dependent job's run, a retry's backoff.
//! A workflow step's end is recorded at once (the completer does not hold it), for the steps
//! after it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;

/// Longest hold of a write while due attempts are starting.
pub(super) const HOLD_AT_MOST: Duration = Duration::from_millis(HOLD_MS);
/// [`HOLD_AT_MOST`] for instants.
const HOLD: SignedDuration = SignedDuration::from_millis(HOLD_MS as i64);
const HOLD_MS: u64 = 20;

#[derive(Default)]
pub(super) struct Starts {
    /// Attempts not begun, by due time.
    waiting: Mutex<BTreeMap<Timestamp, usize>>,
    /// Notified when the last due attempt has begun.
    settled: Notify,
}

impl Starts {
    /// The process's: the workers on the wall clock share it. Attempts starting anywhere in
    /// the process compete for its threads, so a node's writes wait for the herd of another
    /// node in the same process too (tests and benchmarks run several); a worker on a manual
    /// clock has a set of its own, its due times on a timeline of their own.
    pub(super) fn process() -> Arc<Self> {
        static PROCESS: std::sync::OnceLock<Arc<Starts>> = std::sync::OnceLock::new();
        PROCESS.get_or_init(Arc::default).clone()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Timestamp, usize>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An attempt that will begin at `due`: counted until the guard is dropped (when it
    /// begins, or if it never does).
    pub(super) fn waiting(self: &Arc<Self>, due: Timestamp) -> Waiting {
        *self.lock().entry(due).or_default() += 1;
        Waiting {
            starts: self.clone(),
            due,
            now: None,
        }
    }

    /// Whether an attempt due by `now`, and at most [`HOLD_AT_MOST`] before it, has not begun.
    /// One due earlier is not waited for: whatever keeps it from beginning (a runtime blocked
    /// elsewhere in the process, the wall clock stepped forward) will not end within a hold.
    fn starting(waiting: &BTreeMap<Timestamp, usize>, now: Timestamp) -> bool {
        let from = now.checked_sub(HOLD).unwrap_or(Timestamp::MIN);
        waiting.range(from..=now).next().is_some()
    }

    /// Waits while attempts due by `now()` (within the hold) have not begun, at most
    /// [`HOLD_AT_MOST`].
    pub(super) async fn settle(&self, now: impl Fn() -> Timestamp) {
        let deadline = tokio::time::Instant::now() + HOLD_AT_MOST;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            // Registered before the check: a notification in between is not lost.
            notified.as_mut().enable();
            if !Self::starting(&self.lock(), now()) {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

/// An attempt counted in [`Starts`] until it begins (or never will).
pub(super) struct Waiting {
    starts: Arc<Starts>,
    due: Timestamp,
    /// The time it began, for the check whether it was the last one due.
    now: Option<Timestamp>,
}

impl Waiting {
    /// The attempt begins at `now`.
    pub(super) fn begun(mut self, now: Timestamp) {
        self.now = Some(now);
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiting = self.starts.lock();
        if let Some(n) = waiting.get_mut(&self.due) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.due);
            }
        }
        // The last due attempt has begun: a held write may go.
        let settled = !Starts::starting(&waiting, self.now.unwrap_or(self.due));
        drop(waiting);
        if settled {
            self.starts.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use jiff::{SignedDuration, Timestamp};
    use tokio::time::Instant;

    use super::{HOLD_AT_MOST, Starts};

    fn t(ms: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_due_holds_nothing() {
        let starts = Arc::new(Starts::default());
        let _later = starts.waiting(t(2_000));
        let start = Instant::now();
        starts.settle(|| t(1_000)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waits_for_the_due_attempts_to_begin() {
        let starts = Arc::new(Starts::default());
        let herd: Vec<_> = (0..3).map(|_| starts.waiting(t(1_000))).collect();
        // Due later: not waited for.
        let _next = starts.waiting(t(2_000));
        tokio::spawn(async move {
            for (i, waiting) in herd.into_iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if i == 1 {
                    // One never begins (cancelled while it waited): dropped.
                    drop(waiting);
                } else {
                    waiting.begun(t(1_000 + 2 * (i as i64 + 1)));
                }
            }
        });
        let start = Instant::now();
        starts.settle(|| t(1_001)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_held_at_most_its_time() {
        let starts = Arc::new(Starts::default());
        let _stuck = starts.waiting(t(1_000));
        let start = Instant::now();
        starts.settle(|| t(1_010)).await;
        assert_eq!(start.elapsed(), HOLD_AT_MOST);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_overdue_by_more_than_a_hold_holds_nothing() {
        let starts = Arc::new(Starts::default());
        // Due long ago and never polled since (its runtime is blocked, say).
        let _stuck = starts.waiting(t(1_000));
        let start = Instant::now();
        starts.settle(|| t(1_500)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Nor does it keep a herd that has begun from ending the hold.
        let herd = starts.waiting(t(1_500));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            herd.begun(t(1_502));
        });
        starts.settle(|| t(1_501)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(2));
    }
}
