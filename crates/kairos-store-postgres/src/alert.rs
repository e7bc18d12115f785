//! Alert deliveries and the alert evaluator's position in the activity log.
//!
//! A delivery is queued `pending` once per key, claimed `sending` under a lease (a token that
//! fences its end, and an expiry after which another claim takes it over), and ends
//! `delivered` or `failed`, or goes back to `pending` for a retry (or handed back unsent, its
//! attempt not charged). Claims are one statement
//! that locks the due rows with `FOR UPDATE SKIP LOCKED`: concurrent claimers never wait for
//! each other nor take the same delivery, and a row that another claim changed after this
//! statement's snapshot is checked again on its newest version before it is locked. Every
//! other write names what it expects in its WHERE clause and reports whether it applied.

use jiff::Timestamp;
use kairos_store::*;
use tokio_postgres::Row;

use crate::connect::PostgresStore;
use crate::rows::{col, execute, micros, pg_error, query, query_opt};

/// `SELECT {COLUMNS}` (or `RETURNING {COLUMNS}`) rows map with [`delivery`].
const COLUMNS: &str = "id, key, alert, channel, namespace, job, run_id, payload, state, attempts, \
     next_attempt_at, last_error, last_status, created_at, delivered_at, node, lease_token, \
     lease_expires_at";

/// Picks the due deliveries (`$1`: now or `NULL`; pending with their time reached, or held by
/// a claim whose lease expired) of channel `$6` (`NULL`: any), oldest first, skipping rows
/// another claimer holds, and moves them to `sending` under the new lease; the UPDATE repeats
/// the due condition as its fence.
const CLAIM: &str = "WITH picked AS MATERIALIZED ( \
       SELECT id FROM alert_deliveries \
       WHERE ((state = 'pending' AND next_attempt_at <= coalesce($1::timestamptz, now())) \
          OR (state = 'sending' AND lease_expires_at <= coalesce($1::timestamptz, now()))) \
         AND ($6::text IS NULL OR channel = $6) \
       ORDER BY next_attempt_at, id LIMIT $2 \
       FOR UPDATE SKIP LOCKED) \
     UPDATE alert_deliveries d SET state = 'sending', node = $3, lease_token = $4, \
       lease_expires_at = coalesce($1::timestamptz, now()) + $5::bigint * interval '1 microsecond', \
       attempts = d.attempts + 1 \
     FROM picked WHERE d.id = picked.id \
       AND ((d.state = 'pending' AND d.next_attempt_at <= coalesce($1::timestamptz, now())) \
         OR (d.state = 'sending' AND d.lease_expires_at <= coalesce($1::timestamptz, now()))) \
     RETURNING d.id, d.key, d.alert, d.channel, d.namespace, d.job, d.run_id, d.payload, \
       d.state, d.attempts, d.next_attempt_at, d.last_error, d.last_status, d.created_at, \
       d.delivered_at, d.node, d.lease_token, d.lease_expires_at";

fn delivery(row: &Row) -> StoreResult<AlertDelivery> {
    Ok(AlertDelivery {
        id: col(row, 0)?,
        key: col(row, 1)?,
        alert: col(row, 2)?,
        channel: col(row, 3)?,
        namespace: col(row, 4)?,
        job: col(row, 5)?,
        run_id: col(row, 6)?,
        payload: col(row, 7)?,
        state: col::<&str>(row, 8)?.parse().map_err(StoreError::Internal)?,
        attempts: u32::try_from(col::<i32>(row, 9)?).unwrap_or(0),
        next_attempt_at: col(row, 10)?,
        last_error: col(row, 11)?,
        last_status: col::<Option<i32>>(row, 12)?.and_then(|s| u16::try_from(s).ok()),
        created_at: col(row, 13)?,
        delivered_at: col(row, 14)?,
        node: col(row, 15)?,
        lease_token: col(row, 16)?,
        lease_expires_at: col(row, 17)?,
    })
}

impl PostgresStore {
    /// One transaction; a key queued already (or by a concurrent transaction, whose commit
    /// this waits for) is left alone. Keys are inserted in key order, so that two batches
    /// that share keys never wait for each other in a circle; of a key twice in one batch,
    /// the first is queued.
    pub(crate) async fn alert_enqueue_tx(
        &self,
        p: AlertEnqueueParams,
    ) -> StoreResult<Vec<Option<i64>>> {
        let mut order: Vec<usize> = (0..p.alerts.len()).collect();
        order.sort_by(|&x, &y| p.alerts[x].key.cmp(&p.alerts[y].key));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut ids = vec![None; p.alerts.len()];
        for i in order {
            let a = &p.alerts[i];
            let row = query_opt(
                &tx,
                "INSERT INTO alert_deliveries (key, alert, channel, namespace, job, run_id, \
                 payload, state, attempts, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, \
                   coalesce($8::timestamptz, now()), coalesce($8::timestamptz, now())) \
                 ON CONFLICT (key) DO NOTHING RETURNING id",
                &[
                    &a.key,
                    &a.alert,
                    &a.channel,
                    &a.namespace,
                    &a.job,
                    &a.run_id,
                    &a.payload,
                    &p.now,
                ],
            )
            .await?;
            ids[i] = row.as_ref().map(|r| col::<i64>(r, 0)).transpose()?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(ids)
    }

    pub(crate) async fn alert_claim_write(
        &self,
        p: AlertClaimParams,
    ) -> StoreResult<Vec<AlertDelivery>> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let client = self.client().await?;
        let mut claimed = query(
            &client,
            CLAIM,
            &[
                &p.now,
                &i64::from(p.limit.max(1)),
                &p.node,
                &token,
                &micros(p.lease),
                &p.channel,
            ],
        )
        .await?
        .iter()
        .map(delivery)
        .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|d| (d.next_attempt_at, d.id));
        Ok(claimed)
    }

    pub(crate) async fn alert_finish_write(&self, p: AlertFinishParams) -> StoreResult<bool> {
        // (state, next attempt, ended, error, status)
        let (state, next, ended, error, status): (_, Option<Timestamp>, _, Option<&str>, _) =
            match &p.outcome {
                AlertOutcome::Delivered { status } => {
                    (DeliveryState::Delivered, None, true, None, *status)
                }
                AlertOutcome::Retry { at, error, status } => (
                    DeliveryState::Pending,
                    Some(*at),
                    false,
                    Some(error.as_str()),
                    *status,
                ),
                AlertOutcome::Failed { error, status } => (
                    DeliveryState::Failed,
                    None,
                    true,
                    Some(error.as_str()),
                    *status,
                ),
                AlertOutcome::Release { at } => return self.alert_release(&p, *at).await,
            };
        let client = self.client().await?;
        let applied = execute(
            &client,
            "UPDATE alert_deliveries SET state = $3, \
             next_attempt_at = coalesce($4::timestamptz, next_attempt_at), \
             delivered_at = CASE WHEN $5 THEN coalesce($6::timestamptz, now()) END, \
             last_error = $7, last_status = $8, \
             node = NULL, lease_token = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_token = $2 AND state = 'sending'",
            &[
                &p.id,
                &p.lease_token,
                &state.as_str(),
                &next,
                &ended,
                &p.now,
                &error,
                &status.map(i32::from),
            ],
        )
        .await?;
        Ok(applied == 1)
    }

    /// Hands a delivery back to `pending`, due at `at`, without charging the claim's attempt;
    /// the last attempt's error and status stay.
    async fn alert_release(&self, p: &AlertFinishParams, at: Timestamp) -> StoreResult<bool> {
        let client = self.client().await?;
        let applied = execute(
            &client,
            "UPDATE alert_deliveries SET state = 'pending', next_attempt_at = $3, \
             attempts = greatest(attempts - 1, 0), \
             node = NULL, lease_token = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_token = $2 AND state = 'sending'",
            &[&p.id, &p.lease_token, &at],
        )
        .await?;
        Ok(applied == 1)
    }

    pub(crate) async fn alert_list_read(
        &self,
        p: AlertListParams,
    ) -> StoreResult<Vec<AlertDelivery>> {
        let limit = if p.limit == 0 {
            100
        } else {
            i64::from(p.limit)
        };
        // A job's deliveries are read through the `(namespace, job, id)` index, which a
        // condition that may not apply (`$2 IS NULL OR …`) would keep a generic plan from using.
        let (job, namespace, name) = match &p.job {
            Some((namespace, name)) => (
                "namespace = $2 AND job = $3",
                Some(namespace.as_str()),
                Some(name.as_str()),
            ),
            None => ("$2::text IS NULL AND $3::text IS NULL", None, None),
        };
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {COLUMNS} FROM alert_deliveries WHERE {job} \
                 AND ($1::text[] IS NULL OR namespace = ANY($1)) \
                 AND ($4::text IS NULL OR state = $4) AND ($5::bigint IS NULL OR id < $5) \
                 ORDER BY id DESC LIMIT $6"
            ),
            &[
                &p.namespaces,
                &namespace,
                &name,
                &p.state.map(|s| s.as_str()),
                &p.before_id,
                &limit,
            ],
        )
        .await?
        .iter()
        .map(delivery)
        .collect()
    }

    pub(crate) async fn alert_prune_before(&self, p: AlertPruneParams) -> StoreResult<u64> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM alert_deliveries WHERE delivered_at < $1 \
             AND (state = 'delivered' OR state = 'failed')",
            &[&p.before],
        )
        .await
    }

    pub(crate) async fn alert_cursor_read(&self) -> StoreResult<Option<ActivityCursor>> {
        let client = self.client().await?;
        query_opt(
            &client,
            "SELECT tx, id, seq FROM alert_cursor WHERE slot = 1",
            &[],
        )
        .await?
        .map(|r| {
            Ok(ActivityCursor {
                tx: col(&r, 0)?,
                id: col(&r, 1)?,
                seq: col(&r, 2)?,
            })
        })
        .transpose()
    }

    /// Compare-and-set: the first position is inserted only if none is stored (of two first
    /// inserts at once, the second waits for the first to commit, then does nothing), a later
    /// one written only over the position expected (an UPDATE that waited for a concurrent
    /// one checks its WHERE again on the row that one wrote).
    pub(crate) async fn alert_cursor_cas(&self, p: AlertCursorParams) -> StoreResult<bool> {
        let to = p.to;
        let client = self.client().await?;
        let applied = match p.expected {
            None => {
                execute(
                    &client,
                    "INSERT INTO alert_cursor (slot, tx, id, seq) VALUES (1, $1, $2, $3) \
                     ON CONFLICT (slot) DO NOTHING",
                    &[&to.tx, &to.id, &to.seq],
                )
                .await?
            }
            Some(from) => {
                execute(
                    &client,
                    "UPDATE alert_cursor SET tx = $1, id = $2, seq = $3 \
                     WHERE slot = 1 AND tx = $4 AND id = $5 AND seq = $6",
                    &[&to.tx, &to.id, &to.seq, &from.tx, &from.id, &from.seq],
                )
                .await?
            }
        };
        Ok(applied == 1)
    }
}
