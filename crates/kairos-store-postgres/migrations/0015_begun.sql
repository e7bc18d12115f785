-- Whether the attempt a run is claimed for has begun, for `at_most_once` runs: a claim sets it
-- false, and the worker sets it true (`run_begin`, fenced by the lease) before the task starts.
-- A rescue that finds it false knows nothing ran, and puts the run back instead of ending it
-- `lost` (a node that died between the claim and the due time). Always true for other runs.
ALTER TABLE runs ADD COLUMN begun boolean NOT NULL DEFAULT true;
