//! Dependency triggers, as every backend stores them: one `job_deps` row per (dependent job,
//! upstream job, end state that starts it), with what the dependent run is created with. Each
//! backend creates the dependent runs in the transaction that ends an upstream run, wherever a
//! run ends (a finish, a rescue, a cancel, a replace, a workflow run's last step), keyed by
//! `(job_id, upstream_run_id)`; the checks below run in the transaction that writes a job.

use kairos_core::ValidationErrors;
use kairos_core::dependency::{dependency_exclusive, describe_cycle, find_cycle};
use kairos_core::error::{index, path};
use kairos_core::spec::{ExecutionMode, JobSpec};

use crate::StoreError;

/// One `job_deps` row of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyRow {
    pub upstream: String,
    /// `RunState::as_str` of an end that starts the job.
    pub state: &'static str,
    pub exclusive: bool,
    pub max_attempts: u32,
    pub execution: ExecutionMode,
}

/// The `job_deps` rows of a job document (none without `after` triggers).
pub fn rows(spec: &JobSpec) -> Vec<DependencyRow> {
    let pairs = kairos_core::dependency::upstream_states(spec);
    if pairs.is_empty() {
        return vec![];
    }
    let max_attempts = spec.retry.as_ref().map_or(1, |r| r.max_attempts);
    pairs
        .into_iter()
        .map(|(upstream, state)| DependencyRow {
            upstream,
            state: state.as_str(),
            exclusive: dependency_exclusive(spec.overlap),
            max_attempts,
            execution: spec.execution,
        })
        .collect()
}

/// Checks a job's `after` triggers against its namespace: each upstream job exists
/// (`existing`: the upstream names found, the job itself included if it names itself) and
/// none closes a cycle with the other jobs' dependencies (`edges`: `(job, job it runs
/// after)`). `Invalid` at `triggers[i].after.job` otherwise.
pub fn check(
    spec: &JobSpec,
    existing: &[String],
    edges: &[(String, String)],
) -> Result<(), StoreError> {
    let upstreams = kairos_core::dependency::upstreams(spec);
    if upstreams.is_empty() {
        return Ok(());
    }
    let mut errs = ValidationErrors::default();
    let field = |i: usize| path(&path(&index("triggers", i), "after"), "job");
    for (i, t) in spec.triggers.iter().enumerate() {
        let Some(after) = &t.after else { continue };
        if after.job != spec.name && !existing.contains(&after.job) {
            errs.push(
                field(i),
                format!(
                    "no job `{}` in namespace `{}`: a job runs only after a job of its namespace",
                    after.job, spec.namespace
                ),
            );
        }
    }
    if let Some(cycle) = find_cycle(edges, &spec.name, &upstreams) {
        // Reported at the trigger that starts the cycle.
        let first = &cycle[1];
        let i = spec
            .triggers
            .iter()
            .position(|t| t.after.as_ref().is_some_and(|a| &a.job == first))
            .unwrap_or(0);
        errs.push(
            field(i),
            format!(
                "closes a cycle of jobs that run after each other: {}",
                describe_cycle(&cycle)
            ),
        );
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(errs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, after: &[&str]) -> JobSpec {
        let triggers: Vec<String> = after
            .iter()
            .map(|a| format!(r#"{{"after":{{"job":"{a}"}}}}"#))
            .collect();
        JobSpec::from_json(&format!(
            r#"{{"name":"{name}","triggers":[{}],"task":{{"kind":"shell","script":"true"}}}}"#,
            triggers.join(",")
        ))
        .unwrap()
    }

    #[test]
    fn unknown_upstreams_and_cycles_are_refused_at_their_trigger() {
        let edges = vec![("b".to_owned(), "a".to_owned())];
        assert!(check(&spec("c", &["b"]), &["b".into()], &edges).is_ok());
        let Err(StoreError::Invalid(e)) = check(&spec("c", &["b", "x"]), &["b".into()], &edges)
        else {
            panic!("unknown upstream");
        };
        assert_eq!(e.errors[0].field, "triggers[1].after.job");
        let Err(StoreError::Invalid(e)) = check(&spec("a", &["b"]), &["b".into()], &edges) else {
            panic!("cycle");
        };
        assert_eq!(e.errors[0].field, "triggers[0].after.job");
        assert!(e.errors[0].message.contains("a → b → a"), "{e}");
        let Err(StoreError::Invalid(e)) = check(&spec("a", &["a"]), &[], &[]) else {
            panic!("self");
        };
        assert!(e.errors[0].message.contains("a → a"), "{e}");
        assert!(rows(&spec("a", &[])).is_empty());
        let r = rows(&spec("c", &["b"]));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].state, r[0].exclusive), ("succeeded", true));
    }
}
