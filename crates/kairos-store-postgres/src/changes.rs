//! The change feed over `LISTEN/NOTIFY` (see `kairos_store::changes`).
//!
//! **Sending.** A transaction that changes what other nodes wait for collects the kinds of its
//! changes in [`Notices`] and sends them with one `pg_notify` statement just before it commits
//! (none at all when it changed nothing of note). PostgreSQL delivers notifications only at
//! commit, never for a rollback, in commit order, to every session listening on the channel,
//! the writer's own node included; identical ones of one transaction are folded into one.
//!
//! **Receiving.** Each store instance runs one listener task on a dedicated connection (a
//! pooled one would be reset and lent to other work, and stop listening). It `LISTEN`s on the
//! schema's channel and forwards each notification to a broadcast channel, skipping payloads
//! this version does not know (from a newer node). When the connection drops it reconnects,
//! waiting a little longer each time (at most [`BACKOFF_MAX`]), and once it listens again sends
//! [`Change::Resync`]: notifications sent meanwhile are lost. The task ends when the store is
//! closed or its last clone dropped; the feed's receivers then see `Closed`.

use std::time::Duration;

use deadpool_postgres::{GenericClient, Transaction};
use kairos_store::{Change, StoreResult};
use tokio::sync::{broadcast, oneshot};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Socket};
use tokio_util::sync::CancellationToken;

use crate::connect::{PostgresStore, fnv1a};
use crate::rows::{describe, execute, pg_error};

/// Changes a receiver may fall behind by before it sees `Lagged` (and looks at everything).
const FEED_CAPACITY: usize = 1024;
/// The first wait before reconnecting the listener; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to reconnect the listener.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The channel of the nodes on `schema` (a validated schema name): `kairos_<schema>`, or, when
/// that is longer than an identifier may be (63 bytes), a prefix of it and a hash of the whole.
pub(crate) fn channel_name(schema: &str) -> String {
    let name = format!("kairos_{schema}");
    if name.len() <= 63 {
        return name;
    }
    // Schema names are ASCII: any byte index is a character boundary.
    format!("{}_{:016x}", &name[..46], fnv1a(&name))
}

/// The kinds of change a transaction made, to notify as it commits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Notices {
    jobs: bool,
    runs: bool,
    cancel: bool,
    leader: bool,
}

impl Notices {
    /// Notices of one kind.
    pub fn of(change: Change) -> Self {
        let mut notices = Self::default();
        notices.add(change);
        notices
    }

    /// Adds a kind (`Resync` is the listener's own and is not sent).
    pub fn add(&mut self, change: Change) {
        match change {
            Change::Jobs => self.jobs = true,
            Change::Runs => self.runs = true,
            Change::Cancel => self.cancel = true,
            Change::Leader => self.leader = true,
            Change::Resync => {}
        }
    }

    /// Adds a kind if `changed`.
    pub fn add_if(&mut self, changed: bool, change: Change) {
        if changed {
            self.add(change);
        }
    }

    /// Adds every kind `other` has.
    pub fn merge(&mut self, other: Notices) {
        self.jobs |= other.jobs;
        self.runs |= other.runs;
        self.cancel |= other.cancel;
        self.leader |= other.leader;
    }

    fn payloads(self) -> Vec<&'static str> {
        [
            (self.jobs, Change::Jobs),
            (self.runs, Change::Runs),
            (self.cancel, Change::Cancel),
            (self.leader, Change::Leader),
        ]
        .into_iter()
        .filter(|(set, _)| *set)
        .map(|(_, change)| change.as_str())
        .collect()
    }
}

impl PostgresStore {
    /// Sends `notices` inside the caller's transaction (one statement for all kinds; nothing
    /// when there are none). They are delivered when it commits.
    pub(crate) async fn notify(&self, c: &impl GenericClient, notices: Notices) -> StoreResult<()> {
        let payloads = notices.payloads();
        if payloads.is_empty() {
            return Ok(());
        }
        execute(
            c,
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            &[&&*self.channel, &payloads],
        )
        .await?;
        Ok(())
    }

    /// Sends `notices` and commits.
    pub(crate) async fn commit(&self, tx: Transaction<'_>, notices: Notices) -> StoreResult<()> {
        self.notify(&tx, notices).await?;
        tx.commit().await.map_err(pg_error)
    }
}

/// Starts the listener task of a store instance. Returns the feed (the task holds its only
/// strong sender) and a receiver that learns how the first attempt to listen went.
pub(crate) fn spawn_listener(
    pg: tokio_postgres::Config,
    channel: String,
    stop: CancellationToken,
) -> (
    broadcast::WeakSender<Change>,
    oneshot::Receiver<Result<(), String>>,
) {
    let (sender, _) = broadcast::channel(FEED_CAPACITY);
    let feed = sender.downgrade();
    let (ready, listening) = oneshot::channel();
    tokio::spawn(async move {
        tokio::select! {
            biased;
            () = stop.cancelled() => {}
            () = listen(&pg, &channel, &sender, ready) => {}
        }
    });
    (feed, listening)
}

/// Why a listening connection ended.
enum Lost {
    Error(tokio_postgres::Error),
    Closed,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Error(e) => f.write_str(&describe(e)),
            Lost::Closed => f.write_str("the server closed the connection"),
        }
    }
}

/// Listens and forwards, reconnecting for ever (the caller ends it).
async fn listen(
    pg: &tokio_postgres::Config,
    channel: &str,
    sender: &broadcast::Sender<Change>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = BACKOFF_MIN;
    // Failed attempts since the feed last listened: the first is a warning, the others (one a
    // second while the server is down) are not.
    let mut failures = 0u32;
    loop {
        match subscribe(pg, channel).await {
            Ok((client, mut connection)) => {
                backoff = BACKOFF_MIN;
                failures = 0;
                // `connect` waits for the first LISTEN: nothing was missed before it. After any
                // other, notifications may have been sent while nobody listened.
                let waited = ready.take().is_some_and(|r| r.send(Ok(())).is_ok());
                if !waited {
                    tracing::info!(channel, "change feed listening again; resyncing");
                    // No receivers yet is fine.
                    let _ = sender.send(Change::Resync);
                }
                let lost = forward(&mut connection, sender).await;
                drop(client);
                tracing::warn!(channel, reason = %lost, "change feed connection lost; reconnecting");
            }
            Err(lost) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(lost.to_string()));
                }
                if failures == 0 {
                    tracing::warn!(channel, reason = %lost, "change feed cannot listen; retrying");
                } else {
                    tracing::debug!(channel, reason = %lost, failures, "change feed cannot listen");
                }
                failures = failures.saturating_add(1);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connects and `LISTEN`s, driving the connection meanwhile.
async fn subscribe(
    pg: &tokio_postgres::Config,
    channel: &str,
) -> Result<(Client, Connection<Socket, NoTlsStream>), Lost> {
    let (client, mut connection) = pg.connect(NoTls).await.map_err(Lost::Error)?;
    let listened = {
        // The channel is `kairos_` and a validated schema name: a plain identifier.
        let sql = format!("LISTEN \"{channel}\"");
        let listen = client.batch_execute(&sql);
        tokio::pin!(listen);
        loop {
            tokio::select! {
                done = &mut listen => break done.map_err(Lost::Error),
                message = std::future::poll_fn(|cx| connection.poll_message(cx)) => {
                    match message {
                        // A notice; no notification comes before the LISTEN is done.
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break Err(Lost::Error(e)),
                        None => break Err(Lost::Closed),
                    }
                }
            }
        }
    };
    listened.map(|()| (client, connection))
}

/// Forwards notifications until the connection ends.
async fn forward(
    connection: &mut Connection<Socket, NoTlsStream>,
    sender: &broadcast::Sender<Change>,
) -> Lost {
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => match Change::parse(n.payload()) {
                // No receivers is fine: nobody follows the feed right now.
                Some(change) => {
                    let _ = sender.send(change);
                }
                None => tracing::debug!(payload = n.payload(), "unknown change notification"),
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => return Lost::Error(e),
            None => return Lost::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_fit_an_identifier() {
        assert_eq!(channel_name("kairos"), "kairos_kairos");
        let long = "a".repeat(63);
        let name = channel_name(&long);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with("kairos_aaa"));
        assert_ne!(name, channel_name(&"a".repeat(62)), "distinct schemas");
        assert_eq!(channel_name(&"a".repeat(56)).len(), 63);
    }

    #[test]
    fn notices_send_each_kind_once() {
        let mut n = Notices::of(Change::Runs);
        n.add(Change::Runs);
        n.add_if(false, Change::Jobs);
        n.add_if(true, Change::Leader);
        n.add(Change::Resync);
        assert_eq!(n.payloads(), ["runs", "leader"]);
        assert!(Notices::default().payloads().is_empty());
    }
}
