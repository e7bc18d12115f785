-- Kairos embedded store. Instants are INTEGER microseconds since the Unix epoch (UTC).

-- AUTOINCREMENT: ids are never reused, so a job created after another was deleted never
-- inherits anything keyed by the old id (caches, clients' references).
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace     TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    spec          TEXT    NOT NULL,          -- the job document as written (JSON)
    version       INTEGER NOT NULL,
    paused        INTEGER NOT NULL DEFAULT 0,
    next_fire_at  INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (namespace, name)
);

-- The scheduler reads due jobs through this index only; it never scans every job.
CREATE INDEX jobs_due ON jobs (next_fire_at) WHERE paused = 0 AND next_fire_at IS NOT NULL;

CREATE TABLE runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id            INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    scheduled_for     INTEGER NOT NULL,
    run_at            INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    origin            TEXT    NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    execution         TEXT    NOT NULL,
    exclusive         INTEGER NOT NULL DEFAULT 0,
    reason            TEXT,
    node              TEXT,
    lease_token       TEXT,
    lease_expires_at  INTEGER,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    exit_code         INTEGER,
    -- Invariant 1: exactly one run per due time.
    UNIQUE (job_id, scheduled_for)
);

CREATE INDEX runs_queued ON runs (run_at, id) WHERE state = 'queued';
CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_job ON runs (job_id, id);
CREATE INDEX runs_job_active ON runs (job_id, state) WHERE state IN ('scheduled', 'queued', 'running');

CREATE TABLE attempts (
    run_id            INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt           INTEGER NOT NULL,
    node              TEXT    NOT NULL,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER NOT NULL,
    status            TEXT    NOT NULL,
    exit_code         INTEGER,
    http_status       INTEGER,
    error             TEXT,
    output            TEXT    NOT NULL DEFAULT '',
    output_truncated  INTEGER NOT NULL DEFAULT 0,
    max_rss_kib       INTEGER,
    user_cpu_us       INTEGER,
    sys_cpu_us        INTEGER,
    PRIMARY KEY (run_id, attempt)
);
