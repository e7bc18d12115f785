-- Alert deliveries: one row per alert and channel, queued once (its `key` is unique) and sent
-- by whichever node claims it. `pending` rows wait for `next_attempt_at`; a node that claims
-- one holds it `sending` under a lease (`lease_token`, which fences the attempt's end, and
-- `lease_expires_at`, after which another claim takes it over); it ends `delivered` or
-- `failed` (`delivered_at` is when it ended, either way). Instants are microseconds.
CREATE TABLE alert_deliveries (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    key               TEXT    NOT NULL UNIQUE,
    alert             TEXT    NOT NULL,
    channel           TEXT    NOT NULL,
    namespace         TEXT    NOT NULL,
    job               TEXT    NOT NULL,
    run_id            INTEGER,
    payload           TEXT    NOT NULL,          -- the alert's document (JSON)
    state             TEXT    NOT NULL,          -- pending, sending, delivered, failed
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER NOT NULL,
    last_error        TEXT,
    last_status       INTEGER,
    created_at        INTEGER NOT NULL,
    delivered_at      INTEGER,
    node              TEXT,
    lease_token       TEXT,
    lease_expires_at  INTEGER
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
    slot  INTEGER PRIMARY KEY CHECK (slot = 1),
    tx    INTEGER NOT NULL,
    id    INTEGER NOT NULL,
    seq   INTEGER NOT NULL
);
