//! Why a benchmark could not produce its figures.

use kairos_runtime::JobError;
use kairos_store::StoreError;

/// Why a benchmark failed. Results that are merely bad (late or missed runs) are figures, not
/// errors.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A store URL naming a backend that does not exist yet.
    #[error(
        "store `{0}` is not supported yet: `sqlite://` and `postgres://` work today; Redis \
         plugs in through --store when its store exists"
    )]
    UnsupportedStore(String),
    /// A workload that needs a cluster store (several nodes) was given a single-node one.
    #[error("{workload} needs a cluster store (`--store postgres://...`), not `{store}`")]
    NeedsCluster {
        workload: &'static str,
        store: String,
    },
    #[error("invalid store URL `{url}`: {reason}")]
    InvalidStoreUrl { url: String, reason: String },
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    #[error("job error: {0}")]
    Job(#[from] JobError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A statement the benchmark itself sends (schema size, cleanup, the floor's plain SQL).
    #[error("PostgreSQL: {context}: {message}")]
    Postgres { context: String, message: String },
    /// A `kairos server` process of the failover workload.
    #[error("kairos server {node}: {reason}")]
    Server { node: String, reason: String },
    #[error("cannot draw the chart {path}: {reason}")]
    Chart { path: String, reason: String },
    /// The workload did not reach its end (e.g. runs did not finish within the time limit).
    #[error("{0}")]
    Incomplete(String),
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }

    /// Exit code of the program for this error: 2 for bad invocations (usage), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::UnsupportedStore(_)
            | BenchError::NeedsCluster { .. }
            | BenchError::InvalidStoreUrl { .. }
            | BenchError::InvalidParameter { .. } => 2,
            _ => 1,
        }
    }
}

pub type BenchResult<T> = Result<T, BenchError>;
