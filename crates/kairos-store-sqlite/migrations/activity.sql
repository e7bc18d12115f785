-- The activity log: what happened on the node (job changes, runs queued, started and
-- finished, leadership), appended in batches and read by the event stream
-- (`GET /api/v1/events/stream`), which resumes from an entry's id. Kept for a while, then
-- pruned (by id: ids grow with time here, so no index on `at` is kept). In a file of its own beside the store's (`kairos.activity.db`), so that its
-- writes never wait for the store's single writer, nor the store's for them; created at open.
CREATE TABLE IF NOT EXISTS activity (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    node       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    namespace  TEXT,
    job        TEXT,
    run_id     INTEGER,
    data       TEXT    NOT NULL
);
