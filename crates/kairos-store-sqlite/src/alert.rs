//! Alert deliveries and the alert evaluator's position in the activity log (both in the main
//! database, not the activity one).
//!
//! A delivery is queued `pending` once per key, claimed `sending` under a lease (a token that
//! fences its end, and an expiry after which another claim takes it over), and ends
//! `delivered` or `failed`, or goes back to `pending` for a retry (or handed back unsent, its
//! attempt not charged). Every write names what it
//! expects in its WHERE clause and reports whether it applied; SQLite has one writer, but the
//! statements are written as if it had many (like the PostgreSQL store's).

use jiff::Timestamp;
use kairos_store::*;
use rusqlite::{Connection, Row, params};

use crate::rows::{all, col, exec, first, instant, micros, opt_instant};
use crate::store::namespaces_json;

/// `SELECT {COLUMNS}` (or `RETURNING {COLUMNS}`) rows map with [`delivery`].
const COLUMNS: &str = "id, key, alert, channel, namespace, job, run_id, payload, state, attempts, \
     next_attempt_at, last_error, last_status, created_at, delivered_at, node, lease_token, \
     lease_expires_at";

/// The condition of a due delivery (`?1`: now): pending and its time reached, or held by a
/// claim whose lease expired. Each arm is the condition of a partial index.
const DUE: &str = "((state = 'pending' AND next_attempt_at <= ?1) \
     OR (state = 'sending' AND lease_expires_at <= ?1))";

fn delivery(row: &Row<'_>) -> StoreResult<AlertDelivery> {
    let state: String = col(row, 8)?;
    Ok(AlertDelivery {
        id: col(row, 0)?,
        key: col(row, 1)?,
        alert: col(row, 2)?,
        channel: col(row, 3)?,
        namespace: col(row, 4)?,
        job: col(row, 5)?,
        run_id: col(row, 6)?,
        payload: col(row, 7)?,
        state: state.parse().map_err(StoreError::Internal)?,
        attempts: u32::try_from(col::<i64>(row, 9)?).unwrap_or(0),
        next_attempt_at: instant(col(row, 10)?)?,
        last_error: col(row, 11)?,
        last_status: col::<Option<i64>>(row, 12)?.and_then(|s| u16::try_from(s).ok()),
        created_at: instant(col(row, 13)?)?,
        delivered_at: opt_instant(col(row, 14)?)?,
        node: col(row, 15)?,
        lease_token: col(row, 16)?,
        lease_expires_at: opt_instant(col(row, 17)?)?,
    })
}

pub(crate) fn enqueue(
    tx: &Connection,
    p: &AlertEnqueueParams,
    now: Timestamp,
) -> StoreResult<Vec<Option<i64>>> {
    p.alerts
        .iter()
        .map(|a| {
            first(
                tx,
                "INSERT INTO alert_deliveries (key, alert, channel, namespace, job, run_id, \
                 payload, state, attempts, next_attempt_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8) \
                 ON CONFLICT (key) DO NOTHING RETURNING id",
                params![
                    a.key,
                    a.alert,
                    a.channel,
                    a.namespace,
                    a.job,
                    a.run_id,
                    a.payload,
                    micros(now)
                ],
                |r| col::<i64>(r, 0),
            )
        })
        .collect()
}

/// Claims the due deliveries (of `p.channel`, if given), oldest first, with one new lease
/// `token`; the claimed rows come back from the UPDATE itself, which repeats the due condition
/// as its fence.
pub(crate) fn claim(
    tx: &Connection,
    p: &AlertClaimParams,
    token: &str,
    now: Timestamp,
    expires: Timestamp,
) -> StoreResult<Vec<AlertDelivery>> {
    let mut claimed = all(
        tx,
        &format!(
            "UPDATE alert_deliveries SET state = 'sending', node = ?2, lease_token = ?3, \
             lease_expires_at = ?4, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM alert_deliveries WHERE {DUE} \
               AND (?6 IS NULL OR channel = ?6) \
               ORDER BY next_attempt_at, id LIMIT ?5) \
             AND {DUE} RETURNING {COLUMNS}"
        ),
        params![
            micros(now),
            p.node,
            token,
            micros(expires),
            i64::from(p.limit.max(1)),
            p.channel
        ],
        delivery,
    )?;
    claimed.sort_by_key(|d| (d.next_attempt_at, d.id));
    Ok(claimed)
}

pub(crate) fn finish(tx: &Connection, p: &AlertFinishParams, now: Timestamp) -> StoreResult<bool> {
    let now = micros(now);
    // (state, next attempt, end, error, status)
    let (state, next, ended, error, status) = match &p.outcome {
        AlertOutcome::Delivered { status } => {
            (DeliveryState::Delivered, None, Some(now), None, *status)
        }
        AlertOutcome::Retry { at, error, status } => (
            DeliveryState::Pending,
            Some(micros(*at)),
            None,
            Some(error.as_str()),
            *status,
        ),
        AlertOutcome::Failed { error, status } => (
            DeliveryState::Failed,
            None,
            Some(now),
            Some(error.as_str()),
            *status,
        ),
        AlertOutcome::Release { at } => return release(tx, p, *at),
    };
    let applied = exec(
        tx,
        "UPDATE alert_deliveries SET state = ?3, \
         next_attempt_at = COALESCE(?4, next_attempt_at), delivered_at = ?5, last_error = ?6, \
         last_status = ?7, node = NULL, lease_token = NULL, lease_expires_at = NULL \
         WHERE id = ?1 AND lease_token = ?2 AND state = 'sending'",
        params![
            p.id,
            p.lease_token,
            state.as_str(),
            next,
            ended,
            error,
            status.map(i64::from)
        ],
    )?;
    Ok(applied == 1)
}

/// Hands a delivery back to `pending`, due at `at`, without charging the claim's attempt; the
/// last attempt's error and status stay.
fn release(tx: &Connection, p: &AlertFinishParams, at: Timestamp) -> StoreResult<bool> {
    let applied = exec(
        tx,
        "UPDATE alert_deliveries SET state = 'pending', next_attempt_at = ?3, \
         attempts = MAX(attempts - 1, 0), node = NULL, lease_token = NULL, \
         lease_expires_at = NULL \
         WHERE id = ?1 AND lease_token = ?2 AND state = 'sending'",
        params![p.id, p.lease_token, micros(at)],
    )?;
    Ok(applied == 1)
}

pub(crate) fn list(conn: &Connection, p: &AlertListParams) -> StoreResult<Vec<AlertDelivery>> {
    let limit = if p.limit == 0 {
        100
    } else {
        i64::from(p.limit)
    };
    // A job's deliveries are read through the `(namespace, job, id)` index, which a condition
    // that may not apply (`?2 IS NULL OR …`) would keep the planner from using.
    let (job, namespace, name) = match &p.job {
        Some((namespace, name)) => (
            "namespace = ?2 AND job = ?3",
            Some(namespace.as_str()),
            Some(name.as_str()),
        ),
        None => ("?2 IS NULL AND ?3 IS NULL", None, None),
    };
    all(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM alert_deliveries WHERE {job} \
             AND (?1 IS NULL OR namespace IN (SELECT value FROM json_each(?1))) \
             AND (?4 IS NULL OR state = ?4) AND (?5 IS NULL OR id < ?5) \
             ORDER BY id DESC LIMIT ?6"
        ),
        params![
            namespaces_json(p.namespaces.as_deref())?,
            namespace,
            name,
            p.state.map(|s| s.as_str()),
            p.before_id,
            limit
        ],
        delivery,
    )
}

pub(crate) fn prune(tx: &Connection, p: AlertPruneParams) -> StoreResult<u64> {
    let deleted = exec(
        tx,
        "DELETE FROM alert_deliveries WHERE delivered_at < ?1 \
         AND (state = 'delivered' OR state = 'failed')",
        [micros(p.before)],
    )?;
    Ok(deleted as u64)
}

pub(crate) fn cursor(conn: &Connection) -> StoreResult<Option<ActivityCursor>> {
    first(
        conn,
        "SELECT tx, id, seq FROM alert_cursor WHERE slot = 1",
        [],
        |r| {
            Ok(ActivityCursor {
                tx: col(r, 0)?,
                id: col(r, 1)?,
                seq: col(r, 2)?,
            })
        },
    )
}

/// Compare-and-set: the first position is inserted only if none is stored (a concurrent first
/// insert makes this one do nothing), a later one written only over the position expected.
pub(crate) fn cursor_set(tx: &Connection, p: &AlertCursorParams) -> StoreResult<bool> {
    let to = p.to;
    let applied = match p.expected {
        None => exec(
            tx,
            "INSERT INTO alert_cursor (slot, tx, id, seq) VALUES (1, ?1, ?2, ?3) \
             ON CONFLICT (slot) DO NOTHING",
            params![to.tx, to.id, to.seq],
        )?,
        Some(from) => exec(
            tx,
            "UPDATE alert_cursor SET tx = ?1, id = ?2, seq = ?3 \
             WHERE slot = 1 AND tx = ?4 AND id = ?5 AND seq = ?6",
            params![to.tx, to.id, to.seq, from.tx, from.id, from.seq],
        )?,
    };
    Ok(applied == 1)
}
