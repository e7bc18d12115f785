SET search_path = exp;
TRUNCATE runs_b, queue_b, leases_b, attempts_b RESTART IDENTITY;
WITH ins AS (INSERT INTO runs_b (job_id, scheduled_for, run_at, state) SELECT 1 + g % 100, now() - interval '1 day' + g * interval '1 ms', now() - interval '1 hour', 'queued' FROM generate_series(1, 100000) g RETURNING id, job_id, run_at)
INSERT INTO queue_b SELECT id, job_id, run_at FROM ins;
VACUUM ANALYZE runs_b; VACUUM ANALYZE queue_b;
