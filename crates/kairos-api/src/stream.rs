//! `GET /api/v1/events/stream`: what happens on every node of the cluster, as server-sent
//! events read from the store's activity log, so that any node serves all of it and a client
//! resumes after the last event it saw (`Last-Event-ID`, or `?after=`) without a gap, within
//! the log's retention. A position that is no longer kept starts with a `reset` event: the
//! client reads the state again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use kairos_core::auth::{Role, Scope};
use kairos_runtime::Event;
use kairos_store::{ActivityCursor, ActivityEntry, ActivityReadParams, Store};
use serde::Deserialize;
use tokio_stream::StreamExt;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::checked_namespace;

/// Entries read per store call.
const READ_BATCH: u32 = 500;
/// How often a stream looks for entries other nodes wrote (this node's wake it at once).
const POLL: Duration = Duration::from_millis(250);

/// `?namespace=&job=&kinds=&after=` of the event stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Only events of this namespace (and, with `job`, of this job).
    pub namespace: Option<String>,
    /// Only events of this job (in `namespace`, default `default`).
    pub job: Option<String>,
    /// Only these kinds, comma-separated: `job.changed`, `run.queued`, `run.skipped`,
    /// `run.started`, `run.retrying`, `run.finished`, `run.released`, `run.changed` (a cancel,
    /// a step action), `runs.rescued`,
    /// `leader.changed`, `node.joined`, `node.left`, `nodes.expired`, `events.dropped`.
    pub kinds: Option<String>,
    /// Resume after this event id (what `Last-Event-ID` carries; the header wins).
    pub after: Option<String>,
}

/// What a stream passes on.
struct Filter {
    scope: Scope,
    namespace: Option<String>,
    job: Option<String>,
    kinds: Option<Vec<String>>,
}

impl Filter {
    fn passes(&self, e: &ActivityEntry) -> bool {
        let r = &e.record;
        // That events were lost says nothing of any namespace or job: every client hears it
        // (the events it missed may have been its own), unless its `kinds` leave it out.
        if r.kind == "events.dropped" {
            return self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&r.kind));
        }
        let visible = match &r.namespace {
            Some(ns) => self.scope.allows(ns),
            None => self.scope == Scope::All,
        };
        visible
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| r.namespace.as_ref() == Some(ns))
            && self
                .job
                .as_ref()
                .is_none_or(|job| r.job.as_ref() == Some(job))
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&r.kind))
    }
}

fn event_id(c: ActivityCursor) -> String {
    format!("{}.{}.{}", c.tx, c.id, c.seq)
}

fn parse_event_id(field: &str, s: &str) -> Result<ActivityCursor, ApiError> {
    let bad = || {
        ApiError::bad_request(
            field,
            format!(
                "`{}` is not an event id of this stream (such as `0.42.0`)",
                s.chars().take(40).collect::<String>()
            ),
        )
    };
    let parts: Vec<&str> = s.trim().split('.').collect();
    let [tx, id, seq] = parts[..] else {
        return Err(bad());
    };
    let number = |p: &str| p.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad);
    Ok(ActivityCursor {
        tx: number(tx)?,
        id: number(id)?,
        seq: number(seq)?,
    })
}

fn to_sse(e: &ActivityEntry) -> SseEvent {
    let r = &e.record;
    let mut data = serde_json::from_str::<serde_json::Value>(&r.data)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(object) = data.as_object_mut() {
        object.insert("id".into(), event_id(e.cursor).into());
        object.insert("kind".into(), r.kind.clone().into());
        object.insert("at".into(), r.at.to_string().into());
        object.insert("node".into(), r.node.clone().into());
    }
    SseEvent::default()
        .id(event_id(e.cursor))
        .event(r.kind.clone())
        .data(data.to_string())
}

#[utoipa::path(get, path = "/api/v1/events/stream", tag = "ops",
    params(StreamQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses(
        (status = 200, description = "Server-sent events of every node: `id` (resume with it as `Last-Event-ID`), `event` (the kind) and `data` (JSON: `id`, `kind`, `at`, `node`, `type` and the event's fields). A `reset` event first when the position to resume from is no longer kept", content_type = "text/event-stream"),
        (status = 400, description = "A malformed event id, namespace or kind", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn stream(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    caller.require(Role::Viewer)?;
    let mut namespace = checked_namespace(q.namespace.as_deref())?.map(str::to_owned);
    if let Some(job) = &q.job {
        kairos_core::job::validate_name(job).map_err(|e| ApiError::bad_request("job", e))?;
        namespace.get_or_insert_with(|| kairos_core::spec::DEFAULT_NAMESPACE.to_owned());
    }
    if let Some(ns) = &namespace {
        caller.sees(ns)?;
    }
    let kinds = match &q.kinds {
        None => None,
        Some(list) => {
            let kinds: Vec<String> = list
                .split(',')
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect();
            if kinds.is_empty() {
                return Err(ApiError::bad_request(
                    "kinds",
                    "name at least one kind, or leave `kinds` out",
                ));
            }
            if let Some(bad) = kinds
                .iter()
                .find(|k| !Event::KINDS.contains(&k.as_str()) && *k != "events.dropped")
            {
                return Err(ApiError::bad_request(
                    "kinds",
                    format!("`{bad}` is not a kind of event"),
                ));
            }
            Some(kinds)
        }
    };
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(parse_event_id(
            "Last-Event-ID",
            v.to_str().unwrap_or_default(),
        )?),
        None => q
            .after
            .as_deref()
            .map(|a| parse_event_id("after", a))
            .transpose()?,
    };
    let store = app.ctx.store.clone();
    let (cursor, reset) = match resume {
        Some(c) if c == ActivityCursor::default() => (c, false),
        Some(c) => (c, !store.activity_contains(c).await?),
        None => (store.activity_head().await?, false),
    };
    let filter = Filter {
        scope: caller.0.scope.clone(),
        namespace,
        job: q.job.clone(),
        kinds,
    };
    let tail = app
        .stream_tail
        .get_or_try_init(|| async {
            Tail::start(
                store.clone(),
                app.ctx.activity_wake.clone(),
                app.shutdown.clone(),
            )
            .await
            .map(Arc::new)
        })
        .await?
        .clone();
    let follow = Follow {
        store,
        tail,
        live: None,
        cursor,
        pending: VecDeque::new(),
        reset,
        filter,
    };
    let (revoked, watching) = caller.watch_revocation(&app);
    let stopping = app.shutdown.clone();
    let events = futures::stream::unfold(follow, |mut f| async move {
        let event = f.next().await;
        Some((Ok(event), f))
    });
    let ended = async move {
        tokio::select! {
            _ = revoked.cancelled() => {}
            _ = stopping.cancelled() => {}
        }
    };
    let events = futures::StreamExt::take_until(events, ended).map(move |e| {
        let _watching = &watching;
        e
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The log's tail, read once for every client of this node that has caught up: one task
/// follows the log (woken by this node's writes, polling for other nodes' every [`POLL`]) and
/// passes what it reads on, in order. A client behind reads the store itself until it has
/// caught up.
pub struct Tail {
    entries: tokio::sync::broadcast::Sender<Arc<ActivityEntry>>,
}

/// Entries a slow client may fall behind the tail by before it reads the store again.
const TAIL_BUFFER: usize = 4096;

impl Tail {
    /// Starts following the log from now (read before this returns, so that a client that
    /// subscribes afterwards and then reads the store misses nothing), until `stop`.
    pub async fn start(
        store: Arc<dyn Store>,
        wake: Arc<tokio::sync::Notify>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Self, kairos_store::StoreError> {
        let (entries, _) = tokio::sync::broadcast::channel(TAIL_BUFFER);
        let sender = entries.clone();
        let mut cursor = store.activity_head().await?;
        tokio::spawn(async move {
            loop {
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let read = store
                    .activity_read(ActivityReadParams {
                        after: cursor,
                        limit: READ_BATCH,
                    })
                    .await;
                match read {
                    Ok(entries) if !entries.is_empty() => {
                        if let Some(last) = entries.last() {
                            cursor = last.cursor;
                        }
                        for e in entries {
                            // No client: nobody to tell.
                            let _ = sender.send(Arc::new(e));
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the activity log failed; the event streams wait");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        });
        Ok(Self { entries })
    }
}

/// One client's place in the log.
struct Follow {
    store: Arc<dyn Store>,
    tail: Arc<Tail>,
    /// Following the tail (caught up), or `None`: reading the store.
    live: Option<tokio::sync::broadcast::Receiver<Arc<ActivityEntry>>>,
    cursor: ActivityCursor,
    pending: VecDeque<ActivityEntry>,
    reset: bool,
    filter: Filter,
}

impl Follow {
    /// The next event to send, waiting for one.
    async fn next(&mut self) -> SseEvent {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if std::mem::take(&mut self.reset) {
                // Go on from now: what was between is gone.
                match self.store.activity_head().await {
                    Ok(head) => self.cursor = head,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the activity log failed");
                        self.reset = true;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
                return SseEvent::default().event("reset").data(
                    r#"{"kind":"reset","detail":"the position to resume from is no longer kept; read the state again"}"#,
                );
            }
            if let Some(e) = self.pending.pop_front() {
                return to_sse(&e);
            }
            if let Some(live) = &mut self.live {
                match live.recv().await {
                    // What it read before it caught up is not sent again.
                    Ok(e) if e.cursor > self.cursor => {
                        self.cursor = e.cursor;
                        if self.filter.passes(&e) {
                            return to_sse(&e);
                        }
                    }
                    Ok(_) => {}
                    // Too slow for the tail: back to the store from its own position.
                    Err(RecvError::Lagged(_)) => self.live = None,
                    Err(RecvError::Closed) => {
                        self.live = None;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                continue;
            }
            // Behind: read the store. Once nothing is left, follow the tail; entries the tail
            // passed on before this subscribed were in the store already, so the one more read
            // after subscribing gets them.
            let subscribed = self.tail.entries.subscribe();
            match self
                .store
                .activity_read(ActivityReadParams {
                    after: self.cursor,
                    limit: READ_BATCH,
                })
                .await
            {
                Ok(entries) => {
                    let caught_up = entries.len() < READ_BATCH as usize;
                    if let Some(last) = entries.last() {
                        self.cursor = last.cursor;
                    }
                    self.pending
                        .extend(entries.into_iter().filter(|e| self.filter.passes(e)));
                    if caught_up {
                        self.live = Some(subscribed);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the activity log failed; the event stream waits");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, namespace: Option<&str>, job: Option<&str>) -> ActivityEntry {
        ActivityEntry {
            cursor: ActivityCursor::default(),
            record: kairos_store::ActivityRecord {
                at: jiff::Timestamp::UNIX_EPOCH,
                node: "n1".into(),
                kind: kind.into(),
                namespace: namespace.map(Into::into),
                job: job.map(Into::into),
                run_id: None,
                data: "{}".into(),
            },
        }
    }

    fn filter(scope: Scope, kinds: Option<&[&str]>) -> Filter {
        Filter {
            scope,
            namespace: Some("team-a".into()),
            job: Some("etl".into()),
            kinds: kinds.map(|k| k.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn dropped_events_reach_every_client_that_takes_their_kind() {
        let scoped = Scope::parse(&["team-a".into()]).unwrap_or(Scope::All);
        let dropped = entry("events.dropped", None, None);
        assert!(filter(scoped.clone(), None).passes(&dropped));
        assert!(filter(Scope::All, Some(&["run.finished", "events.dropped"])).passes(&dropped));
        assert!(!filter(scoped.clone(), Some(&["run.finished"])).passes(&dropped));
        // Other events keep to the filters and the scope.
        assert!(filter(scoped.clone(), None).passes(&entry(
            "run.finished",
            Some("team-a"),
            Some("etl")
        )));
        assert!(!filter(scoped.clone(), None).passes(&entry(
            "run.finished",
            Some("team-a"),
            Some("other")
        )));
        assert!(!filter(scoped, None).passes(&entry("leader.changed", None, None)));
    }
}
