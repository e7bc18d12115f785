-- Leadership and the node registry (see kairos_store::cluster).

-- At most one row (id = 1): the leader, its term and its lease.
CREATE TABLE leader (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    node_id     TEXT    NOT NULL,
    node_name   TEXT    NOT NULL,
    term        INTEGER NOT NULL,
    elected_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE nodes (
    id              TEXT    PRIMARY KEY,     -- fresh per process start
    name            TEXT    NOT NULL,
    address         TEXT,
    version         TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    last_heartbeat  INTEGER NOT NULL,
    running         INTEGER NOT NULL DEFAULT 0
);
