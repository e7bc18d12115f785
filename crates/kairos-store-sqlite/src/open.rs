//! Opening the store: data directory, lock file, connection pool, migrations.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use kairos_store::{StoreError, StoreResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::rows::internal;

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "kairos.db";
const LOCK_FILE_NAME: &str = "kairos.lock";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    /// Readers (WAL: they never block the writer nor each other).
    pub(crate) pool: SqlitePool,
    /// The one writer connection. SQLite has a single writer; queueing writes here (an async
    /// wait) instead of letting several connections race for the lock avoids SQLITE_BUSY and the
    /// busy handler's millisecond sleeps.
    pub(crate) writer: SqlitePool,
    path: PathBuf,
    /// Held for the life of the store: the data-directory lock.
    _lock: Option<std::sync::Arc<std::fs::File>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in a data directory and locks the directory.
    pub async fn open_dir(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "data directory {} is not writable: {e}",
                    dir.display()
                ))
            })?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                StoreError::Locked(format!(
                    "data directory {} is in use by another Kairos node (lock {} is held)",
                    dir.display(),
                    lock_path.display()
                ))
            },
        )?;
        let mut store = Self::open_file(&dir.join(DB_FILE_NAME)).await?;
        store._lock = Some(std::sync::Arc::new(lock));
        Ok(store)
    }

    /// Opens (creating if needed) a database file without a directory lock (tests, tools).
    pub async fn open_file(path: &Path) -> StoreResult<Self> {
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(internal)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        // The writer keeps a larger page cache (16 MB) than each reader (2 MB).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone().pragma("cache_size", "-16000"))
            .await
            .map_err(|e| describe_open_error(path, e))?;
        MIGRATOR.run(&writer).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => describe_open_error(path, e),
            other => StoreError::Unavailable(format!(
                "cannot prepare database {}: {other}",
                path.display()
            )),
        })?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.pragma("cache_size", "-2000"))
            .await
            .map_err(|e| describe_open_error(path, e))?;
        Ok(Self {
            pool,
            writer,
            path: path.to_owned(),
            _lock: None,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the pool (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

fn describe_open_error(path: &Path, e: sqlx::Error) -> StoreError {
    match internal(e) {
        StoreError::Internal(msg) => {
            StoreError::Unavailable(format!("cannot open database {}: {msg}", path.display()))
        }
        StoreError::Unavailable(msg) => {
            StoreError::Unavailable(format!("cannot open database {}: {msg}", path.display()))
        }
        other => other,
    }
}
