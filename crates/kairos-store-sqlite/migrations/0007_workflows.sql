-- Workflows. A workflow run holds one step run per step: rows of `runs` with `parent_id` (the
-- workflow run) and `step` (the step's name), so that steps are claimed, leased, retried,
-- rescued and cancelled like any run. The exactly-once key `(job_id, scheduled_for)` now holds
-- for top-level runs only (step runs share their workflow run's due time), and `(parent_id,
-- step)` is unique. SQLite cannot change a table's constraints in place: the table is rebuilt
-- (the migration runs with foreign keys off and checks them before it commits).
--
-- New columns: `spec`, the job document a workflow run started with (its steps do not change
-- under it when the job is edited); `result`, the JSON a step wrote to `KAIROS_RESULT`;
-- `params`, the JSON given to a manual trigger (`KAIROS_PARAMS`).
CREATE TEMP TABLE runs_sequence AS SELECT seq FROM sqlite_sequence WHERE name = 'runs';

CREATE TABLE runs_new (
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
    parent_id         INTEGER REFERENCES runs (id) ON DELETE CASCADE,
    step              TEXT,
    spec              TEXT,
    result            TEXT,
    params            TEXT,
    CHECK ((parent_id IS NULL) = (step IS NULL))
);

INSERT INTO runs_new (id, job_id, scheduled_for, run_at, state, origin, attempt, max_attempts,
    execution, exclusive, reason, node, lease_token, lease_expires_at, cancel_requested,
    created_at, started_at, finished_at, exit_code)
SELECT id, job_id, scheduled_for, run_at, state, origin, attempt, max_attempts,
    execution, exclusive, reason, node, lease_token, lease_expires_at, cancel_requested,
    created_at, started_at, finished_at, exit_code
FROM runs;

DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;

-- Ids are never reused: the sequence carries over even past runs deleted before the rebuild.
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'runs', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'runs');
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM runs_sequence), 0))
    WHERE name = 'runs';
DROP TABLE runs_sequence;

-- Invariant 1: exactly one run per due time (top-level runs), one step run per step.
CREATE UNIQUE INDEX runs_due ON runs (job_id, scheduled_for) WHERE parent_id IS NULL;
CREATE UNIQUE INDEX runs_steps ON runs (parent_id, step) WHERE parent_id IS NOT NULL;

CREATE INDEX runs_queued ON runs (run_at, id) WHERE state = 'queued';
CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_job ON runs (job_id, id);
-- A job's unfinished top-level runs (overlap decisions): step runs are their workflow run's.
CREATE INDEX runs_job_active ON runs (job_id, state)
    WHERE parent_id IS NULL AND (state = 'scheduled' OR state = 'queued' OR state = 'running');
CREATE INDEX runs_queued_exclusive ON runs (job_id, run_at, id) WHERE state = 'queued' AND exclusive = 1;
-- Held runs (a backfill's) by job; a step waiting for its upstream steps is `scheduled` too,
-- but belongs to its workflow run, not to the job's backlog.
CREATE INDEX runs_held ON runs (job_id) WHERE state = 'scheduled' AND parent_id IS NULL;
