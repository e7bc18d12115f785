//! The event stream end to end: the real `kairos` binary, a client reading
//! `GET /api/v1/events/stream` over HTTP, the server restarted in between, and the client
//! resuming with `Last-Event-ID`: it gets everything after its last event (the old process's
//! last events, written as it stopped, and the new one's) and nothing twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

mod common;

use std::time::Duration;

use common::{Server, Sse, SseClient as Client};

fn position(id: &str) -> Vec<i64> {
    id.split('.').map(|p| p.parse().unwrap()).collect()
}

fn finished(run: i64) -> impl Fn(&Sse) -> bool {
    move |e| e.event == "run.finished" && e.data["run_id"] == run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_across_a_restart_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]).await;
    let (status, mut client) = Client::connect(&server, "", None).await;
    assert_eq!(status, 200);
    server.create_shell_job("hello", "echo hi").await;
    let run = server.trigger("hello").await;
    let seen = client.until(30, finished(run)).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    for kind in ["job.changed", "run.queued", "run.started", "run.finished"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let last = seen.last().unwrap();
    assert_eq!(last.data["state"], "succeeded");
    assert_eq!(last.data["job"], "hello");
    assert_eq!(last.data["kind"], "run.finished");
    let last_id = last.id.clone().unwrap();

    // The node stops (its last events are written as it does; the open stream ends rather
    // than hold the stop up) and starts again; a run goes by while no client watches.
    server.terminate(Duration::from_secs(30)).await;
    while client.next(20).await.is_some() {}
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        !log.contains("still open after shutdown"),
        "an open stream held the stop up:\n{log}"
    );
    drop(client);
    let server = Server::start(&data, &[]).await;
    let missed = server.trigger("hello").await;
    server.wait_for_run_state(30, missed, "succeeded").await;

    let (_, mut client) = Client::connect(&server, "", Some(&last_id)).await;
    let resumed = client.until(30, finished(missed)).await;
    let kinds: Vec<&str> = resumed.iter().map(|e| e.event.as_str()).collect();
    for kind in ["node.left", "node.joined", "run.queued", "run.started"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let mut previous = position(&last_id);
    for e in &resumed {
        let at = position(e.id.as_deref().unwrap());
        assert!(at > previous, "{e:?} is not after {previous:?}");
        previous = at;
    }
    assert!(
        !resumed
            .iter()
            .any(|e| e.data["run_id"] == run && e.event == "run.finished"),
        "an event before the position came again"
    );

    // Filters: only the finished runs of one job, from the start of the log.
    let (_, mut filtered) =
        Client::connect(&server, "?after=0.0.0&job=hello&kinds=run.finished", None).await;
    let first = filtered.next(30).await.unwrap();
    let second = filtered.next(30).await.unwrap();
    assert_eq!(
        (
            first.data["run_id"].as_i64(),
            second.data["run_id"].as_i64()
        ),
        (Some(run), Some(missed))
    );
    assert_eq!(first.event, "run.finished");

    // A user's change to a run is an event too.
    let (_, mut changes) = Client::connect(&server, "?kinds=run.changed", None).await;
    server.create_shell_job("sleeper", "sleep 30").await;
    let sleeping = server.trigger("sleeper").await;
    server.wait_for_run_state(30, sleeping, "running").await;
    let (status, _, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{sleeping}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changed = changes.next(30).await.unwrap();
    assert_eq!(changed.event, "run.changed");
    assert_eq!(changed.data["run_id"], sleeping);
    assert_eq!(changed.data["change"], "run.cancel");

    // A position the log no longer has: a reset first.
    let (_, mut gone) = Client::connect(&server, "", Some("0.999999.0")).await;
    assert_eq!(gone.next(30).await.unwrap().event, "reset");
    // ... and then what happens from now on.
    let after_reset = server.trigger("hello").await;
    gone.until(30, finished(after_reset)).await;
    // A position no store makes is one it does not keep either.
    let (_, mut odd) = Client::connect(&server, "", Some("7.1.0")).await;
    assert_eq!(odd.next(30).await.unwrap().event, "reset");

    // Bad input: 400 problems.
    for query in [
        "?kinds=run.exploded",
        "?after=x",
        "?after=1.2",
        "?kinds=",
        "?namespace=Bad%20NS",
        "?bogus=1",
    ] {
        let (status, _) = Client::connect(&server, query, None).await;
        assert_eq!(status, 400, "{query}");
    }
}

/// Several clients follow the log's tail together (one reader for the node): each gets every
/// event once, in order, also one that joins while runs go by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_following_together_each_get_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    server.create_shell_job("tick", "true").await;
    let (_, mut first) = Client::connect(&server, "?kinds=run.finished", None).await;
    let (_, mut second) = Client::connect(&server, "?kinds=run.finished", None).await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(server.trigger("tick").await);
    }
    // One that joins from the start of the log while the runs go by.
    let (_, mut late) = Client::connect(&server, "?after=0.0.0&kinds=run.finished", None).await;
    for _ in 0..5 {
        runs.push(server.trigger("tick").await);
    }
    for client in [&mut first, &mut second, &mut late] {
        let mut seen = Vec::new();
        let mut last: Option<Vec<i64>> = None;
        while seen.len() < runs.len() {
            let e = client.next(30).await.expect("an event");
            let at = position(e.id.as_deref().unwrap());
            assert!(last.as_ref().is_none_or(|l| at > *l), "out of order");
            last = Some(at);
            seen.push(e.data["run_id"].as_i64().unwrap());
        }
        seen.sort_unstable();
        let mut expected = runs.clone();
        expected.sort_unstable();
        assert_eq!(seen, expected, "each run's end once");
    }
}
