-- API tokens and the audit log of changes.

-- A token's secret is never stored: `hash` is its SHA-256 (hex). A revoked token keeps its row
-- (the audit log names it); names are unique among tokens not revoked.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    namespaces  TEXT    NOT NULL,          -- JSON array; ["*"] for every namespace
    hash        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;

-- One row per change, written in the transaction of the change.
CREATE TABLE audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    namespace       TEXT,                  -- NULL for token changes
    job             TEXT,
    run_id          INTEGER,
    version_before  INTEGER,
    version_after   INTEGER,
    detail          TEXT
);
CREATE INDEX audit_namespace ON audit (namespace, id);
