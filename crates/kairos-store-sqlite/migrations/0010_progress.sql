-- Progress and checkpoints: what a running task last reported (through its checkpoint file or
-- the API), kept with the run for its later attempts (a retry, or a rescue after its node
-- died) to resume from.
ALTER TABLE runs ADD COLUMN progress REAL;
ALTER TABLE runs ADD COLUMN progress_message TEXT;
ALTER TABLE runs ADD COLUMN checkpoint TEXT;
ALTER TABLE runs ADD COLUMN reported_at INTEGER;
