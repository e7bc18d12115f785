//! Kairos runtime: the long-running services of a node.
//!
//! - [`scheduler::Scheduler`] turns due times into runs (exactly once, through the store's
//!   unique key and the fenced `job_fire`).
//! - [`worker::Worker`] claims runs with a lease, executes them, heartbeats, retries.
//! - [`rescuer::Rescuer`] recovers runs whose lease expired and expires silent nodes.
//! - [`elector::Elector`] elects the leader (a term per change of hands) and starts and stops
//!   the leader's services (scheduler, rescuer) through one gate.
//! - [`jobs::JobService`] changes jobs at run time and wakes the scheduler.
//! - [`tokens::TokenService`] creates, lists, revokes and checks API tokens.
//! - [`telemetry::Telemetry`] logs, counts and broadcasts typed events.
//!
//! Each service has one loop that only waits and a `run_once`/`claim_once` that does the work
//! and returns a report, so tests drive the work directly under a [`clock::ManualClock`].

pub mod activity;
pub mod alerts;
pub mod calendars;
pub mod clock;
pub mod context;
pub mod elector;
pub mod events;
pub mod jobs;
pub mod node;
pub mod rescuer;
pub mod scheduler;
pub mod telemetry;
pub mod tokens;
pub mod worker;

pub use calendars::{CalendarChange, CalendarWrite};
pub use clock::{AlignedClock, Clock, ManualClock, SystemClock};
pub use context::{LiveOutputs, NodeContext, RunTokens};
pub use elector::{Elector, ElectorConfig, LeaderGate};
pub use events::{Emitted, EventRequest, EventRun};
pub use jobs::{JobError, JobService};
pub use node::{Node, NodeConfig};
pub use scheduler::SchedulerConfig;
pub use telemetry::{Event, Telemetry};
pub use tokens::{NewToken, TokenError, TokenRequest, TokenService};
pub use worker::WorkerConfig;
