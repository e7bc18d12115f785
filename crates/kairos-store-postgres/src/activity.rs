//! The activity log (see `kairos_store::ActivityCursor`): entries ordered by the writing
//! transaction, then id; a reader sees only entries of transactions older than every one
//! still running, so none is committed behind a position it has passed.

use jiff::Timestamp;
use kairos_store::*;

use crate::connect::PostgresStore;
use crate::rows::{col, execute, query, query_opt};

impl PostgresStore {
    pub(crate) async fn activity_append_write(
        &self,
        records: Vec<ActivityRecord>,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let at: Vec<Timestamp> = records.iter().map(|r| r.at).collect();
        let node: Vec<&str> = records.iter().map(|r| r.node.as_str()).collect();
        let kind: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        let namespace: Vec<Option<&str>> = records.iter().map(|r| r.namespace.as_deref()).collect();
        let job: Vec<Option<&str>> = records.iter().map(|r| r.job.as_deref()).collect();
        let run_id: Vec<Option<i64>> = records.iter().map(|r| r.run_id).collect();
        let data: Vec<&str> = records.iter().map(|r| r.data.as_str()).collect();
        let client = self.client().await?;
        // One statement: its own transaction, so every entry of the batch shares `tx`.
        execute(
            &client,
            "INSERT INTO activity (at, node, kind, namespace, job, run_id, data) \
             SELECT a.at, a.node, a.kind, a.namespace, a.job, a.run_id, a.data \
             FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], \
               $5::text[], $6::bigint[], $7::text[]) WITH ORDINALITY \
               AS a (at, node, kind, namespace, job, run_id, data, n) ORDER BY n",
            &[&at, &node, &kind, &namespace, &job, &run_id, &data],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn activity_read_entries(
        &self,
        p: ActivityReadParams,
    ) -> StoreResult<Vec<ActivityEntry>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT tx::text::bigint, id, at, node, kind, namespace, job, run_id, data \
             FROM activity \
             WHERE (tx, id) > ($1::bigint::text::xid8, $2) \
               AND tx < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx, id LIMIT $3",
            &[&p.after.tx, &p.after.id, &i64::from(p.limit)],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ActivityEntry {
                    cursor: ActivityCursor {
                        tx: col(r, 0)?,
                        id: col(r, 1)?,
                    },
                    record: ActivityRecord {
                        at: col(r, 2)?,
                        node: col(r, 3)?,
                        kind: col(r, 4)?,
                        namespace: col(r, 5)?,
                        job: col(r, 6)?,
                        run_id: col(r, 7)?,
                        data: col(r, 8)?,
                    },
                })
            })
            .collect()
    }

    pub(crate) async fn activity_head_position(&self) -> StoreResult<ActivityCursor> {
        let client = self.client().await?;
        // Every entry of a transaction older than the oldest one running is behind this.
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
        Ok(ActivityCursor { tx: xmin, id: 0 })
    }

    pub(crate) async fn activity_contains_entry(&self, c: ActivityCursor) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(
            query_opt(&client, "SELECT 1 FROM activity WHERE id = $1", &[&c.id])
                .await?
                .is_some(),
        )
    }

    pub(crate) async fn activity_prune_before(&self, p: ActivityPruneParams) -> StoreResult<u64> {
        let client = self.client().await?;
        let keep = i64::try_from(p.keep_at_most).unwrap_or(i64::MAX);
        execute(
            &client,
            "DELETE FROM activity WHERE at < $1 \
               OR id <= (SELECT max(id) FROM activity) - $2",
            &[&p.before, &keep],
        )
        .await
    }
}
