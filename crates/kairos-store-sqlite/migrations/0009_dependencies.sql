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

-- The dependent runs are created by the store in the transaction that ends an upstream run
-- (`dependency::run_ended`, called wherever a run ends: a finish, a rescue, a cancel, a
-- replace, a workflow run's last step), not by a trigger on `runs`: a trigger makes every
-- update of `runs` (each claim and finish) about a quarter slower.
