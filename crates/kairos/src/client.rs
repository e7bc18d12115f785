//! A small client of the REST API for the CLI. Problem documents become readable errors.

use anyhow::{Context, anyhow};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7433";

pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// An error answered by the server, as a problem document.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub problem: Value,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let title = self.problem["title"].as_str().unwrap_or("request failed");
        write!(f, "{title} ({})", self.status.as_u16())?;
        match self.problem["errors"].as_array() {
            Some(errors) if !errors.is_empty() => {
                for e in errors {
                    let field = e["field"].as_str().unwrap_or_default();
                    let message = e["message"].as_str().unwrap_or_default();
                    if field.is_empty() {
                        write!(f, "\n  {message}")?;
                    } else {
                        write!(f, "\n  {field}: {message}")?;
                    }
                }
            }
            _ => {
                if let Some(detail) = self.problem["detail"].as_str() {
                    write!(f, ": {detail}")?;
                }
            }
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--server: `{base}` is not an http:// or https:// URL");
        }
        // reqwest is built with rustls and no default provider: pick ring (no C toolchain needed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { base, http })
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Response> {
        self.send_if_match(method, path, body, None).await
    }

    /// `send` with an `If-Match` version: the server refuses the write if the job changed.
    pub async fn send_if_match(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        version: Option<i64>,
    ) -> anyhow::Result<Response> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(version) = version {
            req = req.header("If-Match", format!("\"{version}\""));
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the Kairos server at {}: {e}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let problem =
            serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "title": text }));
        Err(ApiFailure { status, problem }.into())
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let resp = self.send(method, path, body).await?;
        resp.json()
            .await
            .context("the server's answer is not the expected JSON")
    }
}

/// `?namespace=…` for a path.
pub fn ns_query(namespace: &str) -> String {
    format!("namespace={}", urlencode(namespace))
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
