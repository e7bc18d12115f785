-- Workflows. A workflow run holds one step run per step: rows of `runs` with `parent_id` (the
-- workflow run) and `step` (the step's name), so that steps are claimed, leased, retried,
-- rescued and cancelled like any run. The exactly-once key `(job_id, scheduled_for)` now holds
-- for top-level runs only (step runs share their workflow run's due time); `(parent_id, step)`
-- is unique.
--
-- `spec`: the job document a workflow run started with (its steps do not change under it when
-- the job is edited); `result`: the JSON a step wrote to `KAIROS_RESULT`; `params`: the JSON
-- given to a manual trigger (`KAIROS_PARAMS`).
ALTER TABLE runs
    ADD COLUMN parent_id bigint REFERENCES runs (id) ON DELETE CASCADE,
    ADD COLUMN step      text,
    ADD COLUMN spec      text,
    ADD COLUMN result    text,
    ADD COLUMN params    text,
    ADD CONSTRAINT runs_step_has_parent CHECK ((parent_id IS NULL) = (step IS NULL));

ALTER TABLE runs DROP CONSTRAINT runs_job_scheduled_for_key;
-- Invariant 1: exactly one run per due time (top-level runs), one step run per step.
CREATE UNIQUE INDEX runs_due ON runs (job_id, scheduled_for) WHERE parent_id IS NULL;
CREATE UNIQUE INDEX runs_steps ON runs (parent_id, step) WHERE parent_id IS NOT NULL;

-- A job's unfinished top-level runs (overlap decisions): step runs are their workflow run's.
DROP INDEX runs_job_active;
CREATE INDEX runs_job_active ON runs (job_id, state)
    WHERE parent_id IS NULL AND state IN ('scheduled', 'queued', 'running');
-- Held runs (a backfill's) by job; a step waiting for its upstream steps is `scheduled` too,
-- but belongs to its workflow run.
DROP INDEX runs_held;
CREATE INDEX runs_held ON runs (job_id) WHERE state = 'scheduled' AND parent_id IS NULL;
