//! Reading user documents so that one answer lists every problem, each at its real path.
//!
//! Two steps, both pure:
//!
//! 1. [`parse_json`]: strict JSON. A key written twice in one object is an error at that
//!    object's path (`serde_json::Value` would keep the last one silently).
//! 2. [`collect`]: deserializes a value into a type; on each type error it records the problem
//!    with its path, takes the offending part out (or puts a stand-in where a required field
//!    must be), and tries again, so that later problems are found too. Validation errors of the
//!    parts taken out are hidden by the caller (they would be about the stand-ins).
//!
//! Internally tagged enums (`task`, `hooks.pre`, `hooks.post`) lose serde's path inside them, so
//! [`collect_tagged`] reads their `kind` first and collects the variant's own fields with their
//! full paths.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{ValidationErrors, index, path};

/// Most type errors collected from one document before giving up.
const MAX_TYPE_ERRORS: usize = 32;

/// Why JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all.
    #[error("not valid JSON: {0}")]
    Malformed(String),
    /// A key appears twice in one object (`field` is the key's path).
    #[error("{field}: `{key}` is given twice; each key may appear once")]
    DuplicateKey { field: String, key: String },
}

impl From<JsonError> for ValidationErrors {
    fn from(e: JsonError) -> Self {
        match &e {
            JsonError::Malformed(_) => ValidationErrors::single("", e.to_string()),
            JsonError::DuplicateKey { field, key } => ValidationErrors::single(
                field.clone(),
                format!("`{key}` is given twice; each key may appear once"),
            ),
        }
    }
}

/// Parses JSON text, refusing duplicate keys.
pub fn parse_json(input: &[u8]) -> Result<Value, JsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(input);
    let parsed = StrictValue {
        at: None,
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (_, Some((at, key))) => Err(JsonError::DuplicateKey {
            field: path(&at, &key),
            key,
        }),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(JsonError::Malformed(e.to_string())),
    }
}

/// Where a value sits: its step from its parent, and the parent's place. Borrowed, so a deep or
/// wide document costs no string per value; the path is written out only for a duplicate.
struct Place<'p> {
    parent: Option<&'p Place<'p>>,
    step: PlaceStep<'p>,
}

enum PlaceStep<'p> {
    Key(&'p str),
    Index(usize),
}

fn written(place: Option<&Place<'_>>) -> String {
    let mut steps = Vec::new();
    let mut at = place;
    while let Some(p) = at {
        steps.push(&p.step);
        at = p.parent;
    }
    let mut out = String::new();
    for step in steps.into_iter().rev() {
        out = match step {
            PlaceStep::Key(key) => path(&out, key),
            PlaceStep::Index(i) => index(&out, *i),
        };
    }
    out
}

/// A seed that builds a `Value` and notes the first duplicate key (with its object's path).
struct StrictValue<'a, 'p> {
    at: Option<&'p Place<'p>>,
    duplicate: &'a RefCell<Option<(String, String)>>,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_, '_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let place = Place {
                parent: self.at,
                step: PlaceStep::Index(items.len()),
            };
            let item = seq.next_element_seed(StrictValue {
                at: Some(&place),
                duplicate: self.duplicate,
            })?;
            match item {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = {
                let place = Place {
                    parent: self.at,
                    step: PlaceStep::Key(&key),
                };
                map.next_value_seed(StrictValue {
                    at: Some(&place),
                    duplicate: self.duplicate,
                })?
            };
            if object.contains_key(&key) {
                self.duplicate.replace(Some((written(self.at), key)));
                return Err(de::Error::custom("duplicate key"));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// One step of a path into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// A path written as users read it: `triggers[0].cron`.
fn display(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        out = match step {
            Step::Key(key) => path(&out, key),
            Step::Index(i) => index(&out, *i),
        };
    }
    out
}

/// A valid value for a required field, put in place of a missing or mistyped one so that the
/// rest of the document can still be checked.
fn stand_in(field: &str) -> Option<Value> {
    Some(match field {
        "name" => Value::from("placeholder"),
        "task" => serde_json::json!({"kind": "function", "name": "placeholder"}),
        "argv" => serde_json::json!(["true"]),
        "script" => Value::from("true"),
        "url" => Value::from("http://placeholder"),
        "cron" => Value::from("@daily"),
        "interval" => Value::from("1h"),
        "at" => Value::from("2000-01-01T00:00:00Z"),
        _ => return None,
    })
}

/// What [`collect`] has taken out of a document: paths whose validation errors are about
/// stand-ins, not about the input.
#[derive(Debug, Default)]
pub struct Removed(Vec<String>);

impl Removed {
    /// Whether an error at `field` is about something taken out (at or under a removed path).
    pub fn hides(&self, field: &str) -> bool {
        self.0.iter().any(|r| {
            field == r
                || field
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    fn add(&mut self, field: String) {
        self.0.push(field);
    }
}

/// Deserializes `value` (found at `prefix` in the document) as `T`, recording every type error
/// with its path and taking the offending parts out, until it deserializes or nothing more can be
/// taken out (`None`).
pub fn collect<T: DeserializeOwned>(
    value: &mut Value,
    prefix: &str,
    errs: &mut ValidationErrors,
    removed: &mut Removed,
) -> Option<T> {
    let mut handled: HashMap<Vec<Step>, usize> = HashMap::new();
    for _ in 0..MAX_TYPE_ERRORS {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return Some(parsed),
            Err(err) => err,
        };
        let mut steps: Vec<Step> = err
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = err.into_inner().to_string();
        // A missing field is reported at the object that lacks it: name the field itself. An
        // unknown field names itself in the message only.
        let named = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|m| m.split('`').next())
                .map(str::to_owned)
        };
        let missing = named("missing field `");
        if let Some(field) = missing.clone().or_else(|| named("unknown field `"))
            && steps.last() != Some(&Step::Key(field.clone()))
        {
            steps.push(Step::Key(field));
        }
        let at = match display(&steps) {
            inner if inner.is_empty() => prefix.to_owned(),
            inner if inner.starts_with('[') => format!("{prefix}{inner}"),
            inner => path(prefix, &inner),
        };
        if !removed.hides(&at) {
            errs.push(at.clone(), message);
        }
        let seen = handled.entry(steps.clone()).or_default();
        *seen += 1;
        if *seen > 2 || !take_out(value, &steps, missing.is_some(), *seen > 1) {
            return None;
        }
        removed.add(at);
    }
    None
}

/// Takes the part at `steps` out of `value`: a stand-in for a required field (unless a
/// stand-in was put there before and failed too), a sibling's copy for a list element, else the
/// field is removed. False when nothing could be done.
fn take_out(value: &mut Value, steps: &[Step], missing: bool, again: bool) -> bool {
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    match (last, walk(value, parents)) {
        (Step::Key(key), Some(Value::Object(object))) => match stand_in(key).filter(|_| !again) {
            Some(stand_in) => {
                object.insert(key.clone(), stand_in);
                true
            }
            None => !missing && object.remove(key).is_some(),
        },
        (Step::Index(i), Some(Value::Array(items))) if *i < items.len() => {
            // A copy of another element keeps the list's length (so later paths stay right)
            // and, if that element is fine, its type.
            match (0..items.len()).find(|j| j != i).filter(|_| !again) {
                Some(j) => {
                    items[*i] = items[j].clone();
                    true
                }
                None => take_out(value, parents, false, false),
            }
        }
        _ => false,
    }
}

fn walk<'v>(value: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    let mut node = value;
    for step in steps {
        node = match step {
            Step::Key(key) => node.get_mut(key.as_str())?,
            Step::Index(i) => node.get_mut(*i)?,
        };
    }
    Some(node)
}

/// Checks the internally tagged object at `at` (`task`, `hooks.pre`): its `kind` must be one of
/// `kinds`, and the fields of that kind are collected with `collect_kind` (which returns false
/// when they cannot be read). A missing or unknown kind is recorded; then, or when the fields
/// cannot be read, the object is replaced by `stand_in` (or removed when that is `None`).
pub(crate) fn collect_tagged(
    document: &mut Value,
    at: &[Step],
    kinds: &[&str],
    stand_in: Option<Value>,
    errs: &mut ValidationErrors,
    removed: &mut Removed,
    collect_kind: impl FnOnce(&str, &mut Value, &str, &mut ValidationErrors, &mut Removed) -> bool,
) {
    let steps = at;
    let field = display(steps);
    let Some(node) = walk(document, steps) else {
        return;
    };
    let Value::Object(object) = node else {
        // Not an object: the document's own deserialization reports it.
        return;
    };
    let kind = object.get("kind").cloned();
    let known = kind
        .as_ref()
        .and_then(Value::as_str)
        .filter(|k| kinds.contains(k))
        .map(str::to_owned);
    let fields_read = match known {
        Some(kind) => {
            let mut fields = Value::Object(object.clone());
            if let Value::Object(f) = &mut fields {
                f.remove("kind");
            }
            let read = collect_kind(&kind, &mut fields, &field, errs, removed);
            if let Value::Object(mut f) = fields {
                f.insert("kind".into(), Value::from(kind));
                *node = Value::Object(f);
            }
            read
        }
        None => {
            let expected = kinds
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let message = match kind {
                None => format!("missing field `kind`; one of {expected}"),
                Some(Value::String(k)) => {
                    format!("unknown kind `{k}`; expected one of {expected}")
                }
                Some(other) => format!("`{other}` is not a kind; expected one of {expected}"),
            };
            errs.push(path(&field, "kind"), message);
            false
        }
    };
    if fields_read {
        return;
    }
    removed.add(field);
    match stand_in {
        Some(stand_in) => {
            if let Some(node) = walk(document, steps) {
                *node = stand_in;
            }
        }
        None => {
            if let Some((Step::Key(last), parents)) = steps.split_last()
                && let Some(Value::Object(parent)) = walk(document, parents)
            {
                parent.remove(last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let field = |text: &[u8]| match parse_json(text) {
            Err(JsonError::DuplicateKey { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(br#"{"name":"a","name":"b"}"#), "name");
        assert_eq!(
            field(br#"{"task":{"env":{"A":"1","A":"2"}}}"#),
            "task.env.A"
        );
        assert_eq!(
            field(br#"{"triggers":[{},{"cron":"x","cron":"y"}]}"#),
            "triggers[1].cron"
        );
        assert!(matches!(parse_json(b"{"), Err(JsonError::Malformed(_))));
        assert!(parse_json(br#"{"a":[1,2.5,"x",null,true,{"b":{}}]}"#).is_ok());
        assert!(parse_json(br#"{"a":1} trailing"#).is_err());
    }
}
