-- The activity log: what happened on every node (job changes, runs queued, started and
-- finished, leadership), read by the event stream (`GET /api/v1/events/stream`) of any node,
-- which resumes from an entry's position. One row per batch a node writes (every few
-- milliseconds), its entries as a JSON array (`kairos_store::activity`). A batch is appended
-- under a transaction-scoped advisory lock of the schema's log, taken before its id: ids are
-- then committed in their order, and a reader that read past an id never meets a smaller one
-- later. Pruned as a prefix in id order, so what is kept after a position has no holes.
CREATE TABLE activity_batches (
    id       bigserial   PRIMARY KEY,
    at       timestamptz NOT NULL,
    node     text        NOT NULL,
    entries  text        NOT NULL
);
CREATE INDEX activity_batches_at ON activity_batches (at);
