//! The store conformance suite on a real SQLite file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::sync::Arc;

use kairos_store::Store;
use kairos_store_sqlite::SqliteStore;

async fn make() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_file(&dir.path().join("kairos.db"))
        .await
        .expect("open store");
    // Keep the directory for the life of the test process; it is removed with the temp root.
    std::mem::forget(dir);
    Arc::new(store)
}

kairos_store::conformance_tests!(make);
