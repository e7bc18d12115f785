//! Leadership and the node registry (see `kairos_store::cluster`), the SQLite store's statements
//! for PostgreSQL. Every leadership write is fenced in its WHERE clause by node id (and term):
//! `INSERT … ON CONFLICT DO UPDATE … WHERE` locks the leader row and judges the latest committed
//! version of it, so two nodes electing at once cannot both take one term.
//!
//! Not yet: learning that a leader is gone before its lease runs out (a session advisory lock
//! held on a dedicated connection, released by the server when that connection drops).

use kairos_store::*;
use tokio_postgres::Row;

use crate::connect::PostgresStore;
use crate::rows::{col, execute, int, micros, query, query_opt};

const LEADER_COLUMNS: &str = "node_id, node_name, term, elected_at, expires_at";

fn leader(r: &Row) -> StoreResult<Leader> {
    Ok(Leader {
        node_id: col(r, 0)?,
        node_name: col(r, 1)?,
        term: col(r, 2)?,
        elected_at: col(r, 3)?,
        expires_at: col(r, 4)?,
    })
}

fn node(r: &Row) -> StoreResult<NodeInfo> {
    Ok(NodeInfo {
        id: col(r, 0)?,
        name: col(r, 1)?,
        address: col(r, 2)?,
        version: col(r, 3)?,
        started_at: col(r, 4)?,
        last_heartbeat: col(r, 5)?,
        running: u32::try_from(col::<i32>(r, 6)?).unwrap_or(0),
    })
}

impl PostgresStore {
    pub(crate) async fn leader_get_read(&self) -> StoreResult<Option<Leader>> {
        let client = self.client().await?;
        query_opt(
            &client,
            &format!("SELECT {LEADER_COLUMNS} FROM leader WHERE id = 1"),
            &[],
        )
        .await?
        .as_ref()
        .map(leader)
        .transpose()
    }

    /// Takes the row when it is free or expired (term + 1), renews it for its holder (same
    /// term); returns the leader after the attempt.
    pub(crate) async fn leader_elect_write(&self, p: LeaderElectParams) -> StoreResult<Leader> {
        let client = self.client().await?;
        let won = query_opt(
            &client,
            &format!(
                "INSERT INTO leader AS l (id, node_id, node_name, term, elected_at, expires_at) \
                 VALUES (1, $1, $2, 1, coalesce($3::timestamptz, now()), \
                   coalesce($3::timestamptz, now()) + $4::bigint * interval '1 microsecond') \
                 ON CONFLICT (id) DO UPDATE SET \
                   term = CASE WHEN l.node_id = excluded.node_id THEN l.term ELSE l.term + 1 END, \
                   elected_at = CASE WHEN l.node_id = excluded.node_id THEN l.elected_at \
                     ELSE excluded.elected_at END, \
                   node_id = excluded.node_id, node_name = excluded.node_name, \
                   expires_at = excluded.expires_at \
                 WHERE l.node_id = excluded.node_id OR l.expires_at <= excluded.elected_at \
                 RETURNING {LEADER_COLUMNS}"
            ),
            &[&p.node_id, &p.node_name, &p.now, &micros(p.ttl)],
        )
        .await?;
        if let Some(row) = won {
            return leader(&row);
        }
        // Another node holds a current lease: report it.
        self.leader_get_read()
            .await?
            .ok_or_else(|| StoreError::Internal("leader row vanished".into()))
    }

    /// Ends the term at once (its lease expires now) if `p.node_id` holds it.
    pub(crate) async fn leader_resign_write(&self, p: LeaderResignParams) -> StoreResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE leader SET expires_at = coalesce($1::timestamptz, now()) \
             WHERE id = 1 AND node_id = $2 AND term = $3 \
               AND expires_at > coalesce($1::timestamptz, now())",
            &[&p.now, &p.node_id, &p.term],
        )
        .await?;
        Ok(changed == 1)
    }

    pub(crate) async fn node_heartbeat_write(&self, p: NodeHeartbeatParams) -> StoreResult<()> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO nodes (id, name, address, version, started_at, last_heartbeat, running) \
             VALUES ($1, $2, $3, $4, $5, coalesce($6::timestamptz, now()), $7) \
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
               last_heartbeat = excluded.last_heartbeat, running = excluded.running",
            &[
                &p.id,
                &p.name,
                &p.address,
                &p.version,
                &p.started_at,
                &p.now,
                &int(p.running),
            ],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn node_list_read(&self) -> StoreResult<Vec<NodeInfo>> {
        let client = self.client().await?;
        query(
            &client,
            "SELECT id, name, address, version, started_at, last_heartbeat, running FROM nodes \
             ORDER BY name, started_at, id",
            &[],
        )
        .await?
        .iter()
        .map(node)
        .collect()
    }

    pub(crate) async fn node_expire_write(&self, p: NodeExpireParams) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        query(
            &client,
            "DELETE FROM nodes WHERE last_heartbeat \
               < coalesce($1::timestamptz, now()) - $2::bigint * interval '1 microsecond' \
             RETURNING id",
            &[&p.now, &micros(p.after)],
        )
        .await?
        .iter()
        .map(|r| col(r, 0))
        .collect()
    }

    pub(crate) async fn node_leave_write(&self, p: NodeLeaveParams) -> StoreResult<()> {
        let client = self.client().await?;
        execute(&client, "DELETE FROM nodes WHERE id = $1", &[&p.id]).await?;
        Ok(())
    }
}
