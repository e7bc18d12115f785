//! The session advisory lock on leadership: how a store learns, before a leader's lease runs
//! out, that the leader is gone.
//!
//! Each store instance keeps one dedicated connection (not pooled: a session lock lives as long
//! as its session, and a pooled connection is reset and shared) on which it takes
//! `pg_try_advisory_lock(key)`, the key derived from the schema. PostgreSQL releases a session
//! lock when its session ends: a process killed with `kill -9`, a connection cut, a backend
//! terminated. So while a leader that held the lock at its last renewal (the row's `locked`)
//! still leads, a candidate that gets the lock has proof that the leader's session is gone, and
//! may start a new term at once (see `cluster`). The lock only ever speeds a failover up:
//! the leader row stays fenced by node id and term, and without the lock the lease decides.
//!
//! A session that ends on its own (the server closed it: a backend terminated, a database
//! restart, a connection reset) sends [`Change::Leader`] to the instance's change feed, so that
//! its elector elects at once instead of at its next renewal. For a leader that matters: its
//! lock is gone, a follower may take the lock and with it a new term at the follower's next
//! election, and the leader learns that its renewal's fence fails (and stops its services)
//! only when it next elects; woken, it renews first (without the lock, which keeps followers
//! from taking over early) or finds the term taken and steps down at once.
//!
//! The state here is exact or pessimistic, never optimistic: `held` is true only while the
//! session is alive and holds the lock. Any doubt (a failed or timed-out statement, a closed
//! connection, an election its caller gave up on while a lock statement was under way) drops
//! the session, and closing a session releases its lock. A candidate's election given up after
//! it took the lock drops the session too, so that it does not keep the lock from the leader.

use std::collections::HashSet;
use std::time::Duration;

use kairos_store::Change;
use tokio::sync::{Mutex, MutexGuard, broadcast};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use crate::rows::describe;

/// The longest a statement on the lock's session, or connecting it, may take inside an election
/// (followers elect about every half second): after that the session is presumed broken.
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// The lock of one store instance, shared by its clones. Elections of an instance hold it from
/// start to end, so they run one at a time.
pub(crate) struct LeaderLock {
    state: Mutex<LockState>,
}

impl LeaderLock {
    /// `config` is a dedicated connection's; `stop` ends the session (the store closed);
    /// `feed` is the instance's change feed, told when a session ends on its own.
    pub fn new(
        config: tokio_postgres::Config,
        key: i64,
        stop: CancellationToken,
        feed: broadcast::WeakSender<Change>,
    ) -> Self {
        Self {
            state: Mutex::new(LockState {
                config,
                key,
                stop,
                feed,
                session: None,
                held: false,
                elected: HashSet::new(),
            }),
        }
    }

    /// Exclusive use of the lock for a resignation.
    pub async fn enter(&self) -> MutexGuard<'_, LockState> {
        self.state.lock().await
    }

    /// Exclusive use of the lock for one election of `node_id`, which [`Election::settle`]
    /// ends. An election dropped before it settles (its caller gave up) closes the session if
    /// it holds the lock for a node that is not this instance's leader, so that a candidate
    /// cut off in the middle does not keep the lock from the leader until its next election.
    pub async fn elect<'a>(&'a self, node_id: &'a str) -> Election<'a> {
        Election {
            state: self.state.lock().await,
            node_id,
            settled: false,
        }
    }
}

/// One election's use of the lock (see [`LeaderLock::elect`]).
pub(crate) struct Election<'a> {
    pub state: MutexGuard<'a, LockState>,
    node_id: &'a str,
    settled: bool,
}

impl Election<'_> {
    /// The election is over: `leader` leads (see [`LockState::settle`]).
    pub async fn settle(mut self, leader: &str) {
        self.settled = true;
        let node_id = self.node_id;
        self.state.settle(node_id, leader).await;
    }

    /// The election failed: nothing is known of the row, so the lock is kept only if this
    /// caller may be leading.
    pub async fn fail(mut self) {
        self.settled = true;
        if !self.state.elected.contains(self.node_id) {
            self.state.release().await;
        }
    }
}

impl Drop for Election<'_> {
    fn drop(&mut self) {
        if !self.settled && self.state.held && !self.state.elected.contains(self.node_id) {
            // Closing the session releases the lock (the server does it, no await needed).
            self.state.session = None;
            self.state.held = false;
        }
    }
}

pub(crate) struct LockState {
    config: tokio_postgres::Config,
    key: i64,
    stop: CancellationToken,
    /// The change feed of the instance (see the module doc).
    feed: broadcast::WeakSender<Change>,
    /// The dedicated connection. Taken out while a statement runs on it and put back once its
    /// answer is handled: if the caller gives up meanwhile (the elector times out slow
    /// elections), the session is dropped with the future, which closes it and so releases the
    /// lock whatever the statement did.
    session: Option<Session>,
    /// The session holds the lock (once: `pg_try_advisory_lock` is only called while false).
    /// Never true without a session.
    held: bool,
    /// Node ids this instance has elected (in production one per process). A candidate never
    /// takes over early from one of them: the lock this instance holds is theirs too, so it
    /// proves nothing about their session. (The conformance suite runs several "nodes" through
    /// one store.)
    elected: HashSet<String>,
}

/// The dedicated connection; dropping it closes the connection (its driver task ends).
struct Session {
    client: Client,
    close: CancellationToken,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close.cancel();
    }
}

impl LockState {
    /// Takes the lock unless this session holds it already, reconnecting the session first if
    /// it broke (a broken session held nothing). Returns whether the lock is held now: false
    /// when another session holds it, and when the session cannot be had (the lease alone then
    /// decides; the next election tries again).
    pub async fn acquire(&mut self) -> bool {
        let mut session = self.session.take().filter(|s| !s.client.is_closed());
        if session.is_none() {
            self.held = false;
        }
        // A session kept from an earlier call may have died unnoticed: then one fresh try.
        for fresh in [session.is_none(), true] {
            if self.stop.is_cancelled() {
                self.held = false;
                return false;
            }
            let current = match session.take() {
                Some(current) => current,
                None => match self.connect().await {
                    Ok(new) => new,
                    Err(reason) => {
                        tracing::warn!(%reason, "cannot open the leader lock's session");
                        return false;
                    }
                },
            };
            match self.try_lock(&current).await {
                Ok(held) => {
                    self.held = held;
                    self.session = Some(current);
                    return held;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "the leader lock's session broke");
                    self.held = false;
                    if fresh {
                        return false;
                    }
                }
            }
        }
        false
    }

    /// One round trip on `session`: takes the lock if not held, else proves that the session
    /// (and so the lock) is still alive.
    async fn try_lock(&self, session: &Session) -> Result<bool, String> {
        let query = async {
            if self.held {
                session.client.query_one("SELECT true", &[]).await
            } else {
                session
                    .client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
                    .await
            }
        };
        match tokio::time::timeout(SESSION_TIMEOUT, query).await {
            Ok(Ok(row)) => row.try_get(0).map_err(|e| describe(&e)),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {SESSION_TIMEOUT:?}")),
        }
    }

    /// The node ids this instance has elected.
    pub fn elected(&self) -> Vec<&str> {
        self.elected.iter().map(String::as_str).collect()
    }

    /// After an election: remembers `node_id` if it leads, and releases the lock unless the
    /// leader is one of this instance's nodes, so that the leader can take it.
    async fn settle(&mut self, node_id: &str, leader: &str) {
        if node_id == leader && !self.elected.contains(node_id) {
            self.elected.insert(node_id.to_owned());
        }
        if self.held && !self.elected.contains(leader) {
            self.release().await;
        }
    }

    /// Releases the lock if held. Should the unlock fail, the session is closed, which
    /// releases it as surely.
    pub async fn release(&mut self) {
        if !std::mem::take(&mut self.held) {
            return;
        }
        let Some(session) = self.session.take() else {
            return;
        };
        let unlocked = tokio::time::timeout(
            SESSION_TIMEOUT,
            session
                .client
                .query_one("SELECT pg_advisory_unlock($1)", &[&self.key]),
        )
        .await;
        let failure = match unlocked {
            Ok(Ok(row)) if row.try_get(0).unwrap_or(false) => {
                self.session = Some(session);
                return;
            }
            Ok(Ok(_)) => "it was not held".to_owned(),
            Ok(Err(e)) => describe(&e),
            Err(_) => format!("no answer within {SESSION_TIMEOUT:?}"),
        };
        tracing::warn!(
            reason = %failure,
            "cannot release the leader lock; closing its session instead"
        );
    }

    /// A new session, its connection driven by a task that ends with it or with the store.
    async fn connect(&self) -> Result<Session, String> {
        let (client, connection) =
            tokio::time::timeout(SESSION_TIMEOUT, self.config.connect(NoTls))
                .await
                .map_err(|_| format!("no connection within {SESSION_TIMEOUT:?}"))?
                .map_err(|e| describe(&e))?;
        let close = self.stop.child_token();
        let closed = close.clone();
        let feed = self.feed.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                () = closed.cancelled() => {}
                ended = connection => {
                    if let Err(e) = ended {
                        tracing::debug!(reason = %describe(&e), "the leader lock's session ended");
                    }
                    // Not closed by this instance: whatever lock it held is gone (see the
                    // module doc). No receiver (a store nobody follows) is fine.
                    if let Some(feed) = feed.upgrade() {
                        let _ = feed.send(Change::Leader);
                    }
                }
            }
        });
        Ok(Session { client, close })
    }
}
