-- Dependency triggers: a job that runs after another job's runs (`{"after": {"job": "extract",
-- "on": "success"}}`) has one `job_deps` row per upstream job and end state that starts it,
-- written with the job's document, carrying what its runs are created with (decided in Rust:
-- `kairos_store::dependency::rows`). Upstream jobs are named, not numbered: the namespace is
-- the dependent job's, and a job deleted and created again under its name is followed again.
CREATE TABLE job_deps (
    job_id        bigint  NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    upstream      text    NOT NULL,
    state         text    NOT NULL,
    exclusive     boolean NOT NULL,
    max_attempts  integer NOT NULL,
    execution     text    NOT NULL,
    PRIMARY KEY (job_id, upstream, state)
);
CREATE INDEX job_deps_upstream ON job_deps (upstream, state);

-- The dependent runs, created in the transaction that ends an upstream run (every way a run
-- ends: a finish, a rescue, a cancel, a workflow run's last step), one per dependent job and
-- upstream run whatever happens to the upstream run afterwards (`runs_upstream` is unique).
-- A paused dependent job gets none. The insert's foreign key check takes a share lock on the
-- dependent job's row, as a trigger-now does. When runs were queued, the nodes are told on the
-- store's channel, which each connection names in its `kairos.channel` setting.
-- `SET search_path FROM CURRENT`: the function reads this schema's tables whoever calls it.
CREATE FUNCTION runs_dependents() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    at timestamptz := coalesce(NEW.finished_at, now());
    queued bigint;
BEGIN
    INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, execution,
        exclusive, created_at, upstream_run_id)
    SELECT d.job_id, at, at, 'queued', 'dependency', d.max_attempts, d.execution, d.exclusive,
        at, NEW.id
    FROM jobs u
    JOIN job_deps d ON d.upstream = u.name AND d.state = NEW.state
    JOIN jobs j ON j.id = d.job_id AND j.namespace = u.namespace AND NOT j.paused
    WHERE u.id = NEW.job_id
    ORDER BY d.job_id
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 AND coalesce(current_setting('kairos.channel', true), '') <> '' THEN
        PERFORM pg_notify(current_setting('kairos.channel', true), 'runs');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_dependents AFTER UPDATE OF state ON runs
FOR EACH ROW WHEN (NEW.parent_id IS NULL AND NEW.state IS DISTINCT FROM OLD.state)
EXECUTE FUNCTION runs_dependents();
