//! The CLI's commands.

pub mod apply;
pub mod audit;
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

/// Reads a JSON or TOML document (by extension; `-` is JSON on standard input).
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
        serde_json::to_value(value).context("TOML to JSON")
    } else {
        kairos_core::document::parse_json(text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// A short, human form of an instant for tables (`-` when absent).
pub fn short_time(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.replace('T', " ").trim_end_matches('Z').to_owned(),
        None => "-".into(),
    }
}
