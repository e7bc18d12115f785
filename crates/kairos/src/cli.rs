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

/// How the CLI reaches a server.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// URL of the Kairos server.
    #[arg(long, env = "KAIROS_SERVER", default_value = crate::client::DEFAULT_SERVER, global = true)]
    pub server: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// File holding the API token (else env `KAIROS_TOKEN`).
    #[arg(long, env = "KAIROS_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// PEM certificate of a CA to trust for an https:// server (besides the usual roots).
    #[arg(long, env = "KAIROS_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Namespace of the jobs.
    #[arg(
        long,
        short = 'N',
        env = "KAIROS_NAMESPACE",
        default_value = "default",
        global = true
    )]
    pub namespace: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node: scheduler, worker and API, on the embedded SQLite store or, with
    /// `--store postgres://…`, as one node of a cluster.
    Server {
        /// Data directory (default `$XDG_DATA_HOME/kairos`; env `KAIROS_DATA_DIR`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Store URL: `sqlite:///DIR` or `postgres://user:password@host/db[?schema=NAME]`
        /// (env `KAIROS_STORE`; default: SQLite in the data directory).
        #[arg(long)]
        store: Option<String>,
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
        /// `required` or `off` (env `KAIROS_AUTH`; default: `off` on loopback, else `required`).
        #[arg(long)]
        auth: Option<String>,
        /// Allow `--auth off` on an address beyond loopback; warns at every start.
        #[arg(long)]
        insecure_no_auth: bool,
        /// PEM certificate chain to serve HTTPS with (env `KAIROS_TLS_CERT`).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of the certificate (env `KAIROS_TLS_KEY`).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
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
        /// A calendar file (JSON or TOML: one calendar, or `[[calendars]]`) whose days and
        /// windows are not fire times; the times it rules out are listed as skipped, with why.
        /// Repeat for several.
        #[arg(long, value_name = "FILE")]
        exclude: Vec<PathBuf>,
        /// A calendar file: only fire times in it (or in another `--only` calendar) count.
        /// Repeat for several.
        #[arg(long, value_name = "FILE")]
        only: Vec<PathBuf>,
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
    /// Manage API tokens (admin).
    Token {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Read the audit log of changes.
    Audit {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Alert deliveries: what was raised, to which channel, and how sending it went.
    Alert {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: AlertCmd,
    },
    /// Copy a store's jobs and run history into another (e.g. SQLite into PostgreSQL).
    Store {
        #[command(subcommand)]
        command: StoreCmd,
    },
    /// List the nodes of the cluster and the leader.
    Node {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: NodeCmd,
    },
    /// Post events to topics, or relay PostgreSQL notifications as events.
    Event {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: EventCmd,
    },
    /// Manage calendars (holidays, blackout windows) that triggers exclude or are limited to.
    Calendar {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: CalendarCmd,
    },
    /// Make the server's jobs (and calendars) match a file (TOML `[[jobs]]` and `[[calendars]]`,
    /// or JSON); prints the plan.
    Apply {
        #[command(flatten)]
        client: ClientArgs,
        /// The jobs file, or a directory of them (its `*.toml` and `*.json` files, together).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Delete jobs the file does not list (in the namespaces it mentions), and calendars it
        /// does not list (in the namespaces it lists calendars in).
        #[arg(long)]
        prune: bool,
        /// Print the plan without changing anything.
        #[arg(long, conflicts_with = "watch")]
        dry_run: bool,
        /// Keep running: apply again whenever the file (or a file of the directory) changes. An
        /// invalid edit is reported and changes nothing; the last good state stays.
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventCmd {
    /// Post one event: each job subscribed to the topic (whose filter matches) gets a run.
    Emit {
        /// The topic, e.g. `user.signup`.
        topic: String,
        /// The event's id (idempotency key): posting it again creates no second run. Default:
        /// the payload's `id` field, else a new id.
        #[arg(long)]
        id: Option<String>,
        /// A file holding the payload (JSON; `-` reads standard input).
        #[arg(short = 'f', long = "file", conflicts_with = "data")]
        file: Option<PathBuf>,
        /// The payload as JSON text. Default `{}`.
        #[arg(long)]
        data: Option<String>,
        /// Only jobs of this namespace (default: every namespace the token may run jobs in).
        #[arg(long, short = 'N')]
        namespace: Option<String>,
    },
    /// Listen on a PostgreSQL channel and post each notification as an event (its payload, as
    /// JSON if it is JSON, else as `{"payload": "<text>"}`). Runs until stopped.
    Listen {
        /// The PostgreSQL database, e.g. postgres://app@db/app.
        #[arg(long)]
        postgres: String,
        /// The channel the database notifies (`pg_notify('channel', payload)`), spelled the same.
        #[arg(long)]
        channel: String,
        /// The topic to post to. Default: the channel's name.
        #[arg(long)]
        topic: Option<String>,
        /// Only jobs of this namespace (default: every namespace the token may run jobs in).
        #[arg(long, short = 'N')]
        namespace: Option<String>,
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
    Trigger {
        name: String,
        /// A JSON object for the run's tasks (they read it from the file named by
        /// `KAIROS_PARAMS`), e.g. '{"day": "2026-01-01"}'.
        #[arg(long)]
        params: Option<String>,
    },
    /// Create one run for each due time from --from to --to (both included) that has none; the
    /// runs start as the job's overlap policy allows (one at a time unless `overlap: allow`).
    Backfill {
        name: String,
        /// First instant of the range (RFC 3339, e.g. 2026-01-01T00:00:00Z).
        #[arg(long)]
        from: String,
        /// Last instant of the range (RFC 3339).
        #[arg(long)]
        to: String,
        /// Only list the due times that would get a run.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a job and its runs.
    Rm {
        name: String,
        /// Delete it even if other jobs run after it (their `after` triggers then wait for a job
        /// of that name).
        #[arg(long)]
        force: bool,
    },
    /// The job's next due times, and the times its calendars rule out (with why).
    Next {
        name: String,
        /// How many due times (1 to 1000).
        #[arg(
            short = 'n',
            long = "count",
            default_value_t = 10,
            value_parser = clap::value_parser!(u32).range(1..=1000)
        )]
        count: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum CalendarCmd {
    /// List the namespace's calendars.
    Ls,
    /// Show a calendar, and the jobs that use it (JSON).
    Get { name: String },
    /// Create or change calendars from files (JSON or TOML: one calendar, or `[[calendars]]`);
    /// every file is validated before anything is sent, and a calendar the server already has
    /// as written is left alone. A change re-plans the jobs that use the calendar.
    Apply {
        /// A calendar file, or a directory of them (its `*.toml` and `*.json` files). Repeat for
        /// several.
        #[arg(short = 'f', long = "file", required = true)]
        file: Vec<PathBuf>,
    },
    /// Delete a calendar; refused while jobs use it.
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
    /// Show a run and its attempts; a workflow run's steps as a tree.
    Get { id: i64 },
    /// Print a run's output.
    Logs {
        id: i64,
        /// Of this step of a workflow run.
        #[arg(long)]
        step: Option<String>,
        /// Keep printing while the run is active.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Cancel a run.
    Cancel { id: i64 },
    /// End a step of a workflow run that has not started as skipped.
    Skip { id: i64, step: String },
    /// End a step of a workflow run as succeeded (the steps below it decide again).
    MarkSucceeded { id: i64, step: String },
    /// Run a step of a workflow run, and everything downstream of it, again.
    Rerun { id: i64, step: String },
    /// Run the failed steps of a workflow run again.
    RerunFailed { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; its secret is printed once.
    Create {
        /// 1 to 63 characters: lowercase letters, digits, `_`, `.`, `-`.
        #[arg(long)]
        name: String,
        /// `viewer`, `operator` or `admin`.
        #[arg(long)]
        role: String,
        /// A namespace the token sees (repeat for several); default every namespace (`*`).
        #[arg(long = "namespace", value_name = "NS")]
        namespaces: Vec<String>,
        /// Lifetime, e.g. `90d` or `12h`; default no expiry.
        #[arg(long)]
        expires: Option<String>,
        /// Create it in this data directory's store instead of through a server (the first admin
        /// token; the server must be stopped).
        #[arg(long, conflicts_with = "store")]
        data_dir: Option<PathBuf>,
        /// Create it directly in this store (`postgres://…`: the first admin token of a
        /// cluster, while its nodes run; `sqlite:///DIR` as `--data-dir`).
        #[arg(long)]
        store: Option<String>,
    },
    /// List tokens (never their secrets).
    Ls,
    /// Revoke a token: it stops working at once.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List changes, newest first (in the `-N` namespace, or all with `-A`).
    Ls {
        /// Every namespace the token sees, and token changes (for admins of all namespaces).
        #[arg(long, short = 'A')]
        all_namespaces: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only entries older than this id (paging).
        #[arg(long)]
        before: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertCmd {
    /// List deliveries, newest first (in the `-N` namespace, or all with `-A`).
    Ls {
        /// Every namespace the token sees.
        #[arg(long, short = 'A')]
        all_namespaces: bool,
        /// Only this job's (in the `-N` namespace).
        #[arg(long)]
        job: Option<String>,
        /// `pending`, `sending`, `delivered` or `failed`.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only deliveries older than this id (paging).
        #[arg(long)]
        before: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes by name: address, leader and term, running attempts, last heartbeat.
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy jobs (with versions, state and next due times) and runs (with attempts and output)
    /// into an empty store. The source must not be in use; tokens and the audit log are not
    /// copied.
    Copy {
        /// The store to read: `sqlite:///DIR` or `postgres://…`.
        #[arg(long)]
        from: String,
        /// The empty store to fill: `postgres://…[?schema=NAME]` or `sqlite:///DIR`.
        #[arg(long)]
        to: String,
    },
}
