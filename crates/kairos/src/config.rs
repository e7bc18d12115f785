//! Server configuration: defaults, then a TOML file, then `KAIROS_*` environment variables,
//! then flags (each overrides the one before).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kairos_core::duration::parse_duration;
use serde::Deserialize;

/// The config file (`kairos server --config FILE`). Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory of the embedded store. Default `$XDG_DATA_HOME/kairos` (`~/.local/share/kairos`).
    pub data_dir: Option<PathBuf>,
    /// Address of the API and UI. Default `127.0.0.1:7433`.
    pub listen: Option<String>,
    /// Name of this node (owner of leases). Default: the host name.
    pub node_name: Option<String>,
    /// `text` or `json`. Default `text`.
    pub log_format: Option<String>,
    /// Attempts run at once. Default 16.
    pub concurrency: Option<usize>,
    /// Time running attempts get to finish on shutdown. Default `30s`.
    pub shutdown_grace: Option<String>,
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
}

/// Resolved server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub node_name: String,
    pub log_json: bool,
    pub concurrency: usize,
    pub shutdown_grace: std::time::Duration,
    pub lease: jiff::SignedDuration,
    pub lookahead: jiff::SignedDuration,
    /// Lowercase host names, without ports.
    pub allowed_hosts: Vec<String>,
    /// `scheme://host[:port]`, lowercase.
    pub allowed_origins: Vec<String>,
}

/// Flags of `kairos server` (each overrides file and environment).
#[derive(Debug, Default, Clone)]
pub struct ServerFlags {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub node_name: Option<String>,
    pub log_format: Option<String>,
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
        let lease = duration("lease", "KAIROS_LEASE", file.lease, "30s")?;
        if lease < jiff::SignedDuration::from_secs(3) {
            bail!("lease: must be at least 3s");
        }
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
        Ok(Self {
            allowed_hosts,
            allowed_origins,
            data_dir,
            listen,
            node_name,
            log_json,
            concurrency,
            shutdown_grace: std::time::Duration::try_from(grace)
                .unwrap_or(std::time::Duration::from_secs(30)),
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
