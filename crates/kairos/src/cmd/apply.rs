//! `kairos apply -f jobs.toml`: make the server's jobs match a declarative file.
//!
//! The file holds `[[jobs]]` tables (TOML) or `{"jobs": [...]}` / a JSON array. Every document
//! is validated locally first (errors name `jobs[i].field`); nothing is sent unless all are
//! valid. The plan compares each job with the server's: `create`, `update` (fenced by the
//! version read), `unchanged`, and with `--prune`, `delete` for jobs on the server that the file
//! no longer lists — only in the namespaces the file mentions, so a file never deletes another
//! team's jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::bail;
use kairos_core::error::index;
use kairos_core::{JobSpec, ValidationErrors};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, ns_query, urlencode};

pub struct ApplyArgs {
    pub file: PathBuf,
    pub prune: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create,
    Update { from_version: i64 },
    Delete { version: i64 },
    Unchanged { version: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    pub namespace: String,
    pub name: String,
    /// For a workflow created or updated: the steps added, changed or removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepChange>,
    #[serde(skip)]
    pub spec: Option<JobSpec>,
}

/// One step of a workflow that a plan adds, changes or removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepChange {
    pub change: Change,
    pub step: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Add,
    Change,
    Remove,
}

/// The steps `new` adds, changes or removes compared with `old` (`None`: a new job), in the
/// order of `new`'s steps, then the removed ones in `old`'s order.
fn step_changes(old: Option<&JobSpec>, new: &JobSpec) -> Vec<StepChange> {
    let before: BTreeMap<&str, &kairos_core::workflow::StepSpec> = old
        .map(|o| o.steps.iter().map(|s| (s.name.as_str(), s)).collect())
        .unwrap_or_default();
    let mut out: Vec<StepChange> = new
        .steps
        .iter()
        .filter_map(|s| {
            let change = match before.get(s.name.as_str()) {
                None => Change::Add,
                Some(was) if *was != s => Change::Change,
                Some(_) => return None,
            };
            Some(StepChange {
                change,
                step: s.name.clone(),
            })
        })
        .collect();
    if let Some(old) = old {
        out.extend(
            old.steps
                .iter()
                .filter(|s| !new.steps.iter().any(|n| n.name == s.name))
                .map(|s| StepChange {
                    change: Change::Remove,
                    step: s.name.clone(),
                }),
        );
    }
    out
}

/// Parses and validates the file's job documents, reporting every problem at `jobs[i].…`.
pub fn parse_file(doc: Value, default_namespace: &str) -> Result<Vec<JobSpec>, ValidationErrors> {
    let items = match doc {
        Value::Array(items) => items,
        Value::Object(mut obj) => match obj.remove("jobs") {
            Some(Value::Array(items)) if obj.is_empty() => items,
            Some(Value::Array(_)) => {
                let extra: Vec<_> = obj.keys().cloned().collect();
                return Err(ValidationErrors::single(
                    extra[0].clone(),
                    "unknown field; the file holds only `jobs`",
                ));
            }
            _ => {
                return Err(ValidationErrors::single(
                    "jobs",
                    "the file must hold a list of jobs (`[[jobs]]` in TOML)",
                ));
            }
        },
        _ => {
            return Err(ValidationErrors::single(
                "jobs",
                "the file must hold a list of jobs",
            ));
        }
    };
    let mut errs = ValidationErrors::default();
    let mut specs = Vec::with_capacity(items.len());
    let mut seen = BTreeSet::new();
    for (i, mut item) in items.into_iter().enumerate() {
        let at = index("jobs", i);
        if let Some(obj) = item.as_object_mut() {
            obj.entry("namespace")
                .or_insert_with(|| Value::String(default_namespace.into()));
        }
        let spec = match JobSpec::from_value(item) {
            Ok(spec) => spec,
            Err(e) => {
                for fe in e.errors {
                    errs.push(prefixed(&at, &fe.field), fe.message);
                }
                continue;
            }
        };
        if let Err(e) = spec.validate() {
            for fe in e.errors {
                errs.push(prefixed(&at, &fe.field), fe.message);
            }
        }
        if !seen.insert((spec.namespace.clone(), spec.name.clone())) {
            errs.push(
                format!("{at}.name"),
                format!("`{}/{}` is listed twice", spec.namespace, spec.name),
            );
        }
        specs.push(spec);
    }
    errs.into_result(specs)
}

fn prefixed(at: &str, field: &str) -> String {
    if field.is_empty() {
        at.to_owned()
    } else {
        format!("{at}.{field}")
    }
}

/// The steps that make `current` (jobs on the server, with versions) match `desired`.
pub fn plan(desired: &[JobSpec], current: &[(JobSpec, i64)], prune: bool) -> Vec<Step> {
    let by_key: BTreeMap<(&str, &str), (&JobSpec, i64)> = current
        .iter()
        .map(|(s, v)| ((s.namespace.as_str(), s.name.as_str()), (s, *v)))
        .collect();
    let mut steps = Vec::new();
    for spec in desired {
        let existing = by_key.get(&(spec.namespace.as_str(), spec.name.as_str()));
        let action = match existing {
            None => Action::Create,
            Some((existing, version))
                if (*existing).clone().with_defaults() == spec.clone().with_defaults() =>
            {
                Action::Unchanged { version: *version }
            }
            Some((_, version)) => Action::Update {
                from_version: *version,
            },
        };
        let changes = match action {
            Action::Unchanged { .. } => Vec::new(),
            _ => step_changes(existing.map(|(e, _)| *e), spec),
        };
        steps.push(Step {
            action,
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            steps: changes,
            spec: Some(spec.clone()),
        });
    }
    if prune {
        let namespaces: BTreeSet<&str> = desired.iter().map(|s| s.namespace.as_str()).collect();
        let wanted: BTreeSet<(&str, &str)> = desired
            .iter()
            .map(|s| (s.namespace.as_str(), s.name.as_str()))
            .collect();
        for ((ns, name), (_, version)) in &by_key {
            if namespaces.contains(ns) && !wanted.contains(&(*ns, *name)) {
                steps.push(Step {
                    action: Action::Delete { version: *version },
                    namespace: (*ns).into(),
                    name: (*name).into(),
                    steps: Vec::new(),
                    spec: None,
                });
            }
        }
    }
    steps
}

fn describe(step: &Step) -> String {
    let mut line = describe_job(step);
    for c in &step.steps {
        let mark = match c.change {
            Change::Add => '+',
            Change::Change => '~',
            Change::Remove => '-',
        };
        line.push_str(&format!("\n    {mark} step {}", c.step));
    }
    line
}

fn describe_job(step: &Step) -> String {
    let key = format!("{}/{}", step.namespace, step.name);
    match step.action {
        Action::Create => format!("create     {key}"),
        Action::Update { from_version } => format!(
            "update     {key} (version {from_version} -> {})",
            from_version + 1
        ),
        Action::Delete { version } => format!("delete     {key} (version {version})"),
        Action::Unchanged { version } => format!("unchanged  {key} (version {version})"),
    }
}

/// The server's jobs as specs (read-only fields dropped).
async fn server_jobs(
    client: &Client,
    namespaces: &BTreeSet<String>,
) -> anyhow::Result<Vec<(JobSpec, i64)>> {
    let mut out = Vec::new();
    for ns in namespaces {
        let jobs: Vec<Value> = client
            .json(Method::GET, &format!("/api/v1/jobs?{}", ns_query(ns)), None)
            .await?;
        for mut job in jobs {
            let version = job["version"].as_i64().unwrap_or(0);
            if let Some(obj) = job.as_object_mut() {
                for field in kairos_api::dto::READ_ONLY_FIELDS {
                    obj.remove(field);
                }
            }
            let spec = JobSpec::from_value(job)
                .map_err(|e| anyhow::anyhow!("the server sent a job this CLI cannot read: {e}"))?;
            out.push((spec, version));
        }
    }
    Ok(out)
}

pub async fn run(
    client: &Client,
    namespace: &str,
    json: bool,
    args: ApplyArgs,
) -> anyhow::Result<()> {
    let doc = super::read_document(&args.file)?;
    let desired = match parse_file(doc, namespace) {
        Ok(specs) => specs,
        Err(errs) => {
            let mut msg = format!("{} is invalid; nothing was changed:", args.file.display());
            for e in &errs.errors {
                msg.push_str(&format!("\n  {e}"));
            }
            bail!(msg);
        }
    };
    let mut namespaces: BTreeSet<String> = desired.iter().map(|s| s.namespace.clone()).collect();
    if namespaces.is_empty() {
        namespaces.insert(namespace.to_owned());
    }
    let current = server_jobs(client, &namespaces).await?;
    let steps = plan(&desired, &current, args.prune);
    if json {
        println!("{}", serde_json::to_string_pretty(&steps)?);
    } else {
        for step in &steps {
            println!("{}", describe(step));
        }
    }
    if args.dry_run {
        if !json {
            println!("dry run: nothing was changed");
        }
        return Ok(());
    }
    for step in &steps {
        let path = format!(
            "/api/v1/jobs/{}?{}",
            urlencode(&step.name),
            ns_query(&step.namespace)
        );
        match (&step.action, &step.spec) {
            (Action::Create, Some(spec)) => {
                client
                    .send(
                        Method::POST,
                        "/api/v1/jobs",
                        Some(&serde_json::to_value(spec)?),
                    )
                    .await?;
            }
            (Action::Update { from_version }, Some(spec)) => {
                let mut body = serde_json::to_value(spec)?;
                body["version"] = Value::from(*from_version);
                client.send(Method::PUT, &path, Some(&body)).await?;
            }
            (Action::Delete { version }, _) => {
                // Fenced by the version the plan showed: a job changed since is not deleted.
                client
                    .send_if_match(Method::DELETE, &path, None, Some(*version))
                    .await?;
            }
            _ => {}
        }
    }
    if !json {
        let changed = steps
            .iter()
            .filter(|s| !matches!(s.action, Action::Unchanged { .. }))
            .count();
        println!("applied: {changed} change(s)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str, script: &str) -> JobSpec {
        JobSpec::from_value(json!({"name": name, "task": {"kind": "shell", "script": script}}))
            .unwrap()
    }

    #[test]
    fn plans_create_update_unchanged_and_prune_within_namespaces() {
        let desired = vec![spec("a", "true"), spec("b", "echo new")];
        let mut other_ns = spec("c", "true");
        other_ns.namespace = "other".into();
        let current = vec![
            (spec("b", "echo old"), 4),
            (spec("gone", "true"), 2),
            (other_ns, 1),
        ];
        let steps = plan(&desired, &current, true);
        let summary: Vec<_> = steps
            .iter()
            .map(|s| (s.name.as_str(), s.action.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a", Action::Create),
                ("b", Action::Update { from_version: 4 }),
                ("gone", Action::Delete { version: 2 })
            ]
        );
        let no_prune = plan(&desired, &current, false);
        assert_eq!(no_prune.len(), 2);
        let same = plan(&[spec("b", "echo old")], &current, false);
        assert_eq!(same[0].action, Action::Unchanged { version: 4 });
    }

    fn flow(steps: Value) -> JobSpec {
        JobSpec::from_value(json!({"name": "flow", "steps": steps})).unwrap()
    }

    #[test]
    fn plans_show_the_steps_a_workflow_adds_changes_and_removes() {
        let task = |script: &str| json!({"kind": "shell", "script": script});
        let old = flow(json!([
            {"name": "extract", "task": task("e")},
            {"name": "transform", "depends_on": ["extract"], "task": task("t")},
            {"name": "gone", "task": task("g")},
        ]));
        let new = flow(json!([
            {"name": "extract", "task": task("e")},
            {"name": "transform", "depends_on": ["extract"], "task": task("t2")},
            {"name": "load", "depends_on": ["transform"], "task": task("l")},
        ]));
        let steps = plan(std::slice::from_ref(&new), &[(old, 3)], false);
        assert_eq!(steps[0].action, Action::Update { from_version: 3 });
        assert_eq!(
            describe(&steps[0]),
            "update     default/flow (version 3 -> 4)\n    ~ step transform\n    + step load\n    - step gone"
        );
        let json = serde_json::to_value(&steps[0]).unwrap();
        assert_eq!(
            json["steps"][0],
            json!({"change": "change", "step": "transform"})
        );
        // A new workflow lists its steps; an unchanged one lists none.
        let created = plan(std::slice::from_ref(&new), &[], false);
        assert_eq!(created[0].steps.len(), 3);
        let same = plan(std::slice::from_ref(&new), &[(new.clone(), 4)], false);
        assert!(same[0].steps.is_empty());
    }

    #[test]
    fn validates_every_document_with_its_index() {
        let doc = json!({"jobs": [
            {"name": "ok", "task": {"kind": "shell", "script": "true"}},
            {"name": "Bad", "task": {"kind": "shell", "script": "true"}, "triggers": [{"cron": "nope"}]},
            {"name": "ok", "task": {"kind": "shell", "script": "true"}},
            {"name": "typed", "task": {"kind": "shell", "script": "true"}, "max_concurrent": "x"}
        ]});
        let errs = parse_file(doc, "default").unwrap_err();
        let fields: Vec<_> = errs.errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"jobs[1].name"), "{fields:?}");
        assert!(fields.contains(&"jobs[1].triggers[0].cron"), "{fields:?}");
        assert!(fields.contains(&"jobs[2].name"), "duplicate: {fields:?}");
        assert!(fields.contains(&"jobs[3].max_concurrent"), "{fields:?}");
    }
}
