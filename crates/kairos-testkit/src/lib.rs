//! Test helpers for Kairos: a real store in a temp directory, the manual clock, fake executors
//! for failure modes (never for the happy path, which uses the real executors), and a way to
//! wait for events.
//!
//! Scheduling tests drive the services' `run_once`/`claim_once` directly under a
//! [`ManualClock`]; nothing sleeps on the real clock. They do not pause tokio's clock: with the
//! real SQLite store, a paused runtime auto-advances whenever it waits on a database thread,
//! which moves tokio's timers (heartbeats, polls) in ways a test does not control. Tokio's paused
//! clock is used where no store is involved.
//!
//! [`postgres`] makes PostgreSQL stores, one schema per test. [`backend`] runs a test on every
//! backend: [`store_for`] makes a fresh store of a [`Backend`], and
//! [`backend_tests!`] runs a test body once per backend.

pub mod backend;
pub mod pg_instance;
pub mod postgres;
pub mod proxy;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kairos_core::run::{AttemptOutcome, AttemptStatus};
use kairos_exec::{ExecRequest, Executor};
use kairos_runtime::{Event, ManualClock, NodeContext};
use kairos_store::Store;
use kairos_store_sqlite::SqliteStore;
use tokio::sync::broadcast;

pub use backend::{Backend, TestStore, node_context_on, store_for};

/// A SQLite store in a fresh temp directory (removed when the guard drops).
pub struct TempStore {
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
}

/// Opens a real SQLite store in a temp directory.
pub async fn temp_sqlite() -> TempStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_file(&dir.path().join("kairos.db"))
        .await
        .expect("open store");
    TempStore {
        store: Arc::new(store),
        dir,
    }
}

/// A node context on a temp SQLite store and a manual clock at `start`. For a test that runs
/// on every backend, see [`node_context_on`].
pub async fn node_context(start: &str) -> (NodeContext, ManualClock, TempStore) {
    let temp = temp_sqlite().await;
    let clock = ManualClock::new(start.parse::<Timestamp>().expect("start instant"));
    let ctx = NodeContext::new("test-node", temp.store.clone(), Arc::new(clock.clone()));
    (ctx, clock, temp)
}

/// An executor whose attempts never finish on their own: they end only when cancelled
/// (returning `Cancelled`), like a stuck task.
#[derive(Debug, Default)]
pub struct HangingExecutor {
    started: tokio::sync::Notify,
    killed: std::sync::atomic::AtomicBool,
}

impl HangingExecutor {
    /// Resolves when an attempt has started.
    pub async fn started(&self) {
        self.started.notified().await;
    }

    /// An attempt was told to stop at once, without the kill grace.
    pub fn killed(&self) -> bool {
        self.killed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Executor for HangingExecutor {
    async fn execute(&self, req: ExecRequest) -> AttemptOutcome {
        self.started.notify_one();
        req.cancel.cancelled().await;
        if req.kill.is_cancelled() {
            self.killed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        AttemptOutcome::from_status(AttemptStatus::Cancelled)
    }
}

/// An executor that ends every attempt with the given status, without running anything.
#[derive(Debug, Clone)]
pub struct FailingExecutor(pub AttemptStatus);

#[async_trait::async_trait]
impl Executor for FailingExecutor {
    async fn execute(&self, _req: ExecRequest) -> AttemptOutcome {
        AttemptOutcome::from_status(self.0.clone())
    }
}

/// What a recording executor saw of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub job: String,
    pub run_id: i64,
    pub attempt: u32,
    pub scheduled_for: Timestamp,
    pub timeout: Option<jiff::SignedDuration>,
    pub kill_grace: jiff::SignedDuration,
}

/// An executor that records each request and succeeds.
#[derive(Debug, Default, Clone)]
pub struct RecordingExecutor {
    pub seen: Arc<Mutex<Vec<Recorded>>>,
}

impl RecordingExecutor {
    pub fn recorded(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl Executor for RecordingExecutor {
    async fn execute(&self, req: ExecRequest) -> AttemptOutcome {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Recorded {
                job: req.context.job.clone(),
                run_id: req.context.run_id,
                attempt: req.context.attempt,
                scheduled_for: req.context.scheduled_for,
                timeout: req.timeout,
                kill_grace: req.kill_grace,
            });
        AttemptOutcome::from_status(AttemptStatus::Succeeded)
    }
}

/// Waits (up to `within`) for the first event matching `pred`. Panics on timeout.
pub async fn wait_for_event<F>(
    rx: &mut broadcast::Receiver<Event>,
    within: Duration,
    mut pred: F,
) -> Event
where
    F: FnMut(&Event) -> bool,
{
    let found = tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(event) if pred(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("event stream closed"),
            }
        }
    })
    .await;
    match found {
        Ok(event) => event,
        Err(_) => panic!("no matching event within {within:?}"),
    }
}
