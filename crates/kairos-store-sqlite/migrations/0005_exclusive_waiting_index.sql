-- Waiting exclusive runs (overlap: queue) by job. Every claim reads each job's due waiting
-- exclusive runs to decide which may start (kairos_core::policy::exclusive_heads); without
-- this index it would walk every due queued run and filter out the ordinary ones.
CREATE INDEX runs_queued_exclusive ON runs (job_id, run_at, id) WHERE state = 'queued' AND exclusive = 1;
