//! The activity log (see `kairos_store::ActivityCursor`): one writer, so ids are in commit
//! order and a batch's position is its id alone (`tx` is 0).

use kairos_store::*;
use rusqlite::{Connection, params};

use crate::rows::{all, col, exec, first, micros};

pub(crate) fn append(conn: &Connection, records: &[ActivityRecord]) -> StoreResult<()> {
    let (Some(first_record), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    exec(
        conn,
        "INSERT INTO activity_batches (at, node, entries) VALUES (?1, ?2, ?3)",
        params![
            micros(last.at),
            first_record.node,
            kairos_store::activity::encode(records)
        ],
    )?;
    Ok(())
}

pub(crate) fn read(conn: &Connection, p: &ActivityReadParams) -> StoreResult<Vec<ActivityEntry>> {
    let limit = p.limit.max(1) as usize;
    let mut out = Vec::new();
    // Batches from the one holding the position on (a batch read in part is read again).
    let mut from = p.after.id;
    while out.len() < limit {
        let batches: Vec<(i64, String, String)> = all(
            conn,
            "SELECT id, node, entries FROM activity_batches WHERE id >= ?1 ORDER BY id LIMIT 16",
            [from],
            |r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)),
        )?;
        let Some(last_id) = batches.last().map(|b| b.0) else {
            break;
        };
        for (id, node, entries) in &batches {
            kairos_store::activity::decode(0, *id, node, entries, p.after, limit, &mut out)?;
        }
        from = last_id + 1;
    }
    out.truncate(limit);
    Ok(out)
}

pub(crate) fn head(conn: &Connection) -> StoreResult<ActivityCursor> {
    let id = first(
        conn,
        "SELECT coalesce(max(id), 0) FROM activity_batches",
        [],
        |r| col::<i64>(r, 0),
    )?
    .unwrap_or(0);
    Ok(ActivityCursor {
        tx: 0,
        id,
        seq: i64::MAX,
    })
}

pub(crate) fn contains(conn: &Connection, c: ActivityCursor) -> StoreResult<bool> {
    if c.tx != 0 {
        return Ok(false);
    }
    Ok(first(
        conn,
        "SELECT 1 FROM activity_batches WHERE id = ?1",
        [c.id],
        |r| col::<i64>(r, 0),
    )?
    .is_some())
}

/// Ids grow with time here (one writer, one clock), so both limits are a cut by id: the first
/// batch from `before` on is found scanning from the oldest (the ones deleted), without an
/// index on `at` for every insert to keep.
pub(crate) fn prune(conn: &Connection, p: ActivityPruneParams) -> StoreResult<u64> {
    let by_time = first(
        conn,
        "SELECT coalesce((SELECT id FROM activity_batches WHERE at >= ?1 ORDER BY id LIMIT 1), \
           (SELECT max(id) FROM activity_batches), 0)",
        [micros(p.before)],
        |r| col::<i64>(r, 0),
    )?
    .unwrap_or(0);
    let by_time = p.keep_from.map_or(by_time, |id| by_time.min(id));
    let keep = i64::try_from(p.keep_at_most).unwrap_or(i64::MAX);
    let by_count = head(conn)?.id.saturating_sub(keep).saturating_add(1);
    let n = exec(
        conn,
        "DELETE FROM activity_batches WHERE id < ?1",
        [by_time.max(by_count)],
    )?;
    Ok(n as u64)
}
