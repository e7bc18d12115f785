//! The input of `kairos apply`: jobs files (or a directory of them) read and validated into
//! the jobs and calendars they declare, each problem with its file and path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use kairos_core::calendar::CalendarSpec;
use kairos_core::error::index;
use kairos_core::{JobSpec, ValidationErrors};
use serde_json::Value;

use crate::cmd::calendar as calendars;

/// What a jobs file (or a directory of them) declares.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub jobs: Vec<JobSpec>,
    /// Where each job is written (`jobs[2]`, after its file's name when there are several),
    /// for messages about it.
    pub job_at: Vec<String>,
    pub calendars: Vec<CalendarSpec>,
}

/// Parses and validates the file's job documents, reporting every problem at `jobs[i].…`
/// (its calendars are checked too; see [`parse_document`]).
pub fn parse_file(doc: Value, default_namespace: &str) -> Result<Vec<JobSpec>, ValidationErrors> {
    parse_document(doc, default_namespace).map(|d| d.jobs)
}

/// Parses and validates a jobs file's documents: its jobs (`jobs[i].…`) and calendars
/// (`calendars[i].…`), every problem at its path.
pub fn parse_document(doc: Value, default_namespace: &str) -> Result<Desired, ValidationErrors> {
    let (items, calendar_items) = match doc {
        Value::Array(items) => (items, Vec::new()),
        Value::Object(mut obj) => {
            let jobs = obj.remove("jobs");
            let calendars = obj.remove("calendars");
            if jobs.is_none() && calendars.is_none() {
                return Err(ValidationErrors::single(
                    "jobs",
                    "the file must hold a list of jobs (`[[jobs]]` in TOML)",
                ));
            }
            if let Some(extra) = obj.keys().next() {
                return Err(ValidationErrors::single(
                    extra.clone(),
                    "unknown field; the file holds only `jobs` and `calendars`",
                ));
            }
            let jobs = match jobs {
                Some(Value::Array(items)) => items,
                None => Vec::new(),
                Some(_) => {
                    return Err(ValidationErrors::single(
                        "jobs",
                        "the file must hold a list of jobs (`[[jobs]]` in TOML)",
                    ));
                }
            };
            let calendars = match calendars {
                Some(Value::Array(items)) => items,
                None => Vec::new(),
                Some(_) => {
                    return Err(ValidationErrors::single(
                        "calendars",
                        "must be a list of calendars (`[[calendars]]` in TOML)",
                    ));
                }
            };
            (jobs, calendars)
        }
        _ => {
            return Err(ValidationErrors::single(
                "jobs",
                "the file must hold a list of jobs",
            ));
        }
    };
    let mut errs = ValidationErrors::default();
    let mut specs = Vec::with_capacity(items.len());
    let mut job_at = Vec::with_capacity(items.len());
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
        job_at.push(at);
    }
    let calendars = calendars::parse_list(calendar_items, default_namespace, &mut errs)
        .into_iter()
        .map(|(spec, _)| spec)
        .collect();
    errs.into_result(Desired {
        jobs: specs,
        job_at,
        calendars,
    })
}

fn prefixed(at: &str, field: &str) -> String {
    if field.is_empty() {
        at.to_owned()
    } else {
        format!("{at}.{field}")
    }
}

/// The input's files: the file itself, or a directory's `*.toml` and `*.json` files by name.
pub fn input_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.as_os_str() == "-" || !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read the directory {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml" || e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and validates the input; `Err` is the message listing every problem, each at its file
/// and path.
pub(super) fn load(path: &Path, namespace: &str) -> Result<Desired, String> {
    let files = input_files(path).map_err(|e| format!("{e:#}"))?;
    let many = files.len() > 1 || path.is_dir();
    let mut problems = Vec::new();
    let mut desired = Desired::default();
    let mut origin: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    let mut calendar_origin: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    for file in &files {
        let prefix = if many {
            format!("{}: ", file.display())
        } else {
            String::new()
        };
        let doc = match crate::cmd::read_document(file) {
            Ok(doc) => doc,
            Err(e) => {
                problems.push(format!("{e:#}"));
                continue;
            }
        };
        match parse_document(doc, namespace) {
            Ok(found) => {
                for (spec, at) in found.jobs.into_iter().zip(found.job_at) {
                    let key = (spec.namespace.clone(), spec.name.clone());
                    if let Some(first) = origin.get(&key) {
                        problems.push(format!(
                            "{prefix}`{}/{}` is also listed in {}",
                            key.0,
                            key.1,
                            first.display()
                        ));
                        continue;
                    }
                    origin.insert(key, file.clone());
                    desired.jobs.push(spec);
                    desired.job_at.push(format!("{prefix}{at}"));
                }
                for spec in found.calendars {
                    let key = (spec.namespace.clone(), spec.name.clone());
                    if let Some(first) = calendar_origin.get(&key) {
                        problems.push(format!(
                            "{prefix}calendar `{}/{}` is also listed in {}",
                            key.0,
                            key.1,
                            first.display()
                        ));
                        continue;
                    }
                    calendar_origin.insert(key, file.clone());
                    desired.calendars.push(spec);
                }
            }
            Err(errs) => problems.extend(errs.errors.iter().map(|e| format!("{prefix}{e}"))),
        }
    }
    if problems.is_empty() {
        Ok(desired)
    } else {
        let mut msg = format!("{} is invalid; nothing was changed:", path.display());
        for p in problems {
            msg.push_str(&format!("\n  {p}"));
        }
        Err(msg)
    }
}

/// What the input holds now, to notice a change: each file's name and contents.
pub(super) fn fingerprint(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match input_files(path) {
        Ok(files) => {
            for file in files {
                file.hash(&mut h);
                std::fs::read(&file).ok().hash(&mut h);
            }
        }
        Err(e) => e.to_string().hash(&mut h),
    }
    h.finish()
}
