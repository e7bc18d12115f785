//! The store conformance suite on a real PostgreSQL, one schema per case (skipped without a
//! server unless `KAIROS_REQUIRE_SERVICES=1`; see `kairos_testkit::postgres`).

use kairos_testkit::postgres::{TempPostgres, temp_postgres};

async fn make() -> Option<TempPostgres> {
    temp_postgres().await
}

kairos_store::conformance_tests!(optional make);
