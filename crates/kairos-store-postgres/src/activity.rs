//! The activity log (see `kairos_store::ActivityCursor`): batches ordered by the writing
//! transaction, then id; a reader sees only batches of transactions older than every one
//! still running, so none is committed behind a position it has passed.

use kairos_store::*;

use crate::connect::PostgresStore;
use crate::rows::{col, execute, query, query_opt};

/// Batches read per statement.
const BATCHES: i64 = 16;

impl PostgresStore {
    pub(crate) async fn activity_append_write(
        &self,
        records: Vec<ActivityRecord>,
    ) -> StoreResult<()> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO activity_batches (at, node, entries) VALUES ($1, $2, $3)",
            &[
                &last.at,
                &first.node,
                &kairos_store::activity::encode(&records),
            ],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn activity_read_entries(
        &self,
        p: ActivityReadParams,
    ) -> StoreResult<Vec<ActivityEntry>> {
        let limit = p.limit.max(1) as usize;
        let client = self.client().await?;
        let mut out = Vec::new();
        // From the batch holding the position on (a batch read in part is read again), then
        // strictly after the last batch read.
        let (mut tx, mut id, mut inclusive) = (p.after.tx, p.after.id, true);
        loop {
            let rows = query(
                &client,
                "SELECT tx::text::bigint, id, node, entries FROM activity_batches \
                 WHERE (CASE WHEN $3 THEN (tx, id) >= ($1::bigint::text::xid8, $2) \
                             ELSE (tx, id) > ($1::bigint::text::xid8, $2) END) \
                   AND tx < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY tx, id LIMIT $4",
                &[&tx, &id, &inclusive, &BATCHES],
            )
            .await?;
            let Some(last) = rows.last() else { break };
            let (last_tx, last_id): (i64, i64) = (col(last, 0)?, col(last, 1)?);
            for r in &rows {
                let (btx, bid, node, entries): (i64, i64, &str, &str) =
                    (col(r, 0)?, col(r, 1)?, col(r, 2)?, col(r, 3)?);
                kairos_store::activity::decode(btx, bid, node, entries, p.after, &mut out)?;
            }
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
            (tx, id, inclusive) = (last_tx, last_id, false);
        }
        Ok(out)
    }

    pub(crate) async fn activity_head_position(&self) -> StoreResult<ActivityCursor> {
        let client = self.client().await?;
        // Every batch of a transaction older than the oldest one running is behind this.
        let row = query_opt(
            &client,
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await?;
        let xmin: i64 = match row {
            Some(r) => col(&r, 0)?,
            None => 0,
        };
        Ok(ActivityCursor {
            tx: xmin,
            id: 0,
            seq: 0,
        })
    }

    pub(crate) async fn activity_contains_entry(&self, c: ActivityCursor) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(query_opt(
            &client,
            "SELECT 1 FROM activity_batches WHERE id = $1",
            &[&c.id],
        )
        .await?
        .is_some())
    }

    pub(crate) async fn activity_prune_before(&self, p: ActivityPruneParams) -> StoreResult<u64> {
        let client = self.client().await?;
        let keep = i64::try_from(p.keep_at_most).unwrap_or(i64::MAX);
        execute(
            &client,
            "DELETE FROM activity_batches WHERE at < $1 \
               OR id <= (SELECT max(id) FROM activity_batches) - $2",
            &[&p.before, &keep],
        )
        .await
    }
}
