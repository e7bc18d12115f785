//! Real `kairos server` processes on 127.0.0.1 for the failover workload, and the few API
//! calls it makes to them ([`Cluster`]).
//!
//! Each node gets a free port on 127.0.0.1, a data directory and a log file (stderr, at
//! `KAIROS_LOG=info`) in the run's work directory, and its store URL through `KAIROS_STORE`
//! (not its arguments, which every user of the machine can read). Per-task cgroups are off
//! (`KAIROS_TASK_CGROUPS=false`): the job runs `/bin/true` and the workload measures the
//! leadership, not the tasks. A node killed with SIGKILL restarts on the same port and name.
//! A process still running when its [`ServerProcess`] drops is killed (SIGKILL).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::error::{BenchError, BenchResult};

/// The binary's name in a Cargo target directory.
pub const KAIROS_BIN: &str = "kairos";

/// `kairos` next to this program (`target/<profile>/kairos` beside
/// `target/<profile>/kairos-bench`; for a test binary in `target/<profile>/deps/`, one level
/// up).
pub fn kairos_bin_beside_this_program() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(KAIROS_BIN))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it a moment later).
pub fn free_port() -> BenchResult<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::io("cannot find a free port on 127.0.0.1", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| BenchError::io("cannot find a free port on 127.0.0.1", e))?
        .port();
    Ok(port)
}

/// How a node is started (the same at every restart).
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub bin: PathBuf,
    pub name: String,
    pub port: u16,
    /// `postgres://…?schema=…`.
    pub store_url: String,
    /// Where its data directory and logs go.
    pub work_dir: PathBuf,
    /// Extra environment (`KAIROS_LEASE`, ...).
    pub env: Vec<(String, String)>,
}

/// One `kairos server` process, started (and restarted) from its spec.
pub struct ServerProcess {
    pub spec: ServerSpec,
    child: Option<Child>,
    starts: u32,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts the node; it may not answer yet (see [`Self::wait_ready`]).
    pub fn start(spec: ServerSpec) -> BenchResult<Self> {
        let mut server = Self {
            spec,
            child: None,
            starts: 0,
            log: PathBuf::new(),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> BenchResult<()> {
        self.starts += 1;
        let s = &self.spec;
        self.log = s.work_dir.join(format!("{}.{}.log", s.name, self.starts));
        let log = std::fs::File::create(&self.log)
            .map_err(|e| BenchError::io(format!("cannot create {}", self.log.display()), e))?;
        let child = Command::new(&s.bin)
            .args(["server", "--listen", &format!("127.0.0.1:{}", s.port)])
            .args(["--node-name", &s.name, "--data-dir"])
            .arg(s.work_dir.join(format!("{}-data", s.name)))
            .env("KAIROS_STORE", &s.store_url)
            .env("KAIROS_TASK_CGROUPS", "false")
            .env("KAIROS_SHUTDOWN_GRACE", "1s")
            .env(
                "KAIROS_LOG",
                std::env::var("KAIROS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(s.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::io(format!("cannot start {}", s.bin.display()), e))?;
        self.child = Some(child);
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.spec.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last lines of its current log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn error(&self, reason: impl Into<String>) -> BenchError {
        BenchError::Server {
            node: self.spec.name.clone(),
            reason: format!(
                "{} (log {}):\n{}",
                reason.into(),
                self.log.display(),
                self.log_tail()
            ),
        }
    }

    /// Waits until `GET /ready` answers 200, or fails after `limit` (or if the process ends).
    pub async fn wait_ready(&mut self, api: &Api, limit: Duration) -> BenchResult<()> {
        let deadline = Instant::now() + limit;
        let url = format!("{}/ready", self.base_url());
        loop {
            if api.ok(&url).await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.error(format!("exited with {status} before it was ready")));
            }
            if Instant::now() >= deadline {
                return Err(self.error(format!("not ready within {} s", limit.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reaps the process.
    pub async fn kill9(&mut self) -> BenchResult<()> {
        if let Some(mut child) = self.child.take() {
            child
                .start_kill()
                .map_err(|e| BenchError::io(format!("cannot kill {}", self.spec.name), e))?;
            child
                .wait()
                .await
                .map_err(|e| BenchError::io(format!("cannot reap {}", self.spec.name), e))?;
        }
        Ok(())
    }

    /// Starts the node again (same name, port and store).
    pub fn restart(&mut self) -> BenchResult<()> {
        if self.child.is_some() {
            return Err(self.error("restarted while still running"));
        }
        self.spawn()
    }

    /// SIGTERM (the node resigns and stops), then SIGKILL if it has not ended within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if tokio::time::timeout(grace, child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// The HTTP client the workload talks to the nodes with: plain HTTP on 127.0.0.1, no proxy,
/// short timeouts (a killed node refuses at once; a stuck one must not stall the polling).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
}

impl Api {
    pub fn new() -> BenchResult<Self> {
        // reqwest is built with rustls without a default provider (see the workspace).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| BenchError::Incomplete(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http })
    }

    async fn ok(&self, url: &str) -> bool {
        self.http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// `GET url`: the JSON body of a 2xx answer, or why not.
    pub async fn get(&self, url: &str) -> Result<Value, String> {
        self.call(self.http.get(url), None).await
    }

    /// `POST url` with a JSON body (or none): the JSON body of a 2xx answer, or why not.
    pub async fn post(&self, url: &str, body: Option<&Value>) -> Result<Value, String> {
        self.call(self.http.post(url), body).await
    }

    async fn call(
        &self,
        mut request: reqwest::RequestBuilder,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    }
}

/// The nodes and the client that talks to them.
pub struct Cluster {
    pub nodes: Vec<ServerProcess>,
    pub api: Api,
}

impl Cluster {
    /// `GET path` on the first running node other than `not` that answers.
    pub async fn get(&self, path: &str, not: Option<usize>) -> Option<Value> {
        for (i, node) in self.nodes.iter().enumerate() {
            if Some(i) == not || !node.is_running() {
                continue;
            }
            if let Ok(v) = self.api.get(&format!("{}{path}", node.base_url())).await {
                return Some(v);
            }
        }
        None
    }

    /// `POST path` on the first running node that accepts it.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> BenchResult<Value> {
        let mut last = String::from("no node is running");
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match self
                .api
                .post(&format!("{}{path}", node.base_url()), body)
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(BenchError::Incomplete(format!("POST {path}: {last}")))
    }

    /// The leading node's index as a node other than `not` reports it.
    pub async fn leader(&self, not: Option<usize>) -> Option<usize> {
        let list = self.get("/api/v1/nodes", not).await?;
        let name = list.as_array()?.iter().find(|n| n["leader"] == true)?["name"]
            .as_str()?
            .to_owned();
        self.nodes.iter().position(|n| n.spec.name == name)
    }

    /// Waits for a leader other than `not` (a node just killed still leads until its term
    /// ends), for at most `limit`.
    pub async fn wait_leader(&self, not: Option<usize>, limit: Duration) -> BenchResult<usize> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.leader(not).await.filter(|i| Some(*i) != not) {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Incomplete(format!(
                    "no leader within {} s",
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.stop(Duration::from_secs(5)).await;
        }
    }
}
