-- The activity log: what happened on every node (job changes, runs queued, started and
-- finished, leadership), appended in batches by each node and read by the event stream
-- (`GET /api/v1/events/stream`) of any node, which resumes from an entry's position. Ids are
-- taken in one order and committed in another, so a reader orders entries by the writing
-- transaction (`tx`), then id, and reads only entries of transactions older than every one
-- still running (`pg_snapshot_xmin`): an entry is never committed behind a position a reader
-- has passed.
CREATE TABLE activity (
    id         bigserial   PRIMARY KEY,
    tx         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    at         timestamptz NOT NULL,
    node       text        NOT NULL,
    kind       text        NOT NULL,
    namespace  text,
    job        text,
    run_id     bigint,
    data       text        NOT NULL
);
CREATE INDEX activity_position ON activity (tx, id);
CREATE INDEX activity_at ON activity (at);
