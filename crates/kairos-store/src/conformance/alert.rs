//! Alert deliveries: queued once per key, claimed when due (oldest first, of one channel or of
//! any) under a lease whose token fences the attempt's end, retried at the time asked, handed
//! back without charging the attempt, ended delivered or failed, listed and pruned; and the alert evaluator's position in the activity log, moved by
//! compare-and-set. Concurrently, on separate connections: a key queued by two nodes at once is
//! queued once, no delivery is ever held by two claims at once, and of two moves from one
//! position exactly one applies.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::{T0, t};
use crate::*;

const LEASE: SignedDuration = SignedDuration::from_secs(30);

fn alert(key: &str, namespace: &str, job: &str) -> AlertInsert {
    AlertInsert {
        key: key.into(),
        alert: "failure".into(),
        channel: "ops".into(),
        namespace: namespace.into(),
        job: job.into(),
        run_id: Some(42),
        payload: format!(r#"{{"key":"{key}"}}"#),
    }
}

async fn enqueue(
    store: &Arc<dyn Store>,
    alerts: Vec<AlertInsert>,
    now: Timestamp,
) -> Vec<Option<i64>> {
    store
        .alert_enqueue(AlertEnqueueParams {
            alerts,
            now: Some(now),
        })
        .await
        .unwrap()
}

/// Queues one delivery (`key` in namespace `default`, job `j`); its id.
async fn enqueue_one(store: &Arc<dyn Store>, key: &str, now: Timestamp) -> i64 {
    enqueue(store, vec![alert(key, "default", "j")], now).await[0].unwrap()
}

async fn claim(
    store: &Arc<dyn Store>,
    node: &str,
    limit: u32,
    now: Timestamp,
) -> Vec<AlertDelivery> {
    claim_of(store, node, None, limit, now).await
}

/// A claim of `channel`'s deliveries only (`None`: of any channel).
async fn claim_of(
    store: &Arc<dyn Store>,
    node: &str,
    channel: Option<&str>,
    limit: u32,
    now: Timestamp,
) -> Vec<AlertDelivery> {
    store
        .alert_claim(AlertClaimParams {
            node: node.into(),
            channel: channel.map(str::to_owned),
            limit,
            lease: LEASE,
            now: Some(now),
        })
        .await
        .unwrap()
}

async fn finish_with(
    store: &Arc<dyn Store>,
    id: i64,
    token: &str,
    outcome: AlertOutcome,
    now: Timestamp,
) -> bool {
    store
        .alert_finish(AlertFinishParams {
            id,
            lease_token: token.into(),
            outcome,
            now: Some(now),
        })
        .await
        .unwrap()
}

async fn finish(
    store: &Arc<dyn Store>,
    d: &AlertDelivery,
    outcome: AlertOutcome,
    now: Timestamp,
) -> bool {
    finish_with(store, d.id, d.lease_token.as_deref().unwrap(), outcome, now).await
}

async fn list(store: &Arc<dyn Store>, p: AlertListParams) -> Vec<AlertDelivery> {
    store.alert_list(p).await.unwrap()
}

async fn get(store: &Arc<dyn Store>, id: i64) -> AlertDelivery {
    list(
        store,
        AlertListParams {
            before_id: Some(id + 1),
            limit: 1,
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .find(|d| d.id == id)
    .unwrap()
}

fn ids(deliveries: &[AlertDelivery]) -> Vec<i64> {
    deliveries.iter().map(|d| d.id).collect()
}

fn delivered(status: u16) -> AlertOutcome {
    AlertOutcome::Delivered {
        status: Some(status),
    }
}

pub async fn alert_enqueue_is_once_per_key(store: Arc<dyn Store>) {
    let now = t(T0);
    let first = enqueue(
        &store,
        vec![alert("a", "default", "j"), alert("b", "default", "j")],
        now,
    )
    .await;
    assert!(first.iter().all(Option::is_some), "{first:?}");
    assert_ne!(first[0], first[1]);
    // A key queued before, and one twice in the same batch, are queued once.
    let later = now + SignedDuration::from_mins(1);
    let second = enqueue(
        &store,
        vec![
            alert("a", "default", "j"),
            alert("c", "default", "j"),
            alert("c", "default", "j"),
        ],
        later,
    )
    .await;
    assert_eq!(second[0], None, "`a` exists");
    assert!(second[1].is_some());
    assert_eq!(second[2], None, "`c` was queued by the same batch");
    assert!(enqueue(&store, vec![], later).await.is_empty());

    let all = list(&store, AlertListParams::default()).await;
    let keys: Vec<&str> = all.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["c", "b", "a"], "newest first");
    let a = &all[2];
    assert_eq!(
        *a,
        AlertDelivery {
            id: first[0].unwrap(),
            key: "a".into(),
            alert: "failure".into(),
            channel: "ops".into(),
            namespace: "default".into(),
            job: "j".into(),
            run_id: Some(42),
            payload: r#"{"key":"a"}"#.into(),
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            last_status: None,
            created_at: now,
            delivered_at: None,
            node: None,
            lease_token: None,
            lease_expires_at: None,
        },
        "the first enqueue's, untouched by the second"
    );
    assert_eq!(all[0].created_at, later);
    assert_eq!(all[0].next_attempt_at, later, "due at once");
}

pub async fn alert_claim_takes_due_deliveries_oldest_first_under_a_lease(store: Arc<dyn Store>) {
    let a = t(T0);
    let d1 = enqueue_one(&store, "d1", a).await;
    let d2 = enqueue_one(&store, "d2", a + SignedDuration::from_secs(1)).await;
    let d3 = enqueue_one(&store, "d3", a + SignedDuration::from_mins(10)).await;
    // Not due yet: nothing.
    assert!(
        claim(&store, "n1", 10, a - SignedDuration::from_secs(1))
            .await
            .is_empty()
    );

    let now = a + SignedDuration::from_mins(1);
    let one = claim(&store, "n1", 1, now).await;
    assert_eq!(ids(&one), [d1], "the oldest first, as many as the limit");
    let rest = claim(&store, "n2", 10, now).await;
    assert_eq!(ids(&rest), [d2], "only the due ones");
    let claimed = one[0].clone();
    assert_eq!(claimed.state, DeliveryState::Sending);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.node.as_deref(), Some("n1"));
    assert_eq!(claimed.lease_expires_at, Some(now + LEASE));
    assert_eq!(claimed.next_attempt_at, a);
    let token = claimed.lease_token.clone().unwrap();
    assert!(!token.is_empty());
    assert_ne!(
        rest[0].lease_token.as_deref(),
        Some(token.as_str()),
        "a token per claim"
    );
    assert_eq!(
        get(&store, d1).await,
        claimed,
        "a claim returns the row as stored"
    );

    // Held while the lease holds.
    assert!(
        claim(&store, "n2", 10, now + LEASE - SignedDuration::from_secs(1))
            .await
            .is_empty()
    );

    // Its node died mid-send: once the lease expired it is claimed again, with a new token.
    let later = now + LEASE;
    let again = claim(&store, "n2", 10, later).await;
    assert_eq!(ids(&again), [d1, d2]);
    let retaken = &again[0];
    assert_eq!(retaken.attempts, 2);
    assert_eq!(retaken.node.as_deref(), Some("n2"));
    assert_eq!(retaken.lease_expires_at, Some(later + LEASE));
    assert_ne!(retaken.lease_token.as_deref(), Some(token.as_str()));

    // Delivered, the first two are done; the third is claimed when it is due, alone.
    for d in &again {
        assert!(finish(&store, d, delivered(200), later).await);
    }
    let due = a + SignedDuration::from_mins(10);
    assert!(
        claim(&store, "n1", 10, due - SignedDuration::from_secs(1))
            .await
            .is_empty()
    );
    assert_eq!(ids(&claim(&store, "n1", 10, due).await), [d3]);

    // A claim of one channel takes only that channel's deliveries, oldest first; the others
    // stay as they are, for a claim of theirs or of any channel.
    let b = due + SignedDuration::from_secs(1);
    let to = |key: &str, channel: &str| AlertInsert {
        channel: channel.into(),
        ..alert(key, "default", "j")
    };
    let queued: Vec<i64> = enqueue(
        &store,
        vec![to("chat1", "chat"), to("ops1", "ops"), to("chat2", "chat")],
        b,
    )
    .await
    .into_iter()
    .map(Option::unwrap)
    .collect();
    let (chat1, ops1, chat2) = (queued[0], queued[1], queued[2]);
    let now = b + SignedDuration::from_secs(1);
    assert!(
        claim_of(&store, "n1", Some("pager"), 10, now)
            .await
            .is_empty()
    );
    let ops = claim_of(&store, "n1", Some("ops"), 10, now).await;
    assert_eq!(ids(&ops), [ops1]);
    assert_eq!(ops[0].channel, "ops");
    for id in [chat1, chat2] {
        let left = get(&store, id).await;
        assert_eq!(
            (left.state, left.attempts, left.node),
            (DeliveryState::Pending, 0, None),
            "another channel's delivery is left alone"
        );
    }
    let chat = claim_of(&store, "n2", Some("chat"), 1, now).await;
    assert_eq!(ids(&chat), [chat1], "the channel's oldest first");
    // Once the leases expired, a claim of `chat` takes back its own and the pending one, never
    // `ops`'s; a claim of any channel takes the rest (`d3` from before, and `ops1`).
    let expired = now + LEASE;
    assert_eq!(
        ids(&claim_of(&store, "n2", Some("chat"), 10, expired).await),
        [chat1, chat2]
    );
    assert_eq!(ids(&claim(&store, "n3", 10, expired).await), [d3, ops1]);
}

pub async fn alert_finish_is_fenced_by_the_lease_token(store: Arc<dyn Store>) {
    let a = t(T0);
    let id = enqueue_one(&store, "d", a).await;
    let old = claim(&store, "n1", 10, a).await.remove(0);
    let later = a + LEASE;
    let new = claim(&store, "n2", 10, later).await.remove(0);
    assert_eq!(new.id, id);

    // The first claim lost the delivery: its end writes nothing.
    let before = get(&store, id).await;
    assert!(!finish(&store, &old, delivered(200), later).await);
    let failed = AlertOutcome::Failed {
        error: "boom".into(),
        status: None,
    };
    assert!(!finish(&store, &old, failed, later).await);
    assert!(
        !finish_with(
            &store,
            id + 1,
            new.lease_token.as_deref().unwrap(),
            delivered(200),
            later
        )
        .await
    );
    assert_eq!(get(&store, id).await, before, "nothing changed");

    // The claim that holds it ends it.
    let end = later + SignedDuration::from_secs(2);
    assert!(finish(&store, &new, delivered(204), end).await);
    let done = get(&store, id).await;
    assert_eq!(done.state, DeliveryState::Delivered);
    assert_eq!(done.delivered_at, Some(end));
    assert_eq!(done.last_status, Some(204));
    assert_eq!(done.last_error, None);
    assert_eq!(done.attempts, 2);
    assert_eq!(
        (done.node, done.lease_token, done.lease_expires_at),
        (None, None, None)
    );
    // Once.
    assert!(!finish(&store, &new, delivered(200), end).await);
    assert_eq!(get(&store, id).await.delivered_at, Some(end));
    // Never claimed again.
    assert!(
        claim(&store, "n1", 10, end + SignedDuration::from_hours(1))
            .await
            .is_empty()
    );
}

pub async fn alert_retry_waits_and_failed_ends_it(store: Arc<dyn Store>) {
    let a = t(T0);
    let id = enqueue_one(&store, "d", a).await;
    let first = claim(&store, "n1", 10, a).await.remove(0);
    let retry_at = a + SignedDuration::from_mins(5);
    let retry = AlertOutcome::Retry {
        at: retry_at,
        error: "503 Service Unavailable".into(),
        status: Some(503),
    };
    assert!(finish(&store, &first, retry, a + SignedDuration::from_secs(1)).await);
    let waiting = get(&store, id).await;
    assert_eq!(waiting.state, DeliveryState::Pending);
    assert_eq!(waiting.next_attempt_at, retry_at);
    assert_eq!(
        waiting.last_error.as_deref(),
        Some("503 Service Unavailable")
    );
    assert_eq!(waiting.last_status, Some(503));
    assert_eq!(waiting.delivered_at, None);
    assert_eq!(waiting.attempts, 1);
    assert_eq!(
        (waiting.node, waiting.lease_token, waiting.lease_expires_at),
        (None, None, None)
    );
    // The token of the ended claim fences nothing any more.
    assert!(
        !finish(
            &store,
            &first,
            delivered(200),
            a + SignedDuration::from_secs(2)
        )
        .await
    );

    // Pending until its time.
    assert!(
        claim(&store, "n1", 10, retry_at - SignedDuration::from_secs(1))
            .await
            .is_empty()
    );
    let second = claim(&store, "n2", 10, retry_at).await.remove(0);
    assert_eq!(second.id, id);
    assert_eq!(second.attempts, 2);
    assert_eq!(second.last_status, Some(503), "kept while it is sent again");

    // Handed back unsent: pending again at the time asked, its claim's attempt not charged,
    // the last attempt's error and status kept.
    let back_at = retry_at + SignedDuration::from_secs(10);
    let release = AlertOutcome::Release { at: back_at };
    assert!(finish(&store, &second, release.clone(), retry_at).await);
    let released = get(&store, id).await;
    assert_eq!(released.state, DeliveryState::Pending);
    assert_eq!(
        released.attempts, 1,
        "the release does not charge an attempt"
    );
    assert_eq!(released.next_attempt_at, back_at);
    assert_eq!(
        released.last_error.as_deref(),
        Some("503 Service Unavailable")
    );
    assert_eq!(released.last_status, Some(503));
    assert_eq!(released.delivered_at, None);
    assert_eq!(
        (
            released.node.clone(),
            released.lease_token.clone(),
            released.lease_expires_at
        ),
        (None, None, None)
    );
    // Fenced like any end: the claim no longer holds it, so a second release (or any end)
    // writes nothing.
    assert!(!finish(&store, &second, release, retry_at).await);
    assert!(!finish(&store, &second, delivered(200), retry_at).await);
    assert_eq!(get(&store, id).await, released);
    assert!(
        claim(&store, "n1", 10, back_at - SignedDuration::from_secs(1))
            .await
            .is_empty()
    );
    let third = claim(&store, "n2", 10, back_at).await.remove(0);
    assert_eq!(third.id, id);
    assert_eq!(third.attempts, 2, "counted once for the attempt it makes");

    // Given up: it ended (`delivered_at`), and is not claimed again.
    let end = back_at + SignedDuration::from_secs(3);
    let failed = AlertOutcome::Failed {
        error: "no route to host".into(),
        status: None,
    };
    assert!(finish(&store, &third, failed, end).await);
    let gone = get(&store, id).await;
    assert_eq!(gone.state, DeliveryState::Failed);
    assert_eq!(gone.delivered_at, Some(end));
    assert_eq!(gone.last_error.as_deref(), Some("no route to host"));
    assert_eq!(gone.last_status, None);
    assert_eq!(gone.lease_token, None);
    assert!(
        claim(&store, "n1", 10, end + SignedDuration::from_hours(1))
            .await
            .is_empty()
    );
}

pub async fn alert_list_filters_and_pages(store: Arc<dyn Store>) {
    let a = t(T0);
    let queued = enqueue(
        &store,
        vec![
            alert("1", "team-a", "x"),
            alert("2", "team-a", "y"),
            alert("3", "team-b", "x"),
            alert("4", "team-c", "x"),
            alert("5", "team-a", "x"),
        ],
        a,
    )
    .await
    .into_iter()
    .map(Option::unwrap)
    .collect::<Vec<_>>();
    // The oldest one delivered, the next sending.
    let claimed = claim(&store, "n1", 2, a).await;
    assert_eq!(ids(&claimed), [queued[0], queued[1]]);
    assert!(finish(&store, &claimed[0], delivered(200), a).await);

    let keys = |ds: Vec<AlertDelivery>| ds.into_iter().map(|d| d.key).collect::<Vec<_>>();
    assert_eq!(
        keys(list(&store, AlertListParams::default()).await),
        ["5", "4", "3", "2", "1"]
    );
    let scoped = AlertListParams {
        namespaces: Some(vec!["team-a".into(), "team-b".into()]),
        ..Default::default()
    };
    assert_eq!(
        keys(list(&store, scoped.clone()).await),
        ["5", "3", "2", "1"]
    );
    assert!(
        list(
            &store,
            AlertListParams {
                namespaces: Some(vec![]),
                ..Default::default()
            }
        )
        .await
        .is_empty(),
        "a scope of no namespace sees nothing"
    );
    let job = AlertListParams {
        job: Some(("team-a".into(), "x".into())),
        ..Default::default()
    };
    assert_eq!(keys(list(&store, job.clone()).await), ["5", "1"]);
    assert!(
        list(
            &store,
            AlertListParams {
                namespaces: Some(vec!["team-b".into()]),
                ..job.clone()
            }
        )
        .await
        .is_empty(),
        "a job outside the scope"
    );
    for (state, expected) in [
        (DeliveryState::Pending, vec!["5", "4", "3"]),
        (DeliveryState::Sending, vec!["2"]),
        (DeliveryState::Delivered, vec!["1"]),
        (DeliveryState::Failed, vec![]),
    ] {
        let got = keys(
            list(
                &store,
                AlertListParams {
                    state: Some(state),
                    ..Default::default()
                },
            )
            .await,
        );
        assert_eq!(got, expected, "{state:?}");
    }
    // Pages, newest first.
    let page = |before_id| AlertListParams {
        limit: 2,
        before_id,
        ..scoped.clone()
    };
    let first = list(&store, page(None)).await;
    assert_eq!(keys(first.clone()), ["5", "3"]);
    let second = list(&store, page(Some(first[1].id))).await;
    assert_eq!(keys(second.clone()), ["2", "1"]);
    assert!(list(&store, page(Some(second[1].id))).await.is_empty());
}

pub async fn alert_prune_deletes_deliveries_that_ended_before(store: Arc<dyn Store>) {
    let a = t(T0);
    for key in ["delivered", "failed", "sending", "pending"] {
        enqueue_one(&store, key, a).await;
    }
    let claimed = claim(&store, "n1", 3, a).await;
    let keys: Vec<&str> = claimed.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["delivered", "failed", "sending"]);
    let t1 = a + SignedDuration::from_mins(1);
    let t2 = a + SignedDuration::from_mins(2);
    assert!(finish(&store, &claimed[0], delivered(200), t1).await);
    let failed = AlertOutcome::Failed {
        error: "gone".into(),
        status: Some(410),
    };
    assert!(finish(&store, &claimed[1], failed, t2).await);

    let prune = |before| store.alert_prune(AlertPruneParams { before });
    assert_eq!(prune(t1).await.unwrap(), 0, "ended at `before`: kept");
    assert_eq!(prune(t1 + SignedDuration::from_secs(1)).await.unwrap(), 1);
    assert_eq!(
        prune(t(T0) + SignedDuration::from_hours(24 * 365))
            .await
            .unwrap(),
        1
    );
    let left = list(&store, AlertListParams::default()).await;
    let keys: Vec<&str> = left.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["pending", "sending"], "what has not ended stays");
    // A pruned key may be queued again.
    assert!(enqueue(&store, vec![alert("delivered", "default", "j")], t2).await[0].is_some());
}

async fn cursor_set(
    store: &Arc<dyn Store>,
    expected: Option<ActivityCursor>,
    to: ActivityCursor,
) -> bool {
    store
        .alert_cursor_set(AlertCursorParams { expected, to })
        .await
        .unwrap()
}

fn cursor(id: i64, seq: i64) -> ActivityCursor {
    ActivityCursor { tx: 0, id, seq }
}

pub async fn alert_cursor_is_compare_and_set(store: Arc<dyn Store>) {
    assert_eq!(store.alert_cursor().await.unwrap(), None);
    assert!(
        !cursor_set(&store, Some(cursor(0, 0)), cursor(1, 0)).await,
        "nothing stored: an expected position is stale"
    );
    assert_eq!(store.alert_cursor().await.unwrap(), None);
    assert!(cursor_set(&store, None, cursor(1, 2)).await);
    assert_eq!(store.alert_cursor().await.unwrap(), Some(cursor(1, 2)));
    assert!(
        !cursor_set(&store, None, cursor(9, 9)).await,
        "one is stored"
    );
    assert!(!cursor_set(&store, Some(cursor(1, 1)), cursor(9, 9)).await);
    let with_tx = ActivityCursor {
        tx: 7,
        id: 1,
        seq: 2,
    };
    assert!(
        !cursor_set(&store, Some(with_tx), cursor(9, 9)).await,
        "every part counts"
    );
    assert_eq!(store.alert_cursor().await.unwrap(), Some(cursor(1, 2)));
    assert!(cursor_set(&store, Some(cursor(1, 2)), with_tx).await);
    assert_eq!(store.alert_cursor().await.unwrap(), Some(with_tx));
    assert!(cursor_set(&store, Some(with_tx), cursor(3, 0)).await);
    assert_eq!(store.alert_cursor().await.unwrap(), Some(cursor(3, 0)));
}

/// Two nodes claim from the same deliveries at once, on separate connections, for many rounds:
/// first while all are pending, then after every lease expired, each finishing what it got.
/// Whatever the interleaving, each delivery is claimed exactly once per pass (never by both
/// nodes while one's lease holds), the second pass with a new token and a second attempt, and
/// each claim's finish applies.
pub async fn alert_claim_concurrent_never_doubles(store: Arc<dyn Store>) {
    const ROUNDS: i64 = 20;
    const DELIVERIES: usize = 12;
    for round in 0..ROUNDS {
        let a = t(T0) + SignedDuration::from_hours(round);
        let alerts = (0..DELIVERIES)
            .map(|i| alert(&format!("{round}:{i}"), "default", "j"))
            .collect();
        let mut queued: Vec<i64> = enqueue(&store, alerts, a)
            .await
            .into_iter()
            .map(Option::unwrap)
            .collect();
        queued.sort_unstable();
        let mut tokens: HashMap<i64, String> = HashMap::new();
        for (pass, now, finish_them) in [
            (1, a + SignedDuration::from_secs(1), false),
            (2, a + SignedDuration::from_secs(1) + LEASE, true),
        ] {
            let mut racers = Vec::new();
            for n in 0..2 {
                let store = store.clone();
                racers.push(tokio::spawn(async move {
                    let node = format!("n{n}");
                    let mut mine = Vec::new();
                    loop {
                        let got = claim(&store, &node, 2, now).await;
                        if got.is_empty() {
                            return mine;
                        }
                        for d in got {
                            assert_eq!(d.node.as_deref(), Some(node.as_str()));
                            if finish_them {
                                assert!(
                                    finish(&store, &d, delivered(200), now).await,
                                    "round {round}: {node} lost delivery {} it held",
                                    d.id
                                );
                            }
                            mine.push(d);
                        }
                    }
                }));
            }
            let mut all = Vec::new();
            for racer in racers {
                all.extend(racer.await.unwrap());
            }
            let mut got = ids(&all);
            got.sort_unstable();
            assert_eq!(got, queued, "round {round} pass {pass}: each claimed once");
            for d in &all {
                assert_eq!(d.attempts, pass, "round {round}");
                let token = d.lease_token.clone().unwrap();
                if let Some(before) = tokens.insert(d.id, token.clone()) {
                    assert_ne!(before, token, "round {round}: a new token");
                }
            }
        }
        let left = list(
            &store,
            AlertListParams {
                state: Some(DeliveryState::Delivered),
                limit: 1000,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            left.len(),
            DELIVERIES * (round as usize + 1),
            "round {round}"
        );
        assert!(
            claim(&store, "n0", 100, a + SignedDuration::from_mins(30))
                .await
                .is_empty(),
            "round {round}: all delivered"
        );
    }
}

/// Two nodes queue the same keys at once, in opposite orders, on separate connections, for
/// many rounds: whatever the interleaving, neither fails (no deadlock) and each key is queued
/// exactly once, by one of them.
pub async fn alert_enqueue_concurrent_queues_each_key_once(store: Arc<dyn Store>) {
    const ROUNDS: i64 = 20;
    const KEYS: usize = 8;
    for round in 0..ROUNDS {
        let now = t(T0) + SignedDuration::from_hours(round);
        let mut racers = Vec::new();
        for reversed in [false, true] {
            let store = store.clone();
            let mut alerts: Vec<AlertInsert> = (0..KEYS)
                .map(|i| alert(&format!("{round}:{i}"), "default", "j"))
                .collect();
            if reversed {
                alerts.reverse();
            }
            racers.push(tokio::spawn(async move {
                let keys: Vec<String> = alerts.iter().map(|a| a.key.clone()).collect();
                let ids = enqueue(&store, alerts, now).await;
                keys.into_iter().zip(ids).collect::<Vec<_>>()
            }));
        }
        let mut queued: HashMap<String, i64> = HashMap::new();
        for racer in racers {
            for (key, id) in racer.await.unwrap() {
                if let Some(id) = id {
                    assert!(
                        queued.insert(key.clone(), id).is_none(),
                        "round {round}: `{key}` queued twice"
                    );
                }
            }
        }
        assert_eq!(queued.len(), KEYS, "round {round}: each key queued");
        let listed = list(
            &store,
            AlertListParams {
                limit: 1000,
                ..Default::default()
            },
        )
        .await;
        let mine: HashMap<String, i64> = listed
            .into_iter()
            .filter(|d| d.key.starts_with(&format!("{round}:")))
            .map(|d| (d.key, d.id))
            .collect();
        assert_eq!(mine, queued, "round {round}: stored as reported");
    }
}

/// Two evaluators move the position from the one they both read, at once, for many rounds (the
/// first round from none stored, both inserting): exactly one applies, and its position is
/// stored.
pub async fn alert_cursor_concurrent_one_wins(store: Arc<dyn Store>) {
    const ROUNDS: i64 = 30;
    for round in 0..ROUNDS {
        let expected = store.alert_cursor().await.unwrap();
        let mut racers = Vec::new();
        for n in 0..2 {
            let store = store.clone();
            let to = cursor(round + 1, n);
            racers.push(tokio::spawn(async move {
                (to, cursor_set(&store, expected, to).await)
            }));
        }
        let mut winners = Vec::new();
        for racer in racers {
            let (to, won) = racer.await.unwrap();
            if won {
                winners.push(to);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(store.alert_cursor().await.unwrap(), Some(winners[0]));
    }
}
