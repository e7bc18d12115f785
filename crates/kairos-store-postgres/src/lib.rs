//! Kairos's cluster store on PostgreSQL: any number of identical nodes share one database, each
//! scheduling (when it leads), claiming and running work, with many writers at once.
//!
//! # Model
//!
//! The tables (one schema per cluster, see [`PostgresConfig::schema`]) are those of the SQLite
//! store: `jobs` (the spec as written, a `version`, `next_fire_at`), `runs` (one per job and due
//! time, `UNIQUE (job_id, scheduled_for)`), `attempts`, `tokens`, `audit`, and `leader` and
//! `nodes` for leadership (a term and a lease, fenced by node id and term) and the node
//! registry. Ids come from identity sequences and are never reused; instants are `timestamptz`.
//! Behaviour is defined by the shared conformance suite (`kairos_store::conformance`), which
//! this store passes.
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
//!   after it with `ON CONFLICT (job_id, scheduled_for) DO NOTHING`, in the same transaction.
//!   A second scheduler with the same view waits on the row, then finds the fence moved.
//! - **Job writes** (update, pause, delete) lock the job's row before reading its version, and
//!   fence the write by that version too; a stale version is `VersionConflict`.
//! - **Claims** are one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)`:
//!   claimers never wait for each other's rows nor claim a run twice. The exclusive rule
//!   (`overlap: queue`) also needs a per-job advisory lock; see `batch::claim` for why.
//! - **Leases:** heartbeats (one statement for all of a worker's leases), finishes and rescues
//!   are fenced by the lease token and state and report whether they applied.
//! - **Deadlocks** are designed out: a transaction locks jobs' rows before any run, and runs in
//!   ascending id order (see `batch`). Should PostgreSQL still report one (or a serialization
//!   failure), the call fails with `StoreError::Internal`, nothing applied; a test runs every
//!   kind of writer at once on the same rows and expects none.
//! - **Audit** entries are written in the transaction of the change they describe.
//!
//! # Failure handling
//!
//! A bad URL or schema name and an unreachable or refusing server are
//! `StoreError::Unavailable` with the reason; nothing panics. A connection lost mid-transaction
//! rolls the transaction back (the server ends it). Migrations are embedded, recorded in
//! `schema_migrations`, and applied in one transaction under an advisory lock derived from the
//! schema name, so nodes starting together migrate once; a schema newer than this build is
//! refused.
//!
//! # Why tokio-postgres and deadpool
//!
//! A lean build (no macros, no compile-time database, no second SQLite), statements prepared
//! once per connection and cached (`prepare_cached`), pipelining (a batch of finishes is sent
//! at once instead of one round trip each), and a plain `tokio_postgres::Client` to hold a
//! dedicated connection for `LISTEN/NOTIFY` change notifications later. TLS is not wired yet.

mod auth;
mod batch;
mod cluster;
mod connect;
mod jobs;
mod rescue;
mod rows;
mod store;

pub use connect::{DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, PostgresConfig, PostgresStore, redact};
