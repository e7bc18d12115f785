//! The CLI's commands.

pub mod alert;
pub mod apply;
pub mod audit;
pub mod calendar;
pub mod event;
pub mod job;
pub mod next;
pub mod node;
pub mod run;
pub mod store;
pub mod token;

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// Reads a JSON or TOML document (by extension; `-` is JSON on standard input). TOML's dates
/// and times may be written bare (`dates = [2026-12-25]`): they become the text a JSON document
/// would hold.
pub fn read_document(path: &Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    if is_toml {
        let value: toml::Value =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(toml_to_json(value))
    } else {
        kairos_core::document::parse_json(text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// A TOML value as JSON; a date or time becomes its text (`2026-12-25`, `2026-12-24T12:00:00`,
/// `2026-01-01T00:00:00Z`), as documents spell them in JSON.
pub fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_json(v)))
                .collect(),
        ),
    }
}

/// A short, human form of an instant for tables (`-` when absent).
pub fn short_time(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.replace('T', " ").trim_end_matches('Z').to_owned(),
        None => "-".into(),
    }
}
