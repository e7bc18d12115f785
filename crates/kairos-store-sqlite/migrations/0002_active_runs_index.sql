-- The active-runs index, with its condition spelled as comparisons joined by OR.
--
-- SQLite evaluates a three-value `IN (...)` list through a temporary B-tree each time a run is
-- inserted or changes state (to decide whether the row belongs in a partial index), and its
-- planner does not see that `state = 'running'` implies the IN list, so the claim's overlap
-- checks scanned every run of the job through `runs_job`. With OR, both go away: the condition
-- is three comparisons and `state = 'queued'` or `state = 'running'` selects this index.
DROP INDEX runs_job_active;
CREATE INDEX runs_job_active ON runs (job_id, state)
    WHERE state = 'scheduled' OR state = 'queued' OR state = 'running';
