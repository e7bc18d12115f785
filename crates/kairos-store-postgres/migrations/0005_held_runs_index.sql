-- Held runs (a backfill's, state `scheduled`) by job: the scheduler looks for them on every
-- pass, which must not walk the other active runs.
CREATE INDEX runs_held ON runs (job_id) WHERE state = 'scheduled';
