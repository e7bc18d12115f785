//! The store seam.
//!
//! Kairos keeps all state — jobs, runs, attempts, leases — behind one object-safe [`Store`]
//! trait with three planned backends (SQLite now; PostgreSQL and Redis later). The
//! [`conformance`] suite defines the behaviour every backend must have; a backend's own test
//! file only calls it.
//!
//! Invariants every backend keeps:
//! 1. Top-level runs are unique on `(job_id, scheduled_for)`: a second insert for the same key is
//!    a no-op. A workflow run's step runs share its due time and are unique on `(parent_id, step)`.
//!    An event's runs are unique on `(job_id, event_id)` instead (two events at one instant are
//!    two runs; one event posted twice, to any node, is one).
//! 2. `job_fire` creates a round's runs and advances `next_fire_at` in one transaction, fenced by
//!    the expected `next_fire_at`, so a crash or a second scheduler neither loses nor repeats a
//!    due time.
//! 3. Job writes are fenced by `version`; a stale write changes nothing.
//! 4. Lease writes (heartbeat, finish) are fenced by the lease token and report whether they
//!    applied; an expired lease is rescued exactly once.
//! 5. Every change a user makes (job create, update, delete, pause, resume, trigger; run cancel;
//!    token create, revoke) writes its audit entry in the same transaction: no change without
//!    its entry, no entry without its change.

pub mod activity;
mod audit;
pub mod calendar;
mod changes;
mod cluster;
pub mod conformance;
pub mod dependency;
mod error;
mod model;
mod store;
pub mod workflow;

pub use audit::AuditRecord;
pub use changes::Change;
pub use cluster::*;
pub use error::{StoreError, StoreResult, check_version};
pub use model::{
    Attempt, AuditEntry, ClaimedRun, Job, Run, RunEvent, RunReport, StoredCalendar, Token,
};
pub use store::*;
