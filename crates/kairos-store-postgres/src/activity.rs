//! The activity log (see `kairos_store::ActivityCursor`). Batches are appended one at a time
//! under an advisory lock of the schema's log (a few rows a second per node: no contention to
//! speak of), taken before the batch's id: ids are committed in their order, so a reader reads
//! by id alone and never meets a batch behind a position it passed, and no other transaction
//! of the database can hold the stream back.

use deadpool_postgres::GenericClient;
use kairos_store::*;

use crate::connect::PostgresStore;
use crate::rows::{col, execute, pg_error, query, query_opt};

/// Batches read per statement.
const BATCHES: i64 = 16;

impl PostgresStore {
    /// The advisory lock every append of this schema's activity log takes before its id (for
    /// a tool or test that writes the log as the store does).
    pub fn activity_lock_key(&self) -> i64 {
        crate::connect::fnv1a(&format!("kairos.activity.{}", self.schema())) as i64
    }

    pub(crate) async fn activity_append_write(
        &self,
        records: Vec<ActivityRecord>,
    ) -> StoreResult<()> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        let entries = kairos_store::activity::encode(&records);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        execute(
            &tx,
            "SELECT pg_advisory_xact_lock($1)",
            &[&self.activity_lock_key()],
        )
        .await?;
        execute(
            &tx,
            "INSERT INTO activity_batches (at, node, entries) VALUES ($1, $2, $3)",
            &[&last.at, &first.node, &entries],
        )
        .await?;
        tx.commit().await.map_err(pg_error)
    }

    pub(crate) async fn activity_read_entries(
        &self,
        p: ActivityReadParams,
    ) -> StoreResult<Vec<ActivityEntry>> {
        let limit = p.limit.max(1) as usize;
        let client = self.client().await?;
        let mut out = Vec::new();
        // From the batch holding the position on (a batch read in part is read again).
        let mut from = p.after.id;
        while out.len() < limit {
            let rows = query(
                &client,
                "SELECT id, node, entries FROM activity_batches WHERE id >= $1 \
                 ORDER BY id LIMIT $2",
                &[&from, &BATCHES],
            )
            .await?;
            let Some(last) = rows.last() else { break };
            let last_id: i64 = col(last, 0)?;
            for r in &rows {
                let (id, node, entries): (i64, &str, &str) = (col(r, 0)?, col(r, 1)?, col(r, 2)?);
                kairos_store::activity::decode(0, id, node, entries, p.after, limit, &mut out)?;
            }
            from = last_id + 1;
        }
        out.truncate(limit);
        Ok(out)
    }

    pub(crate) async fn activity_head_position(&self) -> StoreResult<ActivityCursor> {
        let client = self.client().await?;
        let id = head_id(&client).await?;
        Ok(ActivityCursor {
            tx: 0,
            id,
            seq: i64::MAX,
        })
    }

    pub(crate) async fn activity_contains_entry(&self, c: ActivityCursor) -> StoreResult<bool> {
        if c.tx != 0 {
            return Ok(false);
        }
        let client = self.client().await?;
        Ok(query_opt(
            &client,
            "SELECT 1 FROM activity_batches WHERE id = $1",
            &[&c.id],
        )
        .await?
        .is_some())
    }

    /// A prefix in id order: the batches before the first one from `before` on (by the
    /// clocks of the nodes that wrote them), and beyond the count.
    pub(crate) async fn activity_prune_before(&self, p: ActivityPruneParams) -> StoreResult<u64> {
        let client = self.client().await?;
        let keep = i64::try_from(p.keep_at_most).unwrap_or(i64::MAX);
        execute(
            &client,
            "DELETE FROM activity_batches WHERE id < greatest( \
               least(coalesce((SELECT min(id) FROM activity_batches WHERE at >= $1), \
                              (SELECT max(id) FROM activity_batches), 0), \
                     coalesce($3::bigint, 9223372036854775807)), \
               coalesce((SELECT max(id) FROM activity_batches), 0) - $2 + 1)",
            &[&p.before, &keep, &p.keep_from],
        )
        .await
    }
}

async fn head_id(c: &impl GenericClient) -> StoreResult<i64> {
    let row = query_opt(c, "SELECT coalesce(max(id), 0) FROM activity_batches", &[]).await?;
    match row {
        Some(r) => col(&r, 0),
        None => Ok(0),
    }
}
