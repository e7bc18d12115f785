//! How a batch of the activity log is kept: one row per batch, its entries as one JSON array
//! (`[[at_us, kind, namespace, job, run_id, data], ...]`, `data` embedded as JSON), so that a
//! node writing thousands of events a second writes a few rows, not thousands.

use jiff::Timestamp;

use crate::error::StoreResult;
use crate::store::{ActivityCursor, ActivityEntry, ActivityRecord};

/// The entries of a batch as stored. Each record's `data` is JSON (what the recorder writes);
/// anything else is kept as a JSON string.
pub fn encode(records: &[ActivityRecord]) -> String {
    use std::io::Write as _;
    let mut out: Vec<u8> = Vec::with_capacity(records.len() * 200 + 2);
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "[{},", r.at.as_microsecond());
        let _ = serde_json::to_writer(&mut out, &r.kind);
        for field in [&r.namespace, &r.job] {
            out.push(b',');
            let _ = serde_json::to_writer(&mut out, field);
        }
        match r.run_id {
            Some(id) => {
                let _ = write!(out, ",{id},");
            }
            None => out.extend_from_slice(b",null,"),
        }
        let data = r.data.trim();
        if data.starts_with('{') && data.ends_with('}') {
            out.extend_from_slice(data.as_bytes());
        } else {
            let _ = serde_json::to_writer(&mut out, data);
        }
        out.push(b']');
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_else(|_| "[]".into())
}

/// The entries of the batch at (`tx`, `id`) of node `node` after `after`, into `out` until it
/// holds `limit`. An entry that does not read back (a bad instant) is passed over.
pub fn decode(
    tx: i64,
    id: i64,
    node: &str,
    entries: &str,
    after: ActivityCursor,
    limit: usize,
    out: &mut Vec<ActivityEntry>,
) -> StoreResult<()> {
    type Row = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<i64>,
        serde_json::Value,
    );
    // A batch that does not parse is passed over, not an error: one bad batch must not stop
    // every stream at it.
    let Ok(rows) = serde_json::from_str::<Vec<Row>>(entries) else {
        return Ok(());
    };
    for (seq, (at, kind, namespace, job, run_id, data)) in rows.into_iter().enumerate() {
        let cursor = ActivityCursor {
            tx,
            id,
            seq: seq as i64,
        };
        if cursor <= after {
            continue;
        }
        if out.len() >= limit {
            break;
        }
        let Ok(at) = Timestamp::from_microsecond(at) else {
            continue;
        };
        out.push(ActivityEntry {
            cursor,
            record: ActivityRecord {
                at,
                node: node.to_owned(),
                kind,
                namespace,
                job,
                run_id,
                data: data.to_string(),
            },
        });
    }
    Ok(())
}
