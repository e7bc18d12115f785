//! Refuses requests a browser could be tricked into sending: the API runs commands, so a web
//! page the user visits must not be able to reach it, whatever the authentication setting.
//!
//! Three checks, in this order, before any handler runs:
//!
//! 1. **Host** (DNS rebinding). A page on `evil.example` whose name is made to resolve to
//!    127.0.0.1 talks to the node with `Host: evil.example`. The `Host` header must be an IP
//!    address, `localhost` (or a name under `.localhost`), or a name listed in `allowed_hosts`.
//!    Rebinding needs a DNS name, so IP literals are always fine; a request without `Host`
//!    (HTTP/1.0 tools) is not from a browser and passes. `/health` and `/ready` are not checked
//!    (load balancers probe them under any name).
//! 2. **Origin** (cross-site requests). A state-changing request (any method but `GET`, `HEAD`
//!    and `OPTIONS`) that carries an `Origin` must come from the server's own origin (the
//!    scheme of the listener and the request's `Host`) or from one in `allowed_origins`;
//!    `Origin: null` is refused. Browsers send `Origin` with every such request, also in
//!    `no-cors` mode. `Sec-Fetch-Site: cross-site` or `same-site` (another port on the same
//!    host is the same site) is refused unless the `Origin` is allowed.
//! 3. **Content type** (simple requests). A state-changing request with a body, or with a
//!    `Content-Type`, must say `application/json`; forms and `text/plain` are `415`. A JSON
//!    request from another origin needs a CORS preflight, which Kairos never grants.
//!
//! Refusals are `403` (`host-not-allowed`, `cross-site-request`) or `415`
//! (`unsupported-media-type`), as problem documents.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Where requests may come from. Part of [`crate::AppState`].
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Host names the API answers to besides IP addresses and `localhost` (lowercase, no port).
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://ui.example:8443`) allowed to send state-changing requests besides the
    /// server's own.
    pub allowed_origins: Vec<String>,
    /// The listener serves HTTPS (the server's own origin is `https://HOST`).
    pub tls: bool,
    /// Whether requests need a token (see [`crate::auth`]).
    pub auth: crate::auth::AuthMode,
    /// `/metrics` answers without a token.
    pub metrics_public: bool,
    /// How often a stream that outlasts its request checks that its token still works
    /// (`None`: [`crate::auth::RECHECK_EVERY`]).
    pub stream_recheck: Option<std::time::Duration>,
}

impl Access {
    /// Whether `host` (a `Host` header: name or IP, optional port) may be served.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.is_empty() {
            return false;
        }
        if name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost"
            || name.ends_with(".localhost")
            || self
                .allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(&name))
    }

    /// Whether `origin` may send state-changing requests to a server reached as `host`.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/');
        if self
            .allowed_origins
            .iter()
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let scheme = if self.tls { "https://" } else { "http://" };
        match (origin.get(..scheme.len()), host) {
            (Some(prefix), Some(host)) if prefix.eq_ignore_ascii_case(scheme) => {
                origin[scheme.len()..].eq_ignore_ascii_case(host)
            }
            _ => false,
        }
    }
}

/// The host part of a `Host` header: `[::1]:7433` → `::1`, `example.com:80` → `example.com`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a `Content-Type` value is JSON (`application/json`, parameters allowed).
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether the request carries a body (declared length above zero, or chunked).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || header_str(headers, header::CONTENT_LENGTH)
            .is_some_and(|len| len.trim().parse::<u64>() != Ok(0))
}

fn forbidden(kind: &'static str, title: &'static str, detail: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, kind, title, detail)
}

/// Decides whether a request may reach the handlers; `Err` is the refusal.
pub fn check(
    access: &Access,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let host = header_str(headers, header::HOST);
    let probe = matches!(path, "/health" | "/ready");
    if let Some(host) = host
        && !probe
        && !access.host_allowed(host)
    {
        return Err(forbidden(
            "host-not-allowed",
            "This host name is not allowed",
            format!(
                "requests for host `{host}` are refused (DNS rebinding); add the name to the \
                 server's `allowed_hosts` setting to serve it"
            ),
        ));
    }
    if !is_state_changing(method) {
        return Ok(());
    }
    let origin = header_str(headers, header::ORIGIN);
    let origin_ok = origin.map(|o| access.origin_allowed(o, host));
    if origin_ok == Some(false) {
        return Err(forbidden(
            "cross-site-request",
            "Cross-site requests are refused",
            format!(
                "a {method} request from origin `{}` is refused; only the server's own origin \
                 (and those in `allowed_origins`) may change anything",
                origin.unwrap_or_default()
            ),
        ));
    }
    let fetch_site = headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or_default());
    if matches!(fetch_site, Some("cross-site" | "same-site")) && origin_ok != Some(true) {
        return Err(forbidden(
            "cross-site-request",
            "Cross-site requests are refused",
            format!("a {method} request sent by another site is refused"),
        ));
    }
    match header_str(headers, header::CONTENT_TYPE) {
        Some(ct) if !is_json(ct) => Err(unsupported(format!(
            "the body must be `application/json`, not `{ct}`"
        ))),
        None if has_body(headers) => Err(unsupported(
            "the body must be `application/json`; send a `Content-Type: application/json` header"
                .to_owned(),
        )),
        _ => Ok(()),
    }
}

fn unsupported(detail: String) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        detail,
    )
}

/// The middleware: [`check`] with the node's [`Access`].
pub async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    if let Err(refusal) = check(&access, req.method(), req.uri().path(), req.headers()) {
        return refusal.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn status(access: &Access, method: Method, pairs: &[(&'static str, &'static str)]) -> u16 {
        match check(access, &method, "/api/v1/jobs", &headers(pairs)) {
            Ok(()) => 200,
            Err(r) => r.into_response().status().as_u16(),
        }
    }

    #[test]
    fn hosts() {
        let access = Access {
            allowed_hosts: vec!["kairos.internal".into()],
            ..Access::default()
        };
        for ok in [
            "127.0.0.1:7433",
            "[::1]:7433",
            "10.1.2.3",
            "localhost:7433",
            "LOCALHOST",
            "app.localhost:1",
            "kairos.internal:7433",
            "Kairos.Internal.",
        ] {
            assert!(access.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7433",
            "",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
        ] {
            assert!(!access.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn origins_and_content_types() {
        let access = Access::default();
        let host = ("host", "127.0.0.1:7433");
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(status(&access, Method::POST, &[host, json]), 200);
        assert_eq!(
            status(
                &access,
                Method::POST,
                &[host, json, ("origin", "http://127.0.0.1:7433")]
            ),
            200
        );
        assert_eq!(
            status(
                &access,
                Method::POST,
                &[host, json, ("origin", "http://evil.example")]
            ),
            403
        );
        assert_eq!(
            status(&access, Method::POST, &[host, json, ("origin", "null")]),
            403
        );
        assert_eq!(
            status(
                &access,
                Method::POST,
                &[host, json, ("origin", "https://127.0.0.1:7433")]
            ),
            403
        );
        assert_eq!(
            status(
                &access,
                Method::POST,
                &[host, json, ("sec-fetch-site", "same-site")]
            ),
            403
        );
        assert_eq!(
            status(
                &access,
                Method::POST,
                &[host, json, ("sec-fetch-site", "same-origin")]
            ),
            200
        );
        assert_eq!(
            status(
                &access,
                Method::GET,
                &[host, ("origin", "http://evil.example")]
            ),
            200
        );
        assert_eq!(
            status(
                &access,
                Method::POST,
                &[host, ("content-type", "text/plain;charset=UTF-8")]
            ),
            415
        );
        assert_eq!(
            status(
                &access,
                Method::POST,
                &[host, ("content-type", "application/x-www-form-urlencoded")]
            ),
            415
        );
        assert_eq!(
            status(&access, Method::POST, &[host, ("content-length", "5")]),
            415
        );
        assert_eq!(
            status(&access, Method::POST, &[host, ("content-length", "0")]),
            200
        );
        assert_eq!(status(&access, Method::POST, &[host]), 200);
        assert_eq!(
            status(&access, Method::DELETE, &[("host", "evil.example")]),
            403
        );
        let allowed = Access {
            allowed_origins: vec!["https://ui.example".into()],
            ..Access::default()
        };
        assert_eq!(
            status(
                &allowed,
                Method::POST,
                &[
                    host,
                    json,
                    ("origin", "https://ui.example"),
                    ("sec-fetch-site", "cross-site")
                ]
            ),
            200
        );
    }
}
