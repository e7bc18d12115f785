//! Kairos core: the pure domain model.
//!
//! - [`spec`]: the job document users write, kept as written.
//! - [`alert`]: alert rules (a job's `notify`, the server's global ones) and the pure decisions
//!   of what a run's end, a skipped due time, a silence or a late run raises.
//! - [`job`]: validation of a spec into a typed [`job::JobPlan`], reporting every problem with
//!   its field path ([`ValidationErrors`]).
//! - [`trigger`]: cron (croner + jiff, Vixie day rules, DST as the Open Cron Pattern
//!   Specification defines it), interval and one-off triggers; `next_after` is strictly increasing.
//! - [`calendar`]: calendars (holidays, blackout windows) and the filter they put on a
//!   trigger's due times.
//! - [`dependency`]: dependency triggers between jobs: which ends count, the cycle check.
//! - [`event`]: event triggers: topics, event ids, payload filters.
//! - [`policy`]: retry, misfire (catch-up) and overlap decisions as pure functions.
//! - [`run`]: run states, origins and attempt outcomes.
//! - [`lease`]: lease timing (heartbeat, the point a worker gives an attempt up) and the rescue
//!   rule for runs whose lease expired.
//! - [`workflow`]: workflows as DAGs of steps: validation (references, cycles), Airflow's
//!   trigger rules, and the pure decisions that advance a workflow run and rerun its failures.
//!
//! Nothing here reads a clock, a socket or a database: every decision takes `now` as input.

pub mod alert;
pub mod auth;
pub mod calendar;
pub mod dependency;
pub mod document;
pub mod duration;
pub mod error;
pub mod event;
pub mod job;
pub mod lease;
pub mod policy;
pub mod run;
pub mod size;
pub mod spec;
pub mod trigger;
pub mod workflow;

pub use error::{FieldError, ValidationErrors};
pub use job::JobPlan;
pub use spec::JobSpec;
