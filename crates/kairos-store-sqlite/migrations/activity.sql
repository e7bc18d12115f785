-- The activity log: what happened on the node (job changes, runs queued, started and
-- finished, leadership), read by the event stream (`GET /api/v1/events/stream`), which
-- resumes from an entry's position. One row per batch the node writes (every few
-- milliseconds), its entries as a JSON array (`kairos_store::activity`). Pruned by id (ids
-- grow with time here, so no index on `at`). In a file of its own beside the store's
-- (`kairos.activity.db`), so that its writes never wait for the store's single writer, nor
-- the store's for them; created at open.
CREATE TABLE IF NOT EXISTS activity_batches (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    node     TEXT    NOT NULL,
    entries  TEXT    NOT NULL
);
