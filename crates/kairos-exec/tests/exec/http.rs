//! `http` tasks against a tiny HTTP server on 127.0.0.1.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use kairos_core::run::AttemptStatus;
use kairos_core::spec::{HttpTask, TaskSpec};
use kairos_exec::ExecRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::*;

struct Server {
    url: String,
    /// Each request as received: head and body.
    requests: mpsc::UnboundedReceiver<String>,
}

/// Serves `response` (raw HTTP) to every connection; `None` accepts and never answers.
async fn serve(response: Option<String>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(answer(socket, response.clone(), tx.clone()));
        }
    });
    Server { url, requests }
}

async fn answer(
    mut socket: TcpStream,
    response: Option<String>,
    tx: mpsc::UnboundedSender<String>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    match response {
        Some(response) => {
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        None => std::future::pending::<()>().await,
    }
}

fn response(status: &str, body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn http(method: &str, url: String) -> HttpTask {
    HttpTask {
        method: method.into(),
        url,
        headers: BTreeMap::new(),
        body: None,
        timeout: None,
        expected_statuses: Vec::new(),
    }
}

#[tokio::test]
async fn success_sends_the_request_and_captures_the_body() {
    let mut server = serve(response("200 OK", "hello\nworld\n")).await;
    let mut task = http("post", format!("{}/hooks/run?x=1", server.url));
    task.headers.insert("X-Token".into(), "abc".into());
    task.body = Some("payload".into());
    let outcome = execute(request(TaskSpec::Http(task))).await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Succeeded,
        "{}",
        outcome.output
    );
    assert_eq!(outcome.http_status, Some(200));
    assert_eq!(lines(&outcome.output, "body"), ["hello", "world"]);

    let received = server.requests.recv().await.unwrap();
    assert!(
        received.starts_with("POST /hooks/run?x=1 HTTP/1.1\r\n"),
        "{received}"
    );
    assert!(
        received.to_lowercase().contains("x-token: abc\r\n"),
        "{received}"
    );
    assert!(received.ends_with("\r\n\r\npayload"), "{received}");
    assert!(
        !outcome.output.contains("abc"),
        "request headers are not logged"
    );
}

#[tokio::test]
async fn unexpected_status_fails() {
    let server = serve(response("503 Service Unavailable", "down")).await;
    let outcome = execute(request(TaskSpec::Http(http("GET", server.url)))).await;
    assert_eq!(outcome.status, AttemptStatus::HttpStatus { status: 503 });
    assert_eq!(outcome.http_status, Some(503));
    assert_eq!(lines(&outcome.output, "body"), ["down"]);
}

#[tokio::test]
async fn expected_statuses_replace_2xx() {
    let server = serve(response("404 Not Found", "")).await;
    let mut task = http("DELETE", server.url.clone());
    task.expected_statuses = vec![404, 410];
    let outcome = execute(request(TaskSpec::Http(task))).await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);

    let mut task = http("GET", server.url);
    task.expected_statuses = vec![201];
    let server_ok = execute(request(TaskSpec::Http(task))).await;
    assert_eq!(server_ok.status, AttemptStatus::HttpStatus { status: 404 });
}

#[tokio::test]
async fn task_timeout_times_out() {
    let server = serve(None).await;
    let mut task = http("GET", server.url);
    task.timeout = Some("500ms".into());
    let outcome = execute(request(TaskSpec::Http(task))).await;
    assert_eq!(outcome.status, AttemptStatus::TimedOut);
    assert_eq!(outcome.http_status, None);
}

#[tokio::test]
async fn job_timeout_applies_without_a_task_timeout() {
    let server = serve(None).await;
    let req = ExecRequest {
        timeout: Some(SignedDuration::from_millis(500)),
        ..request(TaskSpec::Http(http("GET", server.url)))
    };
    assert_eq!(execute(req).await.status, AttemptStatus::TimedOut);
}

#[tokio::test]
async fn cancel_stops_the_request() {
    let mut server = serve(None).await;
    let req = request(TaskSpec::Http(http("GET", server.url.clone())));
    let cancel = req.cancel.clone();
    let running = tokio::spawn(execute(req));
    server.requests.recv().await.unwrap();
    cancel.cancel();
    assert_eq!(running.await.unwrap().status, AttemptStatus::Cancelled);
}

#[tokio::test]
async fn connection_refused_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://user:pw-secret@{}/", listener.local_addr().unwrap());
    drop(listener);
    let outcome = execute(request(TaskSpec::Http(http("GET", url)))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(message.to_lowercase().contains("connect"), "{message}");
    assert!(
        !message.contains("pw-secret") && !outcome.output.contains("pw-secret"),
        "{message}"
    );
    assert_eq!(outcome.http_status, None);
}

#[tokio::test]
async fn invalid_method_or_timeout_is_an_error() {
    let mut task = http("NOT A METHOD", "http://127.0.0.1:9/".into());
    let outcome = execute(request(TaskSpec::Http(task.clone()))).await;
    assert!(
        matches!(outcome.status, AttemptStatus::Error { .. }),
        "{outcome:?}"
    );

    task.method = "GET".into();
    task.timeout = Some("soon".into());
    let outcome = execute(request(TaskSpec::Http(task))).await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert!(message.starts_with("http timeout:"), "{message}");
}
