//! The calendars of a `kairos apply` plan: the steps that make the server's calendars match
//! the files', and the checks that keep the plan from leaving a job with a calendar that is
//! not there.

use std::collections::{BTreeMap, BTreeSet};

use kairos_core::JobSpec;
use kairos_core::calendar::CalendarSpec;
use kairos_core::error::index;
use serde::Serialize;

use super::input::Desired;
use super::{Action, Step};

/// One calendar step of a `kairos apply` plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalendarStep {
    #[serde(flatten)]
    pub action: Action,
    /// Always `calendar` (a job's step has `job`).
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    #[serde(skip)]
    pub spec: Option<CalendarSpec>,
}

/// The steps that make the server's calendars (`current`, with versions) match `desired`: as
/// for jobs, and with `prune`, deletes only in the namespaces `desired` has calendars in.
pub fn plan(
    desired: &[CalendarSpec],
    current: &[(CalendarSpec, i64)],
    prune: bool,
) -> Vec<CalendarStep> {
    let by_key: BTreeMap<(&str, &str), (&CalendarSpec, i64)> = current
        .iter()
        .map(|(s, v)| ((s.namespace.as_str(), s.name.as_str()), (s, *v)))
        .collect();
    let step =
        |action: Action, namespace: &str, name: &str, spec: Option<CalendarSpec>| CalendarStep {
            action,
            kind: "calendar",
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            spec,
        };
    let mut steps = Vec::new();
    for spec in desired {
        let action = match by_key.get(&(spec.namespace.as_str(), spec.name.as_str())) {
            None => Action::Create,
            Some((existing, version)) if *existing == spec => {
                Action::Unchanged { version: *version }
            }
            Some((_, version)) => Action::Update {
                from_version: *version,
            },
        };
        steps.push(step(
            action,
            spec.namespace.as_str(),
            spec.name.as_str(),
            Some(spec.clone()),
        ));
    }
    if prune {
        let namespaces: BTreeSet<&str> = desired.iter().map(|s| s.namespace.as_str()).collect();
        let wanted: BTreeSet<(&str, &str)> = desired
            .iter()
            .map(|s| (s.namespace.as_str(), s.name.as_str()))
            .collect();
        for ((ns, name), (_, version)) in &by_key {
            if namespaces.contains(ns) && !wanted.contains(&(*ns, *name)) {
                steps.push(step(Action::Delete { version: *version }, ns, name, None));
            }
        }
    }
    steps
}

/// Problems with the calendars the desired jobs name: each must be in the files, or on the
/// server and not deleted by the plan. One message per name, at its path
/// (`jobs[0].triggers[1].exclude[0]`).
pub fn missing_calendars(
    desired: &Desired,
    server: &[(CalendarSpec, i64)],
    calendar_steps: &[CalendarStep],
) -> Vec<String> {
    let in_files: BTreeSet<(&str, &str)> = desired
        .calendars
        .iter()
        .map(|c| (c.namespace.as_str(), c.name.as_str()))
        .collect();
    let on_server: BTreeSet<(&str, &str)> = server
        .iter()
        .map(|(c, _)| (c.namespace.as_str(), c.name.as_str()))
        .collect();
    let deleted: BTreeSet<(&str, &str)> = calendar_steps
        .iter()
        .filter(|s| matches!(s.action, Action::Delete { .. }))
        .map(|s| (s.namespace.as_str(), s.name.as_str()))
        .collect();
    let mut problems = Vec::new();
    for (k, job) in desired.jobs.iter().enumerate() {
        let at = desired
            .job_at
            .get(k)
            .cloned()
            .unwrap_or_else(|| index("jobs", k));
        for (t, trigger) in job.triggers.iter().enumerate() {
            for (field, names) in [("exclude", &trigger.exclude), ("only", &trigger.only)] {
                for (j, name) in names.iter().enumerate() {
                    let key = (job.namespace.as_str(), name.as_str());
                    let why = if in_files.contains(&key) {
                        continue;
                    } else if deleted.contains(&key) {
                        format!(
                            "calendar `{}/{name}` is not in the files, and --prune deletes it",
                            job.namespace
                        )
                    } else if on_server.contains(&key) {
                        continue;
                    } else {
                        format!(
                            "no calendar `{}/{name}`: neither in the files nor on the server",
                            job.namespace
                        )
                    };
                    problems.push(format!("{at}.triggers[{t}].{field}[{j}]: {why}"));
                }
            }
        }
    }
    problems
}

/// Problems with the calendars the plan deletes: jobs the plan leaves as they are on the server
/// (not in the files, not deleted) that still use one.
pub fn calendars_still_used(
    calendar_steps: &[CalendarStep],
    job_steps: &[Step],
    server_jobs: &[(JobSpec, i64)],
) -> Vec<String> {
    let planned: BTreeSet<(&str, &str)> = job_steps
        .iter()
        .map(|s| (s.namespace.as_str(), s.name.as_str()))
        .collect();
    let mut problems = Vec::new();
    for step in calendar_steps {
        if !matches!(step.action, Action::Delete { .. }) {
            continue;
        }
        let users: Vec<&str> = server_jobs
            .iter()
            .map(|(job, _)| job)
            .filter(|job| {
                job.namespace == step.namespace
                    && !planned.contains(&(job.namespace.as_str(), job.name.as_str()))
                    && kairos_core::calendar::used_by(job).contains(&step.name)
            })
            .map(|job| job.name.as_str())
            .collect();
        if !users.is_empty() {
            problems.push(format!(
                "calendar `{}/{}` is not in the files, and --prune would delete it, but job(s) {} \
                 (not in the files) use it",
                step.namespace,
                step.name,
                users.join(", ")
            ));
        }
    }
    problems
}
