-- kairos: no transaction
-- Waiting exclusive runs (overlap: queue) by job in due-time order: a job's queue drains by
-- `scheduled_for`, not by `run_at`, so that a run waiting for a retry keeps its place and a
-- rescued run takes its place back (kairos_core::policy::exclusive_heads). A claim finds the
-- jobs with a waiting exclusive run due through `runs_queued_exclusive_due`, then each such
-- job's head through this index.
--
-- On a schema in use it is built concurrently, so that the other nodes keep writing `runs`
-- while it builds: the new index under a name of its own, then the old one dropped and the
-- new one renamed. Every statement may run again. An interrupted build leaves an invalid
-- index, which the migration runner drops before running this again. A run stopped after
-- the old index was dropped keeps the new one and renames it. A run stopped after the rename
-- builds the index once more and renames it again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_queued_exclusive_by_due
    ON runs (job_id, scheduled_for, id) WHERE state = 'queued' AND exclusive;
DROP INDEX CONCURRENTLY IF EXISTS runs_queued_exclusive;
ALTER INDEX runs_queued_exclusive_by_due RENAME TO runs_queued_exclusive
