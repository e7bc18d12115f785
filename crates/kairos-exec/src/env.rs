//! The environment of a task or hook process.
//!
//! Layers, later ones winning: the server's environment (unless `clear_env`), the `run_as`
//! user's `USER`, `LOGNAME` and `HOME`, `env_files` in order, `env`, `secret_files`, extra
//! variables from the executor (`KAIROS_OUTCOME` for post hooks), and last the `KAIROS_*` run
//! variables, which a task cannot override (a process that is no run's gets none: see
//! [`crate::ExecRequest::run_vars`]). `KAIROS_STEP` and the exchange files' variables
//! (`KAIROS_PARAMS`, `KAIROS_UPSTREAM_RESULTS`, `KAIROS_RESULT`, see [`crate::exchange`]) are
//! Kairos's too: when Kairos does not set one, it is removed, so that its presence always means
//! what Kairos says it means.
//!
//! Values from env files and secret files may be secrets: errors name files, variables and line
//! numbers, never values, and nothing here logs.
//!
//! Env and secret files must be regular files (a FIFO would block the read for good, a device
//! such as `/dev/zero` would never end) of at most [`MAX_FILE_BYTES`]. They are opened without
//! blocking, checked with `fstat` on the opened file (no race with a swapped path), and read up
//! to the limit. This code blocks on the file system: callers run it on a blocking thread.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use kairos_core::spec::ProcessSettings;

use crate::RunContext;
use crate::identity::Identity;

/// Largest env file or secret file read (64 KiB).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Why an environment could not be built. Never contains a variable's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("cannot read env file `{path}`: {reason}")]
    EnvFileRead { path: String, reason: String },
    #[error("env file `{path}` line {line}: expected `KEY=VALUE`")]
    EnvFileSyntax { path: String, line: usize },
    #[error("cannot read secret file `{path}` for `{var}`: {reason}")]
    SecretFileRead {
        var: String,
        path: String,
        reason: String,
    },
}

/// The full environment for a child process (the child starts from exactly this set).
pub(crate) fn build_env(
    settings: &ProcessSettings,
    context: &RunContext,
    extra: &[(String, String)],
    identity: Option<&Identity>,
    run_vars: bool,
) -> Result<BTreeMap<OsString, OsString>, EnvError> {
    let mut env: BTreeMap<OsString, OsString> = if settings.clear_env {
        BTreeMap::new()
    } else {
        std::env::vars_os().collect()
    };
    // A process run as another user gets that user's `USER`, `LOGNAME` and `HOME`, as with
    // `su -` or `sudo -u` (the job's own variables still win).
    if let Some(identity) = identity {
        env.insert("USER".into(), identity.user.clone().into());
        env.insert("LOGNAME".into(), identity.user.clone().into());
        match &identity.home {
            Some(home) => env.insert("HOME".into(), home.into()),
            None => env.remove(OsStr::new("HOME")),
        };
    }
    for path in &settings.env_files {
        let content = read_regular_file(path).map_err(|reason| EnvError::EnvFileRead {
            path: path.clone(),
            reason,
        })?;
        let vars = parse_env_file(&content).map_err(|line| EnvError::EnvFileSyntax {
            path: path.clone(),
            line,
        })?;
        env.extend(vars);
    }
    for (key, value) in &settings.env {
        env.insert(key.into(), value.into());
    }
    for (var, path) in &settings.secret_files {
        let value = read_secret(path).map_err(|reason| EnvError::SecretFileRead {
            var: var.clone(),
            path: path.clone(),
            reason,
        })?;
        env.insert(var.into(), value);
    }
    for (key, value) in extra {
        env.insert(key.into(), value.into());
    }
    // The exchange files' variables are added by the caller, after these.
    for name in OPTIONAL_KAIROS_VARS {
        env.remove(OsStr::new(name));
    }
    let vars = kairos_vars(context);
    if run_vars {
        for (key, value) in vars {
            env.insert(key.into(), value.into());
        }
    } else {
        // No run: none of a run's variables, whoever set them.
        for (key, _) in vars {
            env.remove(OsStr::new(key));
        }
    }
    Ok(env)
}

/// Kairos's variables that are set only for some processes: never taken from the server's or
/// the job's environment.
const OPTIONAL_KAIROS_VARS: [&str; 13] = [
    "KAIROS_STEP",
    "KAIROS_RUN_TOKEN",
    "KAIROS_API_URL",
    crate::exchange::CHECKPOINT_VAR,
    crate::exchange::REPORTS_VAR,
    "KAIROS_UPSTREAM_RUN_ID",
    crate::exchange::UPSTREAM_RESULT_VAR,
    "KAIROS_EVENT_ID",
    "KAIROS_EVENT_TOPIC",
    crate::exchange::EVENT_VAR,
    crate::exchange::PARAMS_VAR,
    crate::exchange::UPSTREAM_RESULTS_VAR,
    crate::exchange::RESULT_VAR,
];

/// The variables describing the run, set for every task and hook (`KAIROS_STEP` for a
/// workflow's step only, `KAIROS_EVENT_ID` and `KAIROS_EVENT_TOPIC` for an event's run only).
pub(crate) fn kairos_vars(context: &RunContext) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("KAIROS_JOB", context.job.clone()),
        ("KAIROS_NAMESPACE", context.namespace.clone()),
        ("KAIROS_RUN_ID", context.run_id.to_string()),
        ("KAIROS_ATTEMPT", context.attempt.to_string()),
        ("KAIROS_SCHEDULED_FOR", context.scheduled_for.to_string()),
    ];
    if let Some(step) = &context.step {
        vars.push(("KAIROS_STEP", step.clone()));
    }
    if let Some(token) = &context.run_token {
        vars.push(("KAIROS_RUN_TOKEN", token.clone()));
    }
    if let Some(url) = &context.api_url {
        vars.push(("KAIROS_API_URL", url.clone()));
    }
    if let Some(id) = context.upstream_run_id {
        vars.push(("KAIROS_UPSTREAM_RUN_ID", id.to_string()));
    }
    if let Some(event) = &context.event {
        vars.push(("KAIROS_EVENT_ID", event.id.clone()));
        vars.push(("KAIROS_EVENT_TOPIC", event.topic.clone()));
    }
    vars
}

/// A secret file's content with trailing line endings removed (editors add one).
fn read_secret(path: &str) -> Result<OsString, String> {
    let mut bytes = read_regular_file(path)?;
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    Ok(OsString::from_vec(bytes))
}

/// The content of a regular file of at most [`MAX_FILE_BYTES`]; `Err` says why not (never with
/// any of the content, nor the path: the caller names the file). Opened without blocking (a
/// FIFO never makes it wait) and checked on the opened file. Blocking: call it from a blocking
/// thread. Also used for the alert channels' secret files.
pub fn read_regular_file(path: impl AsRef<std::path::Path>) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt;

    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path.as_ref())
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if let Some(what) = not_regular(&meta) {
        return Err(format!("it is {what}, not a regular file"));
    }
    let too_big = || format!("it is larger than {MAX_FILE_BYTES} bytes");
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    let content = read_at_most(file, MAX_FILE_BYTES, &meta).map_err(|e| e.to_string())?;
    if content.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    Ok(content)
}

/// What an opened file is when it is not a regular file (`a FIFO`, `a directory`, ...): such a
/// file is never read, since a FIFO may block for good and a device may never end.
pub(crate) fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;

    let kind = meta.file_type();
    if kind.is_file() {
        None
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("not a file")
    }
}

/// At most `limit + 1` bytes of an opened regular file (`meta` is its `fstat`): one byte more
/// than allowed tells the caller the file is too large, even if it grew after the `fstat`.
pub(crate) fn read_at_most(
    file: std::fs::File,
    limit: u64,
    meta: &std::fs::Metadata,
) -> std::io::Result<Vec<u8>> {
    use std::io::Read;

    let capacity = meta.len().min(limit + 1);
    let mut content = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut content)?;
    Ok(content)
}

/// Parses `KEY=VALUE` lines: blank lines and `#` comments are skipped, an `export ` prefix is
/// allowed, and a value wrapped in matching single or double quotes is unquoted (double quotes
/// also understand `\n`, `\"` and `\\`). On error returns the 1-based line number.
pub(crate) fn parse_env_file(content: &[u8]) -> Result<Vec<(OsString, OsString)>, usize> {
    let mut vars = Vec::new();
    for (index, raw) in content.split(|b| *b == b'\n').enumerate() {
        let line = trim(raw);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let line = line.strip_prefix(b"export ").map(trim).unwrap_or(line);
        let Some(eq) = line.iter().position(|b| *b == b'=') else {
            return Err(index + 1);
        };
        let key = trim(&line[..eq]);
        let valid_key = !key.is_empty()
            && !key[0].is_ascii_digit()
            && key
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.');
        if !valid_key {
            return Err(index + 1);
        }
        let value = unquote(trim(&line[eq + 1..]));
        vars.push((OsStr::from_bytes(key).to_owned(), OsString::from_vec(value)));
    }
    Ok(vars)
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn unquote(value: &[u8]) -> Vec<u8> {
    if value.len() >= 2 && value[0] == b'\'' && value[value.len() - 1] == b'\'' {
        return value[1..value.len() - 1].to_vec();
    }
    if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
        let inner = &value[1..value.len() - 1];
        let mut out = Vec::with_capacity(inner.len());
        let mut bytes = inner.iter();
        while let Some(&b) = bytes.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            match bytes.next() {
                Some(b'n') => out.push(b'\n'),
                Some(b't') => out.push(b'\t'),
                Some(&other) => out.push(other),
                None => out.push(b'\\'),
            }
        }
        return out;
    }
    // Unquoted: a ` #` starts a trailing comment.
    let end = value
        .windows(2)
        .position(|w| w == b" #")
        .unwrap_or(value.len());
    trim(&value[..end]).to_vec()
}
