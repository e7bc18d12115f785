-- The activity log: what happened on every node (job changes, runs queued, started and
-- finished, leadership), read by the event stream (`GET /api/v1/events/stream`) of any node,
-- which resumes from an entry's position. One row per batch a node writes (every few
-- milliseconds), its entries as a JSON array (`kairos_store::activity`). Ids are taken in one
-- order and committed in another, so a reader orders batches by the writing transaction
-- (`tx`), then id, and reads only batches of transactions older than every one still running
-- (`pg_snapshot_xmin`): a batch is never committed behind a position a reader has passed.
CREATE TABLE activity_batches (
    id       bigserial   PRIMARY KEY,
    tx       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    at       timestamptz NOT NULL,
    node     text        NOT NULL,
    entries  text        NOT NULL
);
CREATE INDEX activity_batches_position ON activity_batches (tx, id);
CREATE INDEX activity_batches_at ON activity_batches (at);
