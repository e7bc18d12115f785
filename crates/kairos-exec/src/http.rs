//! `http` tasks: one request with reqwest over rustls (ring provider).
//!
//! The timeout (the task's, else the job's) covers the whole exchange, body included. The
//! response body is captured as output lines (stream `body`); request headers and body are never
//! written to the output, since they often carry credentials.

use std::sync::{Arc, Once};

use kairos_core::duration::parse_duration;
use kairos_core::run::{AttemptOutcome, AttemptStatus};
use kairos_core::spec::HttpTask;

use crate::ExecRequest;
use crate::output::{LineSplitter, OutputBuffer};
use crate::process::to_std;

/// One shared reqwest client (connection pool) for all `http` tasks of an executor.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: Result<reqwest::Client, String>,
}

impl HttpClient {
    pub(crate) fn new() -> Self {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("kairos/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| error_chain(&e));
        Self { client }
    }

    /// Sends the request and reports the outcome (without output; the caller adds it).
    pub(crate) async fn run(&self, task: &HttpTask, req: &ExecRequest) -> AttemptOutcome {
        let client = match &self.client {
            Ok(client) => client,
            Err(e) => return AttemptOutcome::error(format!("http client unavailable: {e}")),
        };
        let timeout = match &task.timeout {
            Some(text) => match parse_duration(text, false) {
                Ok(d) => Some(d),
                Err(e) => return AttemptOutcome::error(format!("http timeout: {e}")),
            },
            None => req.timeout,
        };
        let method = match reqwest::Method::from_bytes(task.method.to_ascii_uppercase().as_bytes())
        {
            Ok(method) => method,
            Err(_) => {
                return AttemptOutcome::error(format!("invalid HTTP method `{}`", task.method));
            }
        };
        let url = match reqwest::Url::parse(&task.url) {
            Ok(url) => url,
            Err(e) => return AttemptOutcome::error(format!("invalid URL: {e}")),
        };
        let shown_url = redacted(&url);
        let mut request = client.request(method.clone(), url);
        for (name, value) in &task.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &task.body {
            request = request.body(body.clone());
        }
        req.output
            .push_stream_line("kairos", &format!("{method} {shown_url}"));

        let mut status = None;
        let exchange = exchange(request, &req.output, &mut status);
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(to_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            biased;
            result = exchange => result,
            _ = sleep => Err(Failure::TimedOut),
            _ = req.cancel.cancelled() => Err(Failure::Cancelled),
        };
        let outcome = match result {
            Ok(code) if is_expected(code, &task.expected_statuses) => {
                AttemptOutcome::from_status(AttemptStatus::Succeeded)
            }
            Ok(code) => AttemptOutcome::from_status(AttemptStatus::HttpStatus { status: code }),
            Err(Failure::TimedOut) => {
                if let Some(t) = timeout {
                    req.output
                        .push_stream_line("kairos", &format!("timed out after {t:#}"));
                }
                AttemptOutcome::from_status(AttemptStatus::TimedOut)
            }
            Err(Failure::Cancelled) => AttemptOutcome::from_status(AttemptStatus::Cancelled),
            Err(Failure::Request(e)) if e.is_timeout() => {
                AttemptOutcome::from_status(AttemptStatus::TimedOut)
            }
            Err(Failure::Request(e)) => AttemptOutcome::error(format!(
                "{method} {shown_url}: {}",
                error_chain(&e.without_url())
            )),
        };
        AttemptOutcome {
            http_status: status,
            ..outcome
        }
    }
}

enum Failure {
    TimedOut,
    Cancelled,
    Request(reqwest::Error),
}

/// Sends the request and copies the body into the output; returns the status code.
async fn exchange(
    request: reqwest::RequestBuilder,
    output: &Arc<OutputBuffer>,
    status: &mut Option<u16>,
) -> Result<u16, Failure> {
    let mut response = request.send().await.map_err(Failure::Request)?;
    let code = response.status();
    *status = Some(code.as_u16());
    output.push_stream_line("kairos", &format!("HTTP {code}"));
    let mut splitter = LineSplitter::default();
    let mut emit = |line: &str| output.push_stream_line("body", line);
    while let Some(chunk) = response.chunk().await.map_err(Failure::Request)? {
        splitter.feed(&chunk, &mut emit);
    }
    splitter.finish(&mut emit);
    Ok(code.as_u16())
}

fn is_expected(status: u16, expected: &[u16]) -> bool {
    if expected.is_empty() {
        (200..300).contains(&status)
    } else {
        expected.contains(&status)
    }
}

/// The URL with any password replaced, for output and errors.
fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// An error with its sources, e.g. `error sending request: client error (Connect): tcp connect
/// error: Connection refused (os error 111)`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = e.source();
    }
    message
}

/// reqwest is built without a default crypto provider; install ring's once per process.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another part of the program installed a provider first, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
