-- Waiting exclusive runs (overlap: queue) by job in due-time order: a job's queue drains by
-- `scheduled_for`, not by `run_at`, so that a run waiting for a retry keeps its place and a
-- rescued run takes its place back (kairos_core::policy::exclusive_heads). `run_at` is in the
-- index too, so that finding the jobs with a due waiting exclusive run reads the index only.
DROP INDEX runs_queued_exclusive;
CREATE INDEX runs_queued_exclusive ON runs (job_id, scheduled_for, id, run_at)
    WHERE state = 'queued' AND exclusive = 1;
