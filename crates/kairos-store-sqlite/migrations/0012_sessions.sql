-- Web UI sessions: the cookie holds a random id, of which only the SHA-256 (hex) is kept. A
-- session works while it has not expired and its token works (not revoked, not expired).
CREATE TABLE sessions (
    id_hash     TEXT    PRIMARY KEY,
    token_id    INTEGER NOT NULL REFERENCES tokens (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expiry ON sessions (expires_at);
