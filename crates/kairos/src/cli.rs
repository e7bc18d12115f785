//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kairos",
    version,
    about = "Kairos: a job scheduler and task runner",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// URL of the Kairos server.
    #[arg(long, env = "KAIROS_SERVER", default_value = crate::client::DEFAULT_SERVER, global = true)]
    pub server: String,
    /// Namespace of the jobs.
    #[arg(
        long,
        short = 'N',
        env = "KAIROS_NAMESPACE",
        default_value = "default",
        global = true
    )]
    pub namespace: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node: scheduler, worker and API on the embedded SQLite store.
    Server {
        /// Data directory (default `$XDG_DATA_HOME/kairos`; env `KAIROS_DATA_DIR`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:7433; env `KAIROS_LISTEN`).
        #[arg(long)]
        listen: Option<String>,
        /// Config file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Name of this node (default: the host name; env `KAIROS_NODE_NAME`).
        #[arg(long)]
        node_name: Option<String>,
        /// Log format: `text` or `json` (env `KAIROS_LOG_FORMAT`).
        #[arg(long)]
        log_format: Option<String>,
    },
    /// Print the next fire times of a cron expression (no server needed).
    Next {
        /// Cron expression: 5 fields, 6 with seconds first, or a macro such as @daily.
        expr: String,
        /// IANA time zone (default UTC).
        #[arg(long)]
        tz: Option<String>,
        /// Start after this instant (RFC 3339; default now).
        #[arg(long)]
        from: Option<String>,
        /// How many fire times.
        #[arg(short = 'n', long = "count", default_value_t = 5)]
        count: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage jobs.
    Job {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: JobCmd,
    },
    /// Inspect and cancel runs.
    Run {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: RunCmd,
    },
    /// Make the server's jobs match a file (TOML `[[jobs]]` or JSON); prints the plan.
    Apply {
        #[command(flatten)]
        client: ClientArgs,
        /// The jobs file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Delete jobs the file does not list (in the namespaces it mentions).
        #[arg(long)]
        prune: bool,
        /// Print the plan without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// Create a job from a JSON or TOML file (`-` reads JSON from standard input).
    Create {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List jobs.
    Ls,
    /// Show a job.
    Get { name: String },
    /// Pause a job (no runs while paused).
    Pause { name: String },
    /// Resume a paused job (the pause is not replayed).
    Resume { name: String },
    /// Queue a run now.
    Trigger { name: String },
    /// Delete a job and its runs.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RunCmd {
    /// List runs, newest first.
    Ls {
        /// Only runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// Only runs in this state.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a run and its attempts.
    Get { id: i64 },
    /// Print a run's output.
    Logs {
        id: i64,
        /// Keep printing while the run is active.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Cancel a run.
    Cancel { id: i64 },
}
