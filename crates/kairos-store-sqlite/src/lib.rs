//! Kairos's embedded store: one SQLite file in WAL mode, for a single node.
//!
//! - Writes run in `BEGIN IMMEDIATE` transactions, so the single SQLite writer lock is taken up
//!   front and two writers never deadlock upgrading from a read.
//! - `(job_id, scheduled_for)` is unique among top-level runs and runs are inserted with `ON CONFLICT DO NOTHING`;
//!   `job_fire` checks the job's `next_fire_at` fence, inserts the round's runs and advances
//!   `next_fire_at` in one transaction. A crash at any point leaves either all of it or none.
//! - The data directory is locked (`flock` on `kairos.lock`) so that two nodes never share one
//!   file; a second node fails with a clear error.
//! - Instants are INTEGER microseconds since the Unix epoch.
//! - Every connection lives on a thread of its own and runs whole transactions sent to it as
//!   closures ([`db`]): one hand-off between threads per transaction, not per statement.

mod activity;
mod alert;
mod auth;
mod backfill;
mod batch;
mod calendar;
mod cluster;
mod db;
mod dependency;
mod event;
mod import;
mod open;
mod rows;
mod store;
mod workflow;

pub use open::{DB_FILE_NAME, SqliteStore, activity_path, writer_connection};
