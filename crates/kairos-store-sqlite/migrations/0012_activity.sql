-- The activity log: what happened on every node (job changes, runs queued, started and
-- finished, leadership), appended in batches by each node and read by the event stream
-- (`GET /api/v1/events/stream`), which resumes from an entry's id. Kept for a while, then
-- pruned by time.
CREATE TABLE activity (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    node       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    namespace  TEXT,
    job        TEXT,
    run_id     INTEGER,
    data       TEXT    NOT NULL
);
CREATE INDEX activity_at ON activity (at);
