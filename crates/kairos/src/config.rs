//! Server configuration: defaults, then a TOML file, then `KAIROS_*` environment variables,
//! then flags (each overrides the one before).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kairos_api::auth::AuthMode;
use kairos_core::duration::parse_duration;
use serde::Deserialize;

use crate::store_url::StoreUrl;

/// The config file (`kairos server --config FILE`). Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory of the embedded store. Default `$XDG_DATA_HOME/kairos` (`~/.local/share/kairos`).
    pub data_dir: Option<PathBuf>,
    /// The store: `sqlite:///DIR` or `postgres://user:password@host:port/db[?schema=NAME]`
    /// (a cluster: every node given the same database shares the work). Env `KAIROS_STORE`.
    /// Default: the embedded SQLite store in `data_dir`.
    pub store: Option<String>,
    /// Address of the API and UI. Default `127.0.0.1:7433`.
    pub listen: Option<String>,
    /// The URL other nodes reach this node's API at (`http://node3.internal:7433`), for the
    /// node registry and for passing on requests for live output. Env `KAIROS_ADVERTISE_URL`.
    /// Default: from `listen`, with the host name in place of an unspecified address
    /// (`0.0.0.0`, `::`).
    pub advertise_url: Option<String>,
    /// Name of this node (owner of leases). Default: the host name.
    pub node_name: Option<String>,
    /// `text` or `json`. Default `text`.
    pub log_format: Option<String>,
    /// Attempts run at once. Default 16.
    pub concurrency: Option<usize>,
    /// Time running attempts get to finish on shutdown. Default `30s`.
    pub shutdown_grace: Option<String>,
    /// How long the event stream's history is kept (`GET /api/v1/events/stream`).
    pub event_retention: Option<String>,
    /// Lease length of a claimed run. Default `30s`.
    pub lease: Option<String>,
    /// How long before its due time a run may be created (`0s`: never early). Default `250ms`.
    pub lookahead: Option<String>,
    /// Host names the API answers to, besides IP addresses and `localhost` (requests for other
    /// names are refused, against DNS rebinding). Env `KAIROS_ALLOWED_HOSTS`, comma-separated.
    /// Default: none.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins (`https://ui.example`) whose pages may send state-changing requests, besides the
    /// server's own. Env `KAIROS_ALLOWED_ORIGINS`, comma-separated. Default: none.
    pub allowed_origins: Option<Vec<String>>,
    /// `required` (every request but `/health`, `/ready` and the OpenAPI document carries a
    /// token) or `off`. Env `KAIROS_AUTH`. Default: `off` on a loopback address, else
    /// `required`; `off` on another address needs `insecure_no_auth`.
    pub auth: Option<String>,
    /// Allow `auth = "off"` on an address beyond loopback (anyone who reaches the port runs
    /// commands). Env `KAIROS_INSECURE_NO_AUTH=1`. Default false.
    pub insecure_no_auth: Option<bool>,
    /// `/metrics` answers without a token. Env `KAIROS_METRICS_PUBLIC=1`. Default false.
    pub metrics_public: Option<bool>,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`). Env `KAIROS_TLS_CERT`.
    /// Default: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`. Env `KAIROS_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
    /// Give each command and hook process a cgroup of its own where the machine allows (whole-
    /// task limits, the task's peak memory, no process escaping the task). Env
    /// `KAIROS_TASK_CGROUPS`. Default true.
    pub task_cgroups: Option<bool>,
    /// Alert channels: where alerts go (`[[channels]]`; see docs/alerts.md).
    pub channels: Option<Vec<ChannelFile>>,
    /// Alert rules for every job, besides each job's own `notify` (`[[alerts]]`).
    pub alerts: Option<Vec<GlobalRuleFile>>,
    /// The web UI's address in the links of alerts (`https://kairos.example`). Default:
    /// `advertise_url`.
    pub ui_url: Option<String>,
    /// How long ended alert deliveries are kept. Default `168h` (7 days).
    pub alert_retention: Option<String>,
}

/// A channel of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFile {
    /// What rules name it by.
    pub name: String,
    /// `webhook`, `slack` or `command`.
    pub kind: String,
    /// `webhook`: the URL alerts are POSTed to.
    pub url: Option<String>,
    /// `webhook`: a file holding the key that signs each request (HMAC-SHA256).
    pub secret_file: Option<PathBuf>,
    /// `slack`: a file holding the incoming webhook's URL (a secret).
    pub url_file: Option<PathBuf>,
    /// `command`: the program and its arguments.
    pub argv: Option<Vec<String>>,
    /// Longest time one attempt may take. Default `10s`, at most `5m`.
    pub timeout: Option<String>,
}

/// A global alert rule of the config file: a job's `notify` rule, for every job of
/// `namespaces` (default all).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRuleFile {
    pub on: kairos_core::alert::Condition,
    pub count: Option<u32>,
    pub within: Option<String>,
    pub start_within: Option<String>,
    pub finish_within: Option<String>,
    pub channels: Vec<String>,
    pub namespaces: Option<Vec<String>>,
}

/// Resolved server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub store: StoreUrl,
    /// Where other nodes reach this one (scheme added by the server).
    pub advertise: String,
    pub listen: SocketAddr,
    pub node_name: String,
    pub log_json: bool,
    pub concurrency: usize,
    pub shutdown_grace: std::time::Duration,
    pub event_retention: std::time::Duration,
    pub lease: kairos_core::lease::LeaseTiming,
    pub lookahead: jiff::SignedDuration,
    /// Lowercase host names, without ports.
    pub allowed_hosts: Vec<String>,
    /// `scheme://host[:port]`, lowercase.
    pub allowed_origins: Vec<String>,
    pub auth: kairos_api::auth::AuthMode,
    /// Authentication is off on an address beyond loopback, as asked.
    pub insecure_no_auth: bool,
    pub metrics_public: bool,
    /// Certificate chain and key files (PEM), for HTTPS.
    pub tls: Option<TlsFiles>,
    pub task_cgroups: bool,
    pub alerts: kairos_runtime::alerts::AlertsConfig,
}

/// The files of the server's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Flags of `kairos server` (each overrides file and environment).
#[derive(Debug, Default, Clone)]
pub struct ServerFlags {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub listen: Option<String>,
    pub node_name: Option<String>,
    pub log_format: Option<String>,
    pub auth: Option<String>,
    pub insecure_no_auth: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7433";

pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("kairos");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/kairos"),
        None => PathBuf::from("kairos-data"),
    }
}

fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "kairos".into()
    } else {
        name
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A boolean from the environment (`1`/`true`, `0`/`false`), else the file's, else false.
fn flag(env_name: &str, file: Option<bool>) -> anyhow::Result<bool> {
    match env(env_name).as_deref() {
        Some("1" | "true") => Ok(true),
        Some("0" | "false") => Ok(false),
        Some(other) => bail!("{env_name}: `{other}` is not `1`, `true`, `0` or `false`"),
        None => Ok(file.unwrap_or(false)),
    }
}

/// A comma-separated list from the environment, else the file's list.
fn list(env_name: &str, file: Option<Vec<String>>) -> Vec<String> {
    match env(env_name) {
        Some(v) => v
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        None => file.unwrap_or_default(),
    }
}

/// An `http://` or `https://` URL of at most 2048 characters, without whitespace.
fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && !url.chars().any(char::is_whitespace)
}

/// A host name as `allowed_hosts` takes it: letters, digits, `-` and `.`, no port.
fn check_host_name(field: &str, name: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ok {
        bail!("{field}: `{name}` is not a host name (letters, digits, `-` and `.`, no port)");
    }
    Ok(name.trim_end_matches('.').to_ascii_lowercase())
}

/// An origin as `allowed_origins` takes it: `http://` or `https://`, a host and an optional
/// port, nothing after.
fn check_origin(field: &str, origin: &str) -> anyhow::Result<String> {
    let lower = origin.trim_end_matches('/').to_ascii_lowercase();
    let authority = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    let ok = authority.is_some_and(|a| {
        !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    if !ok {
        bail!("{field}: `{origin}` is not an origin such as `https://ui.example:8443`");
    }
    Ok(lower)
}

/// The alert channels and global rules, checked; errors name the field (`channels[1].url`).
fn alerts_config(
    channels: Vec<ChannelFile>,
    rules: Vec<GlobalRuleFile>,
    ui_url: String,
    retention: jiff::SignedDuration,
) -> anyhow::Result<kairos_runtime::alerts::AlertsConfig> {
    use kairos_runtime::alerts::{Channel, ChannelKind, DEFAULT_CHANNEL_TIMEOUT, GlobalRule};
    let mut checked: Vec<Channel> = Vec::new();
    for (i, c) in channels.into_iter().enumerate() {
        let at = format!("channels[{i}]");
        kairos_core::job::validate_name(&c.name).map_err(|e| anyhow::anyhow!("{at}.name: {e}"))?;
        if checked.iter().any(|d| d.name == c.name) {
            bail!("{at}.name: `{}` names another channel too", c.name);
        }
        let unexpected = |field: &str, set: bool| -> anyhow::Result<()> {
            if set {
                bail!("{at}.{field}: does not apply to a `{}` channel", c.kind);
            }
            Ok(())
        };
        let kind = match c.kind.as_str() {
            "webhook" => {
                unexpected("url_file", c.url_file.is_some())?;
                unexpected("argv", c.argv.is_some())?;
                let Some(url) = c.url else {
                    bail!("{at}.url: a webhook needs the URL to POST alerts to");
                };
                let ok = is_http_url(&url);
                if !ok {
                    // Not echoed: a webhook URL may carry a secret.
                    bail!("{at}.url: not an http:// or https:// URL (at most 2048 characters)");
                }
                ChannelKind::Webhook {
                    url,
                    secret_file: c.secret_file,
                }
            }
            "slack" => {
                unexpected("url", c.url.is_some())?;
                unexpected("secret_file", c.secret_file.is_some())?;
                unexpected("argv", c.argv.is_some())?;
                let Some(url_file) = c.url_file else {
                    bail!("{at}.url_file: a Slack channel needs the file holding its webhook URL");
                };
                ChannelKind::Slack { url_file }
            }
            "command" => {
                unexpected("url", c.url.is_some())?;
                unexpected("url_file", c.url_file.is_some())?;
                unexpected("secret_file", c.secret_file.is_some())?;
                let argv = c.argv.unwrap_or_default();
                if argv.first().is_none_or(String::is_empty) {
                    bail!("{at}.argv: a command channel needs the program to run");
                }
                ChannelKind::Command { argv }
            }
            other => bail!("{at}.kind: `{other}` is not `webhook`, `slack` or `command`"),
        };
        let timeout = match c.timeout {
            None => DEFAULT_CHANNEL_TIMEOUT,
            Some(t) => {
                let d =
                    parse_duration(&t, false).map_err(|e| anyhow::anyhow!("{at}.timeout: {e}"))?;
                if d > jiff::SignedDuration::from_mins(5) {
                    bail!("{at}.timeout: must be at most 5m");
                }
                std::time::Duration::try_from(d).unwrap_or(DEFAULT_CHANNEL_TIMEOUT)
            }
        };
        checked.push(Channel {
            name: c.name,
            kind,
            timeout,
        });
    }
    let mut global = Vec::new();
    for (i, r) in rules.into_iter().enumerate() {
        let at = format!("alerts[{i}]");
        let spec = kairos_core::alert::NotifySpec {
            on: r.on,
            count: r.count,
            within: r.within,
            start_within: r.start_within,
            finish_within: r.finish_within,
            channels: r.channels,
        };
        let mut errs = kairos_core::ValidationErrors::default();
        let rule = spec.validate(&at, &mut errs);
        if let Some(e) = errs.errors.first() {
            bail!("{}: {}", e.field, e.message);
        }
        for (j, name) in spec.channels.iter().enumerate() {
            if !checked.iter().any(|c| &c.name == name) {
                bail!("{at}.channels[{j}]: no channel `{name}` in `[[channels]]`");
            }
        }
        for (j, ns) in r.namespaces.iter().flatten().enumerate() {
            kairos_core::job::validate_name(ns)
                .map_err(|e| anyhow::anyhow!("{at}.namespaces[{j}]: {e}"))?;
        }
        if let Some(rule) = rule {
            global.push(GlobalRule {
                namespaces: r.namespaces,
                rule,
            });
        }
    }
    let ok = is_http_url(&ui_url);
    if !ok {
        bail!("ui_url: `{ui_url}` is not a URL such as https://kairos.example");
    }
    Ok(kairos_runtime::alerts::AlertsConfig {
        channels: checked,
        rules: global,
        ui_url: Some(ui_url.trim_end_matches('/').to_owned()),
        retention: std::time::Duration::try_from(retention)
            .unwrap_or(kairos_runtime::alerts::DEFAULT_RETENTION),
    })
}

impl ServerConfig {
    pub fn resolve(flags: ServerFlags) -> anyhow::Result<Self> {
        let file = match &flags.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = flags
            .data_dir
            .or_else(|| env("KAIROS_DATA_DIR").map(PathBuf::from))
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let store = match flags.store.or_else(|| env("KAIROS_STORE")).or(file.store) {
            Some(url) => StoreUrl::parse(&url)?,
            None => StoreUrl::Sqlite {
                dir: data_dir.clone(),
            },
        };
        let listen = flags
            .listen
            .or_else(|| env("KAIROS_LISTEN"))
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen.parse().with_context(|| {
            format!("listen: `{listen}` is not an address such as 127.0.0.1:7433")
        })?;
        let node_name = flags
            .node_name
            .or_else(|| env("KAIROS_NODE_NAME"))
            .or(file.node_name)
            .unwrap_or_else(host_name);
        if node_name.is_empty() || node_name.len() > 200 {
            bail!("node_name: must be 1 to 200 characters");
        }
        let log_format = flags
            .log_format
            .or_else(|| env("KAIROS_LOG_FORMAT"))
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        let log_json = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("log_format: `{other}` is not `text` or `json`"),
        };
        let concurrency = match env("KAIROS_CONCURRENCY") {
            Some(v) => v
                .parse()
                .with_context(|| format!("KAIROS_CONCURRENCY: `{v}` is not a number"))?,
            None => file.concurrency.unwrap_or(16),
        };
        if concurrency == 0 || concurrency > 10_000 {
            bail!("concurrency: must be between 1 and 10000");
        }
        let duration_or_zero = |field: &str,
                                env_name: &str,
                                value: Option<String>,
                                default: &str,
                                allow_zero: bool|
         -> anyhow::Result<jiff::SignedDuration> {
            let v = env(env_name).or(value).unwrap_or_else(|| default.into());
            parse_duration(&v, allow_zero).map_err(|e| anyhow::anyhow!("{field}: {e}"))
        };
        let duration = |field: &str, env_name: &str, value: Option<String>, default: &str| {
            duration_or_zero(field, env_name, value, default, false)
        };
        let grace = duration(
            "shutdown_grace",
            "KAIROS_SHUTDOWN_GRACE",
            file.shutdown_grace,
            "30s",
        )?;
        let retention = duration_or_zero(
            "event_retention",
            "KAIROS_EVENT_RETENTION",
            file.event_retention,
            "1h",
            true,
        )?;
        // The heartbeat and the point a worker gives an attempt up derive from the lease.
        let lease = duration("lease", "KAIROS_LEASE", file.lease, "30s")?;
        let lease = kairos_core::lease::LeaseTiming::new(lease)
            .map_err(|e| anyhow::anyhow!("lease: {e}"))?;
        let lookahead = duration_or_zero(
            "lookahead",
            "KAIROS_LOOKAHEAD",
            file.lookahead,
            "250ms",
            true,
        )?;
        if lookahead > jiff::SignedDuration::from_secs(5) {
            bail!("lookahead: must be at most 5s");
        }
        let allowed_hosts = list("KAIROS_ALLOWED_HOSTS", file.allowed_hosts)
            .iter()
            .map(|h| check_host_name("allowed_hosts", h))
            .collect::<anyhow::Result<_>>()?;
        let allowed_origins = list("KAIROS_ALLOWED_ORIGINS", file.allowed_origins)
            .iter()
            .map(|o| check_origin("allowed_origins", o))
            .collect::<anyhow::Result<_>>()?;
        let insecure_no_auth =
            flags.insecure_no_auth || flag("KAIROS_INSECURE_NO_AUTH", file.insecure_no_auth)?;
        let metrics_public = flag("KAIROS_METRICS_PUBLIC", file.metrics_public)?;
        let loopback = listen.ip().is_loopback();
        let auth = match flags
            .auth
            .or_else(|| env("KAIROS_AUTH"))
            .or(file.auth)
            .as_deref()
        {
            Some("required") => AuthMode::Required,
            Some("off") => AuthMode::Off,
            None if loopback => AuthMode::Off,
            None => AuthMode::Required,
            Some(other) => bail!("auth: `{other}` is not `required` or `off`"),
        };
        if auth == AuthMode::Off && !loopback && !insecure_no_auth {
            bail!(
                "auth: refusing to listen on {listen} without authentication: anyone who reaches \
                 the port could run commands. Create a token (`kairos token create --data-dir \
                 DIR --name admin --role admin`) and keep `auth = \"required\"`, listen on \
                 127.0.0.1, or pass --insecure-no-auth if something else guards the port"
            );
        }
        let tls_cert = flags
            .tls_cert
            .or_else(|| env("KAIROS_TLS_CERT").map(PathBuf::from))
            .or(file.tls_cert);
        let tls_key = flags
            .tls_key
            .or_else(|| env("KAIROS_TLS_KEY").map(PathBuf::from))
            .or(file.tls_key);
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => bail!("tls_key: a TLS certificate needs its key (--tls-key)"),
            (None, Some(_)) => bail!("tls_cert: a TLS key needs its certificate (--tls-cert)"),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let advertise = match env("KAIROS_ADVERTISE_URL").or(file.advertise_url) {
            Some(url) => {
                let ok = is_http_url(&url);
                if !ok {
                    bail!("advertise_url: `{url}` is not a URL such as http://node3.internal:7433");
                }
                url.trim_end_matches('/').to_owned()
            }
            None if listen.ip().is_unspecified() => {
                format!("{scheme}://{}:{}", host_name(), listen.port())
            }
            None => format!("{scheme}://{listen}"),
        };
        let task_cgroups = match env("KAIROS_TASK_CGROUPS") {
            Some(_) => flag("KAIROS_TASK_CGROUPS", None)?,
            None => file.task_cgroups.unwrap_or(true),
        };
        let alert_retention = duration(
            "alert_retention",
            "KAIROS_ALERT_RETENTION",
            file.alert_retention,
            "168h",
        )?;
        let alerts = alerts_config(
            file.channels.unwrap_or_default(),
            file.alerts.unwrap_or_default(),
            file.ui_url.unwrap_or_else(|| advertise.clone()),
            alert_retention,
        )?;
        if !alerts.is_empty() && retention.is_zero() {
            bail!(
                "event_retention: alerts are raised from the activity log; it cannot be off \
                 (`0s`) while channels are configured"
            );
        }
        Ok(Self {
            alerts,
            task_cgroups,
            auth,
            insecure_no_auth: insecure_no_auth && auth == AuthMode::Off && !loopback,
            metrics_public,
            tls,
            allowed_hosts,
            allowed_origins,
            data_dir,
            store,
            advertise,
            listen,
            node_name,
            log_json,
            concurrency,
            shutdown_grace: std::time::Duration::try_from(grace)
                .unwrap_or(std::time::Duration::from_secs(30)),
            event_retention: std::time::Duration::try_from(retention)
                .unwrap_or(std::time::Duration::from_secs(3600)),
            lease,
            lookahead,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn with_file(text: &str) -> anyhow::Result<ServerConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kairos.toml");
        std::fs::write(&path, text).unwrap();
        ServerConfig::resolve(ServerFlags {
            config: Some(path),
            ..ServerFlags::default()
        })
    }

    #[test]
    fn lookahead_defaults_accepts_zero_and_is_bounded() {
        assert_eq!(
            with_file("").unwrap().lookahead,
            jiff::SignedDuration::from_millis(250)
        );
        assert_eq!(
            with_file("lookahead = \"0s\"").unwrap().lookahead,
            jiff::SignedDuration::ZERO
        );
        let err = with_file("lookahead = \"10s\"").unwrap_err().to_string();
        assert!(err.contains("lookahead") && err.contains("5s"), "{err}");
        let err = with_file("lookahead = \"soon\"").unwrap_err().to_string();
        assert!(err.starts_with("lookahead:"), "{err}");
    }

    fn with_flags(flags: ServerFlags) -> anyhow::Result<ServerConfig> {
        ServerConfig::resolve(flags)
    }

    #[test]
    fn the_advertised_url_comes_from_listen_or_the_setting() {
        let on = |listen: &str| ServerFlags {
            listen: Some(listen.into()),
            insecure_no_auth: true,
            auth: Some("off".into()),
            ..ServerFlags::default()
        };
        assert_eq!(
            with_flags(on("127.0.0.1:7433")).unwrap().advertise,
            "http://127.0.0.1:7433"
        );
        let any = with_flags(on("0.0.0.0:7433")).unwrap().advertise;
        assert!(
            any.starts_with("http://") && any.ends_with(":7433"),
            "{any}"
        );
        assert!(!any.contains("0.0.0.0"), "{any}");
        let set = with_file("advertise_url = \"http://node3.internal:7433/\"\n").unwrap();
        assert_eq!(set.advertise, "http://node3.internal:7433");
        let bad = with_file("advertise_url = \"node3\"\n")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("advertise_url"), "{bad}");
    }

    #[test]
    fn auth_defaults_to_required_beyond_loopback() {
        let on = |listen: &str| ServerFlags {
            listen: Some(listen.into()),
            ..ServerFlags::default()
        };
        assert_eq!(
            with_flags(on("127.0.0.1:7433")).unwrap().auth,
            AuthMode::Off
        );
        assert_eq!(with_flags(on("[::1]:7433")).unwrap().auth, AuthMode::Off);
        assert_eq!(
            with_flags(on("0.0.0.0:7433")).unwrap().auth,
            AuthMode::Required
        );
        let err = with_flags(ServerFlags {
            auth: Some("off".into()),
            ..on("0.0.0.0:7433")
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("refusing to listen on 0.0.0.0:7433"), "{err}");
        let insecure = with_flags(ServerFlags {
            auth: Some("off".into()),
            insecure_no_auth: true,
            ..on("0.0.0.0:7433")
        })
        .unwrap();
        assert_eq!(insecure.auth, AuthMode::Off);
        assert!(insecure.insecure_no_auth);
        assert_eq!(
            with_flags(ServerFlags {
                auth: Some("required".into()),
                ..on("127.0.0.1:7433")
            })
            .unwrap()
            .auth,
            AuthMode::Required
        );
        let err = with_flags(ServerFlags {
            auth: Some("maybe".into()),
            ..on("127.0.0.1:7433")
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("auth:"), "{err}");
        let err = with_flags(ServerFlags {
            tls_cert: Some("c.pem".into()),
            ..on("127.0.0.1:7433")
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("tls_key:"), "{err}");
    }

    #[test]
    fn allowed_hosts_and_origins_are_checked() {
        let c = with_file(
            "allowed_hosts = [\"Kairos.Internal\"]\nallowed_origins = [\"https://UI.example:8443/\"]",
        )
        .unwrap();
        assert_eq!(c.allowed_hosts, ["kairos.internal"]);
        assert_eq!(c.allowed_origins, ["https://ui.example:8443"]);
        let err = with_file("allowed_hosts = [\"kairos.internal:7433\"]")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("allowed_hosts:"), "{err}");
        let err = with_file("allowed_origins = [\"ui.example\"]")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("allowed_origins:"), "{err}");
    }
}
