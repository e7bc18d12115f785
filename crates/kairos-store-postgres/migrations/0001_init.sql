-- Kairos cluster store: the SQLite store's migrations 0001-0003 in one, for PostgreSQL.
-- Runs with `search_path` set to the store's schema, inside the migration transaction.
-- Instants are `timestamptz` (microseconds, UTC).

-- Identity columns come from sequences, which never hand out a value twice: a job created after
-- another was deleted never inherits anything keyed by the old id (caches, clients' references).
CREATE TABLE jobs (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace     text        NOT NULL,
    name          text        NOT NULL,
    spec          text        NOT NULL,          -- the job document as written (JSON)
    version       bigint      NOT NULL,
    paused        boolean     NOT NULL DEFAULT false,
    next_fire_at  timestamptz,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT jobs_namespace_name_key UNIQUE (namespace, name)
);

-- The scheduler reads due jobs through this index only; it never scans every job.
CREATE INDEX jobs_due ON jobs (next_fire_at) WHERE NOT paused AND next_fire_at IS NOT NULL;

CREATE TABLE runs (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id            bigint      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    scheduled_for     timestamptz NOT NULL,
    run_at            timestamptz NOT NULL,
    state             text        NOT NULL,
    origin            text        NOT NULL,
    attempt           integer     NOT NULL DEFAULT 0,
    max_attempts      integer     NOT NULL,
    execution         text        NOT NULL,
    exclusive         boolean     NOT NULL DEFAULT false,
    reason            text,
    node              text,
    lease_token       text,
    lease_expires_at  timestamptz,
    cancel_requested  boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    exit_code         integer,
    -- Invariant 1: exactly one run per due time.
    CONSTRAINT runs_job_scheduled_for_key UNIQUE (job_id, scheduled_for)
);

-- Claims walk queued runs in (run_at, id) order; the rescuer reads running leases by expiry.
CREATE INDEX runs_queued ON runs (run_at, id) WHERE state = 'queued';
-- The heads of exclusive (overlap: queue) runs, which a claim locks their jobs for.
CREATE INDEX runs_queued_exclusive ON runs (job_id, run_at, id) WHERE state = 'queued' AND exclusive;
CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE state = 'running';
-- A job's runs, newest first (run lists, paging).
CREATE INDEX runs_job ON runs (job_id, id);
-- Active runs of a job: overlap decisions, active counts and the exclusive-claim checks.
CREATE INDEX runs_job_active ON runs (job_id, state)
    WHERE state IN ('scheduled', 'queued', 'running');

CREATE TABLE attempts (
    run_id            bigint      NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt           integer     NOT NULL,
    node              text        NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    status            text        NOT NULL,
    exit_code         integer,
    http_status       integer,
    error             text,
    output            text        NOT NULL DEFAULT '',
    output_truncated  boolean     NOT NULL DEFAULT false,
    max_rss_kib       bigint,
    user_cpu_us       bigint,
    sys_cpu_us        bigint,
    PRIMARY KEY (run_id, attempt)
);

-- A token's secret is never stored: `hash` is its SHA-256 (hex). A revoked token keeps its row
-- (the audit log names it); names are unique among tokens not revoked.
CREATE TABLE tokens (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    role        text        NOT NULL,
    namespaces  text[]      NOT NULL,          -- {"*"} for every namespace
    hash        text        NOT NULL,
    created_at  timestamptz NOT NULL,
    created_by  text        NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    CONSTRAINT tokens_hash_key UNIQUE (hash)
);
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;

-- One row per change, written in the transaction of the change.
CREATE TABLE audit (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL,
    actor           text        NOT NULL,
    action          text        NOT NULL,
    namespace       text,                      -- NULL for token changes
    job             text,
    run_id          bigint,
    version_before  bigint,
    version_after   bigint,
    detail          text
);
CREATE INDEX audit_namespace ON audit (namespace, id);
