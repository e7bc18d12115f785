SELECT nextval('exp.batch') - 1 AS k \gset
BEGIN;
WITH q AS (DELETE FROM exp.queue_b WHERE id IN (SELECT id FROM exp.queue_b WHERE id BETWEEN :k * :batch + 1 AND (:k + 1) * :batch ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING id, job_id),
  l AS (INSERT INTO exp.leases_b SELECT id, job_id, now() + interval '30 s' FROM q RETURNING id)
UPDATE exp.runs_b r SET state = 'running', attempt = attempt + 1, node = 'n1', lease_token = 'tok', lease_expires_at = now() + interval '30 s', started_at = now() FROM q WHERE r.id = q.id;
COMMIT;
BEGIN;
WITH gone AS (DELETE FROM exp.leases_b WHERE id BETWEEN :k * :batch + 1 AND (:k + 1) * :batch RETURNING id),
 done AS (UPDATE exp.runs_b r SET state = 'succeeded', finished_at = now(), lease_token = NULL, lease_expires_at = NULL FROM (SELECT id FROM exp.runs_b WHERE id IN (SELECT id FROM gone) ORDER BY id FOR UPDATE) l WHERE r.id = l.id AND r.lease_token = 'tok' RETURNING r.id, r.attempt, r.started_at) INSERT INTO exp.attempts_b SELECT id, attempt, 'n1', started_at, now(), 'succeeded' FROM done;
COMMIT;
