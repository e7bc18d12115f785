//! Dropping a schema with everything in it: for tools and tests that make a schema per run.
//!
//! Connections of the schema's users are ended first (those named `<schema>` or
//! `<schema>_<something>` in their `application_name`): a connection left open, with a
//! transaction a crashed process left behind, would otherwise block the `DROP SCHEMA`.

use std::time::Duration;

use tokio_postgres::NoTls;

/// Ends the schema's connections, then drops it (if it exists).
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), String> {
    crate::connect::validate_schema(schema).map_err(|e| e.to_string())?;
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
        match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }
    })?;
    tokio::spawn(connection);
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE (application_name = $1 OR starts_with(application_name, $1 || '_')) \
               AND pid <> pg_backend_pid()",
            &[&schema],
        )
        .await
        .map_err(|e| e.to_string())?;
    client
        .batch_execute(&format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        ))
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{e}: {}", db.message()),
            None => e.to_string(),
        })
}

/// [`drop_schema`] from code that cannot await (a `Drop`): on a thread with a runtime of its
/// own, within `limit`.
pub fn drop_schema_blocking(url: &str, schema: &str, limit: Duration) -> Result<(), String> {
    let (url, schema) = (url.to_owned(), schema.to_owned());
    std::thread::spawn(move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            tokio::time::timeout(limit, drop_schema(&url, &schema))
                .await
                .map_err(|_| "timed out".to_owned())?
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the cleanup panicked".into()))
}
