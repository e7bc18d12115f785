-- Leadership and the node registry (see kairos_store::cluster).

-- At most one row (id = 1): the leader, its term and its lease.
CREATE TABLE leader (
    id          integer     PRIMARY KEY CHECK (id = 1),
    node_id     text        NOT NULL,
    node_name   text        NOT NULL,
    term        bigint      NOT NULL,
    elected_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

CREATE TABLE nodes (
    id              text        PRIMARY KEY,     -- fresh per process start
    name            text        NOT NULL,
    address         text,
    version         text        NOT NULL,
    started_at      timestamptz NOT NULL,
    last_heartbeat  timestamptz NOT NULL,
    running         integer     NOT NULL DEFAULT 0
);
