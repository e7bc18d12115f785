//! One attempt of one delivery to one channel, and how it ended.
//!
//! Every attempt goes through the node's [`Executor`], so that a channel gets the isolation of a
//! job's task: a webhook or Slack message is an `http` task (the executor's shared client, its
//! timeout), a command channel a `command` task (its own process group, killed on timeout).
//!
//! | channel | request | success |
//! | --- | --- | --- |
//! | webhook | `POST url`, the alert's document plus `"delivery": <id>`, headers `Content-Type`, `Kairos-Delivery`, `Kairos-Alert` and, with a secret file, `Kairos-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` | any 2xx |
//! | slack | `POST` to the URL in `url_file`, `{"text": "<summary> <link>"}` | any 2xx |
//! | command | `argv`, the document in the file named by `KAIROS_ALERT_FILE`, `KAIROS_ALERT` (the alert's kind), `KAIROS_ALERT_SUMMARY` and `KAIROS_ALERT_DELIVERY` set | exit 0 |
//!
//! A command channel's environment is not the server's (which may hold the store's URL and its
//! password, or any other secret the server was started with): only [`PASSED_VARS`] of it, if
//! set, and the four variables above. Neither is it a run's: no `KAIROS_RUN_ID`, `KAIROS_JOB`,
//! `KAIROS_RESULT` or other run variable ([`kairos_exec::ExecRequest::run_vars`]).
//!
//! # Failures
//!
//! An attempt that did not succeed is [`SendResult::Failed`], retryable or not:
//!
//! - retryable: no response (connection error, timeout), `5xx`, `408`, `429`; a command's
//!   non-zero exit, signal or timeout; a secret file that is missing or unreadable (it may
//!   appear);
//! - permanent: any other HTTP status (a `4xx` says the request itself is wrong), a payload that
//!   is not an alert document.
//!
//! [`SendResult::into_outcome`] turns it into the store's [`AlertOutcome`]: a retry after
//! [`backoff`], until [`MAX_ATTEMPTS`] attempts have been made.
//!
//! # Secrets
//!
//! Secret files (the webhook's signing key, the Slack URL) are read when an attempt starts, on a
//! blocking thread, with the executor's reader for `secret_files`: only a regular file of at most
//! [`kairos_exec::MAX_FILE_BYTES`], opened without blocking (a FIFO cannot hang the node). Errors
//! name the file and the reason, never its content; the error text recorded for an HTTP failure
//! never holds the URL (the Slack URL is a credential), and holds at most
//! [`ERROR_TEXT_CHARS`] characters of a response body or a command's output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use kairos_core::run::{AttemptOutcome, AttemptStatus};
use kairos_core::spec::{CommandTask, HttpTask, ProcessSettings, TaskSpec};
use kairos_exec::{ExecRequest, Executor, OutputBuffer, RunContext};
use kairos_store::{AlertDelivery, AlertOutcome};
use serde_json::Value;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::{AlertDoc, Channel, ChannelKind};

/// Attempts a delivery gets in all; after the last one fails it is `failed`.
pub const MAX_ATTEMPTS: u32 = 8;

/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// Spread of the waits between attempts (±10 %), so that deliveries that failed together (a
/// receiver that was down) do not all come back at the same instant.
const BACKOFF_JITTER: f64 = 0.1;

/// Time between SIGTERM and SIGKILL when a command channel's process outlives its timeout.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// Most characters of a response body or a command's output kept in an attempt's error.
pub const ERROR_TEXT_CHARS: usize = 200;

/// The server's variables a command channel gets, if set: what a program needs to be found and
/// to read and write text and times as the server does.
pub const PASSED_VARS: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

/// Output kept of an attempt (response body, a command's stdout and stderr): only its first
/// lines end up in an error, so a small buffer does.
const OUTPUT_LIMIT: usize = 16 * 1024;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    Delivered {
        /// The HTTP status, for webhook and Slack channels.
        status: Option<u16>,
    },
    Failed {
        /// Whether a later attempt may succeed.
        retryable: bool,
        /// Why, in a few words; never a secret.
        error: String,
        status: Option<u16>,
    },
}

impl SendResult {
    pub fn retryable(error: impl Into<String>) -> Self {
        SendResult::Failed {
            retryable: true,
            error: error.into(),
            status: None,
        }
    }

    pub fn permanent(error: impl Into<String>) -> Self {
        SendResult::Failed {
            retryable: false,
            error: error.into(),
            status: None,
        }
    }

    /// What the store records after attempt number `attempts` (1-based) ended with this:
    /// delivered; a retry after [`backoff_with`]`(attempts, random)` from `now`; or failed (a
    /// permanent failure, or the last attempt). `random` is a uniform sample in `[0, 1)`.
    pub fn into_outcome(self, attempts: u32, now: Timestamp, random: f64) -> AlertOutcome {
        match self {
            SendResult::Delivered { status } => AlertOutcome::Delivered { status },
            SendResult::Failed {
                retryable: true,
                error,
                status,
            } => match backoff_with(attempts, random) {
                Some(wait) => AlertOutcome::Retry {
                    at: after(now, wait),
                    error,
                    status,
                },
                None => AlertOutcome::Failed {
                    error: format!("gave up after {attempts} attempts: {error}"),
                    status,
                },
            },
            SendResult::Failed {
                retryable: false,
                error,
                status,
            } => AlertOutcome::Failed { error, status },
        }
    }
}

/// The wait after attempt number `attempts` (1-based) failed: `min(2^(attempts-1) s, 5 min)`,
/// spread by ±10 %; `None` once [`MAX_ATTEMPTS`] attempts have been made.
pub fn backoff(attempts: u32) -> Option<Duration> {
    backoff_with(attempts, rand::random::<f64>())
}

/// [`backoff`] with the jitter's sample given: `random` uniform in `[0, 1)` (0.5: no spread).
pub fn backoff_with(attempts: u32, random: f64) -> Option<Duration> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let exponent = i32::try_from(attempts.max(1) - 1)
        .unwrap_or(i32::MAX)
        .min(30);
    let base = 2f64.powi(exponent).min(MAX_BACKOFF.as_secs_f64());
    let spread = base * BACKOFF_JITTER * (random.clamp(0.0, 1.0) * 2.0 - 1.0);
    Some(Duration::from_secs_f64((base + spread).max(0.0)))
}

/// `t + d`, saturating.
pub(crate) fn after(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The `Kairos-Signature` header's value for `body` sent at `t` (unix seconds):
/// `t=<t>,v1=<lowercase hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .expect("HMAC takes keys of any length (longer ones are hashed first)");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Sends `delivery` to `channel` once, through `executor`. `now` is the attempt's time (the
/// signature's `t`); `cancel` stops the attempt (a process is signalled), which then fails
/// (retryable).
pub async fn send(
    executor: &dyn Executor,
    channel: &Channel,
    delivery: &AlertDelivery,
    now: Timestamp,
    cancel: &CancellationToken,
) -> SendResult {
    let document = match Document::of(delivery) {
        Ok(document) => document,
        Err(e) => return SendResult::permanent(e),
    };
    let attempt = Attempt {
        executor,
        channel,
        delivery,
        cancel,
    };
    match &channel.kind {
        ChannelKind::Webhook { url, secret_file } => {
            let mut headers = BTreeMap::from([
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("Kairos-Delivery".to_owned(), delivery.id.to_string()),
                ("Kairos-Alert".to_owned(), delivery.alert.clone()),
            ]);
            if let Some(path) = secret_file {
                let secret = match read_secret(path).await {
                    Ok(secret) => secret,
                    Err(e) => return SendResult::retryable(e),
                };
                headers.insert(
                    "Kairos-Signature".to_owned(),
                    signature(&secret, now.as_second(), &document.body),
                );
            }
            attempt.post(url.clone(), headers, document.body).await
        }
        ChannelKind::Slack { url_file } => {
            let url = match read_url(url_file).await {
                Ok(url) => url,
                Err(e) => return SendResult::retryable(e),
            };
            let body = match slack_body(&delivery.payload) {
                Ok(body) => body,
                Err(e) => return SendResult::permanent(e),
            };
            let headers =
                BTreeMap::from([("Content-Type".to_owned(), "application/json".to_owned())]);
            attempt.post(url, headers, body).await
        }
        ChannelKind::Command { argv } => attempt.command(argv, &document).await,
    }
}

/// The document a webhook or command channel gets: the delivery's payload (an [`AlertDoc`])
/// with `"delivery": <id>` added.
struct Document {
    body: String,
    summary: String,
}

impl Document {
    fn of(delivery: &AlertDelivery) -> Result<Self, String> {
        let mut value: Value = serde_json::from_str(&delivery.payload)
            .map_err(|e| format!("the alert's payload is not JSON: {e}"))?;
        let Some(object) = value.as_object_mut() else {
            return Err("the alert's payload is not a JSON object".to_owned());
        };
        let summary = object
            .get("summary")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        object.insert("delivery".to_owned(), Value::from(delivery.id));
        Ok(Self {
            body: value.to_string(),
            summary,
        })
    }
}

/// Slack's incoming-webhook message: `{"text": "<summary> <link>"}`.
fn slack_body(payload: &str) -> Result<String, String> {
    let doc: AlertDoc = serde_json::from_str(payload)
        .map_err(|e| format!("the alert's payload is not an alert document: {e}"))?;
    Ok(serde_json::json!({ "text": slack_text(&doc) }).to_string())
}

/// The summary and a link to the run (else the job): `<url|Open in Kairos>` when the link is
/// absolute, the path as text otherwise (Slack cannot link a path).
pub fn slack_text(doc: &AlertDoc) -> String {
    let link = doc.links.run.as_deref().unwrap_or(&doc.links.job);
    let summary = slack_escape(&doc.summary);
    if link.starts_with("https://") || link.starts_with("http://") {
        // `|` and `>` end the link's URL in Slack's markup.
        let url = link.replace('|', "%7C").replace('>', "%3E");
        format!("{summary} <{url}|Open in Kairos>")
    } else {
        format!("{summary} {}", slack_escape(link))
    }
}

/// Slack's markup escapes: `&`, `<` and `>` only.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A secret file's content with one trailing newline (`\n` or `\r\n`) removed.
async fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = read_file(path).await?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(bytes)
}

/// The URL in a file (its content, trimmed).
async fn read_url(path: &Path) -> Result<String, String> {
    let bytes = read_file(path).await?;
    let shown = path.display();
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("cannot read secret file `{shown}`: it is not UTF-8"))?;
    let url = text.trim();
    if url.is_empty() {
        return Err(format!("cannot read secret file `{shown}`: it is empty"));
    }
    Ok(url.to_owned())
}

/// A secret file, read on a blocking thread by the executor's reader (regular files of at most
/// 64 KiB, opened without blocking).
async fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || kairos_exec::read_regular_file(&owned)).await;
    let shown = path.display();
    match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(reason)) => Err(format!("cannot read secret file `{shown}`: {reason}")),
        Err(_) => Err(format!(
            "cannot read secret file `{shown}`: the reader failed"
        )),
    }
}

/// One attempt's settings.
struct Attempt<'a> {
    executor: &'a dyn Executor,
    channel: &'a Channel,
    delivery: &'a AlertDelivery,
    cancel: &'a CancellationToken,
}

impl Attempt<'_> {
    async fn post(
        &self,
        url: String,
        headers: BTreeMap<String, String>,
        body: String,
    ) -> SendResult {
        let task = TaskSpec::Http(HttpTask {
            method: "POST".to_owned(),
            url,
            headers,
            body: Some(body),
            // The request's timeout is the channel's (`ExecRequest::timeout`).
            timeout: None,
            expected_statuses: Vec::new(),
        });
        let outcome = self.execute(task).await;
        classify(&outcome, self.channel.timeout)
    }

    async fn command(&self, argv: &[String], document: &Document) -> SendResult {
        let file = match write_document(document.body.clone()).await {
            Ok(file) => file,
            Err(e) => return SendResult::retryable(e),
        };
        let mut env: BTreeMap<String, String> = PASSED_VARS
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), std::env::var(name).ok()?)))
            .collect();
        env.extend([
            ("KAIROS_ALERT".to_owned(), self.delivery.alert.clone()),
            ("KAIROS_ALERT_SUMMARY".to_owned(), document.summary.clone()),
            (
                "KAIROS_ALERT_FILE".to_owned(),
                file.to_string_lossy().into_owned(),
            ),
            (
                "KAIROS_ALERT_DELIVERY".to_owned(),
                self.delivery.id.to_string(),
            ),
        ]);
        let task = TaskSpec::Command(CommandTask {
            argv: argv.to_vec(),
            process: ProcessSettings {
                // Not the server's environment: it may hold secrets (the store's URL).
                clear_env: true,
                env,
                ..ProcessSettings::default()
            },
            unknown: BTreeMap::new(),
        });
        let outcome = self.execute(task).await;
        remove_document(file).await;
        classify(&outcome, self.channel.timeout)
    }

    async fn execute(&self, task: TaskSpec) -> AttemptOutcome {
        let d = self.delivery;
        let context = RunContext {
            job: d.job.clone(),
            namespace: d.namespace.clone(),
            run_id: d.run_id.unwrap_or(0),
            attempt: d.attempts,
            scheduled_for: d.created_at,
            step: None,
            params: None,
            upstream_results: None,
            event: None,
            upstream_run_id: None,
            upstream_result: None,
            checkpoint: None,
            run_token: None,
            api_url: None,
        };
        let mut req = ExecRequest::new(task, context);
        req.timeout = Some(signed(self.channel.timeout));
        req.kill_grace = signed(KILL_GRACE);
        req.output = Arc::new(OutputBuffer::new(OUTPUT_LIMIT));
        req.cancel = self.cancel.clone();
        // Not a run: no `KAIROS_RUN_ID`, `KAIROS_RESULT`, ... (an HTTP request has none anyway).
        req.run_vars = false;
        self.executor.execute(req).await
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Writes the document to a new private temp file (mode 0600) for a command channel.
async fn write_document(body: String) -> Result<tempfile::TempPath, String> {
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<tempfile::TempPath> {
        use std::io::Write;
        let mut file = tempfile::Builder::new()
            .prefix("kairos-alert-")
            .suffix(".json")
            .tempfile()?;
        file.write_all(body.as_bytes())?;
        file.flush()?;
        Ok(file.into_temp_path())
    })
    .await;
    match written {
        Ok(Ok(path)) => Ok(path),
        Ok(Err(e)) => Err(format!("cannot write the alert's file: {e}")),
        Err(_) => Err("cannot write the alert's file: the writer failed".to_owned()),
    }
}

/// Removes a command channel's document file, on a blocking thread.
async fn remove_document(file: tempfile::TempPath) {
    let path: PathBuf = file.to_path_buf();
    match tokio::task::spawn_blocking(move || file.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an alert's file");
        }
        Err(_) => tracing::warn!(path = %path.display(), "cannot remove an alert's file"),
    }
}

/// What the executor's outcome means for the delivery (see the module's docs).
fn classify(outcome: &AttemptOutcome, timeout: Duration) -> SendResult {
    let status = outcome.http_status;
    let (retryable, error) = match &outcome.status {
        AttemptStatus::Succeeded => return SendResult::Delivered { status },
        AttemptStatus::HttpStatus { status: code } => {
            let retryable = *code >= 500 || *code == 408 || *code == 429;
            let body = output_text(&outcome.output, &["body"], true);
            let error = if body.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {body}")
            };
            (retryable, error)
        }
        AttemptStatus::TimedOut => (true, format!("timed out after {:#}", signed(timeout))),
        AttemptStatus::Cancelled => (true, "cancelled".to_owned()),
        AttemptStatus::ExitCode { code } => {
            let said = output_text(&outcome.output, &["stderr", "stdout"], false);
            let error = if said.is_empty() {
                format!("exit {code}")
            } else {
                format!("exit {code}: {said}")
            };
            (true, error)
        }
        AttemptStatus::Signal { signal } => (true, format!("killed by signal {signal}")),
        AttemptStatus::Error { message } => (true, clip(without_request_line(message))),
    };
    SendResult::Failed {
        retryable,
        error,
        status,
    }
}

/// The executor's HTTP errors begin with `<METHOD> <url>: `; the URL may be a credential (a
/// Slack webhook's) and is known from the channel anyway.
fn without_request_line(message: &str) -> &str {
    let Some((method, rest)) = message.split_once(' ') else {
        return message;
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return message;
    }
    // A URL holds no `": "` (a space would be percent-encoded).
    match rest.split_once(": ") {
        Some((_, error)) => error,
        None => message,
    }
}

/// The text of output lines (`<time> <stream> <text>`) of `streams`: the first lines
/// (`first`, a response body) or the last non-empty line (a command's last words), clipped to
/// [`ERROR_TEXT_CHARS`].
fn output_text(output: &str, streams: &[&str], first: bool) -> String {
    let mut lines = output.lines().filter_map(|line| {
        let (_, rest) = line.split_once(' ')?;
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        streams.contains(&stream).then_some(text.trim())
    });
    if first {
        let mut text = String::new();
        for line in lines.filter(|l| !l.is_empty()) {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(line);
            if text.chars().count() > ERROR_TEXT_CHARS {
                break;
            }
        }
        clip(&text)
    } else {
        clip(lines.rfind(|l| !l.is_empty()).unwrap_or_default())
    }
}

/// At most [`ERROR_TEXT_CHARS`] characters, with `…` when cut.
fn clip(text: &str) -> String {
    match text.char_indices().nth(ERROR_TEXT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops_after_the_last_attempt() {
        let secs = |n| backoff_with(n, 0.5).map(|d| d.as_secs_f64());
        assert_eq!(secs(1), Some(1.0));
        assert_eq!(secs(2), Some(2.0));
        assert_eq!(secs(7), Some(64.0));
        assert_eq!(secs(MAX_ATTEMPTS), None);
        assert_eq!(secs(MAX_ATTEMPTS + 1), None);
        // The jitter's ends: ±10 %.
        assert_eq!(backoff_with(4, 0.0).map(|d| d.as_millis()), Some(7200));
        assert_eq!(backoff_with(4, 1.0).map(|d| d.as_millis()), Some(8800));
        for n in 1..MAX_ATTEMPTS {
            let d = backoff(n).unwrap();
            assert!(d <= MAX_BACKOFF.mul_f64(1.1), "{n}: {d:?}");
        }
    }

    #[test]
    fn outcomes_retry_until_the_last_attempt_and_never_after_a_permanent_failure() {
        let now: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let failed = SendResult::retryable("HTTP 503");
        assert_eq!(
            failed.clone().into_outcome(3, now, 0.5),
            AlertOutcome::Retry {
                at: "2026-03-01T00:00:04Z".parse().unwrap(),
                error: "HTTP 503".into(),
                status: None,
            }
        );
        assert!(matches!(
            failed.into_outcome(MAX_ATTEMPTS, now, 0.5),
            AlertOutcome::Failed { error, .. } if error == "gave up after 8 attempts: HTTP 503"
        ));
        assert!(matches!(
            SendResult::permanent("HTTP 404").into_outcome(1, now, 0.5),
            AlertOutcome::Failed { .. }
        ));
    }

    #[test]
    fn statuses_are_classified() {
        let http = |code| {
            let outcome = AttemptOutcome {
                http_status: Some(code),
                output: "2026-03-01T00:00:00.000Z kairos POST http://x/secret\n\
                         2026-03-01T00:00:00.001Z body {\"error\":\"nope\"}\n"
                    .into(),
                ..AttemptOutcome::from_status(AttemptStatus::HttpStatus { status: code })
            };
            classify(&outcome, Duration::from_secs(10))
        };
        for code in [500, 503, 408, 429] {
            assert!(
                matches!(
                    http(code),
                    SendResult::Failed {
                        retryable: true,
                        ..
                    }
                ),
                "{code}"
            );
        }
        for code in [400, 401, 404, 410] {
            assert!(
                matches!(
                    http(code),
                    SendResult::Failed {
                        retryable: false,
                        ..
                    }
                ),
                "{code}"
            );
        }
        assert_eq!(
            http(404),
            SendResult::Failed {
                retryable: false,
                error: "HTTP 404: {\"error\":\"nope\"}".into(),
                status: Some(404),
            }
        );
        let timed_out = classify(
            &AttemptOutcome::from_status(AttemptStatus::TimedOut),
            Duration::from_secs(3),
        );
        assert_eq!(timed_out, SendResult::retryable("timed out after 3s"));
        let refused = AttemptOutcome::error(
            "POST https://hooks.example/T0/B0/secret: error sending request: Connection refused",
        );
        assert_eq!(
            classify(&refused, Duration::from_secs(3)),
            SendResult::retryable("error sending request: Connection refused")
        );
    }

    #[test]
    fn long_texts_are_clipped() {
        let long = "x".repeat(1000);
        assert_eq!(clip(&long).chars().count(), ERROR_TEXT_CHARS + 1);
        let output = format!("t stderr first\nt stderr {long}\nt stdout \n");
        let text = output_text(&output, &["stderr", "stdout"], false);
        assert!(text.starts_with("xxx") && text.ends_with('…'));
    }

    #[test]
    fn slack_links_are_absolute_or_shown_as_text() {
        let mut doc: AlertDoc = serde_json::from_value(serde_json::json!({
            "alert": "failure", "summary": "Job `a<b` & c failed", "namespace": "default",
            "job": "a", "rule": "notify[0]", "at": "2026-03-01T00:00:00Z",
            "links": {"job": "https://k.example/jobs/default/a", "run": "https://k.example/runs/4"}
        }))
        .unwrap();
        assert_eq!(
            slack_text(&doc),
            "Job `a&lt;b` &amp; c failed <https://k.example/runs/4|Open in Kairos>"
        );
        doc.links = super::super::AlertLinks {
            job: "/jobs/default/a".into(),
            run: None,
        };
        assert_eq!(
            slack_text(&doc),
            "Job `a&lt;b` &amp; c failed /jobs/default/a"
        );
    }
}
