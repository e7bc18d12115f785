SET search_path = exp;
TRUNCATE runs_a, attempts_a RESTART IDENTITY;
INSERT INTO runs_a (job_id, scheduled_for, run_at, state) SELECT 1 + g % 100, now() - interval '1 day' + g * interval '1 ms', now() - interval '1 hour', 'queued' FROM generate_series(1, 100000) g;
VACUUM ANALYZE runs_a;
