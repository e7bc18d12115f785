//! Leadership and the node registry: what the store keeps so that identical nodes share work.
//!
//! **Leadership.** One row holds the leader: its node id (a fresh id per process start), name,
//! **term** and lease. `leader_elect` takes the row when nobody holds it or its lease expired
//! (a new term), or renews it for the node that holds it (same term); every write is fenced by
//! node id and term in its WHERE clause, so two nodes can never both hold one term, and a node
//! that lost the row can neither renew nor resign it. A store may know sooner than the lease
//! that a leader is gone (PostgreSQL: its session advisory lock was released when its
//! connection closed) and let a new term start at once.
//!
//! **Nodes.** Each node upserts its row every heartbeat; the leader deletes rows not refreshed
//! for a while (the node died). The registry is for people and metrics: exactly-once and rescue
//! never depend on it (the unique run key and run leases do).

use jiff::{SignedDuration, Timestamp};

/// A reading of a shared store's clock (`Store::clock_now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// The store's clock when it answered.
    pub at: Timestamp,
    /// How long the statement that read it took, from sending it to its answer (not the
    /// connection's checkout): the reading was taken within this much before the call returned.
    pub round_trip: std::time::Duration,
}

/// The leader row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leading node's id (one per process start).
    pub node_id: String,
    pub node_name: String,
    /// Increases with every change of hands; fences the leader's writes.
    pub term: i64,
    pub elected_at: Timestamp,
    /// The leader is presumed gone after this unless it renews.
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct LeaderElectParams {
    pub node_id: String,
    pub node_name: String,
    /// Lease of the leadership from now.
    pub ttl: SignedDuration,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct LeaderResignParams {
    pub node_id: String,
    pub term: i64,
    pub now: Option<Timestamp>,
}

/// A node of the cluster, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Fresh per process start: two processes with one name are two nodes.
    pub id: String,
    pub name: String,
    /// Where its API listens (`http://host:port`), if it serves one.
    pub address: Option<String>,
    pub version: String,
    pub started_at: Timestamp,
    pub last_heartbeat: Timestamp,
    /// Attempts running on it at its last heartbeat.
    pub running: u32,
}

#[derive(Debug, Clone)]
pub struct NodeHeartbeatParams {
    pub id: String,
    pub name: String,
    pub address: Option<String>,
    pub version: String,
    pub started_at: Timestamp,
    pub running: u32,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct NodeExpireParams {
    /// Nodes whose last heartbeat is older than this are removed.
    pub after: SignedDuration,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct NodeLeaveParams {
    pub id: String,
}
