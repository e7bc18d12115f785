-- Waiting exclusive runs (overlap: queue) by job in due-time order: a job's queue drains by
-- `scheduled_for`, not by `run_at`, so that a run waiting for a retry keeps its place and a
-- rescued run takes its place back (kairos_core::policy::exclusive_heads). A claim finds the
-- jobs with a waiting exclusive run due through `runs_queued_exclusive_due`, then each such
-- job's head through this index.
DROP INDEX runs_queued_exclusive;
CREATE INDEX runs_queued_exclusive ON runs (job_id, scheduled_for, id)
    WHERE state = 'queued' AND exclusive;
