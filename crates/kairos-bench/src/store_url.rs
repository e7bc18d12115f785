//! `--store URL`: which backend a workload runs on, and a fresh, empty store for each run.
//!
//! Every run of every workload gets its own empty store so that runs do not see each other's
//! data:
//!
//! - **SQLite** (`sqlite://`, `sqlite:///DIR`): a new directory, under a temporary directory
//!   for `sqlite://` (deleted afterwards), or under the given directory (a subdirectory per
//!   run, deleted afterwards unless `--keep`), so that the file system can be chosen. One node
//!   only: its data directory is locked.
//! - **PostgreSQL** (`postgres://user@host:port/db`, or `postgresql://`): a new schema
//!   `kb_<label>_<random>` on that database per run ([`PgSchema`]), dropped afterwards unless
//!   `--keep`. Any number of nodes, in this process or as `kairos server` processes, share it.
//!   Query parameters other than `schema` go to the driver.
//!
//! Workloads see only [`StorePlace`] (where a run's store lives), [`StoreLocation`] (how to
//! reach it from another process) and [`OpenStore`] (an open `dyn Store`); nothing else in
//! them depends on the backend. Redis plugs in here (a key prefix per run) when it exists.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kairos_store::Store;
use kairos_store_postgres::{PostgresConfig, PostgresStore, redact};
use kairos_store_sqlite::SqliteStore;

use crate::error::{BenchError, BenchResult};
use crate::pg_schema::PgSchema;

/// A parsed `--store` URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://` (temporary directory) or `sqlite://PATH` (runs in subdirectories of PATH).
    Sqlite { base: Option<PathBuf> },
    /// `postgres://…`: a fresh schema per run on this database (the URL as given).
    Postgres { url: String },
}

/// Shows no password.
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

impl FromStr for StoreUrl {
    type Err = BenchError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(BenchError::InvalidStoreUrl {
                url: redact(url),
                reason: "expected SCHEME://..., e.g. `sqlite://`, `sqlite:///var/tmp/bench` or \
                         `postgres://postgres@127.0.0.1:5432/bench`"
                    .into(),
            });
        };
        match scheme {
            "sqlite" => Ok(StoreUrl::Sqlite {
                base: (!rest.is_empty()).then(|| PathBuf::from(rest)),
            }),
            "postgres" | "postgresql" => {
                let query = rest.split_once('?').map_or("", |(_, q)| q);
                if query
                    .split('&')
                    .any(|p| p.split('=').next() == Some("schema"))
                {
                    return Err(BenchError::InvalidStoreUrl {
                        url: redact(url),
                        reason: "every run creates a schema of its own (kb_...) and drops it \
                                 afterwards; leave out `schema=`"
                            .into(),
                    });
                }
                Ok(StoreUrl::Postgres { url: url.into() })
            }
            "redis" | "rediss" => Err(BenchError::UnsupportedStore(redact(url))),
            other => Err(BenchError::InvalidStoreUrl {
                url: redact(url),
                reason: format!(
                    "unknown scheme `{other}`; expected `sqlite` or `postgres` (later `redis`)"
                ),
            }),
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite { base: None } => f.write_str("sqlite://"),
            StoreUrl::Sqlite { base: Some(p) } => write!(f, "sqlite://{}", p.display()),
            StoreUrl::Postgres { url } => f.write_str(&redact(url)),
        }
    }
}

static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

impl StoreUrl {
    /// The backend's name, as reported with the figures.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreUrl::Sqlite { .. } => "sqlite",
            StoreUrl::Postgres { .. } => "postgres",
        }
    }

    /// Whether several nodes can share one store (a cluster).
    pub fn is_cluster(&self) -> bool {
        matches!(self, StoreUrl::Postgres { .. })
    }

    /// A new, empty place for one run of a workload; `label` names it (e.g. `w1-bulk`).
    pub fn fresh(&self, label: &str, keep: bool) -> BenchResult<StorePlace> {
        match self {
            StoreUrl::Sqlite { base: None } => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("kairos-bench-{label}-"))
                    .tempdir()
                    .map_err(|e| BenchError::io("cannot create a temporary directory", e))?;
                Ok(StorePlace::Sqlite(SqliteDir {
                    dir: dir.path().to_owned(),
                    remove: !keep,
                    temp: Some(dir),
                }))
            }
            StoreUrl::Sqlite { base: Some(base) } => {
                let run = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
                let dir = base.join(format!("{label}-{}-{run}", std::process::id()));
                if dir.exists() {
                    return Err(BenchError::InvalidStoreUrl {
                        url: self.to_string(),
                        reason: format!("{} exists already", dir.display()),
                    });
                }
                std::fs::create_dir_all(&dir)
                    .map_err(|e| BenchError::io(format!("cannot create {}", dir.display()), e))?;
                Ok(StorePlace::Sqlite(SqliteDir {
                    dir,
                    remove: !keep,
                    temp: None,
                }))
            }
            StoreUrl::Postgres { url } => Ok(StorePlace::Postgres(PgSchema::new(url, label, keep))),
        }
    }
}

/// Where one run's store lives; removed on drop unless kept.
#[derive(Debug)]
pub enum StorePlace {
    Sqlite(SqliteDir),
    Postgres(PgSchema),
}

/// A SQLite data directory of one run.
#[derive(Debug)]
pub struct SqliteDir {
    dir: PathBuf,
    remove: bool,
    temp: Option<tempfile::TempDir>,
}

impl StorePlace {
    /// How to reach the store (from this process or another).
    pub fn location(&self) -> StoreLocation {
        match self {
            StorePlace::Sqlite(s) => StoreLocation::SqliteDir(s.dir.clone()),
            StorePlace::Postgres(p) => StoreLocation::Postgres(p.config(None)),
        }
    }

    /// The SQLite data directory, if SQLite.
    pub fn sqlite_dir(&self) -> Option<&Path> {
        match self {
            StorePlace::Sqlite(s) => Some(&s.dir),
            StorePlace::Postgres(_) => None,
        }
    }

    /// The PostgreSQL schema, if PostgreSQL.
    pub fn postgres(&self) -> Option<&PgSchema> {
        match self {
            StorePlace::Sqlite(_) => None,
            StorePlace::Postgres(p) => Some(p),
        }
    }

    /// Opens the store (creating its schema).
    pub async fn open(&self) -> BenchResult<OpenStore> {
        self.location().open().await
    }

    /// Opens the store for node `node` of several sharing it: a connection pool, change feed
    /// and leader lock of its own, as a node in its own process has. SQLite has one node only
    /// (a second open fails on the data directory's lock).
    pub async fn open_as(&self, node: &str) -> BenchResult<OpenStore> {
        match self {
            StorePlace::Sqlite(_) => self.open().await,
            StorePlace::Postgres(p) => StoreLocation::Postgres(p.config(Some(node))).open().await,
        }
    }

    /// The store's size: for SQLite every file of the data directory (database, `-wal`,
    /// `-shm`, lock); for PostgreSQL the schema's tables with their indexes and TOAST.
    pub async fn size(&self) -> BenchResult<DiskUsage> {
        match self {
            StorePlace::Sqlite(s) => disk_usage(&s.dir),
            StorePlace::Postgres(p) => Ok(DiskUsage {
                total: p.size_bytes().await?,
                wal: None,
            }),
        }
    }
}

impl Drop for SqliteDir {
    fn drop(&mut self) {
        match self.temp.take() {
            Some(temp) if !self.remove => {
                let _ = temp.keep();
            }
            Some(temp) => drop(temp),
            None if self.remove => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            None => {}
        }
    }
}

/// How to reach one run's store, from this process or another one (`w4-node`).
#[derive(Debug, Clone)]
pub enum StoreLocation {
    SqliteDir(PathBuf),
    Postgres(PostgresConfig),
}

/// The environment variable that hands a PostgreSQL URL to a child process (not its
/// arguments, which every user of the machine can read).
pub const POSTGRES_URL_ENV: &str = "KAIROS_BENCH_POSTGRES_URL";

impl StoreLocation {
    /// Whether only one node uses this store (it may recover every run held under its name
    /// when it starts).
    pub fn exclusive(&self) -> bool {
        matches!(self, StoreLocation::SqliteDir(_))
    }

    /// Opens the store (creating and migrating its schema if needed).
    pub async fn open(&self) -> BenchResult<OpenStore> {
        match self {
            StoreLocation::SqliteDir(dir) => OpenStore::open_dir(dir).await,
            StoreLocation::Postgres(config) => {
                let postgres = PostgresStore::connect(config.clone()).await?;
                Ok(OpenStore {
                    store: Arc::new(postgres.clone()),
                    backend: Backend::Postgres(postgres),
                })
            }
        }
    }

    /// Arguments and environment for a child process of this program that takes
    /// `--dir DIR` or `--schema NAME` (with the URL in [`POSTGRES_URL_ENV`]).
    pub fn child_args(&self) -> (Vec<OsString>, Vec<(&'static str, String)>) {
        match self {
            StoreLocation::SqliteDir(dir) => (vec!["--dir".into(), dir.into()], Vec::new()),
            StoreLocation::Postgres(config) => (
                vec!["--schema".into(), config.schema.clone().into()],
                vec![(POSTGRES_URL_ENV, config.url.clone())],
            ),
        }
    }
}

/// An open store, with what is needed to close it cleanly (the SQLite pool checkpoints its
/// WAL and releases the data-directory lock; the PostgreSQL store ends its connections, which
/// releases a leader's lock at once).
pub struct OpenStore {
    pub store: Arc<dyn Store>,
    backend: Backend,
}

enum Backend {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl OpenStore {
    pub async fn open_dir(dir: &Path) -> BenchResult<Self> {
        let sqlite = SqliteStore::open_dir(dir).await?;
        Ok(Self {
            store: Arc::new(sqlite.clone()),
            backend: Backend::Sqlite(sqlite),
        })
    }

    /// Closes the store; other clones of `store` must be dropped already for the SQLite lock
    /// to go.
    pub async fn close(self) {
        drop(self.store);
        match self.backend {
            Backend::Sqlite(sqlite) => sqlite.close().await,
            Backend::Postgres(postgres) => postgres.close(),
        }
    }
}

/// Size of a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Every file (SQLite), or every table with its indexes (PostgreSQL).
    pub total: u64,
    /// SQLite's write-ahead log alone (PostgreSQL's is the server's, shared by all).
    pub wal: Option<u64>,
}

fn disk_usage(dir: &Path) -> BenchResult<DiskUsage> {
    let mut usage = DiskUsage {
        total: 0,
        wal: Some(0),
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| BenchError::io(format!("{}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BenchError::io(format!("{}", dir.display()), e))?;
        let meta = entry
            .metadata()
            .map_err(|e| BenchError::io(format!("{}", entry.path().display()), e))?;
        if meta.is_file() {
            usage.total += meta.len();
            if entry.file_name().to_string_lossy().ends_with("-wal") {
                usage.wal = usage.wal.map(|w| w + meta.len());
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_and_postgres_urls_and_refuses_the_others() {
        assert_eq!(
            "sqlite://".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite { base: None }
        );
        assert_eq!(
            "sqlite:///var/tmp/b".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite {
                base: Some("/var/tmp/b".into())
            }
        );
        let pg: StoreUrl = "postgres://u:secret@localhost/db".parse().unwrap();
        assert_eq!(pg.backend(), "postgres");
        assert!(pg.is_cluster());
        assert!(!pg.to_string().contains("secret"), "{pg}");
        assert!(!format!("{pg:?}").contains("secret"), "{pg:?}");
        assert!(
            "postgresql://localhost/db?connect_timeout=3"
                .parse::<StoreUrl>()
                .is_ok()
        );
        let err = "postgres://localhost/db?schema=x"
            .parse::<StoreUrl>()
            .unwrap_err();
        assert!(matches!(err, BenchError::InvalidStoreUrl { .. }), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = "redis://localhost".parse::<StoreUrl>().unwrap_err();
        assert!(matches!(err, BenchError::UnsupportedStore(_)));
        assert_eq!(err.exit_code(), 2);
        assert!(matches!(
            "/tmp/x".parse::<StoreUrl>().unwrap_err(),
            BenchError::InvalidStoreUrl { .. }
        ));
    }

    #[test]
    fn a_given_directory_gets_one_subdirectory_per_run_removed_afterwards() {
        let base = tempfile::tempdir().unwrap();
        let url = StoreUrl::Sqlite {
            base: Some(base.path().to_owned()),
        };
        let a = url.fresh("w1", false).unwrap();
        let b = url.fresh("w1", false).unwrap();
        assert_ne!(a.sqlite_dir(), b.sqlite_dir());
        let dir = a.sqlite_dir().unwrap().to_owned();
        assert!(dir.starts_with(base.path()));
        assert!(a.location().exclusive());
        drop(a);
        assert!(!dir.exists());
    }

    #[test]
    fn a_postgres_run_gets_a_schema_of_its_own() {
        let url: StoreUrl = "postgres://localhost/db".parse().unwrap();
        let a = url.fresh("w2", true).unwrap();
        let b = url.fresh("w2", true).unwrap();
        let (StoreLocation::Postgres(ca), StoreLocation::Postgres(cb)) =
            (a.location(), b.location())
        else {
            panic!("not PostgreSQL");
        };
        assert_ne!(ca.schema, cb.schema);
        assert!(ca.schema.starts_with("kb_w2_"), "{}", ca.schema);
        assert!(!a.location().exclusive());
        let (args, env) = a.location().child_args();
        assert_eq!(args, vec![OsString::from("--schema"), ca.schema.into()]);
        assert_eq!(env[0].0, POSTGRES_URL_ENV);
    }
}
