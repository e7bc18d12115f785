//! `kairos apply -f jobs.toml`: make the server's jobs (and calendars) match a declarative file.
//!
//! The file holds `[[jobs]]` tables (TOML) or `{"jobs": [...]}` / a JSON array, and may hold
//! `[[calendars]]` (`"calendars": [...]`) beside them. Every document is validated locally first
//! (errors name `jobs[i].field`, `calendars[i].field`); nothing is sent unless all are valid. The
//! plan compares each job with the server's: `create`, `update` (fenced by the version read),
//! `unchanged`, and with `--prune`, `delete` for jobs on the server that the file no longer lists
//! — only in the namespaces the file mentions, so a file never deletes another team's jobs.
//! Calendars are planned the same way; they are written before the jobs (which may name them),
//! and pruned after them (a calendar still in use cannot be deleted), only in the namespaces the
//! file lists calendars in. A job naming a calendar that is neither in the files nor on the
//! server (or that the plan deletes) is reported before anything is written.
//!
//! `-f` may name a directory: its `*.toml` and `*.json` files (not its subdirectories) are one
//! set of jobs, a job listed in two of them is an error. With `--watch` the command keeps
//! running and applies again whenever the input changes. It looks at the files' contents every
//! half second rather than asking the kernel for change events: editors save by rename, files
//! come and go in a directory, and network file systems send no events, while reading a few
//! small files twice a second costs nothing.

mod calendar_plan;
mod input;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kairos_core::JobSpec;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

pub use calendar_plan::{CalendarStep, calendars_still_used, missing_calendars};
pub use input::{Desired, input_files, parse_document, parse_file};

use super::calendar as calendars;
use crate::client::{Client, ns_query, urlencode};
use input::{fingerprint, load};

pub struct ApplyArgs {
    pub file: PathBuf,
    pub prune: bool,
    pub dry_run: bool,
    pub watch: bool,
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
    let mut line = describe_action(&step.action, &format!("{}/{}", step.namespace, step.name));
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

fn describe_calendar(step: &CalendarStep) -> String {
    describe_action(
        &step.action,
        &format!("calendar {}/{}", step.namespace, step.name),
    )
}

fn describe_action(action: &Action, key: &str) -> String {
    match action {
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
    if args.watch {
        return watch(client, namespace, json, &args).await;
    }
    let desired = load(&args.file, namespace).map_err(|e| anyhow::anyhow!(e))?;
    apply_once(client, namespace, json, &desired, args.prune, args.dry_run).await
}

/// `--watch`: applies the input, then again whenever it changes, until interrupted. An invalid
/// input is reported once and changes nothing; an apply that fails (the server unreachable, a
/// job changed meanwhile) is tried again at the next look.
async fn watch(
    client: &Client,
    namespace: &str,
    json: bool,
    args: &ApplyArgs,
) -> anyhow::Result<()> {
    const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
    let mut handled: Option<u64> = None;
    let mut last_error: Option<String> = None;
    loop {
        // Reading a few files: a blocking thread, as for any file the CLI reads while it waits.
        let file = args.file.clone();
        let seen = tokio::task::spawn_blocking(move || fingerprint(&file)).await?;
        if handled != Some(seen) {
            let file = args.file.clone();
            let ns = namespace.to_owned();
            match tokio::task::spawn_blocking(move || load(&file, &ns)).await? {
                Err(msg) => {
                    eprintln!("{msg}\nthe last good state stays; waiting for the next change");
                    handled = Some(seen);
                }
                Ok(desired) => {
                    match apply_once(client, namespace, json, &desired, args.prune, false).await {
                        Ok(()) => {
                            handled = Some(seen);
                            last_error = None;
                        }
                        Err(e) => {
                            let e = format!("{e:#}");
                            if last_error.as_deref() != Some(&e) {
                                eprintln!("applying failed: {e}; trying again");
                            }
                            last_error = Some(e);
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Whether the server refused a delete because other jobs run after the job.
fn has_dependents(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::client::ApiFailure>()
        .is_some_and(|f| {
            f.problem["type"]
                .as_str()
                .is_some_and(|t| t.ends_with(":job-has-dependents"))
        })
}

/// The plan's creates and updates, each after the jobs of the plan it runs after (`after`
/// triggers; otherwise in the plan's order), then its deletes in the plan's order.
fn execution_order(steps: &[Step]) -> Vec<&Step> {
    let writes: Vec<&Step> = steps.iter().filter(|s| s.spec.is_some()).collect();
    let key = |s: &Step| (s.namespace.clone(), s.name.clone());
    let mut done: BTreeSet<(String, String)> = BTreeSet::new();
    let mut order: Vec<&Step> = Vec::with_capacity(steps.len());
    let mut pending = writes;
    while !pending.is_empty() {
        let waiting_for = |s: &Step| -> bool {
            s.spec.as_ref().is_some_and(|spec| {
                kairos_core::dependency::upstreams(spec).iter().any(|up| {
                    let k = (s.namespace.clone(), up.clone());
                    up != &s.name && !done.contains(&k) && pending.iter().any(|p| key(p) == k)
                })
            })
        };
        let (ready, rest): (Vec<&Step>, Vec<&Step>) = pending.iter().partition(|s| !waiting_for(s));
        if ready.is_empty() {
            // A cycle: the server names it when the first of them is written.
            order.extend(rest);
            break;
        }
        for s in &ready {
            done.insert(key(s));
        }
        order.extend(ready);
        pending = rest;
    }
    order.extend(steps.iter().filter(|s| s.spec.is_none()));
    order
}

/// Plans `desired` against the server's jobs and calendars and applies the plan (or only prints
/// it): calendars written first, then jobs, then job deletes, then calendar deletes.
async fn apply_once(
    client: &Client,
    namespace: &str,
    json: bool,
    desired: &Desired,
    prune: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let mut namespaces: BTreeSet<String> =
        desired.jobs.iter().map(|s| s.namespace.clone()).collect();
    if namespaces.is_empty() {
        namespaces.insert(namespace.to_owned());
    }
    // The calendars to read: the files' namespaces of calendars, and those of jobs naming one
    // (none at all for a file without calendars, as before calendars existed).
    let mut calendar_namespaces: BTreeSet<String> = desired
        .calendars
        .iter()
        .map(|c| c.namespace.clone())
        .collect();
    calendar_namespaces.extend(
        desired
            .jobs
            .iter()
            .filter(|j| !kairos_core::calendar::used_by(j).is_empty())
            .map(|j| j.namespace.clone()),
    );
    // Pruned calendars must not be in use by jobs the plan keeps: read those namespaces' jobs.
    let mut job_namespaces = namespaces.clone();
    if prune {
        job_namespaces.extend(desired.calendars.iter().map(|c| c.namespace.clone()));
    }
    let current = server_jobs(client, &job_namespaces).await?;
    let current_calendars = if calendar_namespaces.is_empty() {
        Vec::new()
    } else {
        calendars::server_calendars(client, &calendar_namespaces).await?
    };
    let steps = plan(&desired.jobs, &current, prune);
    let calendar_steps = calendar_plan::plan(&desired.calendars, &current_calendars, prune);
    let (calendar_deletes, calendar_writes): (Vec<&CalendarStep>, Vec<&CalendarStep>) =
        calendar_steps
            .iter()
            .partition(|s| matches!(s.action, Action::Delete { .. }));
    if json {
        let mut shown: Vec<Value> = Vec::with_capacity(steps.len() + calendar_steps.len());
        for step in &calendar_writes {
            shown.push(serde_json::to_value(step)?);
        }
        for step in &steps {
            let mut v = serde_json::to_value(step)?;
            v["kind"] = Value::from("job");
            shown.push(v);
        }
        for step in &calendar_deletes {
            shown.push(serde_json::to_value(step)?);
        }
        println!("{}", serde_json::to_string(&shown)?);
    } else {
        for step in &calendar_writes {
            println!("{}", describe_calendar(step));
        }
        for step in &steps {
            println!("{}", describe(step));
        }
        for step in &calendar_deletes {
            println!("{}", describe_calendar(step));
        }
    }
    let mut problems = missing_calendars(desired, &current_calendars, &calendar_steps);
    problems.extend(calendars_still_used(&calendar_steps, &steps, &current));
    if !problems.is_empty() {
        let mut msg = String::from("the plan cannot be applied; nothing was changed:");
        for p in problems {
            msg.push_str(&format!("\n  {p}"));
        }
        anyhow::bail!(msg);
    }
    if dry_run {
        if !json {
            println!("dry run: nothing was changed");
        }
        return Ok(());
    }
    // Calendars first: the jobs may name them. A changed calendar re-plans the jobs that use
    // it, each one's version going up by one: the job writes below are fenced by the version
    // read plus those re-plans, so a change by someone else in between still stops them.
    let mut replans: BTreeMap<(String, String), i64> = BTreeMap::new();
    for step in &calendar_writes {
        let Some(spec) = &step.spec else { continue };
        let version = match step.action {
            Action::Create => None,
            Action::Update { from_version } => Some(from_version),
            _ => continue,
        };
        let jobs = calendars::write(client, spec, version).await?;
        if !json && !jobs.is_empty() {
            println!(
                "calendar {}/{}: {}",
                step.namespace,
                step.name,
                calendars::replanned(&jobs)
            );
        }
        for job in jobs {
            *replans.entry((step.namespace.clone(), job)).or_default() += 1;
        }
    }
    let replanned = |step: &Step| {
        replans
            .get(&(step.namespace.clone(), step.name.clone()))
            .copied()
            .unwrap_or(0)
    };
    let mut deletes = Vec::new();
    for step in execution_order(&steps) {
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
                body["version"] = Value::from(*from_version + replanned(step));
                client.send(Method::PUT, &path, Some(&body)).await?;
            }
            (Action::Delete { version }, _) => deletes.push((path, *version + replanned(step))),
            _ => {}
        }
    }
    // Deletes last, dependents first: a job that others still run after is refused (409
    // `job-has-dependents`) and tried again once the others are gone.
    while !deletes.is_empty() {
        let before = deletes.len();
        let mut blocked = Vec::new();
        let mut refused = None;
        for (path, version) in deletes.drain(..) {
            // Fenced by the version the plan showed: a job changed since is not deleted.
            match client
                .send_if_match(Method::DELETE, &path, None, Some(version))
                .await
            {
                Ok(_) => {}
                Err(e) if has_dependents(&e) => {
                    blocked.push((path, version));
                    refused = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = refused
            && blocked.len() == before
        {
            // Jobs the file keeps run after them.
            return Err(e);
        }
        deletes = blocked;
    }
    // Calendars deleted after the jobs: the jobs pruned or changed above no longer use them.
    for step in &calendar_deletes {
        if let Action::Delete { version } = step.action {
            let path = format!(
                "/api/v1/calendars/{}?{}",
                urlencode(&step.name),
                ns_query(&step.namespace)
            );
            client
                .send_if_match(Method::DELETE, &path, None, Some(version))
                .await?;
        }
    }
    if !json {
        let changed = steps
            .iter()
            .map(|s| &s.action)
            .chain(calendar_steps.iter().map(|s| &s.action))
            .filter(|a| !matches!(a, Action::Unchanged { .. }))
            .count();
        println!("applied: {changed} change(s)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_core::calendar::CalendarSpec;
    use serde_json::json;

    #[test]
    fn jobs_are_written_after_the_jobs_they_run_after() {
        let after = |name: &str, up: &[&str]| {
            let triggers: Vec<Value> = up.iter().map(|u| json!({"after": {"job": u}})).collect();
            JobSpec::from_value(json!({"name": name, "triggers": triggers,
                "task": {"kind": "shell", "script": "true"}}))
            .unwrap()
        };
        let desired = vec![
            after("c", &["b"]),
            after("b", &["a"]),
            after("d", &["elsewhere"]),
            after("a", &[]),
        ];
        let steps = plan(&desired, &[], false);
        let order: Vec<&str> = execution_order(&steps)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, ["d", "a", "b", "c"]);
    }

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

    fn calendar(name: &str, dates: &[&str]) -> CalendarSpec {
        CalendarSpec {
            name: name.into(),
            dates: dates.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn jobs_files_hold_calendars_each_checked_at_its_path() {
        let doc = json!({
            "jobs": [{"name": "a", "task": {"kind": "shell", "script": "true"},
                      "triggers": [{"cron": "0 9 * * *", "exclude": ["holidays"]}]}],
            "calendars": [
                {"name": "holidays", "dates": ["2026-12-25"]},
                {"name": "bad", "dates": ["2026-12-25", "2026-13-01"], "colour": "red"},
                {"name": "holidays"}
            ]
        });
        let errs = parse_document(doc, "default").unwrap_err();
        let fields: Vec<_> = errs.errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"calendars[1].dates[1]"), "{fields:?}");
        assert!(fields.contains(&"calendars[1].colour"), "{fields:?}");
        assert!(
            fields.contains(&"calendars[2].name"),
            "duplicate: {fields:?}"
        );
        assert!(
            !fields.iter().any(|f| f.starts_with("jobs")),
            "a job may name a calendar: {fields:?}"
        );

        let only_calendars = json!({"calendars": [{"name": "h", "yearly": ["12-25"]}]});
        let desired = parse_document(only_calendars, "team").unwrap();
        assert!(desired.jobs.is_empty());
        assert_eq!(desired.calendars[0].namespace, "team");
        let unknown = parse_document(json!({"jobs": [], "holidays": []}), "default").unwrap_err();
        assert_eq!(unknown.errors[0].field, "holidays");
    }

    #[test]
    fn calendars_are_planned_and_the_calendars_jobs_name_are_checked() {
        let uses = |name: &str, calendar: &str| {
            JobSpec::from_value(
                json!({"name": name, "task": {"kind": "shell", "script": "true"},
                "triggers": [{"interval": "1h", "exclude": [calendar]}]}),
            )
            .unwrap()
        };
        let server = vec![
            (calendar("same", &["2026-12-25"]), 3),
            (calendar("changed", &["2026-12-25"]), 1),
            (calendar("gone", &[]), 2),
        ];
        let desired_calendars = vec![
            calendar("same", &["2026-12-25"]),
            calendar("changed", &["2026-12-26"]),
            calendar("new", &[]),
        ];
        let steps = calendar_plan::plan(&desired_calendars, &server, true);
        let summary: Vec<_> = steps
            .iter()
            .map(|s| (s.name.as_str(), s.action.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("same", Action::Unchanged { version: 3 }),
                ("changed", Action::Update { from_version: 1 }),
                ("new", Action::Create),
                ("gone", Action::Delete { version: 2 }),
            ]
        );
        assert_eq!(
            describe_calendar(&steps[1]),
            "update     calendar default/changed (version 1 -> 2)"
        );
        assert_eq!(
            serde_json::to_value(&steps[3]).unwrap(),
            json!({"action": "delete", "version": 2, "kind": "calendar",
                   "namespace": "default", "name": "gone"})
        );
        assert_eq!(
            calendar_plan::plan(&desired_calendars, &server, false).len(),
            3,
            "no deletes without --prune"
        );

        let desired = Desired {
            jobs: vec![
                uses("a", "new"),
                uses("b", "same"),
                uses("c", "gone"),
                uses("d", "nowhere"),
            ],
            job_at: (0..4).map(|i| format!("jobs[{i}]")).collect(),
            calendars: desired_calendars,
        };
        let problems = missing_calendars(&desired, &server, &steps);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("jobs[2].triggers[0].exclude[0]: ")
                && problems[0].contains("--prune deletes it"),
            "{problems:?}"
        );
        assert!(
            problems[1]
                .starts_with("jobs[3].triggers[0].exclude[0]: no calendar `default/nowhere`"),
            "{problems:?}"
        );

        // A pruned calendar still used by a job the files do not manage.
        let job_steps = plan(&desired.jobs[..2], &[], false);
        let used = calendars_still_used(&steps, &job_steps, &[(uses("other", "gone"), 5)]);
        assert_eq!(used.len(), 1, "{used:?}");
        assert!(used[0].contains("other"), "{used:?}");
        let pruned_too = plan(&desired.jobs[..2], &[(uses("other", "gone"), 5)], true);
        assert!(
            calendars_still_used(&steps, &pruned_too, &[(uses("other", "gone"), 5)]).is_empty(),
            "a job the plan deletes does not hold a calendar"
        );
    }
}
