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

-- The dependent runs are created by the store in the transaction that ends an upstream run
-- (`dependency::runs_ended`, sent with the statements that end runs: a finish, a rescue, a
-- cancel, a replace, a workflow run's last step), not by a trigger on `runs`: a row trigger
-- made each batch of finishes about a third slower.
