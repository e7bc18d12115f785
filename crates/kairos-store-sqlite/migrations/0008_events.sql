-- Event and dependency triggers. A run created for an event records the event (`event_id`,
-- `event_topic`, `event_payload`); one created because another job's run ended records that run
-- (`upstream_run_id`). Such runs are keyed by what caused them, not by their due time (which is
-- when they were created): `(job_id, event_id)` and `(job_id, upstream_run_id)` are unique, so
-- an event posted twice, or an upstream run's end seen twice, is one run, while two events at
-- one instant are two. The due-time key covers the other top-level runs. A workflow run's steps
-- carry its event (as they carry its params), outside these keys.
ALTER TABLE runs ADD COLUMN event_id TEXT;
ALTER TABLE runs ADD COLUMN event_topic TEXT;
ALTER TABLE runs ADD COLUMN event_payload TEXT;
ALTER TABLE runs ADD COLUMN upstream_run_id INTEGER;

DROP INDEX runs_due;
CREATE UNIQUE INDEX runs_due ON runs (job_id, scheduled_for)
    WHERE parent_id IS NULL AND event_id IS NULL AND upstream_run_id IS NULL;
CREATE UNIQUE INDEX runs_event ON runs (job_id, event_id)
    WHERE parent_id IS NULL AND event_id IS NOT NULL;
CREATE UNIQUE INDEX runs_upstream ON runs (job_id, upstream_run_id)
    WHERE parent_id IS NULL AND upstream_run_id IS NOT NULL;

-- The topics each job's `event` triggers subscribe to, kept with the job's document: an event
-- finds its jobs here instead of reading every job.
CREATE TABLE job_topics (
    topic   TEXT    NOT NULL,
    job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (topic, job_id)
) WITHOUT ROWID;
CREATE INDEX job_topics_job ON job_topics (job_id);
