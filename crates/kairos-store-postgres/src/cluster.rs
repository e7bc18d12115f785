//! Leadership and the node registry (see `kairos_store::cluster`). Every leadership write is
//! fenced in its WHERE clause by node id (and term): `INSERT … ON CONFLICT DO UPDATE … WHERE`
//! locks the leader row and judges the latest committed version of it, so two nodes electing at
//! once cannot both take one term.
//!
//! # Failover before the lease runs out
//!
//! A leader that crashed would keep its term until its lease expires (10 s by default). To hand
//! over sooner, each store instance holds a session advisory lock on leadership while it leads
//! ([`crate::leader_lock`]), and the leader row records in `locked` whether its holder held
//! that lock when it last renewed. An election:
//!
//! 1. tries the lock on the instance's session (reconnecting a broken session first);
//! 2. in one statement, takes the row (a new term) if it is free, expired, or `locked` while
//!    this caller holds the lock and the holder is not a node of this instance: the lock being
//!    free proves that the holder's session ended after its last renewal. It renews the row for
//!    its holder (same term), setting `locked` to whether the holder holds the lock now;
//! 3. releases the lock if the leader is not one of this instance's nodes, so that the leader
//!    can take it.
//!
//! So when a leader's process dies (its connection closes), the next candidate gets the lock
//! and takes over at its next election, within half a second. A leader that took over by expiry
//! while a cut-off predecessor still held the lock has `locked` false: until it gets the lock at
//! a later renewal, nobody may take over from it early, so a candidate that grabs the lock when
//! the predecessor finally goes does not depose it. A leader whose lock session died while its
//! pooled connections work is woken at once (see `crate::leader_lock`) and renews with `locked`
//! false (or gets the lock back); if a candidate took the lock first and with it the row, the
//! old leader's renewal fails its fence and it steps down. A resignation expires the row and releases the lock.

use kairos_store::*;
use tokio_postgres::Row;

use crate::changes::Notices;
use crate::connect::PostgresStore;
use crate::rows::{col, execute, int, micros, pg_error, query, query_opt};

const LEADER_COLUMNS: &str = "node_id, node_name, term, elected_at, expires_at";

/// The election (see the module doc). `$5`: the caller holds the lock; `$6`: the node ids this
/// instance elected. Returns the row if the caller took or renewed it, and whether that started
/// a new term.
const ELECT: &str = "WITH previous AS (SELECT term FROM leader WHERE id = 1) \
     INSERT INTO leader AS l (id, node_id, node_name, term, elected_at, expires_at, locked) \
     VALUES (1, $1, $2, 1, coalesce($3::timestamptz, now()), \
       coalesce($3::timestamptz, now()) + $4::bigint * interval '1 microsecond', $5) \
     ON CONFLICT (id) DO UPDATE SET \
       term = CASE WHEN l.node_id = excluded.node_id THEN l.term ELSE l.term + 1 END, \
       elected_at = CASE WHEN l.node_id = excluded.node_id THEN l.elected_at \
         ELSE excluded.elected_at END, \
       node_id = excluded.node_id, node_name = excluded.node_name, \
       expires_at = excluded.expires_at, locked = excluded.locked \
     WHERE l.node_id = excluded.node_id OR l.expires_at <= excluded.elected_at \
       OR (l.locked AND excluded.locked AND l.node_id <> ALL($6::text[])) \
     RETURNING node_id, node_name, term, elected_at, expires_at, \
       term IS DISTINCT FROM (SELECT term FROM previous)";

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

    /// Takes the row when it is free, expired, or its holder's session is gone (term + 1),
    /// renews it for its holder (same term); returns the leader after the attempt. Elections
    /// through one store instance run one at a time (they share its lock session).
    pub(crate) async fn leader_elect_write(&self, p: LeaderElectParams) -> StoreResult<Leader> {
        let mut election = self.leader_lock.elect(&p.node_id).await;
        let held = election.state.acquire().await;
        let elected = election.state.elected();
        let outcome = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let won = query_opt(
                &tx,
                ELECT,
                &[
                    &p.node_id,
                    &p.node_name,
                    &p.now,
                    &micros(p.ttl),
                    &held,
                    &elected,
                ],
            )
            .await?;
            let (leader, new_term) = match won {
                Some(row) => (leader(&row)?, col::<bool>(&row, 5)?),
                // Another node holds the row and its lease (the statement locked the row: this
                // reads what kept the caller out).
                None => {
                    let row = query_opt(
                        &tx,
                        &format!("SELECT {LEADER_COLUMNS} FROM leader WHERE id = 1"),
                        &[],
                    )
                    .await?
                    .ok_or_else(|| StoreError::Internal("leader row vanished".into()))?;
                    (leader(&row)?, false)
                }
            };
            let mut notices = Notices::default();
            notices.add_if(new_term, Change::Leader);
            self.commit(tx, notices).await?;
            Ok(leader)
        }
        .await;
        match &outcome {
            Ok(leader) => election.settle(&leader.node_id).await,
            Err(_) => election.fail().await,
        }
        outcome
    }

    /// Ends the term at once (its lease expires now) if `p.node_id` holds it, and releases the
    /// leader lock, so that another node takes over at its next election.
    pub(crate) async fn leader_resign_write(&self, p: LeaderResignParams) -> StoreResult<bool> {
        let mut lock = self.leader_lock.enter().await;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let changed = execute(
            &tx,
            "UPDATE leader SET expires_at = coalesce($1::timestamptz, now()), locked = false \
             WHERE id = 1 AND node_id = $2 AND term = $3 \
               AND expires_at > coalesce($1::timestamptz, now())",
            &[&p.now, &p.node_id, &p.term],
        )
        .await?
            == 1;
        let mut notices = Notices::default();
        notices.add_if(changed, Change::Leader);
        self.commit(tx, notices).await?;
        if changed {
            lock.release().await;
        }
        Ok(changed)
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
