//! The activity log (see `kairos_store::ActivityCursor`): one writer, so ids are in commit
//! order and a position is the id alone (`tx` is 0).

use kairos_store::*;
use rusqlite::{Connection, params};

use crate::rows::{all, col, exec, first, instant, micros};

pub(crate) fn append(conn: &Connection, records: &[ActivityRecord]) -> StoreResult<()> {
    for r in records {
        exec(
            conn,
            "INSERT INTO activity (at, node, kind, namespace, job, run_id, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                micros(r.at),
                r.node,
                r.kind,
                r.namespace,
                r.job,
                r.run_id,
                r.data
            ],
        )?;
    }
    Ok(())
}

pub(crate) fn read(conn: &Connection, p: &ActivityReadParams) -> StoreResult<Vec<ActivityEntry>> {
    all(
        conn,
        "SELECT id, at, node, kind, namespace, job, run_id, data FROM activity \
         WHERE id > ?1 ORDER BY id LIMIT ?2",
        params![p.after.id, i64::from(p.limit)],
        |r| {
            Ok(ActivityEntry {
                cursor: ActivityCursor {
                    tx: 0,
                    id: col(r, 0)?,
                },
                record: ActivityRecord {
                    at: instant(col(r, 1)?)?,
                    node: col(r, 2)?,
                    kind: col(r, 3)?,
                    namespace: col(r, 4)?,
                    job: col(r, 5)?,
                    run_id: col(r, 6)?,
                    data: col(r, 7)?,
                },
            })
        },
    )
}

pub(crate) fn head(conn: &Connection) -> StoreResult<ActivityCursor> {
    let id = first(conn, "SELECT coalesce(max(id), 0) FROM activity", [], |r| {
        col::<i64>(r, 0)
    })?
    .unwrap_or(0);
    Ok(ActivityCursor { tx: 0, id })
}

pub(crate) fn contains(conn: &Connection, c: ActivityCursor) -> StoreResult<bool> {
    Ok(
        first(conn, "SELECT 1 FROM activity WHERE id = ?1", [c.id], |r| {
            col::<i64>(r, 0)
        })?
        .is_some(),
    )
}

/// Ids grow with time here (one writer, one clock), so both limits are a cut by id: the first
/// entry from `before` on is found scanning from the oldest (the ones deleted), without an
/// index on `at` for every insert to keep.
pub(crate) fn prune(conn: &Connection, p: ActivityPruneParams) -> StoreResult<u64> {
    let by_time = first(
        conn,
        "SELECT coalesce((SELECT id FROM activity WHERE at >= ?1 ORDER BY id LIMIT 1), \
           (SELECT max(id) + 1 FROM activity), 0)",
        [micros(p.before)],
        |r| col::<i64>(r, 0),
    )?
    .unwrap_or(0);
    let keep = i64::try_from(p.keep_at_most).unwrap_or(i64::MAX);
    let by_count = head(conn)?.id.saturating_sub(keep).saturating_add(1);
    let n = exec(
        conn,
        "DELETE FROM activity WHERE id < ?1",
        [by_time.max(by_count)],
    )?;
    Ok(n as u64)
}
