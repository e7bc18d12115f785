//! Leadership and the node registry on SQLite. One file has one node at a time (the data
//! directory lock), so the leader is normally that node; the statements are fenced all the
//! same, as on every backend.

use jiff::Timestamp;
use kairos_store::{
    Leader, LeaderElectParams, LeaderResignParams, NodeExpireParams, NodeHeartbeatParams, NodeInfo,
    StoreError, StoreResult,
};
use rusqlite::{Connection, Row, params};

use crate::rows::{all, col, exec, first, instant, micros};

const LEADER_SELECT: &str =
    "SELECT node_id, node_name, term, elected_at, expires_at FROM leader WHERE id = 1";

fn leader_row(r: &Row<'_>) -> StoreResult<Leader> {
    Ok(Leader {
        node_id: col(r, 0)?,
        node_name: col(r, 1)?,
        term: col(r, 2)?,
        elected_at: instant(col(r, 3)?)?,
        expires_at: instant(col(r, 4)?)?,
    })
}

pub(crate) fn leader_get(conn: &Connection) -> StoreResult<Option<Leader>> {
    first(conn, LEADER_SELECT, [], leader_row)
}

/// Takes the row when it is free or expired (term + 1), renews it for its holder (same term).
pub(crate) fn leader_elect(
    conn: &Connection,
    p: &LeaderElectParams,
    now: Timestamp,
) -> StoreResult<Leader> {
    let expires = now
        .checked_add(p.ttl)
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    exec(
        conn,
        "INSERT INTO leader (id, node_id, node_name, term, elected_at, expires_at) \
         VALUES (1, ?1, ?2, 1, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET \
           term = CASE WHEN node_id = excluded.node_id THEN term ELSE term + 1 END, \
           elected_at = CASE WHEN node_id = excluded.node_id THEN elected_at \
             ELSE excluded.elected_at END, \
           node_id = excluded.node_id, node_name = excluded.node_name, \
           expires_at = excluded.expires_at \
         WHERE node_id = excluded.node_id OR expires_at <= excluded.elected_at",
        params![p.node_id, p.node_name, micros(now), micros(expires)],
    )?;
    leader_get(conn)?.ok_or_else(|| StoreError::Internal("leader row vanished".into()))
}

/// Ends the term at once (its lease expires now) if `p.node_id` holds it.
pub(crate) fn leader_resign(
    conn: &Connection,
    p: &LeaderResignParams,
    now: Timestamp,
) -> StoreResult<bool> {
    let changed = exec(
        conn,
        "UPDATE leader SET expires_at = ?1 WHERE id = 1 AND node_id = ?2 AND term = ?3 \
         AND expires_at > ?1",
        params![micros(now), p.node_id, p.term],
    )?;
    Ok(changed == 1)
}

pub(crate) fn node_heartbeat(
    conn: &Connection,
    p: &NodeHeartbeatParams,
    now: Timestamp,
) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO nodes (id, name, address, version, started_at, last_heartbeat, running) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
           last_heartbeat = excluded.last_heartbeat, running = excluded.running",
        params![
            p.id,
            p.name,
            p.address,
            p.version,
            micros(p.started_at),
            micros(now),
            p.running
        ],
    )?;
    Ok(())
}

pub(crate) fn node_list(conn: &Connection) -> StoreResult<Vec<NodeInfo>> {
    all(
        conn,
        "SELECT id, name, address, version, started_at, last_heartbeat, running FROM nodes \
         ORDER BY name, started_at, id",
        [],
        |r| {
            Ok(NodeInfo {
                id: col(r, 0)?,
                name: col(r, 1)?,
                address: col(r, 2)?,
                version: col(r, 3)?,
                started_at: instant(col(r, 4)?)?,
                last_heartbeat: instant(col(r, 5)?)?,
                running: col(r, 6)?,
            })
        },
    )
}

pub(crate) fn node_expire(
    conn: &Connection,
    p: &NodeExpireParams,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    let before = now
        .checked_sub(p.after)
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    all(
        conn,
        "DELETE FROM nodes WHERE last_heartbeat < ?1 RETURNING id",
        [micros(before)],
        |r| col(r, 0),
    )
}

pub(crate) fn node_leave(conn: &Connection, id: &str) -> StoreResult<()> {
    exec(conn, "DELETE FROM nodes WHERE id = ?1", [id])?;
    Ok(())
}
