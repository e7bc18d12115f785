-- Alert deliveries: one row per alert and channel, queued once (its `key` is unique) and sent
-- by whichever node claims it. `pending` rows wait for `next_attempt_at`; a node that claims
-- one holds it `sending` under a lease (`lease_token`, which fences the attempt's end, and
-- `lease_expires_at`, after which another claim takes it over); it ends `delivered` or
-- `failed` (`delivered_at` is when it ended, either way).
CREATE TABLE alert_deliveries (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key               text        NOT NULL,
    alert             text        NOT NULL,
    channel           text        NOT NULL,
    namespace         text        NOT NULL,
    job               text        NOT NULL,
    run_id            bigint,
    payload           text        NOT NULL,      -- the alert's document (JSON)
    state             text        NOT NULL,      -- pending, sending, delivered, failed
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,
    last_error        text,
    last_status       integer,
    created_at        timestamptz NOT NULL,
    delivered_at      timestamptz,
    node              text,
    lease_token       text,
    lease_expires_at  timestamptz,
    CONSTRAINT alert_deliveries_key_key UNIQUE (key)
);
-- Claims read due pending deliveries in (next_attempt_at, id) order, and expired leases.
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX alert_deliveries_leases ON alert_deliveries (lease_expires_at) WHERE state = 'sending';
-- A job's deliveries, newest first (lists, paging).
CREATE INDEX alert_deliveries_job ON alert_deliveries (namespace, job, id);
-- Pruning of ended deliveries.
CREATE INDEX alert_deliveries_ended ON alert_deliveries (delivered_at) WHERE delivered_at IS NOT NULL;

-- How far the alert evaluator has read the activity log (an `ActivityCursor`): one row at
-- most (`slot` 1), moved by compare-and-set.
CREATE TABLE alert_cursor (
    slot  integer PRIMARY KEY CHECK (slot = 1),
    tx    bigint  NOT NULL,
    id    bigint  NOT NULL,
    seq   bigint  NOT NULL
);
