-- Dependency triggers: a job that runs after another job's runs (`{"after": {"job": "extract",
-- "on": "success"}}`) has one `job_deps` row per upstream job and end state that starts it,
-- written with the job's document, carrying what its runs are created with (decided in Rust:
-- `kairos_store::dependency::rows`). Upstream jobs are named, not numbered: the namespace is
-- the dependent job's, and a job deleted and created again under its name is followed again.
CREATE TABLE job_deps (
    job_id        INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    upstream      TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    exclusive     INTEGER NOT NULL,
    max_attempts  INTEGER NOT NULL,
    execution     TEXT    NOT NULL,
    PRIMARY KEY (job_id, upstream, state)
) WITHOUT ROWID;
CREATE INDEX job_deps_upstream ON job_deps (upstream, state);

-- The dependent runs, created in the transaction that ends an upstream run (every way a run
-- ends: a finish, a rescue, a cancel, a workflow run's last step), one per dependent job and
-- upstream run whatever happens to the upstream run afterwards (`runs_upstream` is unique).
-- A paused dependent job gets none.
CREATE TRIGGER runs_dependents AFTER UPDATE OF state ON runs
WHEN NEW.parent_id IS NULL AND NEW.state <> OLD.state
BEGIN
    INSERT OR IGNORE INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts,
        execution, exclusive, created_at, upstream_run_id)
    SELECT d.job_id, COALESCE(NEW.finished_at, NEW.run_at), COALESCE(NEW.finished_at, NEW.run_at),
        'queued', 'dependency', d.max_attempts, d.execution, d.exclusive,
        COALESCE(NEW.finished_at, NEW.run_at), NEW.id
    FROM jobs u
    JOIN job_deps d ON d.upstream = u.name AND d.state = NEW.state
    JOIN jobs j ON j.id = d.job_id AND j.namespace = u.namespace AND j.paused = 0
    WHERE u.id = NEW.job_id
    ORDER BY d.job_id;
END;
