//! `--store URL`: which backend a workload runs on, and a fresh, empty store for each run.
//!
//! Every run of every workload gets its own empty store so that runs do not see each other's
//! data. For SQLite that is a new directory: under a temporary directory for `sqlite://`
//! (deleted afterwards), or under the given directory for `sqlite:///path/dir` (a subdirectory
//! per run, deleted afterwards unless `--keep`), so that the file system can be chosen.
//! PostgreSQL and Redis stores plug in here (a schema or key prefix per run) when they exist.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kairos_store::Store;
use kairos_store_sqlite::SqliteStore;

use crate::error::{BenchError, BenchResult};

/// A parsed `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://` (temporary directory) or `sqlite://PATH` (runs in subdirectories of PATH).
    Sqlite { base: Option<PathBuf> },
}

impl FromStr for StoreUrl {
    type Err = BenchError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(BenchError::InvalidStoreUrl {
                url: url.into(),
                reason: "expected SCHEME://..., e.g. `sqlite://` or `sqlite:///var/tmp/bench`"
                    .into(),
            });
        };
        match scheme {
            "sqlite" => Ok(StoreUrl::Sqlite {
                base: (!rest.is_empty()).then(|| PathBuf::from(rest)),
            }),
            "postgres" | "postgresql" | "redis" | "rediss" => {
                Err(BenchError::UnsupportedStore(url.into()))
            }
            other => Err(BenchError::InvalidStoreUrl {
                url: url.into(),
                reason: format!(
                    "unknown scheme `{other}`; expected `sqlite` (or, later, `postgres`, `redis`)"
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
        }
    }
}

static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

impl StoreUrl {
    /// The backend's name, as reported with the figures.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreUrl::Sqlite { .. } => "sqlite",
        }
    }

    /// A new, empty place for one run of a workload; `label` names it (e.g. `w1-bulk`).
    pub fn fresh(&self, label: &str, keep: bool) -> BenchResult<StorePlace> {
        match self {
            StoreUrl::Sqlite { base: None } => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("kairos-bench-{label}-"))
                    .tempdir()
                    .map_err(|e| BenchError::io("cannot create a temporary directory", e))?;
                Ok(StorePlace {
                    dir: dir.path().to_owned(),
                    remove: !keep,
                    temp: Some(dir),
                })
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
                Ok(StorePlace {
                    dir,
                    remove: !keep,
                    temp: None,
                })
            }
        }
    }
}

/// Where one run's store lives; removed on drop unless kept.
#[derive(Debug)]
pub struct StorePlace {
    dir: PathBuf,
    remove: bool,
    temp: Option<tempfile::TempDir>,
}

impl StorePlace {
    /// The SQLite data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the store (creating its schema).
    pub async fn open(&self) -> BenchResult<OpenStore> {
        OpenStore::open_dir(&self.dir).await
    }

    /// Bytes on disk (every file of the data directory: database, `-wal`, `-shm`, lock).
    pub fn disk_bytes(&self) -> BenchResult<DiskUsage> {
        disk_usage(&self.dir)
    }
}

impl Drop for StorePlace {
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

/// An open store, with what is needed to close it cleanly (the SQLite pool checkpoints its
/// WAL and releases the data-directory lock).
pub struct OpenStore {
    pub store: Arc<dyn Store>,
    sqlite: SqliteStore,
}

impl OpenStore {
    pub async fn open_dir(dir: &Path) -> BenchResult<Self> {
        let sqlite = SqliteStore::open_dir(dir).await?;
        Ok(Self {
            store: Arc::new(sqlite.clone()),
            sqlite,
        })
    }

    /// Closes the store; other clones of `store` must be dropped already for the lock to go.
    pub async fn close(self) {
        drop(self.store);
        self.sqlite.close().await;
    }
}

/// Sizes of a SQLite data directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Every file.
    pub total: u64,
    /// The write-ahead log alone.
    pub wal: u64,
}

fn disk_usage(dir: &Path) -> BenchResult<DiskUsage> {
    let mut usage = DiskUsage::default();
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
                usage.wal += meta.len();
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_urls_and_refuses_the_others() {
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
        let err = "postgres://localhost/db".parse::<StoreUrl>().unwrap_err();
        assert!(matches!(err, BenchError::UnsupportedStore(_)));
        assert_eq!(err.exit_code(), 2);
        assert!(matches!(
            "redis://localhost".parse::<StoreUrl>().unwrap_err(),
            BenchError::UnsupportedStore(_)
        ));
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
        assert_ne!(a.dir(), b.dir());
        assert!(a.dir().starts_with(base.path()));
        let dir = a.dir().to_owned();
        drop(a);
        assert!(!dir.exists());
    }
}
