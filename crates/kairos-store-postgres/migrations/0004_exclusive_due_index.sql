-- Exclusive queued runs in claim order. A claim first looks for exclusive runs ready to start
-- (`ORDER BY run_at, id LIMIT n` over queued exclusive runs); without an index in that order
-- the planner walked `runs_queued` and filtered out every non-exclusive queued run, once per
-- claim: a backlog of 100 000 ordinary runs made every claim read 100 000 index entries.
CREATE INDEX runs_queued_exclusive_due ON runs (run_at, id) WHERE state = 'queued' AND exclusive;
