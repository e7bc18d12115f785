//! A cluster of real `kairos` processes on a private PostgreSQL (started by the test with
//! `initdb`/`pg_ctl`, so it can be crashed), each node reaching it through a TCP proxy that can
//! cut it off. Over more than a minute of a job due every second, the leader is killed with
//! SIGKILL twice (and restarted), PostgreSQL crashes and restarts, a follower and then the
//! leader are cut off for longer than their leases. Afterwards every due time of the window has
//! exactly one run, every run succeeded, no run ever executed twice at the same time (its
//! tasks run longer than the lease), and the runs that were running on a node when it failed
//! ran again to their end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, free_port, http_client};
use kairos_testkit::pg_instance::PrivatePostgres;
use kairos_testkit::proxy::TcpProxy;
use reqwest::Method;
use serde_json::{Value, json};

struct Node {
    name: String,
    port: u16,
    proxy: TcpProxy,
    server: Server,
    dir: PathBuf,
}

/// Starts (or restarts) node `name` on `port`, on the store behind `proxy`.
fn spawn(name: &str, port: u16, proxy: &TcpProxy, dir: &Path) -> Server {
    let config = dir.join(format!("{name}.toml"));
    // A short run lease, so that the cuts below outlast it.
    std::fs::write(&config, "lease = \"3s\"\nshutdown_grace = \"1s\"\n").unwrap();
    let log = unique(dir.join(name));
    let child = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--node-name", name, "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join(format!("{name}-data")))
        .arg("--store")
        .arg(format!("postgres://postgres@{}/kairos", proxy.addr))
        .env("KAIROS_LOG", "info")
        // The tasks write which node ran them.
        .env("TEST_NODE", name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start kairos");
    Server {
        child: Some(child),
        url: format!("http://127.0.0.1:{port}"),
        data_dir: dir.to_owned(),
        log,
        http: http_client(),
    }
}

fn unique(path: PathBuf) -> PathBuf {
    let mut n = 0;
    loop {
        let candidate = path.with_extension(format!("{n}.log"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

async fn ready(server: &Server) {
    server
        .wait_for(60, "the node to be ready", || async {
            let r = server
                .http
                .get(format!("{}/ready", server.url))
                .send()
                .await;
            r.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
}

/// The node that leads, as a live node reports it.
async fn leader(nodes: &[Node]) -> Option<usize> {
    for n in nodes.iter().filter(|n| n.server.child.is_some()) {
        let Ok(r) = n
            .server
            .http
            .get(format!("{}/api/v1/nodes", n.server.url))
            .send()
            .await
        else {
            continue;
        };
        let Ok(list) = r.json::<Value>().await else {
            continue;
        };
        let name = list.as_array().and_then(|l| {
            l.iter()
                .find(|x| x["leader"] == true)
                .and_then(|x| x["name"].as_str().map(str::to_owned))
        });
        if let Some(name) = name {
            return nodes.iter().position(|n| n.name == name);
        }
    }
    None
}

/// Waits for a leader other than `not` (a node just killed still leads until its term ends).
async fn wait_leader(nodes: &[Node], not: Option<usize>, what: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(i) = leader(nodes).await.filter(|i| Some(*i) != not) {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long each task of the big test runs: longer than the nodes' lease (3 s), so that an
/// attempt on a node cut off from the database must be stopped before its lease runs out, or
/// it would still run when another node takes the run over.
const TASK_SECS: u64 = 4;

/// Waits (at most 15 s) until node `name` runs an attempt that began less than a second ago
/// (so that it still runs at the failure that follows); its run's id and attempt, or `None`
/// if none came.
#[allow(
    clippy::disallowed_methods,
    reason = "the test's wall clock against the database's, on the same host"
)]
async fn running_on(nodes: &[Node], name: &str) -> Option<(i64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let server = live(nodes);
        let (_, _, runs) = server
            .call(Method::GET, "/api/v1/jobs/tick/runs?limit=20", None)
            .await;
        let now = jiff::Timestamp::now();
        let found = runs.as_array().and_then(|runs| {
            runs.iter().find(|r| {
                r["state"] == "running"
                    && r["node"] == name
                    && r["started_at"].as_str().is_some_and(|at| {
                        let at: jiff::Timestamp = at.parse().unwrap();
                        at <= now && now.duration_since(at) < jiff::SignedDuration::from_secs(1)
                    })
            })
        });
        if let Some(run) = found {
            return run["id"].as_i64().zip(run["attempt"].as_u64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn live(nodes: &[Node]) -> &Server {
    &nodes
        .iter()
        .find(|n| n.server.child.is_some())
        .expect("a live node")
        .server
}

async fn pause(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_survives_kills_a_database_crash_and_partitions_with_exactly_one_run_per_due_time()
 {
    let Some(pg) = PrivatePostgres::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target: SocketAddr = format!("127.0.0.1:{}", pg.port).parse().unwrap();
    let mut nodes = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let proxy = TcpProxy::start(target).await.unwrap();
        let port = free_port();
        let server = spawn(name, port, &proxy, dir.path());
        nodes.push(Node {
            name: name.into(),
            port,
            proxy,
            server,
            dir: dir.path().to_owned(),
        });
    }
    for n in &nodes {
        ready(&n.server).await;
    }
    let log = dir.path().join("tasks.log");
    let locks = dir.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    // Each attempt holds a lock named after its run while it executes: a second attempt of
    // the same run starting while the first still runs finds it taken and says so.
    let script = format!(
        "if flock -n {locks}/$KAIROS_RUN_ID -c 'echo \"$KAIROS_RUN_ID $KAIROS_ATTEMPT $TEST_NODE start\" >> {log}; sleep {TASK_SECS}; echo \"$KAIROS_RUN_ID $KAIROS_ATTEMPT $TEST_NODE end\" >> {log}'; \
         then :; else echo \"$KAIROS_RUN_ID $KAIROS_ATTEMPT $TEST_NODE overlap\" >> {log}; fi",
        locks = locks.display(),
        log = log.display()
    );
    let job = json!({
        "name": "tick",
        "triggers": [{"cron": "* * * * * *"}],
        "catchup": "all",
        "catchup_window": "10m",
        "overlap": "allow",
        "max_concurrent": 100,
        "task": {"kind": "shell", "script": script},
    });
    let (status, _, body) = nodes[1]
        .server
        .call(Method::POST, "/api/v1/jobs", Some(job))
        .await;
    assert_eq!(status, 201, "{body}");
    let first_due = ts(&body["next_fire_at"]);
    // Attempts that were running on a node when it failed: (run, attempt, node).
    let mut hit: Vec<(i64, u64, String)> = Vec::new();

    // 1. SIGKILL the leader twice, restarting it each time.
    for round in 0..2 {
        pause(7).await;
        let i = wait_leader(&nodes, None, "before a kill").await;
        hit.extend(
            running_on(&nodes, &nodes[i].name)
                .await
                .map(|(id, attempt)| (id, attempt, nodes[i].name.clone())),
        );
        nodes[i].server.kill9();
        let before = Instant::now();
        let next = wait_leader(&nodes, Some(i), "after a kill").await;
        eprintln!(
            "round {round}: {} killed, {} leads after {:?}",
            nodes[i].name,
            nodes[next].name,
            before.elapsed()
        );
        pause(3).await;
        let n = &mut nodes[i];
        n.server = spawn(&n.name, n.port, &n.proxy, &n.dir);
        ready(&n.server).await;
    }

    // 2. PostgreSQL crashes and comes back.
    pause(5).await;
    pg.crash().await;
    pause(3).await;
    pg.start_again().await;

    // 3. A follower, then the leader, cut off for longer than their leases (the leader for
    // longer than its leadership too).
    pause(6).await;
    let leading = wait_leader(&nodes, None, "before the first cut").await;
    let follower = (leading + 1) % nodes.len();
    hit.extend(
        running_on(&nodes, &nodes[follower].name)
            .await
            .map(|(id, attempt)| (id, attempt, nodes[follower].name.clone())),
    );
    nodes[follower].proxy.cut();
    pause(8).await;
    nodes[follower].proxy.restore();
    pause(5).await;
    let leading = wait_leader(&nodes, None, "before the second cut").await;
    hit.extend(
        running_on(&nodes, &nodes[leading].name)
            .await
            .map(|(id, attempt)| (id, attempt, nodes[leading].name.clone())),
    );
    nodes[leading].proxy.cut();
    pause(15).await;
    nodes[leading].proxy.restore();
    pause(6).await;

    // The window ends: no more due times. Then every run must finish.
    let server = live(&nodes);
    let (status, _, body) = server
        .call(Method::POST, "/api/v1/jobs/tick/pause", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let paused = ts(&body["updated_at"]);
    let runs = server
        .wait_for(120, "every run to finish", || async {
            let runs = server.runs("tick").await;
            let done = runs.iter().all(|r| {
                !matches!(
                    r["state"].as_str(),
                    Some("queued" | "running" | "scheduled")
                )
            });
            done.then_some(runs)
        })
        .await;

    // Every due time of the window has exactly one run, and none is missing.
    let mut due: BTreeMap<String, u32> = BTreeMap::new();
    for r in &runs {
        *due.entry(r["scheduled_for"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        due.len() >= 60,
        "at least a minute of due times: {}",
        due.len()
    );
    assert!(due.values().all(|n| *n == 1), "duplicates: {due:?}");
    let times: Vec<jiff::Timestamp> = due.keys().map(|s| s.parse().unwrap()).collect();
    // From the job's first due time to about the pause (a due time that falls while the pause
    // is written may go either way).
    let (first, last) = (times[0], times[times.len() - 1]);
    assert_eq!(first, first_due, "the first due time fired");
    let slack = jiff::SignedDuration::from_millis(1500);
    assert!(
        last.duration_since(paused).abs() <= slack,
        "the last due time fired is {last}, the job was paused at {paused}"
    );
    for pair in times.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]),
            jiff::SignedDuration::from_secs(1),
            "a due time is missing after {}",
            pair[0]
        );
    }
    let states: BTreeSet<&str> = runs.iter().filter_map(|r| r["state"].as_str()).collect();
    let not_succeeded: Vec<&Value> = runs.iter().filter(|r| r["state"] != "succeeded").collect();
    assert!(
        not_succeeded.is_empty(),
        "every run succeeds in the end ({states:?}): {not_succeeded:#?}"
    );

    // No run executed twice at once; runs that lost their node ran again elsewhere.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("overlap"), "{text}");
    let mut ended: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f[3] == "end" {
            ended.entry(f[0]).or_default().push(f[2]);
        }
    }
    for r in &runs {
        let id = r["id"].to_string();
        assert!(
            ended.contains_key(id.as_str()),
            "run {id} succeeded without a task that ended: {r}"
        );
    }
    // A run that was running on a node when it was killed or cut off ran again, after its
    // lease, and that attempt ran to its end (on another node, or on the killed one once it
    // was back): its first attempt was stopped, or it would have overlapped above.
    assert!(
        hit.len() >= 2,
        "failures that stopped a running attempt: {hit:?}"
    );
    let ends: Vec<(i64, u64)> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f[3] == "end").then(|| (f[0].parse().unwrap(), f[1].parse().unwrap()))
        })
        .collect();
    for (id, attempt, node) in &hit {
        let run = runs.iter().find(|r| r["id"].as_i64() == Some(*id)).unwrap();
        assert!(
            run["attempt"].as_u64() > Some(*attempt),
            "run {id} was running attempt {attempt} on {node} when it failed: {run}"
        );
        // That attempt was stopped (killed with its node, or by its node cut off), and a later
        // one ran to its end.
        assert!(
            !ends.contains(&(*id, *attempt)),
            "attempt {attempt} of run {id} ran on after {node} failed: {text}"
        );
        assert!(
            ends.iter().any(|(i, a)| i == id && a > attempt),
            "run {id} ran again to its end: {text}"
        );
    }
    let rescued = runs
        .iter()
        .filter(|r| r["attempt"].as_u64() > Some(1))
        .count();
    eprintln!(
        "{} runs over {} s; {rescued} ran more than once (rescued after their node was lost); \
         running at a failure: {hit:?}",
        runs.len(),
        due.len()
    );
    drop(pg);
}

/// Starts a node on the shared test database's schema `url`.
fn spawn_on(name: &str, url: &str, dir: &Path) -> Server {
    spawn_on_with(name, url, dir, &[])
}

fn spawn_on_with(name: &str, url: &str, dir: &Path, extra: &[&str]) -> Server {
    spawn_node(name, dir, |c| {
        c.args(["--store", url]).args(extra);
    })
}

/// Starts node `name` with its store set by `store` (a flag, the environment, a config file).
fn spawn_node(name: &str, dir: &Path, store: impl FnOnce(&mut Command)) -> Server {
    let port = free_port();
    let log = unique(dir.join(name));
    let mut command = Command::new(env!("CARGO_BIN_EXE_kairos"));
    command
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--node-name", name, "--data-dir"])
        .arg(dir.join(format!("{name}-data")));
    store(&mut command);
    let child = command
        .env("KAIROS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start kairos");
    Server {
        child: Some(child),
        url: format!("http://127.0.0.1:{port}"),
        data_dir: dir.to_owned(),
        log,
        http: http_client(),
    }
}

/// The name of the node that leads, as `server` reports it (waits for one).
async fn leader_name(server: &Server) -> String {
    server
        .wait_for(30, "a leader", || async {
            let (_, _, list) = server.call(Method::GET, "/api/v1/nodes", None).await;
            list.as_array()?
                .iter()
                .find(|n| n["leader"] == true)
                .and_then(|n| n["name"].as_str().map(str::to_owned))
        })
        .await
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().expect("an instant").parse().expect("an instant")
}

/// Changes made through a follower take effect on the leader within a second: a new job fires
/// its next due time, a pause and a delete stop the firing, and a run triggered on the follower
/// starts within a second. Measured through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_a_follower_reach_the_leader_within_a_second() {
    let Some(schema) = kairos_testkit::postgres::temp_schema().await else {
        return;
    };
    let url = format!("{}&schema={}", schema.config().url, schema.name);
    let dir = tempfile::tempdir().unwrap();
    let a = spawn_on("a", &url, dir.path());
    ready(&a).await;
    a.wait_for(30, "a to lead", || async {
        let (_, _, nodes) = a.call(Method::GET, "/api/v1/nodes", None).await;
        nodes
            .as_array()
            .and_then(|l| l.iter().find(|n| n["leader"] == true && n["name"] == "a"))
            .map(|_| ())
    })
    .await;
    let b = spawn_on("b", &url, dir.path());
    ready(&b).await;
    let second = jiff::SignedDuration::from_secs(1);

    // Create on B: the leader fires the next due time (at most a second away) on time, so its
    // run is created within a second of the job (the leader creates a run when it learns of
    // the job, or a little ahead of the due time if that is later). The instants compared
    // come from the store (the database's clock).
    let job = json!({"name": "every-second", "triggers": [{"cron": "* * * * * *"}],
        "task": {"kind": "shell", "script": "true"}});
    let (status, _, body) = b.call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{body}");
    let created = ts(&body["created_at"]);
    let first = a
        .wait_for(10, "the first run", || async {
            a.runs("every-second").await.last().cloned()
        })
        .await;
    let due = ts(&first["scheduled_for"]);
    assert!(
        due.duration_since(created) <= second,
        "the first due time fired was {due}, created at {created}"
    );
    let fired = ts(&first["created_at"]);
    assert!(
        fired.duration_since(created) <= second,
        "the leader fired at {fired}, the job was created at {created}"
    );

    // Pause on B: nothing due more than a second after the pause is fired.
    let (status, _, body) = b
        .call(Method::POST, "/api/v1/jobs/every-second/pause", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let paused = ts(&body["updated_at"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // (The pause may have taken back a run created ahead of its due time: none is left then.)
    let latest = a
        .runs("every-second")
        .await
        .iter()
        .map(|r| ts(&r["scheduled_for"]))
        .max();
    assert!(
        latest.is_none_or(|at| at.duration_since(paused) <= second),
        "fired {latest:?} after the pause at {paused}"
    );

    // Trigger-now on B: the run starts within a second (on any node).
    let (status, _, run) = b
        .call(Method::POST, "/api/v1/jobs/every-second/trigger", None)
        .await;
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_i64().unwrap();
    let started = b
        .wait_for(10, "the triggered run to start", || async {
            let (_, _, r) = b
                .call(Method::GET, &format!("/api/v1/runs/{id}"), None)
                .await;
            r["started_at"].is_string().then_some(r)
        })
        .await;
    let lag = ts(&started["started_at"]).duration_since(ts(&started["created_at"]));
    assert!(lag <= second, "started {lag:#} after it was triggered");

    // Resume and delete on B: the firing stops within a second of the delete.
    let (status, _, body) = b
        .call(Method::POST, "/api/v1/jobs/every-second/resume", None)
        .await;
    assert_eq!(status, 200, "{body}");
    a.wait_for(10, "a run after the resume", || async {
        let runs = a.runs("every-second").await;
        runs.iter()
            .any(|r| ts(&r["scheduled_for"]) > paused.checked_add(second * 3).unwrap())
            .then_some(())
    })
    .await;
    let (status, _, body) = b
        .call(Method::DELETE, "/api/v1/jobs/every-second", None)
        .await;
    assert_eq!(status, 204, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _, _) = a.call(Method::GET, "/api/v1/jobs/every-second", None).await;
    assert_eq!(status, 404, "deleted everywhere");
    let (_, _, runs) = a.call(Method::GET, "/api/v1/runs?limit=1000", None).await;
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(0),
        "its runs went with it: {runs}"
    );
    drop(schema);
}

/// The live output of a run executing on one node can be followed through any other node:
/// the request is passed on to the node running it, with the caller's credential (here the web
/// UI's session cookie, signed in on the other node: sessions are in the shared store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_followed_live_through_any_node() {
    let Some(schema) = kairos_testkit::postgres::temp_schema().await else {
        return;
    };
    let url = format!("{}&schema={}", schema.config().url, schema.name);
    let dir = tempfile::tempdir().unwrap();
    let created = kairos(&[
        "token", "create", "--store", &url, "--name", "admin", "--role", "admin",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let admin = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {admin}").parse().unwrap());
    let bearer = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let nodes = [
        spawn_on_with("one", &url, dir.path(), &["--auth", "required"]),
        spawn_on_with("two", &url, dir.path(), &["--auth", "required"]),
    ]
    .map(|mut n| {
        n.http = bearer.clone();
        n
    });
    for n in &nodes {
        ready(n).await;
    }
    let marker = dir.path().join("go");
    let script = format!(
        "echo first; while [ ! -e {m} ]; do sleep 0.1; done; echo second",
        m = marker.display()
    );
    let job = json!({"name": "talk", "task": {"kind": "shell", "script": script}});
    let (status, _, body) = nodes[0].call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{body}");
    let id = nodes[0].trigger("talk").await;
    let run = nodes[0].wait_for_run_state(30, id, "running").await;
    let runner = run["node"].as_str().unwrap();
    let other = &nodes[if runner == "one" { 1 } else { 0 }];
    let signed_in = http_client()
        .post(format!("{}/api/v1/session", other.url))
        .json(&json!({"token": admin}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut answer = http_client()
        .get(format!("{}/api/v1/runs/{id}/output?follow=true", other.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // The first line arrives while the task still waits for the marker: live, not stored.
    let mut text = String::new();
    while !text.contains("first") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), answer.chunk())
            .await
            .expect("live output")
            .unwrap()
            .expect("more output");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (_, _, now) = other
        .call(Method::GET, &format!("/api/v1/runs/{id}"), None)
        .await;
    assert_eq!(now["state"], "running", "{now}");
    std::fs::write(&marker, "").unwrap();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), answer.chunk())
        .await
        .expect("the stream ends when the run does")
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("second"), "{text}");
    other.wait_for_run_state(30, id, "succeeded").await;
    drop(schema);
}

fn kairos(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(args)
        .output()
        .expect("run kairos")
}

/// A single node on the embedded store, and a schema for the cluster it grows into.
struct Growing {
    schema: kairos_testkit::postgres::TempSchema,
    /// The schema's store URL.
    pg_url: String,
    dir: tempfile::TempDir,
    /// The single node's data directory.
    data: PathBuf,
    single: Server,
}

impl Growing {
    async fn start() -> Option<Self> {
        let schema = kairos_testkit::postgres::temp_schema().await?;
        let pg_url = format!("{}&schema={}", schema.config().url, schema.name);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let single = Server::start(&data, &[]).await;
        Some(Self {
            schema,
            pg_url,
            dir,
            data,
            single,
        })
    }
}

/// A single node grows into a cluster: `kairos store copy` moves its jobs (versions, paused
/// state, next due times) and run history (attempts, output) from SQLite into PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_single_node_into_a_cluster() {
    let Some(Growing {
        schema,
        pg_url,
        dir,
        data,
        mut single,
    }) = Growing::start().await
    else {
        return;
    };
    single
        .create_shell_job("hello", "echo hello from $KAIROS_RUN_ID")
        .await;
    let holidays = json!({"name": "holidays", "dates": ["2026-12-25"]});
    let (status, _, _) = single
        .call(Method::POST, "/api/v1/calendars", Some(holidays))
        .await;
    assert_eq!(status, 201);
    let daily = json!({"name": "daily", "triggers": [{"cron": "0 3 * * *", "exclude": ["holidays"]}],
        "task": {"kind": "shell", "script": "true"}});
    let (status, _, _) = single.call(Method::POST, "/api/v1/jobs", Some(daily)).await;
    assert_eq!(status, 201);
    let (status, _, _) = single
        .call(Method::POST, "/api/v1/jobs/daily/pause", None)
        .await;
    assert_eq!(status, 200);
    for _ in 0..3 {
        let id = single.trigger("hello").await;
        single.wait_for_run_state(30, id, "succeeded").await;
    }
    let (_, _, jobs_before) = single.call(Method::GET, "/api/v1/jobs", None).await;
    let runs_before = single.runs("hello").await;

    // While the node holds its store, the copy refuses to read it.
    let sqlite_url = format!("sqlite://{}", data.display());
    let busy = kairos(&["store", "copy", "--from", &sqlite_url, "--to", &pg_url]);
    assert!(!busy.status.success());
    single.terminate(Duration::from_secs(30)).await;

    let copied = kairos(&["store", "copy", "--from", &sqlite_url, "--to", &pg_url]);
    let said = String::from_utf8_lossy(&copied.stderr);
    assert!(copied.status.success(), "{said}");
    assert!(
        said.contains("copied 2 jobs and 3 runs (and 1 calendars)"),
        "{said}"
    );
    assert!(!said.contains("secret"), "{said}");
    // A second copy into the same store is refused: it has jobs already.
    let again = kairos(&["store", "copy", "--from", &sqlite_url, "--to", &pg_url]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("has jobs already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let node = spawn_on("grown", &pg_url, dir.path());
    ready(&node).await;
    let (_, _, jobs_after) = node.call(Method::GET, "/api/v1/jobs", None).await;
    for field in [
        "name",
        "version",
        "paused",
        "next_fire_at",
        "created_at",
        "triggers",
    ] {
        let pick = |jobs: &Value| -> Vec<Value> {
            jobs.as_array()
                .unwrap()
                .iter()
                .map(|j| j[field].clone())
                .collect()
        };
        assert_eq!(pick(&jobs_before), pick(&jobs_after), "{field}");
    }
    let (_, _, calendar) = node
        .call(Method::GET, "/api/v1/calendars/holidays", None)
        .await;
    assert_eq!(calendar["dates"], json!(["2026-12-25"]));
    assert_eq!(calendar["jobs"], json!(["daily"]));
    let runs_after = node.runs("hello").await;
    assert_eq!(runs_after.len(), runs_before.len());
    for (a, b) in runs_before.iter().zip(&runs_after) {
        for field in [
            "scheduled_for",
            "state",
            "attempt",
            "origin",
            "started_at",
            "finished_at",
        ] {
            assert_eq!(a[field], b[field], "{field}");
        }
    }
    let id = runs_after[0]["id"].as_i64().unwrap();
    let output = node
        .http
        .get(format!("{}/api/v1/runs/{id}/output", node.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(output.contains("hello from"), "{output}");
    // The copied job runs in the cluster.
    let id = node.trigger("hello").await;
    node.wait_for_run_state(30, id, "succeeded").await;

    let bad = kairos(&["store", "copy", "--from", "mysql://x", "--to", &pg_url]);
    assert!(!bad.status.success());

    // The first admin token of a cluster is made directly in its store, while nodes run.
    let token = kairos(&[
        "token", "create", "--store", &pg_url, "--name", "admin", "--role", "admin",
    ]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let secret = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    assert!(secret.len() >= 32, "{secret}");
    let (_, _, tokens) = node.call(Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(tokens[0]["name"], "admin", "{tokens}");
    drop(schema);
}

/// A single node killed with SIGKILL in the middle of two attempts, then copied into a cluster:
/// the copy settles what was running as a rescue would. The `at_least_once` run runs again on
/// the cluster's node (and succeeds there); the `at_most_once` run, whose attempt had begun,
/// ends `lost` with its lost attempt recorded and is not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_after_kill_9_settles_the_runs_that_were_running() {
    let Some(Growing {
        schema,
        pg_url,
        dir,
        data,
        mut single,
    }) = Growing::start().await
    else {
        return;
    };
    let again_marker = dir.path().join("again-began");
    let once_marker = dir.path().join("once-began");
    let once_ran_twice = dir.path().join("once-ran-twice");
    // The first attempt leaves a marker and hangs; an attempt that finds the marker succeeds.
    let again = json!({"name": "again", "task": {"kind": "shell", "script": format!(
        "if [ -e {m} ]; then echo second attempt; exit 0; fi; touch {m}; exec sleep 300",
        m = again_marker.display())}});
    let once = json!({"name": "once", "execution": "at_most_once", "task": {"kind": "shell",
        "script": format!("if [ -e {m} ]; then touch {twice}; fi; touch {m}; exec sleep 300",
            m = once_marker.display(), twice = once_ran_twice.display())}});
    for job in [again, once] {
        let (status, _, body) = single.call(Method::POST, "/api/v1/jobs", Some(job)).await;
        assert_eq!(status, 201, "{body}");
    }
    let again_id = single.trigger("again").await;
    let once_id = single.trigger("once").await;
    // Both tasks run: an `at_most_once` task starts only after its begin is recorded.
    single
        .wait_for(30, "both tasks to start", || async {
            (again_marker.exists() && once_marker.exists()).then_some(())
        })
        .await;
    single.wait_for_run_state(10, again_id, "running").await;
    single.wait_for_run_state(10, once_id, "running").await;
    single.kill9();

    let sqlite_url = format!("sqlite://{}", data.display());
    let copied = kairos(&["store", "copy", "--from", &sqlite_url, "--to", &pg_url]);
    let said = String::from_utf8_lossy(&copied.stderr);
    assert!(copied.status.success(), "{said}");
    assert!(said.contains("copied 2 jobs and 2 runs"), "{said}");

    let node = spawn_on("grown", &pg_url, dir.path());
    ready(&node).await;
    let run = node.wait_for_run_state(60, again_id, "succeeded").await;
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["status"], "succeeded", "{run}");
    assert!(node.output(again_id).await.contains("second attempt"));
    let run = node.wait_for_run_state(10, once_id, "lost").await;
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{run}");
    assert_eq!(attempts[0]["status"], "lost", "{run}");
    // Nothing runs the `at_most_once` task again (a requeue would have been claimed by now).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!once_ran_twice.exists());
    let runs = node.runs("once").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["state"], "lost");
    drop(schema);
}

/// A cancel sent to one node stops the attempt running on another within a second (the cancel
/// is a notification, not a wait for the next heartbeat), and so does the fire of an `overlap:
/// replace` job on the leader; a leader stopped with SIGTERM
/// resigns: another node leads well before the leadership lease (10 s) would have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_running_node_and_a_stopping_leader_hands_over() {
    let Some(schema) = kairos_testkit::postgres::temp_schema().await else {
        return;
    };
    let url = format!("{}&schema={}", schema.config().url, schema.name);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = [
        spawn_on("first", &url, dir.path()),
        spawn_on("second", &url, dir.path()),
    ];
    for n in &nodes {
        ready(n).await;
    }
    let (status, _, body) = nodes[0]
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "long", "task": {"kind": "shell", "script": "sleep 60"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = nodes[0].trigger("long").await;
    let run = nodes[0].wait_for_run_state(30, id, "running").await;
    let other = usize::from(run["node"] == "first");
    let (status, _, body) = nodes[other]
        .call(Method::POST, &format!("/api/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let cancelled = nodes[other].wait_for_run_state(30, id, "cancelled").await;
    let (_, _, audit) = nodes[other].call(Method::GET, "/api/v1/audit", None).await;
    let asked = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "run.cancel")
        .map(|e| ts(&e["at"]))
        .expect("the cancel is audited");
    let stopped = ts(&cancelled["finished_at"]);
    assert!(
        stopped.duration_since(asked) <= jiff::SignedDuration::from_secs(1),
        "asked at {asked}, stopped at {stopped}"
    );

    // `overlap: replace`: a due time fired by the leader stops the attempt of the run before
    // it within a second, on whichever node it runs: wait until one ran on the node that does
    // not lead.
    let (status, _, body) = nodes[0]
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "swap", "overlap": "replace",
                "triggers": [{"cron": "*/2 * * * * *"}],
                "task": {"kind": "shell", "script": "sleep 60"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let leading = leader_name(&nodes[0]).await;
    let runs = nodes[0]
        .wait_for(
            60,
            "a run replaced on the node that does not lead",
            || async {
                let mut runs = nodes[0].runs("swap").await;
                runs.sort_by_key(|r| ts(&r["scheduled_for"]));
                runs.iter()
                    .any(|r| {
                        r["state"] == "cancelled" && r["node"].is_string() && r["node"] != leading
                    })
                    .then_some(runs)
            },
        )
        .await;
    let (status, _, body) = nodes[0]
        .call(Method::POST, "/api/v1/jobs/swap/pause", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let mut replaced = 0;
    for pair in runs.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        if old["state"] != "cancelled" || !old["started_at"].is_string() {
            continue;
        }
        replaced += 1;
        let (asked, stopped) = (ts(&new["created_at"]), ts(&old["finished_at"]));
        assert!(
            stopped.duration_since(asked) <= jiff::SignedDuration::from_secs(1),
            "run {} on {} replaced at {asked}, stopped at {stopped}",
            old["id"],
            old["node"]
        );
    }
    assert!(replaced > 0, "{runs:#?}");
    for run in nodes[0].runs("swap").await {
        if run["state"] == "running" || run["state"] == "queued" {
            let id = run["id"].as_i64().unwrap();
            nodes[0]
                .call(Method::POST, &format!("/api/v1/runs/{id}/cancel"), None)
                .await;
        }
    }

    // SIGTERM to the leader: it resigns and the other node takes over at once.
    let leading = leader_name(&nodes[0]).await;
    let (stop, stay) = if leading == "first" { (0, 1) } else { (1, 0) };
    let status = nodes[stop].terminate(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let survivor = &nodes[stay];
    survivor
        .wait_for(
            5,
            "the other node to lead after the resignation",
            || async {
                let (_, _, list) = survivor.call(Method::GET, "/api/v1/nodes", None).await;
                list.as_array()?
                    .iter()
                    .find(|n| n["leader"] == true && n["this_node"] == true)
                    .map(|_| ())
            },
        )
        .await;
    drop(schema);
}

/// Two nodes that share a name are two nodes: one restarted after `kill -9` does not take
/// the other's running attempt for its own orphan (on a shared store, what a dead node ran is
/// rescued only by lease expiry, and the other keeps renewing it), and the registry lists both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_share_a_name_never_rescue_each_others_runs() {
    let Some(schema) = kairos_testkit::postgres::temp_schema().await else {
        return;
    };
    let url = format!("{}&schema={}", schema.config().url, schema.name);
    let dir = tempfile::tempdir().unwrap();
    // A short lease: a rescue by mistake would show within the test.
    let config = dir.path().join("twin.toml");
    std::fs::write(&config, "lease = \"3s\"\n").unwrap();
    let lease = ["--config", config.to_str().unwrap()];
    let mut twins = [
        spawn_on_with("twin", &url, dir.path(), &lease),
        spawn_on_with("twin", &url, dir.path(), &lease),
    ];
    for n in &twins {
        ready(n).await;
    }
    let starts = dir.path().join("starts");
    let job = json!({"name": "long", "task": {"kind": "shell",
        "script": format!("echo $PPID >> {}; exec sleep 60", starts.display())}});
    let (status, _, body) = twins[0].call(Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{body}");
    let id = twins[0].trigger("long").await;
    twins[0].wait_for_run_state(30, id, "running").await;
    let runner = twins[0]
        .wait_for(10, "the task to start", || async {
            let pid: u32 = std::fs::read_to_string(&starts).ok()?.trim().parse().ok()?;
            twins
                .iter()
                .position(|t| t.child.as_ref().map(std::process::Child::id) == Some(pid))
        })
        .await;
    let other = 1 - runner;
    twins[other].kill9();
    twins[other] = spawn_on_with("twin", &url, dir.path(), &lease);
    ready(&twins[other]).await;
    // Longer than the lease and a few heartbeats: the run is still the first attempt, running.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, _, run) = twins[other]
        .call(Method::GET, &format!("/api/v1/runs/{id}"), None)
        .await;
    assert_eq!(run["state"], "running", "{run}");
    assert_eq!(run["attempt"], 1, "{run}");
    let started = std::fs::read_to_string(&starts).unwrap();
    assert_eq!(
        started.lines().count(),
        1,
        "the task started once: {started}"
    );
    let (_, _, nodes) = twins[other].call(Method::GET, "/api/v1/nodes", None).await;
    let live = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["name"] == "twin")
        .count();
    assert!(live >= 2, "both twins are registered: {nodes}");
    let (status, _, body) = twins[other]
        .call(Method::POST, &format!("/api/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    drop(schema);
}

/// The node registry: three nodes whose store comes from the flag, `KAIROS_STORE` and the
/// config file's `store` are listed by every node (`GET /api/v1/nodes` and `kairos node ls`)
/// with their address, version, start, heartbeat and one leader with its term; a node killed
/// with SIGKILL is expired by the leader once it has not been heard from for 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_listed_by_every_node_and_a_dead_one_expires() {
    let Some(schema) = kairos_testkit::postgres::temp_schema().await else {
        return;
    };
    let url = format!("{}&schema={}", schema.config().url, schema.name);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("from-file.toml");
    std::fs::write(&config, format!("store = {:?}\n", url)).unwrap();
    let mut nodes = [
        spawn_on("from-flag", &url, dir.path()),
        spawn_node("from-env", dir.path(), |c| {
            c.env("KAIROS_STORE", &url);
        }),
        spawn_node("from-file", dir.path(), |c| {
            c.arg("--config").arg(&config);
        }),
    ];
    for n in &nodes {
        ready(n).await;
    }
    for n in &nodes {
        let list = n
            .wait_for(30, "three nodes and a leader", || async {
                let (_, _, list) = n.call(Method::GET, "/api/v1/nodes", None).await;
                let list = list.as_array()?.clone();
                (list.len() == 3 && list.iter().any(|x| x["leader"] == true)).then_some(list)
            })
            .await;
        let mut names: Vec<&str> = list.iter().map(|x| x["name"].as_str().unwrap()).collect();
        names.sort_unstable();
        assert_eq!(names, ["from-env", "from-file", "from-flag"]);
        for x in &list {
            let name = x["name"].as_str().unwrap();
            let node = &nodes[["from-flag", "from-env", "from-file"]
                .iter()
                .position(|n| *n == name)
                .unwrap()];
            assert_eq!(x["address"], node.url.as_str(), "{x}");
            assert_eq!(x["version"], env!("CARGO_PKG_VERSION"), "{x}");
            assert_eq!(x["this_node"], (node.url == n.url), "{x}");
            assert!(ts(&x["last_heartbeat"]) >= ts(&x["started_at"]), "{x}");
            assert!(x["running_attempts"].is_u64(), "{x}");
            assert!(!x["id"].as_str().unwrap().is_empty(), "{x}");
            if x["leader"] == true {
                assert!(x["term"].as_i64().is_some_and(|t| t >= 1), "{x}");
            }
        }
        assert_eq!(list.iter().filter(|x| x["leader"] == true).count(), 1);
    }
    let ls = kairos(&["node", "ls", "--server", &nodes[1].url]);
    let out = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    for name in ["from-flag", "from-env (this)", "from-file"] {
        assert!(out.contains(name), "{out}");
    }
    assert!(out.contains("leader (term "), "{out}");

    // A node killed outright leaves the registry once the leader expires it. (Not the
    // leader: its successor would take over first.)
    let leader = leader_name(&nodes[0]).await;
    let victim = ["from-flag", "from-env", "from-file"]
        .iter()
        .position(|n| *n != leader)
        .unwrap();
    let gone = ["from-flag", "from-env", "from-file"][victim];
    nodes[victim].kill9();
    let survivor = &nodes[(victim + 1) % 3];
    survivor
        .wait_for(60, "the dead node to be expired", || async {
            let (_, _, list) = survivor.call(Method::GET, "/api/v1/nodes", None).await;
            let list = list.as_array()?.clone();
            (list.len() == 2 && list.iter().all(|x| x["name"] != gone)).then_some(())
        })
        .await;
    drop(schema);
}

/// A store URL that is wrong, or a database that cannot be reached, ends the start with a
/// clear message and a non-zero exit (never a panic), without echoing a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_store_urls_and_unreachable_databases_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    for (url, says) in [
        ("mysql://u:pw@127.0.0.1/db", "unknown scheme `mysql`"),
        ("sqlite://relative/dir", "absolute path"),
        (
            "postgres://u:hunter2@127.0.0.1:1/db",
            "postgres://u:***@127.0.0.1:1/db",
        ),
        ("postgres://u@127.0.0.1:1/db?schema=Bad-Name", "schema"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--store", url])
            .env("KAIROS_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {text}");
        assert_eq!(out.status.code(), Some(1), "{url}: not a panic: {text}");
        assert!(text.contains(says), "{url}: {text}");
        assert!(!text.contains("hunter2"), "{url}: {text}");
        assert!(!text.contains("panicked"), "{url}: {text}");
    }
}

/// The event stream of any node carries the whole cluster's events, and a client resumes on
/// another node with the id it last saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_of_any_node_carries_the_cluster() {
    let Some(schema) = kairos_testkit::postgres::temp_schema().await else {
        return;
    };
    let url = format!("{}&schema={}", schema.config().url, schema.name);
    let dir = tempfile::tempdir().unwrap();
    let nodes = [
        spawn_on("one", &url, dir.path()),
        spawn_on("two", &url, dir.path()),
    ];
    for n in &nodes {
        ready(n).await;
    }
    let query = "?kinds=run.finished&job=tick";
    let (_, mut on_one) = common::SseClient::connect(&nodes[0], query, None).await;
    let (_, mut on_two) = common::SseClient::connect(&nodes[1], query, None).await;
    nodes[0].create_shell_job("tick", "true").await;
    let mut runs = Vec::new();
    for i in 0..6 {
        runs.push(nodes[i % 2].trigger("tick").await);
    }
    runs.sort_unstable();
    let mut last_id = String::new();
    for client in [&mut on_one, &mut on_two] {
        let mut seen = Vec::new();
        while seen.len() < runs.len() {
            let e = client
                .next(30)
                .await
                .expect("every run's end, from either node");
            last_id = e.id.clone().unwrap();
            seen.push(e.data["run_id"].as_i64().unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, runs);
    }
    // Resumed on the other node from the last id seen: only what came after.
    drop(on_two);
    let later = nodes[0].trigger("tick").await;
    let (_, mut resumed) = common::SseClient::connect(&nodes[1], query, Some(&last_id)).await;
    let e = resumed.next(30).await.expect("the run after");
    assert_eq!(e.data["run_id"], later);
    drop(schema);
}
