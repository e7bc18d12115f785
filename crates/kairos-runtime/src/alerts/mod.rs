//! Alerts: telling people when runs fail, recover, go silent or run late.
//!
//! - **Rules** are a job's `notify` list and the server's global `[[alerts]]`
//!   ([`AlertsConfig::rules`]); each names a condition ([`kairos_core::alert`]) and channels.
//! - **Channels** are defined in the server's configuration only ([`Channel`]): a webhook (a
//!   signed JSON POST), a Slack-compatible incoming webhook, or a command. Their secrets (the
//!   webhook's signing key, the Slack URL) are read from files when a delivery is sent.
//! - The **evaluator** ([`evaluator`]) runs on the leader. It reads the activity log (the event
//!   stream's history: run ends, rescued runs, skipped due times) from a position kept in the
//!   store, and watches silences (dead-man switches) and late runs (SLAs). What it raises is
//!   queued in the store as one delivery per channel, under a key that makes each alert once
//!   (`run:42:failure:ops`), whichever leader raises it and however often.
//! - The **sender** ([`sender`]) runs on the leader too. It claims due deliveries of the
//!   channels it has, as many as it can send at once, with a lease, and sends each through the
//!   node's executor (the same isolation as a job's tasks), with a timeout, retrying with
//!   backoff; a channel that keeps failing never holds up scheduling or runs, and every attempt
//!   is recorded.

pub mod channels;
pub mod evaluator;
pub mod sender;

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use kairos_core::alert::AlertRule;
use serde::{Deserialize, Serialize};

/// The server's alert settings.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub channels: Vec<Channel>,
    /// Rules for every job (of some namespaces), besides each job's own `notify`.
    pub rules: Vec<GlobalRule>,
    /// The web UI's base URL for the links in alerts (`https://kairos.example`); `None`: links
    /// are paths (`/runs/42`).
    pub ui_url: Option<String>,
    /// How long ended deliveries are kept. Default 7 days.
    pub retention: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            rules: Vec::new(),
            ui_url: None,
            retention: DEFAULT_RETENTION,
        }
    }
}

impl AlertsConfig {
    /// Whether anything can raise an alert or send one.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }
}

/// Default of [`AlertsConfig::retention`].
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A global rule: a rule for every job of `namespaces` (`None`: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalRule {
    pub namespaces: Option<Vec<String>>,
    pub rule: AlertRule,
}

impl GlobalRule {
    pub fn applies_to(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == namespace))
    }
}

/// A channel: where alerts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Referenced by rules (`channels = ["ops"]`).
    pub name: String,
    pub kind: ChannelKind,
    /// Longest time one attempt may take. Default 10 s.
    pub timeout: Duration,
}

/// Default of [`Channel::timeout`].
pub const DEFAULT_CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// A JSON POST of the alert ([`AlertDoc`] plus `delivery`), signed with HMAC-SHA256 when a
    /// secret file is given (`Kairos-Signature: t=<unix seconds>,v1=<hex>` over `<t>.<body>`).
    Webhook {
        url: String,
        secret_file: Option<PathBuf>,
    },
    /// A Slack-compatible incoming webhook (`{"text": ...}`); the URL is a secret, read from a
    /// file.
    Slack { url_file: PathBuf },
    /// A program run as a job's `command` task would be, with the alert's document in the file
    /// named by `KAIROS_ALERT_FILE` (and `KAIROS_ALERT`, `KAIROS_ALERT_SUMMARY`,
    /// `KAIROS_ALERT_DELIVERY` set), in an environment of its own: only `PATH`, `HOME`, `LANG`
    /// and `TZ` of the server's ([`channels::PASSED_VARS`]), and no run variables.
    Command { argv: Vec<String> },
}

impl ChannelKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Command { .. } => "command",
        }
    }
}

/// An alert's document: what every channel renders, stored with each delivery (its payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertDoc {
    /// What raised it: `failure`, `failures`, `timeout`, `lost`, `recovery`, `skipped`,
    /// `no_success`, `sla_start`, `sla_finish`.
    pub alert: String,
    /// One line for people: "Job `backup` (default): run 42 failed: exit 1".
    pub summary: String,
    pub namespace: String,
    pub job: String,
    /// The rule that raised it: `notify[0]` (the job's) or `alerts[1]` (the server's).
    pub rule: String,
    /// When it was raised.
    pub at: Timestamp,
    /// The run it is about, if any (not for a dead-man switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<AlertRun>,
    /// `failures`: how many in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `no_success`: since when the job has had no success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_since: Option<Timestamp>,
    /// `skipped`: the due time not run, and why (`overlap`, `misfire`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `sla_start`, `sla_finish`: the deadline the run missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub links: AlertLinks,
}

/// The run an alert is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRun {
    pub id: i64,
    pub state: String,
    pub scheduled_for: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Links to the web UI (absolute with [`AlertsConfig::ui_url`], else paths).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertLinks {
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}
