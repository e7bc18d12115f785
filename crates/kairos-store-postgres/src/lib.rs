//! Kairos's cluster store on PostgreSQL: any number of identical nodes share one database, each
//! scheduling (when it leads), claiming and running work, with many writers at once.
//!
//! # Model
//!
//! The tables (one schema per cluster, see [`PostgresConfig::schema`]) are those of the SQLite
//! store: `jobs` (the spec as written, a `version`, `next_fire_at`), `runs` (one top-level run
//! per job and due time, unique on `(job_id, scheduled_for)` among top-level runs; a workflow
//! run's step runs are rows of `runs` too, with `parent_id`), `attempts`, `tokens`, `audit`, and
//! `leader` and `nodes` for leadership (a term and a lease, fenced by node id and term) and the
//! node registry. Ids come from identity sequences and are never reused; instants are `timestamptz`.
//! Behaviour is defined by the shared conformance suite (`kairos_store::conformance`), which
//! this store passes.
//!
//! Besides its pool, each store instance (one per node) keeps two dedicated connections (the
//! lock's from its first election):
//!
//! - **The change feed** ([`Store::changes`](kairos_store::Store::changes), see `changes`):
//!   writes that others wait for send, inside their transaction, one `pg_notify` on the
//!   schema's channel (`kairos_<schema>`) per kind of change — `jobs` (create, update, delete,
//!   pause, resume), `runs` (runs became queued: a fire, a trigger-now, a bulk insert, a retry,
//!   a release, a rescue, steps whose workflow run moved on), `cancel` (a running run was asked
//!   to stop: a cancel, `overlap: replace`), `leader` (a new term, a resignation) — and only
//!   when something of that kind changed. PostgreSQL delivers them at commit, in commit order.
//!   A listener task `LISTEN`s on the channel and forwards them to a broadcast channel: every
//!   node hears every node's changes, its own included.
//! - **The leader lock's session** (see `cluster` and `leader_lock`): the leader holds a
//!   session advisory lock derived from the schema, and the leader row records (`locked`)
//!   whether it held it at its last renewal. PostgreSQL releases the lock when the leader's
//!   connection closes, so a follower that gets the lock while the row says `locked` knows the
//!   leader is gone and starts a new term at its next election (followers elect about every
//!   half second) instead of waiting for the lease (10 s). Fencing by node id and term is
//!   unchanged; the lock only shortens the wait.
//!
//! # Time
//!
//! Every method takes `now: Option<Timestamp>`. With `None` the *database's* clock rules
//! (`coalesce($now, now())` in the SQL, lease expiries included), so that nodes whose clocks
//! disagree still agree on every stored instant; `Some` is a manual clock in tests.
//!
//! # Concurrency
//!
//! Transactions run at READ COMMITTED: each statement sees what was committed before it began.
//! Correctness under many writers comes from fences and locks, never from a read followed by an
//! unfenced write:
//!
//! - **Fire:** `UPDATE jobs SET next_fire_at = $new WHERE id = $1 AND NOT paused AND
//!   next_fire_at = $expected` is the fence and takes the job's row lock; the round's runs go in
//!   after it with `ON CONFLICT DO NOTHING`, in
//!   the same transaction.
//!   A second scheduler with the same view waits on the row, then finds the fence moved.
//! - **Job writes** (update, pause, delete) lock the job's row before reading its version, and
//!   fence the write by that version too; a stale version is `VersionConflict`.
//! - **Claims** are one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)`:
//!   claimers never wait for each other's rows nor claim a run twice. The exclusive rule
//!   (`overlap: queue`) also needs a per-job advisory lock; see `batch::claim` for why. Alert
//!   deliveries are claimed the same way, and their ends fenced by the claim's lease token
//!   (see `alert`).
//! - **Leases:** heartbeats (one statement for all of a worker's leases), finishes and rescues
//!   are fenced by the lease token and state and report whether they applied.
//! - **Workflows:** a step run that ends moves its workflow run on in the same transaction,
//!   which locks the workflow run's row before the step's and only then reads the steps, so
//!   two steps ending at once never both miss the other (see `workflow`). A user's action on
//!   the steps (skip, mark succeeded, rerun) locks the workflow run, then all its steps in id
//!   order, and only then reads them (see `control`).
//! - **Deadlocks** are designed out: a transaction locks jobs' rows before any run, and runs in
//!   ascending id order (see `batch`), which takes a workflow run before its steps. Should PostgreSQL still report one (or a serialization
//!   failure), the call fails with `StoreError::Internal`, nothing applied; a test runs every
//!   kind of writer at once on the same rows and expects none.
//! - **Audit** entries are written in the transaction of the change they describe.
//!
//! # Failure handling
//!
//! A bad URL or schema name and an unreachable or refusing server are
//! `StoreError::Unavailable` with the reason; nothing panics. A connection lost mid-transaction
//! rolls the transaction back (the server ends it), and with it the notifications it would have
//! sent. Migrations are embedded, recorded in `schema_migrations`, and applied each in a
//! transaction of its own (an index of `runs` is built concurrently on a schema in use) under
//! an advisory lock derived from the schema name, so nodes starting together migrate once; a
//! schema newer than this build is refused.
//!
//! The change feed only makes nodes faster (every service also polls). `connect` waits for its
//! first `LISTEN`, so a store's feed carries every write made after `connect` returns; if it
//! cannot listen yet, `connect` still succeeds and the feed keeps trying. When its connection
//! drops, the listener reconnects (100 ms, doubling, at most 1 s between attempts) and then
//! sends `Resync`: notifications may have been missed, look at everything. A receiver that
//! falls behind sees `Lagged`, which means the same. The feed ends (`Closed`) when the store is
//! closed or its last clone dropped.
//!
//! The leader lock fails safe: without it the lease decides, as before. A failed or slow
//! statement on the lock's session drops the session (which releases the lock) and the next
//! election reconnects; a leader renews `locked` from the lock it actually holds, so one whose
//! session died cannot be taken for alive-with-lock; a leader that took over by expiry while
//! its cut-off predecessor still held the lock renews with `locked` false, and nobody may take
//! over early from it until it holds the lock itself. A host that vanishes without closing its
//! connections (power loss) keeps its lock until the server's TCP keepalive notices, so its
//! successor waits for the lease then. The dedicated connections use short TCP keepalives
//! (30 s idle) to notice a vanished server sooner. Closing the store (or dropping it) closes
//! both connections: a leader that stops without resigning is succeeded at once.
//!
//! # Why tokio-postgres and deadpool
//!
//! A lean build (no macros, no compile-time database, no second SQLite), statements prepared
//! once per connection and cached (`prepare_cached`), pipelining (the statements of a wave of
//! fires are sent at once instead of one round trip each), and plain `tokio_postgres::Client`s for the
//! dedicated connections (`LISTEN/NOTIFY`, the session lock). TLS is not wired yet.

mod activity;
pub mod admin;
mod alert;
mod auth;
mod backfill;
mod batch;
mod calendar;
mod cancel;
mod changes;
mod cluster;
mod connect;
mod control;
mod dependency;
mod event;
mod import;
mod jobs;
mod leader_lock;
pub mod relay;
mod rescue;
mod rows;
mod store;
mod workflow;

/// Statements whose plans `tests/plans.rs` checks against statistics that lag the data, as
/// they do under load: not an API.
#[doc(hidden)]
pub mod plans {
    pub const FINISH_MANY: &str = crate::batch::FINISH_MANY;
    pub const LOCK_RUNS: &str = crate::batch::LOCK_RUNS;
    pub const HEARTBEAT: &str = crate::batch::HEARTBEAT;
    pub const EXCLUSIVE_WAITING: &str = crate::batch::EXCLUSIVE_WAITING;
    pub const CLAIM_FROM: &str = crate::batch::CLAIM_FROM;
    pub const CLAIM_PLAIN_FROM: &str = crate::batch::CLAIM_PLAIN_FROM;
}

pub use connect::{DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, PostgresConfig, PostgresStore, redact};
