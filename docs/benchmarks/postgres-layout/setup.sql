-- A claim and a finish of runs as plain SQL, on two layouts of the runs table (see
-- docs/BENCHMARKS.md, "A queue apart from the history"). A: today's layout; B: a history
-- table no index of which reads `state` (so its updates can be HOT), with queued runs and
-- leases in tables of their own.
DROP SCHEMA IF EXISTS exp CASCADE;
CREATE SCHEMA exp;
SET search_path = exp;
CREATE TABLE jobs (id bigint PRIMARY KEY);
INSERT INTO jobs SELECT g FROM generate_series(1,100) g;
-- A: today's layout (the columns a claim and finish touch, today's indexes)
CREATE TABLE runs_a (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id bigint NOT NULL REFERENCES jobs(id),
  scheduled_for timestamptz NOT NULL, run_at timestamptz NOT NULL,
  state text NOT NULL, attempt int NOT NULL DEFAULT 0, node text, lease_token text,
  lease_expires_at timestamptz, started_at timestamptz, finished_at timestamptz,
  exclusive boolean NOT NULL DEFAULT false, parent_id bigint, pad text DEFAULT repeat('x', 60),
  UNIQUE (job_id, scheduled_for));
CREATE INDEX runs_a_queued ON runs_a (run_at, id) WHERE state = 'queued';
CREATE INDEX runs_a_leases ON runs_a (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_a_job ON runs_a (job_id, id);
CREATE INDEX runs_a_job_active ON runs_a (job_id, state) WHERE state IN ('scheduled','queued','running');
CREATE TABLE attempts_a (run_id bigint NOT NULL REFERENCES runs_a(id) ON DELETE CASCADE, attempt int NOT NULL, node text, started_at timestamptz, finished_at timestamptz, status text, PRIMARY KEY (run_id, attempt));
-- B: history table whose updates can be HOT (no index reads state), queue and leases apart
CREATE TABLE runs_b (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id bigint NOT NULL REFERENCES jobs(id),
  scheduled_for timestamptz NOT NULL, run_at timestamptz NOT NULL,
  state text NOT NULL, attempt int NOT NULL DEFAULT 0, node text, lease_token text,
  lease_expires_at timestamptz, started_at timestamptz, finished_at timestamptz,
  exclusive boolean NOT NULL DEFAULT false, parent_id bigint, pad text DEFAULT repeat('x', 60),
  UNIQUE (job_id, scheduled_for)) WITH (fillfactor = 60);
CREATE INDEX runs_b_job ON runs_b (job_id, id);
CREATE TABLE queue_b (id bigint PRIMARY KEY, job_id bigint NOT NULL, run_at timestamptz NOT NULL);
CREATE INDEX queue_b_due ON queue_b (run_at, id);
CREATE TABLE leases_b (id bigint PRIMARY KEY, job_id bigint NOT NULL, expires_at timestamptz NOT NULL);
CREATE INDEX leases_b_exp ON leases_b (expires_at);
CREATE TABLE attempts_b (run_id bigint NOT NULL REFERENCES runs_b(id) ON DELETE CASCADE, attempt int NOT NULL, node text, started_at timestamptz, finished_at timestamptz, status text, PRIMARY KEY (run_id, attempt));
-- Each pgbench transaction takes the next batch of ids.
CREATE SEQUENCE batch;
