SELECT nextval('exp.batch') - 1 AS k \gset
BEGIN;
UPDATE exp.runs_a r SET state = 'running', attempt = attempt + 1, node = 'n1', lease_token = 'tok', lease_expires_at = now() + interval '30 s', started_at = now() WHERE r.id IN (SELECT id FROM exp.runs_a WHERE id BETWEEN :k * :batch + 1 AND (:k + 1) * :batch AND state = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED);
COMMIT;
BEGIN;
WITH done AS (UPDATE exp.runs_a r SET state = 'succeeded', finished_at = now(), lease_token = NULL, lease_expires_at = NULL FROM (SELECT id FROM exp.runs_a WHERE id BETWEEN :k * :batch + 1 AND (:k + 1) * :batch ORDER BY id FOR UPDATE) l WHERE r.id = l.id AND r.lease_token = 'tok' RETURNING r.id, r.attempt, r.started_at) INSERT INTO exp.attempts_a SELECT id, attempt, 'n1', started_at, now(), 'succeeded' FROM done;
COMMIT;
