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

pub(crate) fn prune(conn: &Connection, before: jiff::Timestamp) -> StoreResult<u64> {
    let n = exec(conn, "DELETE FROM activity WHERE at < ?1", [micros(before)])?;
    Ok(n as u64)
}
