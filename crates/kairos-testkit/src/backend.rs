//! Tests that run on every backend: a store factory ([`store_for`]) and a macro
//! ([`backend_tests!`](crate::backend_tests)) that runs one test body once per [`Backend`].
//!
//! A test is an `async fn name(backend: Backend)` that asks [`store_for`] (or
//! [`node_context_on`]) for its store and returns early on `None`: PostgreSQL is unreachable
//! and [`crate::postgres::REQUIRE_ENV`] is not `1` (the factory has said why on stderr). Each
//! store is isolated: a SQLite file in a temp directory of its own, or a PostgreSQL schema of
//! its own; both are removed when the [`TestStore`] guard drops.

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use kairos_runtime::{ManualClock, NodeContext};
use kairos_store::Store;

use crate::postgres::{TempPostgres, temp_postgres};

/// A store implementation the runtime runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A fresh store of one backend for one test, and a temp directory of the test's own (files a
/// task writes; the SQLite file lives there too). Dropping it removes both: the PostgreSQL
/// store is closed first (its change feed and leader-lock sessions end), then its schema is
/// dropped.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub backend: Backend,
    /// The PostgreSQL store and its schema guard; `None` on SQLite.
    postgres: Option<TempPostgres>,
    /// Declared last: removed after the store is closed.
    dir: tempfile::TempDir,
}

impl TestStore {
    /// The test's temp directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PostgreSQL store and schema, for PostgreSQL-specific calls (another store instance
    /// on the same schema, as another node would open); `None` on SQLite.
    pub fn postgres(&self) -> Option<&TempPostgres> {
        self.postgres.as_ref()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        // Ends the listener and the leader lock's session now, rather than having them see
        // their connections terminated by the schema's cleanup and try to reconnect.
        if let Some(pg) = &self.postgres {
            pg.postgres.close();
        }
    }
}

/// A fresh, migrated store on `backend`, or `None` when that backend's service is unreachable
/// (see [`crate::postgres::temp_schema`]; with [`crate::postgres::REQUIRE_ENV`]` = 1` that is a
/// panic instead). Panics if the store cannot be set up otherwise.
pub async fn store_for(backend: Backend) -> Option<TestStore> {
    Some(match backend {
        Backend::Sqlite => {
            let sqlite = crate::temp_sqlite().await;
            TestStore {
                store: sqlite.store,
                backend,
                postgres: None,
                dir: sqlite.dir,
            }
        }
        Backend::Postgres => {
            let pg = temp_postgres().await?;
            TestStore {
                store: pg.store.clone(),
                backend,
                postgres: Some(pg),
                dir: tempfile::tempdir().expect("temp dir"),
            }
        }
    })
}

/// A node context (node name `test-node`) on a fresh store of `backend` under a manual clock
/// at `start`; `None` as for [`store_for`].
pub async fn node_context_on(
    backend: Backend,
    start: &str,
) -> Option<(NodeContext, ManualClock, TestStore)> {
    let temp = store_for(backend).await?;
    let clock = ManualClock::new(start.parse::<Timestamp>().expect("start instant"));
    let ctx = NodeContext::new("test-node", temp.store.clone(), Arc::new(clock.clone()));
    Some((ctx, clock, temp))
}

/// Runs each named `async fn name(backend: Backend)` of the calling module once per backend:
/// for each name, a module `name` with the tests `sqlite` and `postgres` (so `cargo test name`
/// runs both, and `cargo test postgres` one backend). The bodies stay ordinary functions, which
/// rustfmt formats; a function left out of the list is dead code, which the lints report.
///
/// Each name may carry the test attribute to use instead of `#[tokio::test]`:
///
/// ```ignore
/// kairos_testkit::backend_tests! {
///     fires_each_due_time_exactly_once,
///     #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///     a_shutdown_does_not_start_a_run_claimed_ahead,
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    (@wrap #[$test:meta] $name:ident) => {
        mod $name {
            #[$test]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }

            #[$test]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await
            }
        }
    };
    () => {};
    (#[$test:meta] $name:ident $(, $($rest:tt)*)?) => {
        $crate::backend_tests!(@wrap #[$test] $name);
        $crate::backend_tests!($($($rest)*)?);
    };
    ($name:ident $(, $($rest:tt)*)?) => {
        $crate::backend_tests!(@wrap #[::tokio::test] $name);
        $crate::backend_tests!($($($rest)*)?);
    };
}
