//! A small client of the REST API for the CLI. Problem documents become readable errors.

use anyhow::{Context, anyhow};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::ConnArgs;

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
    /// A client of `base` without a token.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::build(base, None, None)
    }

    /// A client as the CLI's connection flags say: the token from `--token-file` or
    /// `KAIROS_TOKEN`, and an extra CA from `--ca-cert`.
    pub fn connect(conn: &ConnArgs) -> anyhow::Result<Self> {
        let token = match &conn.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--token-file: cannot read {}", path.display()))?;
                Some(text.trim().to_owned())
            }
            None => std::env::var("KAIROS_TOKEN")
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        };
        let ca = match &conn.ca_cert {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("--ca-cert: cannot read {}", path.display()))?,
            ),
            None => None,
        };
        Self::build(&conn.server, token.as_deref(), ca.as_deref())
    }

    fn build(base: &str, token: Option<&str>, ca_pem: Option<&[u8]>) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--server: `{base}` is not an http:// or https:// URL");
        }
        // reqwest is built with rustls and no default provider: pick ring (no C toolchain needed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow!("the token holds characters a header cannot carry"))?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| anyhow!("--ca-cert: not a PEM certificate: {e}"))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().context("cannot build the HTTP client")?;
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
        let if_match = version.map(|v| ("If-Match", format!("\"{v}\"")));
        self.send_with(method, path, body, if_match.as_slice())
            .await
    }

    /// `send` with extra request headers.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Response> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        for (name, value) in headers {
            req = req.header(*name, value);
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
