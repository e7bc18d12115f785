//! Starting the real `kairos` binary and talking to it over HTTP.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub http: reqwest::Client,
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

impl Server {
    /// Starts `kairos server` on `data_dir` with extra args and waits until it answers.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_with(data_dir, extra, "http", http_client()).await
    }

    /// [`Server::start`] for a server reached as `scheme` (`https` with `--tls-cert`) through
    /// `http`.
    pub async fn start_with(
        data_dir: &Path,
        extra: &[&str],
        scheme: &str,
        http: reqwest::Client,
    ) -> Server {
        // `--listen` among the extra args wins (its port is the one to call).
        let given = extra
            .iter()
            .position(|a| *a == "--listen")
            .and_then(|i| extra.get(i + 1))
            .and_then(|addr| addr.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok());
        let port = given.unwrap_or_else(free_port);
        let url = format!("{scheme}://127.0.0.1:{port}");
        let log = data_dir.with_extension(format!("{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args(if given.is_some() {
                vec![]
            } else {
                vec!["--listen".to_owned(), format!("127.0.0.1:{port}")]
            })
            .args(["--node-name", "e2e-node"])
            .args(extra)
            .env("KAIROS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start kairos");
        let server = Server {
            child: Some(child),
            url,
            data_dir: data_dir.to_owned(),
            log,
            http,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/ready", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "server did not become ready; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            ct,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// Creates a `shell` job with no triggers.
    pub async fn create_shell_job(&self, name: &str, script: &str) {
        let job = serde_json::json!({"name": name, "task": {"kind": "shell", "script": script}});
        let (status, _, body) = self
            .call(reqwest::Method::POST, "/api/v1/jobs", Some(job))
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// Queues a run of `job` now; returns its id.
    pub async fn trigger(&self, job: &str) -> i64 {
        let (status, _, run) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{job}/trigger"),
                None,
            )
            .await;
        assert_eq!(status, 202, "{run}");
        run["id"].as_i64().expect("run id")
    }

    /// Waits until run `id` is in `state`; returns the run with its attempts.
    pub async fn wait_for_run_state(&self, secs: u64, id: i64, state: &str) -> Value {
        self.wait_for(secs, &format!("run {id} to be {state}"), || async {
            let (_, _, run) = self
                .call(reqwest::Method::GET, &format!("/api/v1/runs/{id}"), None)
                .await;
            (run["state"] == state).then_some(run)
        })
        .await
    }

    pub async fn runs(&self, job: &str) -> Vec<Value> {
        let (status, _, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{job}/runs?limit=1000"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// The output of run `id` (all its attempts), as the API serves it.
    pub async fn output(&self, id: impl std::fmt::Display) -> String {
        self.http
            .get(format!("{}/api/v1/runs/{id}/output", self.url))
            .send()
            .await
            .expect("output request")
            .text()
            .await
            .expect("output text")
    }

    /// Waits until `job` has `count` runs, none queued or running (panics after `secs`, or if
    /// it has more); returns them newest first.
    pub async fn ended_runs(&self, secs: u64, job: &str, count: usize) -> Vec<Value> {
        let runs = self
            .wait_for(secs, &format!("{count} ended runs of {job}"), || async {
                let runs = self.runs(job).await;
                let ended = runs
                    .iter()
                    .all(|r| !matches!(r["state"].as_str(), Some("queued" | "running")));
                (runs.len() >= count && ended).then_some(runs)
            })
            .await;
        assert_eq!(runs.len(), count, "{job}: {runs:?}");
        runs
    }

    /// Polls `check` until it returns Some, or panics after `secs`.
    pub async fn wait_for<T, F, Fut>(&self, secs: u64, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown at all.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, then wait for the exit (status returned).
    pub async fn terminate(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Pids of live processes in process group `pgid` (from /proc).
pub fn processes_in_group(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which is in parentheses and may hold spaces).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state is fields[0], ppid fields[1], pgrp fields[2]
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
            && fields.first() != Some(&"Z")
        {
            out.push(pid);
        }
    }
    out
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// A client reading `GET /api/v1/events/stream`.
pub struct SseClient {
    body: reqwest::Response,
    buffer: String,
}

impl SseClient {
    pub async fn connect(server: &Server, query: &str, last: Option<&str>) -> (u16, SseClient) {
        let mut req = server
            .http
            .get(format!("{}/api/v1/events/stream{query}", server.url))
            .timeout(Duration::from_secs(600));
        if let Some(last) = last {
            req = req.header("Last-Event-ID", last);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (
            status,
            SseClient {
                body: resp,
                buffer: String::new(),
            },
        )
    }

    /// The next event, or `None` after `secs` without one.
    pub async fn next(&mut self, secs: u64) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(Sse {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Events until one matches `done` (included), at most `secs`.
    pub async fn until(&mut self, secs: u64, done: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let mut seen = Vec::new();
        while let Some(e) = self.next(secs).await {
            let stop = done(&e);
            seen.push(e);
            if stop {
                return seen;
            }
        }
        panic!("stream ended or went quiet; saw {seen:#?}");
    }
}
