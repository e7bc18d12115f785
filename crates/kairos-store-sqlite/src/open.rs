//! Opening the store: data directory, lock file, connections, migrations.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kairos_store::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::db::Db;
use crate::rows::internal;

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "kairos.db";
const LOCK_FILE_NAME: &str = "kairos.lock";

/// The schema, one migration per entry; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_active_runs_index.sql"),
    include_str!("../migrations/0003_tokens_and_audit.sql"),
    include_str!("../migrations/0004_cluster.sql"),
    include_str!("../migrations/0005_exclusive_waiting_index.sql"),
    include_str!("../migrations/0006_held_runs_index.sql"),
    include_str!("../migrations/0007_workflows.sql"),
    include_str!("../migrations/0008_events.sql"),
    include_str!("../migrations/0009_dependencies.sql"),
    include_str!("../migrations/0010_progress.sql"),
    include_str!("../migrations/0011_calendars.sql"),
    include_str!("../migrations/0012_sessions.sql"),
    include_str!("../migrations/0013_alerts.sql"),
    include_str!("../migrations/0014_exclusive_due_time_order.sql"),
    include_str!("../migrations/0015_begun.sql"),
];

/// Reader connections (and threads).
const READERS: usize = 4;

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) db: Arc<Db>,
    /// The activity log's database (see [`activity_path`]).
    pub(crate) activity: Arc<Db>,
    path: PathBuf,
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
    ///
    /// The directory holds job definitions (with their environment) and task output: it is
    /// created readable by its owner only (0700), and so are the files in it (0600).
    pub async fn open_dir(dir: &Path) -> StoreResult<Self> {
        create_private_dir(dir).map_err(|e| {
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
            .mode(PRIVATE_FILE_MODE)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "data directory {} is not writable: {e}",
                    dir.display()
                ))
            })?;
        // A lock file an earlier Kairos made readable by everyone is tightened too.
        let _ = lock.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
            PRIVATE_FILE_MODE,
        ));
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                StoreError::Locked(format!(
                    "data directory {} is in use by another Kairos node (lock {} is held)",
                    dir.display(),
                    lock_path.display()
                ))
            },
        )?;
        Self::open(&dir.join(DB_FILE_NAME), Some(Arc::new(lock))).await
    }

    /// Opens (creating if needed) a database file without a directory lock (tests, tools).
    pub async fn open_file(path: &Path) -> StoreResult<Self> {
        Self::open(path, None).await
    }

    async fn open(path: &Path, lock: Option<Arc<std::fs::File>>) -> StoreResult<Self> {
        let owned = path.to_owned();
        let ((writer, readers, checkpointer), (log_writer, log_readers)) =
            tokio::task::spawn_blocking(move || {
                Ok::<_, StoreError>((
                    connect_all(&owned)?,
                    connect_activity(&activity_path(&owned))?,
                ))
            })
            .await
            .map_err(|e| StoreError::Internal(format!("opening the database: {e}")))??;
        Ok(Self {
            db: Db::start(writer, readers, Some(checkpointer), lock)?,
            activity: Db::start(log_writer, log_readers, None, None)?,
            path: path.to_owned(),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the connections (checkpointing the WAL). Later calls fail as `Unavailable`.
    pub async fn close(&self) {
        self.activity.close().await;
        self.db.close().await;
    }
}

/// A connection to a database file set up as the store's writer: created if needed, write-ahead
/// logging, the same settings, the schema migrated. For tools that measure SQLite itself (the
/// benchmark's floor); never beside an open store on the same file, which assumes it is the
/// only writer.
pub fn writer_connection(path: &Path) -> StoreResult<Connection> {
    let describe = |e| describe_open_error(path, e);
    let mut writer = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(describe)?;
    configure(&writer, 16_000).map_err(describe)?;
    let mode: String = writer
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(describe)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "cannot open database {}: it cannot use write-ahead logging (journal mode {mode})",
            path.display()
        )));
    }
    let version: i64 = writer
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(describe)?;
    if version > MIGRATIONS.len() as i64 {
        return Err(StoreError::Unavailable(format!(
            "cannot open database {}: its schema version {version} is newer than this Kairos \
             knows ({}); run a newer Kairos on it",
            path.display(),
            MIGRATIONS.len()
        )));
    }
    migrate(&mut writer).map_err(describe)?;
    Ok(writer)
}

/// Mode of the data directory: its owner only.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the database, its WAL files and the lock file.
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (0700) and its missing parents (with the usual mode). An existing directory is
/// left as it is, with a warning when others may read it.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            let mode = std::fs::metadata(dir)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    data_dir = %dir.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the data directory is readable by other users; it holds job definitions \
                     and output (chmod 700 it)"
                );
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Makes the database file and its WAL files readable by their owner only: a new file is
/// created 0600 (SQLite gives its WAL files the database's mode) and existing ones are
/// tightened.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::metadata(&name) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&name, std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?
            }
            _ => {}
        }
    }
    Ok(())
}

/// The activity log's database file, beside the store's (`kairos.db` → `kairos.activity.db`):
/// a file of its own, so that its writes never wait for the store's single writer, nor the
/// store's for them.
pub fn activity_path(path: &Path) -> PathBuf {
    path.with_extension("activity.db")
}

/// The activity log's writer (creating the file and its table) and one reader.
fn connect_activity(path: &Path) -> StoreResult<(Connection, Vec<Connection>)> {
    let describe = |e| describe_open_error(path, e);
    make_private(path).map_err(|e| {
        StoreError::Unavailable(format!("cannot create database {}: {e}", path.display()))
    })?;
    let open = || {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    };
    let writer = open().map_err(describe)?;
    configure(&writer, 2_000).map_err(describe)?;
    writer
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .map_err(describe)?;
    writer
        .execute_batch(include_str!("../migrations/activity.sql"))
        .map_err(describe)?;
    let reader = open().map_err(describe)?;
    configure(&reader, 1_000).map_err(describe)?;
    reader
        .pragma_update(None, "query_only", true)
        .map_err(describe)?;
    Ok((writer, vec![reader]))
}

/// Opens the writer (creating the file and migrating it), the readers and the checkpointer's
/// connection. The writer's automatic checkpoint is off: the checkpointer does it (see `db`).
fn connect_all(path: &Path) -> StoreResult<(Connection, Vec<Connection>, Connection)> {
    let describe = |e| describe_open_error(path, e);
    make_private(path).map_err(|e| {
        StoreError::Unavailable(format!("cannot create database {}: {e}", path.display()))
    })?;
    let writer = writer_connection(path)?;
    writer
        .pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(describe)?;
    let checkpointer = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|conn| configure(&conn, 500).map(|()| conn))
    .map_err(describe)?;
    let readers = (0..READERS)
        .map(|_| {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&conn, 2_000)?;
            // A reader never writes; make a slip an error rather than a second writer.
            conn.pragma_update(None, "query_only", true)?;
            Ok(conn)
        })
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(describe)?;
    Ok((writer, readers, checkpointer))
}

/// Per-connection settings. The writer keeps a larger page cache (`cache_kib`) than readers.
/// (WAL is a property of the file, set once by the writer.)
fn configure(conn: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    Ok(())
}

/// Applies the migrations not yet applied, each in its own transaction.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let mut applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if applied == 0 {
        applied = adopt_earlier_bookkeeping(conn)?;
    }
    if applied.max(0) as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    // A migration that rebuilds a table drops the old one: with foreign keys on, that would
    // delete what references it (`ON DELETE CASCADE`). They are off while migrations run (the
    // pragma has no effect inside a transaction) and checked before each commit.
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = (|| {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                    Some(format!(
                        "migration {} left a broken foreign key in `{table}`",
                        i + 1
                    )),
                ));
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", true)?;
    result
}

/// Stores created by Kairos 0.1 before this change recorded migrations in a
/// `_sqlx_migrations` table; carry its count over to `user_version` and drop it.
fn adopt_earlier_bookkeeping(conn: &mut Connection) -> rusqlite::Result<i64> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
        [],
        |r| r.get(0),
    )?;
    tx.pragma_update(None, "user_version", applied)?;
    tx.execute_batch("DROP TABLE _sqlx_migrations")?;
    tx.commit()?;
    Ok(applied)
}

fn describe_open_error(path: &Path, e: rusqlite::Error) -> StoreError {
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
