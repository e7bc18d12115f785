-- Web UI sessions: the cookie holds a random id, of which only the SHA-256 (hex) is kept. A
-- session works while it has not expired and its token works (not revoked, not expired).
CREATE TABLE sessions (
    id_hash     text        PRIMARY KEY,
    token_id    bigint      NOT NULL REFERENCES tokens (id),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
