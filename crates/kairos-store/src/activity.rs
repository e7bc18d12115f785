//! How a batch of the activity log is kept: one row per batch, its entries as one JSON array
//! (`[[at_us, kind, namespace, job, run_id, data], ...]`, `data` embedded as JSON), so that a
//! node writing thousands of events a second writes a few rows, not thousands.

use jiff::Timestamp;

use crate::error::{StoreError, StoreResult};
use crate::store::{ActivityCursor, ActivityEntry, ActivityRecord};

/// The entries of a batch as stored.
pub fn encode(records: &[ActivityRecord]) -> String {
    let mut out = String::with_capacity(records.len() * 160 + 2);
    out.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "null".into());
        let opt = |s: &Option<String>| s.as_deref().map_or_else(|| "null".into(), text);
        // `data` is JSON already; anything else is kept as a string.
        let data = if serde_json::from_str::<serde::de::IgnoredAny>(&r.data).is_ok() {
            r.data.clone()
        } else {
            text(&r.data)
        };
        out.push_str(&format!(
            "[{},{},{},{},{},{}]",
            r.at.as_microsecond(),
            text(&r.kind),
            opt(&r.namespace),
            opt(&r.job),
            r.run_id.map_or_else(|| "null".into(), |id| id.to_string()),
            data
        ));
    }
    out.push(']');
    out
}

/// The entries of the batch at (`tx`, `id`) of node `node`, after `after`.
pub fn decode(
    tx: i64,
    id: i64,
    node: &str,
    entries: &str,
    after: ActivityCursor,
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
    let rows: Vec<Row> = serde_json::from_str(entries)
        .map_err(|e| StoreError::Internal(format!("activity batch {id} does not parse: {e}")))?;
    for (seq, (at, kind, namespace, job, run_id, data)) in rows.into_iter().enumerate() {
        let cursor = ActivityCursor {
            tx,
            id,
            seq: seq as i64,
        };
        if cursor <= after {
            continue;
        }
        out.push(ActivityEntry {
            cursor,
            record: ActivityRecord {
                at: Timestamp::from_microsecond(at)
                    .map_err(|e| StoreError::Internal(format!("bad instant {at}: {e}")))?,
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
