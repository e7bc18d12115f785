//! Dependency triggers: a job runs after each run of another job of its namespace that ends as
//! its trigger says (`{"after": {"job": "extract", "on": "success"}}`).
//!
//! Pure: which ends count, how dependent runs wait for each other, and the cycle check over a
//! namespace's dependencies.

use std::collections::{BTreeMap, BTreeSet};

use crate::run::RunState;
use crate::spec::{AfterOn, JobSpec, OverlapPolicy};

/// A validated dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterTrigger {
    /// The upstream job's name, in the dependent job's namespace.
    pub job: String,
    pub on: AfterOn,
}

impl AfterOn {
    /// The end states of an upstream run that start the dependent job.
    pub fn states(self) -> &'static [RunState] {
        match self {
            AfterOn::Success => &[RunState::Succeeded],
            AfterOn::Failure => &[RunState::Failed, RunState::TimedOut, RunState::Lost],
            AfterOn::Done => &[
                RunState::Succeeded,
                RunState::Failed,
                RunState::TimedOut,
                RunState::Lost,
                RunState::Cancelled,
            ],
        }
    }
}

/// Whether a dependent run waits until no run of its job is running (and earlier waiting ones
/// have started). A dependency run is never skipped or replaced, whatever the overlap policy,
/// since each upstream run it follows must have its run; like a backfill's runs, they wait for
/// each other unless `overlap: allow` lets them run side by side.
pub fn dependency_exclusive(overlap: OverlapPolicy) -> bool {
    overlap != OverlapPolicy::Allow
}

/// The upstream jobs of a job and the end states of theirs that start it, each pair once,
/// sorted: what a store indexes to create dependent runs.
pub fn upstream_states(spec: &JobSpec) -> Vec<(String, RunState)> {
    let mut pairs: Vec<(String, RunState)> = Vec::new();
    for after in spec.triggers.iter().filter_map(|t| t.after.as_ref()) {
        for state in after.on.states() {
            let pair = (after.job.clone(), *state);
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
    }
    pairs.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    pairs
}

/// The jobs a job runs after (each once, sorted).
pub fn upstreams(spec: &JobSpec) -> Vec<String> {
    let jobs: BTreeSet<String> = spec
        .triggers
        .iter()
        .filter_map(|t| t.after.as_ref().map(|a| a.job.clone()))
        .collect();
    jobs.into_iter().collect()
}

/// The cycle that `job` running after `upstreams` would close, given the dependencies of the
/// other jobs of its namespace (`edges`: `(job, job it runs after)`; `job`'s own are ignored):
/// the jobs in order, starting and ending with `job`, each running after the next. `None`: no
/// cycle.
pub fn find_cycle(
    edges: &[(String, String)],
    job: &str,
    upstreams: &[String],
) -> Option<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (down, up) in edges {
        if down != job {
            graph.entry(down.as_str()).or_default().push(up.as_str());
        }
    }
    graph.insert(job, upstreams.iter().map(String::as_str).collect());
    // Depth-first from `job` along "runs after" edges: a path back to `job` is the cycle.
    let mut path = vec![job];
    let mut seen = BTreeSet::new();
    let mut stack: Vec<std::slice::Iter<'_, &str>> =
        vec![graph.get(job).map(|v| v.iter()).unwrap_or_default()];
    while let Some(next) = stack.last_mut().map(Iterator::next) {
        match next {
            Some(&up) if up == job => {
                let mut cycle: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
                cycle.push(job.to_owned());
                return Some(cycle);
            }
            Some(&up) => {
                if seen.insert(up) {
                    path.push(up);
                    stack.push(graph.get(up).map(|v| v.iter()).unwrap_or_default());
                }
            }
            None => {
                stack.pop();
                path.pop();
            }
        }
    }
    None
}

/// A cycle as users read it: `a → b → a`.
pub fn describe_cycle(cycle: &[String]) -> String {
    cycle.join(" → ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn ups(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn cycles_are_found_and_named_in_order() {
        // c after b, b after a: a after c closes a → c → b → a.
        let e = edges(&[("c", "b"), ("b", "a")]);
        assert_eq!(
            find_cycle(&e, "a", &ups(&["c"])),
            Some(ups(&["a", "c", "b", "a"]))
        );
        assert_eq!(find_cycle(&e, "d", &ups(&["c"])), None);
        assert_eq!(find_cycle(&e, "a", &ups(&[])), None);
        assert_eq!(find_cycle(&[], "a", &ups(&["a"])), Some(ups(&["a", "a"])));
        // The job's own stored edges are replaced by the new ones.
        let e = edges(&[("a", "b"), ("b", "c")]);
        assert_eq!(find_cycle(&e, "c", &ups(&["x"])), None);
        assert_eq!(
            find_cycle(&e, "c", &ups(&["a"])),
            Some(ups(&["c", "a", "b", "c"]))
        );
        // A diamond is no cycle.
        let e = edges(&[("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")]);
        assert_eq!(find_cycle(&e, "e", &ups(&["d", "b"])), None);
        assert_eq!(describe_cycle(&ups(&["a", "b", "a"])), "a → b → a");
    }

    #[test]
    fn ends_that_count() {
        assert_eq!(AfterOn::Success.states(), [RunState::Succeeded]);
        assert!(!AfterOn::Failure.states().contains(&RunState::Cancelled));
        assert!(AfterOn::Done.states().contains(&RunState::Cancelled));
        assert!(!AfterOn::Done.states().contains(&RunState::Skipped));
        assert!(dependency_exclusive(OverlapPolicy::Forbid));
        assert!(!dependency_exclusive(OverlapPolicy::Allow));
    }
}
