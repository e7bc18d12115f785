//! The alert sender and its channels, end to end: deliveries queued in a real store of each
//! backend, sent by the real executor to a local HTTP server that records what it gets (or to a
//! command), under a manual clock.
//!
//! Attempts are real requests and processes, so a channel's timeout is a real wait: the tests
//! keep them to a few seconds and assert what happened, never how long it took.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use jiff::{SignedDuration, Timestamp};
use kairos_exec::{FunctionRegistry, TaskExecutor};
use kairos_runtime::alerts::channels::MAX_ATTEMPTS;
use kairos_runtime::alerts::sender::Sender;
use kairos_runtime::alerts::{
    AlertDoc, AlertLinks, AlertRun, AlertsConfig, Channel, ChannelKind, DEFAULT_RETENTION,
};
use kairos_runtime::{Clock as _, ManualClock, NodeContext};
use kairos_store::{
    AlertDelivery, AlertEnqueueParams, AlertInsert, AlertListParams, DeliveryState,
};
use kairos_testkit::{Backend, TestStore, node_context_on};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

kairos_testkit::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_webhook_gets_the_document_with_headers_and_a_signature,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_server_error_is_retried_after_its_backoff,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_client_error_fails_at_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_delivery_fails_after_its_last_attempt,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_hanging_channel_times_out_without_holding_up_another,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_channel_gets_at_most_four_sends_at_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_burst_to_a_slow_channel_is_delivered_with_one_attempt_each,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_hanging_channel_is_charged_only_the_attempts_it_got,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_slack_message_has_the_summary_and_a_link,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_slack_url_never_shows_in_errors,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_command_channel_reads_the_document_from_its_file,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_command_channel_gets_neither_the_servers_nor_a_runs_variables,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_failing_command_is_retried_with_its_last_words,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_fifo_or_missing_secret_file_fails_the_attempt_without_hanging,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_channel_this_node_does_not_know_is_left_for_a_node_that_has_it,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    stopping_the_loop_interrupts_attempts_and_hands_them_back,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    stopping_the_loop_does_not_wait_for_a_store_that_hangs,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    ended_deliveries_are_pruned_after_the_retention,
}

/// Bound on anything a test waits for (never reached when the code works).
const PATIENCE: Duration = Duration::from_secs(60);

const START: &str = "2026-03-01T00:00:00Z";

/// How long `/slow/...` requests take to be answered.
const SLOW_ANSWER: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// A recording HTTP server.

#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

struct ServerState {
    requests: Mutex<Vec<Request>>,
    /// Statuses to answer by path, in order; 200 when none is left.
    statuses: Mutex<HashMap<String, VecDeque<u16>>>,
    /// Requests received so far.
    arrivals: watch::Sender<usize>,
    /// `/gated/...` requests wait until it is `true`.
    gate: watch::Sender<bool>,
    /// `/gated/...` and `/slow/...` requests received and not answered yet, and their most.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Whether the stuck server holds a request (received, not answered, not given up).
    stuck_open: watch::Sender<bool>,
}

struct Server {
    /// `http://127.0.0.1:<port>` of the recording server.
    url: String,
    /// `http://127.0.0.1:<port>/` of a server that reads requests and never answers.
    stuck_url: String,
    state: Arc<ServerState>,
}

impl Server {
    async fn start() -> Self {
        let state = Arc::new(ServerState {
            requests: Mutex::default(),
            statuses: Mutex::default(),
            arrivals: watch::Sender::new(0),
            gate: watch::Sender::new(false),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            stuck_open: watch::Sender::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stuck_url = format!("http://{}/", stuck.local_addr().unwrap());
        let stuck_state = state.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = stuck.accept().await {
                let state = stuck_state.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut open = false;
                    // Reads until the client gives up (EOF), never answering.
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !open {
                            open = true;
                            state.stuck_open.send_replace(true);
                        }
                    }
                    if open {
                        state.stuck_open.send_replace(false);
                    }
                });
            }
        });
        Server {
            url,
            stuck_url,
            state,
        }
    }

    fn answer(&self, path: &str, statuses: &[u16]) {
        self.state
            .statuses
            .lock()
            .unwrap()
            .insert(path.into(), statuses.iter().copied().collect());
    }

    fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests received for each delivery (by `Kairos-Delivery`).
    fn requests_by_delivery(&self) -> HashMap<i64, u32> {
        let mut counts = HashMap::new();
        for request in self.requests() {
            let id = request.headers["kairos-delivery"].parse().unwrap();
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    async fn wait_for_requests(&self, n: usize) {
        let mut arrivals = self.state.arrivals.subscribe();
        tokio::time::timeout(PATIENCE, arrivals.wait_for(|got| *got >= n))
            .await
            .expect("requests arrive")
            .unwrap();
    }
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let path = uri.path().to_owned();
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let gated = path.starts_with("/gated/");
    let slow = path.starts_with("/slow/");
    if gated || slow {
        // Counted before the arrival is announced, so that a test that saw it arrive sees it
        // in flight.
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    }
    state.requests.lock().unwrap().push(Request {
        path: path.clone(),
        headers,
        body,
    });
    state.arrivals.send_modify(|n| *n += 1);
    if gated || slow {
        if gated {
            let _ = state.gate.subscribe().wait_for(|open| *open).await;
        } else {
            // A receiver that answers, slowly.
            tokio::time::sleep(SLOW_ANSWER).await;
        }
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::OK, "ok".into());
    }
    if path.starts_with("/hang/") {
        // Recorded, never answered.
        std::future::pending::<()>().await;
    }
    if path == "/while-stuck" {
        // Answers only while the stuck server holds a request: a sender that sent this after
        // giving up on the stuck one (or before sending it) gets no answer.
        let _ = state.stuck_open.subscribe().wait_for(|open| *open).await;
        return (StatusCode::OK, "ok".into());
    }
    let status = state
        .statuses
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or(200);
    (
        StatusCode::from_u16(status).unwrap(),
        format!("{{\"answer\":{status}}}"),
    )
}

// ---------------------------------------------------------------------------------------------
// Setup.

struct Setup {
    ctx: NodeContext,
    clock: ManualClock,
    temp: TestStore,
    server: Server,
}

async fn setup(backend: Backend) -> Option<Setup> {
    let (ctx, clock, temp) = node_context_on(backend, START).await?;
    Some(Setup {
        ctx,
        clock,
        temp,
        server: Server::start().await,
    })
}

fn channel(name: &str, kind: ChannelKind, timeout_secs: u64) -> Channel {
    Channel {
        name: name.into(),
        kind,
        timeout: Duration::from_secs(timeout_secs),
    }
}

fn webhook(name: &str, url: String, secret_file: Option<PathBuf>) -> Channel {
    channel(name, ChannelKind::Webhook { url, secret_file }, 10)
}

fn doc() -> AlertDoc {
    let at: Timestamp = START.parse().unwrap();
    AlertDoc {
        alert: "failure".into(),
        summary: "Job `backup` (default): run 42 failed: exit 1".into(),
        namespace: "default".into(),
        job: "backup".into(),
        rule: "notify[0]".into(),
        at,
        run: Some(AlertRun {
            id: 42,
            state: "failed".into(),
            scheduled_for: at,
            started_at: Some(at),
            finished_at: Some(at),
            attempt: 1,
            exit_code: Some(1),
            reason: None,
            node: Some("node-a".into()),
        }),
        count: None,
        silent_since: None,
        scheduled_for: None,
        reason: None,
        deadline: None,
        links: AlertLinks {
            job: "https://kairos.example/jobs/default/backup".into(),
            run: Some("https://kairos.example/runs/42".into()),
        },
    }
}

impl Setup {
    fn sender(&self, channels: Vec<Channel>) -> Sender {
        let config = AlertsConfig {
            channels,
            retention: DEFAULT_RETENTION,
            ..AlertsConfig::default()
        };
        Sender::new(
            self.ctx.clone(),
            Arc::new(config),
            Arc::new(TaskExecutor::new(FunctionRegistry::new())),
        )
    }

    /// Queues the alert [`doc`] for `channel` (key `<key>:<channel>`); its delivery's id.
    async fn enqueue(&self, key: &str, channel: &str) -> i64 {
        let ids = self
            .ctx
            .store
            .alert_enqueue(AlertEnqueueParams {
                alerts: vec![AlertInsert {
                    key: format!("{key}:{channel}"),
                    alert: "failure".into(),
                    channel: channel.into(),
                    namespace: "default".into(),
                    job: "backup".into(),
                    run_id: Some(42),
                    payload: serde_json::to_string(&doc()).unwrap(),
                }],
                now: self.clock.store_now(),
            })
            .await
            .unwrap();
        ids[0].expect("queued")
    }

    async fn delivery(&self, id: i64) -> AlertDelivery {
        self.ctx
            .store
            .alert_list(AlertListParams {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.id == id)
            .expect("the delivery exists")
    }

    async fn run_once(&self, sender: &Sender) -> usize {
        tokio::time::timeout(PATIENCE, sender.run_once())
            .await
            .expect("a pass ends")
            .unwrap()
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.temp.dir().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

/// The alert document plus `"delivery": id`, as a channel should get it.
fn expected_document(id: i64) -> Value {
    let mut expected = serde_json::to_value(doc()).unwrap();
    expected
        .as_object_mut()
        .unwrap()
        .insert("delivery".into(), id.into());
    expected
}

/// HMAC-SHA256 as RFC 2104 defines it, written here from SHA-256 alone so that the test does
/// not check the sender's signature with the sender's own code.
fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_tests_hmac_matches_rfc_4231() {
    // RFC 4231, test case 2.
    assert_eq!(
        hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests.

async fn a_webhook_gets_the_document_with_headers_and_a_signature(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    // One trailing newline is not part of the secret.
    let secret = s.file("secret", "s3cret key\n");
    let sender = s.sender(vec![webhook(
        "ops",
        format!("{}/hook", s.server.url),
        Some(secret),
    )]);
    let id = s.enqueue("run:42:failure", "ops").await;

    assert_eq!(s.run_once(&sender).await, 1);

    let requests = s.server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/hook");
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body, expected_document(id));
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["kairos-delivery"], id.to_string());
    assert_eq!(request.headers["kairos-alert"], "failure");
    let signature = &request.headers["kairos-signature"];
    let (t, v1) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .expect("t=<seconds>,v1=<hex>");
    assert_eq!(t, s.clock.now().as_second().to_string());
    let expected = hmac_sha256(b"s3cret key", format!("{t}.{}", request.body).as_bytes());
    assert_eq!(v1, expected);

    let delivery = s.delivery(id).await;
    assert_eq!(delivery.state, DeliveryState::Delivered);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_status, Some(200));
    assert!(delivery.delivered_at.is_some());
    // Nothing left to send.
    assert_eq!(s.run_once(&sender).await, 0);
}

async fn a_server_error_is_retried_after_its_backoff(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.server.answer("/flaky", &[500, 200]);
    let sender = s.sender(vec![webhook(
        "ops",
        format!("{}/flaky", s.server.url),
        None,
    )]);
    let id = s.enqueue("run:42:failure", "ops").await;

    assert_eq!(s.run_once(&sender).await, 1);
    let first = s.delivery(id).await;
    assert_eq!(first.state, DeliveryState::Pending);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.last_status, Some(500));
    assert_eq!(
        first.last_error.as_deref(),
        Some(r#"HTTP 500: {"answer":500}"#)
    );
    // The first wait: 1 s ± 10 %.
    let wait = first.next_attempt_at.duration_since(s.clock.now());
    assert!(
        wait >= SignedDuration::from_millis(900) && wait <= SignedDuration::from_millis(1100),
        "{wait:#}"
    );

    // Not due yet.
    assert_eq!(s.run_once(&sender).await, 0);
    s.clock.advance(SignedDuration::from_secs(2));
    assert_eq!(s.run_once(&sender).await, 1);
    let second = s.delivery(id).await;
    assert_eq!(second.state, DeliveryState::Delivered);
    assert_eq!(second.attempts, 2);
    assert_eq!(second.last_status, Some(200));
    assert_eq!(s.server.requests().len(), 2);
}

async fn a_client_error_fails_at_once(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.server.answer("/gone", &[404]);
    let sender = s.sender(vec![webhook("ops", format!("{}/gone", s.server.url), None)]);
    let id = s.enqueue("run:42:failure", "ops").await;

    assert_eq!(s.run_once(&sender).await, 1);
    let delivery = s.delivery(id).await;
    assert_eq!(delivery.state, DeliveryState::Failed);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_status, Some(404));
    assert_eq!(
        delivery.last_error.as_deref(),
        Some(r#"HTTP 404: {"answer":404}"#)
    );
    s.clock.advance(SignedDuration::from_hours(1));
    assert_eq!(s.run_once(&sender).await, 0);
}

async fn a_delivery_fails_after_its_last_attempt(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.server.answer("/down", &[503; 20]);
    let sender = s.sender(vec![webhook("ops", format!("{}/down", s.server.url), None)]);
    let id = s.enqueue("run:42:failure", "ops").await;

    for attempt in 1..=MAX_ATTEMPTS {
        assert_eq!(s.run_once(&sender).await, 1, "attempt {attempt}");
        let delivery = s.delivery(id).await;
        assert_eq!(delivery.attempts, attempt);
        assert_eq!(delivery.last_status, Some(503));
        let expected = if attempt < MAX_ATTEMPTS {
            DeliveryState::Pending
        } else {
            DeliveryState::Failed
        };
        assert_eq!(delivery.state, expected, "after attempt {attempt}");
        s.clock.advance(SignedDuration::from_mins(10));
    }
    let delivery = s.delivery(id).await;
    assert_eq!(
        delivery.last_error.as_deref(),
        Some(r#"gave up after 8 attempts: HTTP 503: {"answer":503}"#)
    );
    assert_eq!(s.run_once(&sender).await, 0);
    assert_eq!(s.server.requests().len(), MAX_ATTEMPTS as usize);
}

async fn a_hanging_channel_times_out_without_holding_up_another(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let sender = s.sender(vec![
        channel(
            "stuck",
            ChannelKind::Webhook {
                url: s.server.stuck_url.clone(),
                secret_file: None,
            },
            2,
        ),
        // Answered only while the stuck channel's request is in flight.
        webhook("fine", format!("{}/while-stuck", s.server.url), None),
    ]);
    // The stuck one first: claims are oldest first.
    let stuck = s.enqueue("run:42:failure", "stuck").await;
    let fine = s.enqueue("run:42:failure", "fine").await;

    assert_eq!(s.run_once(&sender).await, 2);

    let fine = s.delivery(fine).await;
    assert_eq!(fine.state, DeliveryState::Delivered, "{fine:?}");
    let stuck = s.delivery(stuck).await;
    assert_eq!(stuck.state, DeliveryState::Pending);
    assert_eq!(stuck.last_error.as_deref(), Some("timed out after 2s"));
    assert_eq!(stuck.last_status, None);
    assert!(stuck.next_attempt_at > s.clock.now());
    // The sender gave up on the stuck request (its connection was closed).
    let mut open = s.server.state.stuck_open.subscribe();
    tokio::time::timeout(PATIENCE, open.wait_for(|open| !*open))
        .await
        .unwrap()
        .unwrap();
}

async fn a_channel_gets_at_most_four_sends_at_once(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let sender = Arc::new(s.sender(vec![webhook(
        "slow",
        format!("{}/gated/slow", s.server.url),
        None,
    )]));
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(s.enqueue(&format!("run:{i}:failure"), "slow").await);
    }
    let pass = tokio::spawn({
        let sender = sender.clone();
        async move { sender.run_once().await }
    });
    // Four requests arrive and wait; the gate opens only then, so a fifth one sent before it
    // would have shown as a fifth in flight.
    s.server.wait_for_requests(4).await;
    s.server.state.gate.send_replace(true);
    let claimed = tokio::time::timeout(PATIENCE, pass)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(claimed, 10, "the pass claims again as slots free up");
    assert_eq!(s.server.state.max_in_flight.load(Ordering::SeqCst), 4);

    // Only what could be sent at once was claimed: each delivery was charged the one attempt
    // it got.
    for id in ids {
        let d = s.delivery(id).await;
        assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
        assert_eq!(d.attempts, 1, "{d:?}");
    }
    assert_eq!(s.server.requests().len(), 10);
}

async fn a_burst_to_a_slow_channel_is_delivered_with_one_attempt_each(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    const BURST: usize = 120;
    let sender = s.sender(vec![webhook(
        "slow",
        format!("{}/slow/hook", s.server.url),
        None,
    )]);
    let alerts = (0..BURST)
        .map(|i| AlertInsert {
            key: format!("job:{i}:no_success:slow"),
            alert: "no_success".into(),
            channel: "slow".into(),
            namespace: "default".into(),
            job: format!("job-{i}"),
            run_id: None,
            payload: serde_json::to_string(&doc()).unwrap(),
        })
        .collect();
    s.ctx
        .store
        .alert_enqueue(AlertEnqueueParams {
            alerts,
            now: s.clock.store_now(),
        })
        .await
        .unwrap();

    // One pass drains the burst: it claims again each time a slot frees up.
    assert_eq!(s.run_once(&sender).await, BURST);

    let deliveries = s
        .ctx
        .store
        .alert_list(AlertListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(deliveries.len(), BURST);
    let requests = s.server.requests_by_delivery();
    for d in &deliveries {
        assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
        assert_eq!(d.attempts, 1, "{d:?}");
        assert_eq!(requests.get(&d.id), Some(&1), "delivery {}", d.id);
    }
    assert_eq!(s.server.requests().len(), BURST);
    assert!(s.server.state.max_in_flight.load(Ordering::SeqCst) <= 4);
}

async fn a_hanging_channel_is_charged_only_the_attempts_it_got(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    const BACKLOG: usize = 30;
    let sender = s.sender(vec![channel(
        "stuck",
        ChannelKind::Webhook {
            url: format!("{}/hang/hook", s.server.url),
            secret_file: None,
        },
        1,
    )]);
    let mut ids = Vec::new();
    for i in 0..BACKLOG {
        ids.push(s.enqueue(&format!("run:{i}:failure"), "stuck").await);
    }

    // Four at a time, each timing out after a second; not due again under the manual clock.
    assert_eq!(s.run_once(&sender).await, BACKLOG);

    let requests = s.server.requests_by_delivery();
    for id in ids {
        let d = s.delivery(id).await;
        let got = requests.get(&id).copied().unwrap_or(0);
        assert_eq!(
            d.attempts, got,
            "delivery {id}: attempts charged vs requests received ({d:?})"
        );
        assert_eq!(d.attempts, 1, "{d:?}");
        assert_eq!(d.state, DeliveryState::Pending);
        assert_eq!(d.last_error.as_deref(), Some("timed out after 1s"));
    }
    assert_eq!(s.server.requests().len(), BACKLOG);
}

async fn a_slack_message_has_the_summary_and_a_link(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let url_file = s.file(
        "slack-url",
        &format!("  {}/services/T0/B0/xyz\n", s.server.url),
    );
    let sender = s.sender(vec![channel("chat", ChannelKind::Slack { url_file }, 10)]);
    let id = s.enqueue("run:42:failure", "chat").await;

    assert_eq!(s.run_once(&sender).await, 1);
    let requests = s.server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/services/T0/B0/xyz");
    assert_eq!(requests[0].headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "text": "Job `backup` (default): run 42 failed: exit 1 \
                     <https://kairos.example/runs/42|Open in Kairos>"
        })
    );
    assert_eq!(s.delivery(id).await.state, DeliveryState::Delivered);
}

async fn a_slack_url_never_shows_in_errors(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url_file = s.file(
        "slack-url",
        &format!("http://127.0.0.1:{port}/services/T0/B0/very-secret-token"),
    );
    let sender = s.sender(vec![channel("chat", ChannelKind::Slack { url_file }, 10)]);
    let id = s.enqueue("run:42:failure", "chat").await;

    assert_eq!(s.run_once(&sender).await, 1);
    let delivery = s.delivery(id).await;
    assert_eq!(
        delivery.state,
        DeliveryState::Pending,
        "a connection error is retried"
    );
    let error = delivery.last_error.unwrap();
    assert!(!error.is_empty());
    assert!(!error.contains("very-secret-token"), "{error}");
    assert!(!error.contains("/services/"), "{error}");
}

async fn a_command_channel_reads_the_document_from_its_file(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let out = s.temp.dir().join("document.json");
    let env = s.temp.dir().join("env.txt");
    let script = r#"cat "$KAIROS_ALERT_FILE" > "$1" && printf '%s\n%s\n%s\n' "$KAIROS_ALERT" "$KAIROS_ALERT_SUMMARY" "$KAIROS_ALERT_FILE" > "$2""#;
    let argv = vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        path_arg(&out),
        path_arg(&env),
    ];
    let sender = s.sender(vec![channel("cmd", ChannelKind::Command { argv }, 10)]);
    let id = s.enqueue("run:42:failure", "cmd").await;

    assert_eq!(s.run_once(&sender).await, 1);
    let delivery = s.delivery(id).await;
    assert_eq!(delivery.state, DeliveryState::Delivered, "{delivery:?}");
    assert_eq!(delivery.last_status, None);

    let document: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(document, expected_document(id));
    let env = std::fs::read_to_string(&env).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    assert_eq!(lines[0], "failure");
    assert_eq!(lines[1], "Job `backup` (default): run 42 failed: exit 1");
    // The document's file is gone once the command has ended.
    assert!(!lines[2].is_empty());
    assert!(
        !Path::new(lines[2]).exists(),
        "{} was left behind",
        lines[2]
    );
}

async fn a_command_channel_gets_neither_the_servers_nor_a_runs_variables(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    // Cargo sets it for the test process, as a server's secrets would be set for the server.
    let server_only = "CARGO_MANIFEST_DIR";
    assert!(
        std::env::var_os(server_only).is_some(),
        "the test runs under cargo"
    );
    let out = s.temp.dir().join("env.txt");
    let argv = vec![
        "sh".into(),
        "-c".into(),
        r#"env > "$1""#.into(),
        "sh".into(),
        path_arg(&out),
    ];
    let sender = s.sender(vec![channel("cmd", ChannelKind::Command { argv }, 10)]);
    let id = s.enqueue("run:42:failure", "cmd").await;

    assert_eq!(s.run_once(&sender).await, 1);
    assert_eq!(s.delivery(id).await.state, DeliveryState::Delivered);

    let text = std::fs::read_to_string(&out).unwrap();
    let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert!(!env.contains_key(server_only), "{env:?}");
    for run_var in [
        "KAIROS_RUN_ID",
        "KAIROS_JOB",
        "KAIROS_NAMESPACE",
        "KAIROS_ATTEMPT",
        "KAIROS_SCHEDULED_FOR",
        "KAIROS_RESULT",
    ] {
        assert!(!env.contains_key(run_var), "{run_var}: {env:?}");
    }
    assert_eq!(env.get("KAIROS_ALERT"), Some(&"failure"));
    assert_eq!(
        env.get("KAIROS_ALERT_DELIVERY").copied(),
        Some(id.to_string().as_str())
    );
    assert!(env.contains_key("KAIROS_ALERT_FILE"));
    assert!(env.contains_key("KAIROS_ALERT_SUMMARY"));
    assert_eq!(
        env.get("PATH").copied(),
        std::env::var("PATH").ok().as_deref(),
        "the server's PATH, to find programs"
    );
    // Nothing else, but what the shell itself sets.
    let ours = [
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "KAIROS_ALERT",
        "KAIROS_ALERT_SUMMARY",
        "KAIROS_ALERT_FILE",
        "KAIROS_ALERT_DELIVERY",
    ];
    let shells = ["PWD", "OLDPWD", "SHLVL", "_"];
    for name in env.keys() {
        assert!(
            ours.contains(name) || shells.contains(name),
            "`{name}` was passed: {env:?}"
        );
    }
}

async fn a_failing_command_is_retried_with_its_last_words(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let argv = vec![
        "sh".into(),
        "-c".into(),
        "echo starting; echo 'pager is down' >&2; exit 3".into(),
    ];
    let sender = s.sender(vec![channel("cmd", ChannelKind::Command { argv }, 10)]);
    let id = s.enqueue("run:42:failure", "cmd").await;

    assert_eq!(s.run_once(&sender).await, 1);
    let delivery = s.delivery(id).await;
    assert_eq!(delivery.state, DeliveryState::Pending);
    assert_eq!(
        delivery.last_error.as_deref(),
        Some("exit 3: pager is down")
    );
    assert_eq!(delivery.last_status, None);
}

async fn a_fifo_or_missing_secret_file_fails_the_attempt_without_hanging(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let fifo = s.temp.dir().join("secret.fifo");
    let made = tokio::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .await
        .unwrap();
    assert!(made.success());
    let missing = s.temp.dir().join("no-such-secret");
    let sender = s.sender(vec![
        webhook("fifo", format!("{}/hook", s.server.url), Some(fifo.clone())),
        webhook(
            "missing",
            format!("{}/hook", s.server.url),
            Some(missing.clone()),
        ),
    ]);
    let from_fifo = s.enqueue("run:42:failure", "fifo").await;
    let from_missing = s.enqueue("run:42:failure", "missing").await;

    // A FIFO opened for reading would wait for a writer for good: the pass must end.
    assert_eq!(s.run_once(&sender).await, 2);

    let d = s.delivery(from_fifo).await;
    assert_eq!(
        d.state,
        DeliveryState::Pending,
        "retried: the file may be fixed"
    );
    assert_eq!(
        d.last_error.unwrap(),
        format!(
            "cannot read secret file `{}`: it is a FIFO, not a regular file",
            fifo.display()
        )
    );
    let d = s.delivery(from_missing).await;
    assert_eq!(
        d.state,
        DeliveryState::Pending,
        "retried: the file may appear"
    );
    let error = d.last_error.unwrap();
    assert!(
        error.starts_with(&format!(
            "cannot read secret file `{}`: ",
            missing.display()
        )),
        "{error}"
    );
    assert!(s.server.requests().is_empty(), "nothing is sent unsigned");
}

async fn a_channel_this_node_does_not_know_is_left_for_a_node_that_has_it(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let sender = s.sender(vec![webhook("ops", format!("{}/hook", s.server.url), None)]);
    let id = s.enqueue("run:42:failure", "elsewhere").await;

    assert_eq!(s.run_once(&sender).await, 0);
    let delivery = s.delivery(id).await;
    assert_eq!(delivery.state, DeliveryState::Pending);
    assert_eq!(delivery.attempts, 0, "not claimed, not charged");
    assert_eq!(delivery.last_error, None);
    assert_eq!(delivery.node, None);
    assert!(s.server.requests().is_empty());
}

async fn stopping_the_loop_interrupts_attempts_and_hands_them_back(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    // A timeout far beyond the test's patience: only the stop can end the attempts.
    let sender = Arc::new(s.sender(vec![channel(
        "stuck",
        ChannelKind::Webhook {
            url: format!("{}/hang/hook", s.server.url),
            secret_file: None,
        },
        3600,
    )]));
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (sender, stop) = (sender.clone(), stop.clone());
        async move { sender.run(stop).await }
    });
    // Four are sent, two wait in the store for a free slot.
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(s.enqueue(&format!("run:{i}:failure"), "stuck").await);
    }
    sender.waker().notify_one();
    s.server.wait_for_requests(4).await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the loop stops without waiting for the attempts")
        .unwrap();

    assert_eq!(s.server.requests().len(), 4, "nothing more was claimed");
    for id in ids {
        let delivery = s.delivery(id).await;
        assert_eq!(delivery.state, DeliveryState::Pending, "{delivery:?}");
        assert_eq!(
            delivery.attempts, 0,
            "an interrupted attempt is not charged"
        );
        assert_eq!(delivery.last_error, None);
        assert_eq!(delivery.next_attempt_at, s.clock.now(), "due again at once");
        assert_eq!(delivery.lease_token, None);
    }
}

async fn stopping_the_loop_does_not_wait_for_a_store_that_hangs(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let sender = Arc::new(s.sender(vec![channel(
        "stuck",
        ChannelKind::Webhook {
            url: format!("{}/hang/hook", s.server.url),
            secret_file: None,
        },
        3600,
    )]));
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (sender, stop) = (sender.clone(), stop.clone());
        async move { sender.run(stop).await }
    });
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(s.enqueue(&format!("run:{i}:failure"), "stuck").await);
    }
    sender.waker().notify_one();
    s.server.wait_for_requests(4).await;

    // On PostgreSQL, another session locks the deliveries' table: every write of the sender
    // (the hand-backs, a claim) waits for good, as with a store that cannot be reached. (The
    // SQLite store answers: the loop must stop as promptly.)
    let lock = match s.temp.postgres() {
        Some(pg) => {
            let client = kairos_testkit::postgres::connect(&pg.schema.base_url)
                .await
                .unwrap();
            client
                .batch_execute(&format!(
                    "BEGIN; LOCK TABLE \"{}\".alert_deliveries IN ACCESS EXCLUSIVE MODE",
                    pg.schema.name
                ))
                .await
                .unwrap();
            Some(client)
        }
        None => None,
    };
    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running).await;
    if let Some(client) = lock {
        client.batch_execute("ROLLBACK").await.unwrap();
    }
    stopped
        .expect("the loop stops without waiting for the store")
        .unwrap();

    // Whatever was written or not: never charged more attempts than requests were sent.
    let requests = s.server.requests_by_delivery();
    for id in ids {
        let delivery = s.delivery(id).await;
        let got = requests.get(&id).copied().unwrap_or(0);
        assert!(delivery.attempts <= got, "{delivery:?}: {got} requests");
    }
}

async fn ended_deliveries_are_pruned_after_the_retention(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    s.server.answer("/gone", &[404]);
    let sender = s.sender(vec![
        webhook("ok", format!("{}/hook", s.server.url), None),
        webhook("bad", format!("{}/gone", s.server.url), None),
    ]);
    let delivered = s.enqueue("run:42:failure", "ok").await;
    let failed = s.enqueue("run:42:failure", "bad").await;
    assert_eq!(s.run_once(&sender).await, 2);
    assert_eq!(s.delivery(delivered).await.state, DeliveryState::Delivered);
    assert_eq!(s.delivery(failed).await.state, DeliveryState::Failed);
    // Still pending: never pruned.
    let pending = s.enqueue("run:43:failure", "elsewhere").await;

    assert_eq!(sender.prune_once().await.unwrap(), 0);
    s.clock
        .advance(SignedDuration::try_from(DEFAULT_RETENTION).unwrap());
    s.clock.advance(SignedDuration::from_secs(1));
    assert_eq!(sender.prune_once().await.unwrap(), 2);
    let left: Vec<i64> = s
        .ctx
        .store
        .alert_list(AlertListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, vec![pending]);
}

fn path_arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}
