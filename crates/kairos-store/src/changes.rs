//! Change notifications: how a write on one node wakes the services of every other node.
//!
//! A store whose data other nodes change too (PostgreSQL, Redis) reports what changed as a
//! stream of [`Change`]s; the runtime turns each into a wake-up of the service it concerns
//! (scheduler, worker, heartbeat, elector). Notifications only make things faster: every
//! service also looks on its own at least every second or so, so a notification that is lost
//! (a dropped connection) delays a change, never loses it. An embedded store that only one
//! node uses has no feed: the node wakes its own services directly.

/// What changed in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// A job was created, changed, paused, resumed or deleted: its next due time may have moved.
    Jobs,
    /// Runs were queued (fired, triggered, retried, rescued, released).
    Runs,
    /// A run was asked to stop (cancel, `overlap: replace`).
    Cancel,
    /// Leadership changed hands (a resignation, a new term).
    Leader,
    /// Notifications may have been missed (the feed reconnected): look at everything.
    Resync,
}

impl Change {
    /// The notification payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Jobs => "jobs",
            Change::Runs => "runs",
            Change::Cancel => "cancel",
            Change::Leader => "leader",
            Change::Resync => "resync",
        }
    }

    /// Parses a payload; `None` for one this version does not know (from a newer node).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "jobs" => Change::Jobs,
            "runs" => Change::Runs,
            "cancel" => Change::Cancel,
            "leader" => Change::Leader,
            "resync" => Change::Resync,
            _ => return None,
        })
    }
}
