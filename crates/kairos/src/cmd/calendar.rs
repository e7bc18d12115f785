//! `kairos calendar …`, and calendar documents for the other commands.
//!
//! A calendar file holds one calendar document, or a list of them (`[[calendars]]` in TOML,
//! `{"calendars": [...]}` or a JSON array); a jobs file may hold the same list beside its
//! `[[jobs]]` (read by [`super::apply`]). Every calendar is validated locally with
//! [`CalendarSpec::validate`] before anything is sent, each problem reported with its file and
//! field path (`calendars[0].dates[1]`).
//!
//! `kairos calendar apply` compares each calendar with the server's and writes only those that
//! differ: a new one is created (`POST`, refused if someone created it meanwhile), a changed one
//! replaced at the version read (`PUT`, refused if it changed meanwhile). The server re-plans
//! the jobs that use a changed calendar in the same write and names them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::anyhow;
use kairos_core::ValidationErrors;
use kairos_core::calendar::{Calendar, CalendarSpec};
use kairos_core::document::{Removed, collect};
use kairos_core::error::index;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::cli::CalendarCmd;
use crate::client::{ApiFailure, Client, ns_query, urlencode};
use crate::table;

/// Fields of a calendar object that the server owns: dropped before reading one as a document.
pub const READ_ONLY_FIELDS: [&str; 4] = ["version", "created_at", "updated_at", "jobs"];

/// `parent.field`, or either alone when the other is empty.
fn prefixed(at: &str, field: &str) -> String {
    match (at.is_empty(), field.is_empty()) {
        (true, _) => field.to_owned(),
        (false, true) => at.to_owned(),
        (false, false) => format!("{at}.{field}"),
    }
}

/// Parses and validates one calendar document found at `at` (`""` for a file that is one
/// calendar, `calendars[i]` in a list), recording every problem at its path in `errs`. A
/// calendar without a namespace gets `default_namespace`.
pub fn parse_calendar(
    mut value: Value,
    at: &str,
    default_namespace: &str,
    errs: &mut ValidationErrors,
) -> Option<(CalendarSpec, Calendar)> {
    match value.as_object_mut() {
        Some(obj) => {
            obj.entry("namespace")
                .or_insert_with(|| Value::String(default_namespace.into()));
        }
        None => {
            errs.push(at, "a calendar is an object (a table in TOML)");
            return None;
        }
    }
    let before = errs.errors.len();
    let mut removed = Removed::default();
    let spec: Option<CalendarSpec> = collect(&mut value, at, errs, &mut removed);
    let typed = errs.errors.len() == before;
    let spec = spec?;
    match spec.validate() {
        Ok(calendar) if typed => Some((spec, calendar)),
        Ok(_) => None,
        Err(e) => {
            // Problems of parts taken out are about their stand-ins, not about the input.
            for fe in e.errors {
                let field = prefixed(at, &fe.field);
                if !removed.hides(&field) {
                    errs.push(field, fe.message);
                }
            }
            None
        }
    }
}

/// Parses and validates a list of calendar documents, each at `calendars[i]`; a calendar listed
/// twice is an error at the second one's `name`.
pub fn parse_list(
    items: Vec<Value>,
    default_namespace: &str,
    errs: &mut ValidationErrors,
) -> Vec<(CalendarSpec, Calendar)> {
    let mut out = Vec::with_capacity(items.len());
    let mut seen = BTreeSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = index("calendars", i);
        let Some((spec, calendar)) = parse_calendar(item, &at, default_namespace, errs) else {
            continue;
        };
        if !seen.insert((spec.namespace.clone(), spec.name.clone())) {
            errs.push(
                format!("{at}.name"),
                format!(
                    "calendar `{}/{}` is listed twice",
                    spec.namespace, spec.name
                ),
            );
        }
        out.push((spec, calendar));
    }
    out
}

/// The calendars of a calendar file: one calendar document, `{"calendars": [...]}`
/// (`[[calendars]]` in TOML), or a JSON array of calendar documents.
pub fn parse_file(
    doc: Value,
    default_namespace: &str,
) -> Result<Vec<(CalendarSpec, Calendar)>, ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let calendars = match doc {
        Value::Array(items) => parse_list(items, default_namespace, &mut errs),
        Value::Object(mut obj) if obj.contains_key("calendars") => {
            let list = obj.remove("calendars");
            if let Some(extra) = obj.keys().next() {
                let hint = if extra == "jobs" {
                    "a jobs file: apply it with `kairos apply -f`"
                } else {
                    "unknown field; a calendar file holds one calendar, or `calendars`"
                };
                return Err(ValidationErrors::single(extra.clone(), hint));
            }
            match list {
                Some(Value::Array(items)) => parse_list(items, default_namespace, &mut errs),
                _ => {
                    return Err(ValidationErrors::single(
                        "calendars",
                        "must be a list of calendars (`[[calendars]]` in TOML)",
                    ));
                }
            }
        }
        one @ Value::Object(_) => parse_calendar(one, "", default_namespace, &mut errs)
            .into_iter()
            .collect(),
        _ => {
            return Err(ValidationErrors::single(
                "",
                "a calendar file holds one calendar (an object), or a list of them",
            ));
        }
    };
    errs.into_result(calendars)
}

/// Reads and validates calendar files (a directory: its `*.toml` and `*.json` files); `Err`
/// holds every problem, each with its file and path. A calendar in two files is an error.
pub fn load_files(
    paths: &[PathBuf],
    default_namespace: &str,
) -> Result<Vec<(CalendarSpec, Calendar)>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut origin: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    for path in paths {
        let files = match super::apply::input_files(path) {
            Ok(files) => files,
            Err(e) => {
                problems.push(format!("{e:#}"));
                continue;
            }
        };
        for file in files {
            let doc = match super::read_document(&file) {
                Ok(doc) => doc,
                Err(e) => {
                    problems.push(format!("{e:#}"));
                    continue;
                }
            };
            match parse_file(doc, default_namespace) {
                Ok(calendars) => {
                    for (spec, calendar) in calendars {
                        let key = (spec.namespace.clone(), spec.name.clone());
                        if let Some(first) = origin.get(&key) {
                            problems.push(format!(
                                "{}: calendar `{}/{}` is also in {}",
                                file.display(),
                                key.0,
                                key.1,
                                first.display()
                            ));
                            continue;
                        }
                        origin.insert(key, file.clone());
                        out.push((spec, calendar));
                    }
                }
                Err(errs) => problems.extend(
                    errs.errors
                        .iter()
                        .map(|e| format!("{}: {e}", file.display())),
                ),
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `header`, then each problem on a line of its own.
pub fn problems_message(header: &str, problems: &[String]) -> String {
    let mut msg = header.to_owned();
    for p in problems {
        msg.push_str(&format!("\n  {p}"));
    }
    msg
}

/// A calendar object of the API as a document (the fields the server owns dropped), and its
/// version.
pub fn from_server(mut calendar: Value) -> anyhow::Result<(CalendarSpec, i64)> {
    let version = calendar["version"].as_i64().unwrap_or(0);
    if let Some(obj) = calendar.as_object_mut() {
        for field in READ_ONLY_FIELDS {
            obj.remove(field);
        }
    }
    let spec = serde_json::from_value(calendar)
        .map_err(|e| anyhow!("the server sent a calendar this CLI cannot read: {e}"))?;
    Ok((spec, version))
}

fn calendar_path(namespace: &str, name: &str) -> String {
    format!(
        "/api/v1/calendars/{}?{}",
        urlencode(name),
        ns_query(namespace)
    )
}

/// The server's calendars of these namespaces, with their versions.
pub async fn server_calendars(
    client: &Client,
    namespaces: &BTreeSet<String>,
) -> anyhow::Result<Vec<(CalendarSpec, i64)>> {
    let mut out = Vec::new();
    for ns in namespaces {
        let calendars: Vec<Value> = client
            .json(
                Method::GET,
                &format!("/api/v1/calendars?{}", ns_query(ns)),
                None,
            )
            .await?;
        for calendar in calendars {
            out.push(from_server(calendar)?);
        }
    }
    Ok(out)
}

/// The server's calendar and its version (`None`: there is none).
async fn server_calendar(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<(CalendarSpec, i64)>> {
    match client
        .json::<Value>(Method::GET, &calendar_path(namespace, name), None)
        .await
    {
        Ok(calendar) => from_server(calendar).map(Some),
        Err(e)
            if e.downcast_ref::<ApiFailure>()
                .is_some_and(|f| f.status == StatusCode::NOT_FOUND) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Writes a calendar: creates it (`version` `None`; refused if it exists) or replaces that
/// version of it (refused if it changed since). The jobs the server re-planned with it, by name.
pub async fn write(
    client: &Client,
    spec: &CalendarSpec,
    version: Option<i64>,
) -> anyhow::Result<Vec<String>> {
    let mut body = serde_json::to_value(spec)?;
    let answer: Value = match version {
        None => {
            client
                .json(Method::POST, "/api/v1/calendars", Some(&body))
                .await?
        }
        Some(version) => {
            body["version"] = Value::from(version);
            client
                .json(
                    Method::PUT,
                    &calendar_path(&spec.namespace, &spec.name),
                    Some(&body),
                )
                .await?
        }
    };
    Ok(job_names(&answer["jobs"]))
}

/// The names in a calendar object's `jobs` (names, or job objects with a `name`).
fn job_names(jobs: &Value) -> Vec<String> {
    jobs.as_array()
        .map(|jobs| {
            jobs.iter()
                .filter_map(|j| j.as_str().or_else(|| j["name"].as_str()))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `re-planned 2 jobs: a, b` (empty for none).
pub fn replanned(jobs: &[String]) -> String {
    match jobs.len() {
        0 => String::new(),
        1 => format!("re-planned 1 job: {}", jobs[0]),
        n => format!("re-planned {n} jobs: {}", jobs.join(", ")),
    }
}

/// What `kairos calendar apply` did with one calendar.
#[derive(Debug, Serialize)]
struct Applied<'a> {
    namespace: &'a str,
    name: &'a str,
    /// `created`, `changed` or `unchanged`.
    result: &'static str,
    /// The jobs re-planned with it.
    jobs: Vec<String>,
}

pub async fn run(
    client: &Client,
    namespace: &str,
    json: bool,
    cmd: CalendarCmd,
) -> anyhow::Result<()> {
    match cmd {
        CalendarCmd::Ls => {
            let calendars: Vec<Value> = client
                .json(
                    Method::GET,
                    &format!("/api/v1/calendars?{}", ns_query(namespace)),
                    None,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&calendars)?);
                return Ok(());
            }
            let count =
                |c: &Value, field: &str| c[field].as_array().map_or(0, Vec::len).to_string();
            let rows: Vec<Vec<String>> = calendars
                .iter()
                .map(|c| {
                    vec![
                        c["namespace"].as_str().unwrap_or(namespace).to_owned(),
                        c["name"].as_str().unwrap_or_default().to_owned(),
                        c["timezone"].as_str().unwrap_or("UTC").to_owned(),
                        count(c, "dates"),
                        count(c, "ranges"),
                        count(c, "yearly"),
                        c["version"].to_string(),
                    ]
                })
                .collect();
            table::print(
                &[
                    "NAMESPACE",
                    "NAME",
                    "ZONE",
                    "DATES",
                    "RANGES",
                    "YEARLY",
                    "VERSION",
                ],
                &rows,
            );
        }
        CalendarCmd::Get { name } => {
            let calendar: Value = client
                .json(Method::GET, &calendar_path(namespace, &name), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&calendar)?);
        }
        CalendarCmd::Apply { file } => {
            // Every file is read and validated before anything is sent.
            let calendars = load_files(&file, namespace).map_err(|problems| {
                anyhow!(problems_message(
                    "invalid calendars; nothing was changed:",
                    &problems
                ))
            })?;
            let mut done = Vec::with_capacity(calendars.len());
            for (spec, _) in &calendars {
                let current = server_calendar(client, &spec.namespace, &spec.name).await?;
                let (result, jobs) = match current {
                    None => ("created", write(client, spec, None).await?),
                    Some((current, _)) if &current == spec => ("unchanged", Vec::new()),
                    Some((_, version)) => ("changed", write(client, spec, Some(version)).await?),
                };
                if !json {
                    let key = format!("{}/{}", spec.namespace, spec.name);
                    match replanned(&jobs) {
                        r if r.is_empty() => println!("calendar {key}: {result}"),
                        r => println!("calendar {key}: {result} ({r})"),
                    }
                }
                done.push(Applied {
                    namespace: &spec.namespace,
                    name: &spec.name,
                    result,
                    jobs,
                });
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            }
        }
        CalendarCmd::Rm { name } => {
            client
                .send(Method::DELETE, &calendar_path(namespace, &name), None)
                .await?;
            if !json {
                println!("calendar {namespace}/{name} deleted");
            }
        }
    }
    Ok(())
}
