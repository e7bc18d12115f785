//! Event triggers: a job subscribes to a topic (`{"event": "user.signup"}`), optionally with a
//! filter (`"filter": {"plan": "pro"}`: equality on top-level fields of the payload). Posting an
//! event creates one run per subscribed job whose filter matches, at most one per event id.
//!
//! Pure: the rules for topics, event ids and filters, and the matching itself.

use std::collections::BTreeMap;

use serde_json::Value;

/// Largest event payload, as JSON text.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Longest topic.
pub const MAX_TOPIC_LEN: usize = 128;
/// Longest event id.
pub const MAX_EVENT_ID_LEN: usize = 256;
/// Most fields one filter compares.
pub const MAX_FILTER_FIELDS: usize = 32;
/// Longest string value (and field name) in a filter.
pub const MAX_FILTER_VALUE_LEN: usize = 1024;

/// Checks a topic: 1 to 128 characters, ASCII letters, digits, `_`, `.`, `-` and `:`, starting
/// with a letter or digit (`user.signup`, `orders:created`, `s3.put-object`).
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic == "stream" {
        // `/api/v1/events/stream` is the event stream, not a topic to post to.
        return Err(
            "`stream` is reserved (`GET /api/v1/events/stream` is the event stream)".into(),
        );
    }
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if ok {
        return Ok(());
    }
    let shown: String = topic.chars().take(MAX_TOPIC_LEN).collect();
    Err(format!(
        "`{shown}` is not a valid topic: 1 to {MAX_TOPIC_LEN} characters, ASCII letters, digits, `_`, `.`, `-`, `:`, starting with a letter or digit"
    ))
}

/// Checks an event id (an idempotency key): 1 to 256 bytes, no control characters.
pub fn validate_event_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_EVENT_ID_LEN {
        return Err(format!(
            "is {} bytes long; at most {MAX_EVENT_ID_LEN}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// The event id a payload carries in its top-level `"id"` field: a string, or an integer
/// (written in decimal). `Ok(None)` when there is none.
pub fn payload_event_id(payload: &Value) -> Result<Option<String>, String> {
    let Some(id) = payload.as_object().and_then(|o| o.get("id")) else {
        return Ok(None);
    };
    let id = match id {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Null => return Ok(None),
        _ => return Err("must be a string or an integer (the event's idempotency key)".into()),
    };
    validate_event_id(&id)?;
    Ok(Some(id))
}

/// The topics a job subscribes to, sorted, each once (what a store indexes to find the jobs
/// an event is for).
pub fn topics(spec: &crate::JobSpec) -> Vec<String> {
    let mut topics: Vec<String> = spec
        .triggers
        .iter()
        .filter_map(|t| t.event.clone())
        .collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

/// A validated subscription: the topic and the fields a payload must have.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTrigger {
    pub topic: String,
    /// Top-level payload fields and the values they must equal (JSON scalars). Empty: every
    /// event of the topic.
    pub filter: BTreeMap<String, Value>,
}

impl EventTrigger {
    /// Whether an event of `topic` with `payload` is for this subscription.
    pub fn matches(&self, topic: &str, payload: &Value) -> bool {
        self.topic == topic && filter_matches(&self.filter, payload)
    }
}

/// Whether every field of `filter` is a top-level field of `payload` (an object) with an equal
/// value. Numbers compare by value (`1` equals `1.0`); an empty filter matches every payload.
pub fn filter_matches(filter: &BTreeMap<String, Value>, payload: &Value) -> bool {
    if filter.is_empty() {
        return true;
    }
    let Some(fields) = payload.as_object() else {
        return false;
    };
    filter
        .iter()
        .all(|(k, want)| fields.get(k).is_some_and(|got| scalar_eq(want, got)))
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        _ => a == b,
    }
}

/// Checks a filter's fields (at `at`, e.g. `triggers[0].filter`): at most
/// [`MAX_FILTER_FIELDS`], each a JSON scalar (string, number, boolean, null).
pub(crate) fn validate_filter(
    filter: &BTreeMap<String, Value>,
    at: &str,
    errs: &mut crate::ValidationErrors,
) {
    if filter.len() > MAX_FILTER_FIELDS {
        errs.push(
            at,
            format!(
                "compares {} fields; at most {MAX_FILTER_FIELDS}",
                filter.len()
            ),
        );
        return;
    }
    for (key, value) in filter {
        let field = crate::error::path(at, key);
        if key.is_empty() || key.len() > MAX_FILTER_VALUE_LEN {
            errs.push(
                at,
                format!("field names are 1 to {MAX_FILTER_VALUE_LEN} bytes"),
            );
            continue;
        }
        match value {
            Value::Array(_) | Value::Object(_) => errs.push(
                field,
                "must be a string, number, boolean or null (filters compare top-level fields for equality)",
            ),
            Value::String(s) if s.len() > MAX_FILTER_VALUE_LEN => errs.push(
                field,
                format!("is {} bytes long; at most {MAX_FILTER_VALUE_LEN}", s.len()),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn topics() {
        for ok in ["user.signup", "a", "orders:created", "s3.put-object", "A_1"] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        for bad in ["", ".x", "a b", "a/b", "ü", "a\n", long.as_str()] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_ids() {
        assert!(validate_event_id("evt_1").is_ok());
        assert!(validate_event_id("").is_err());
        assert!(validate_event_id("a\u{7}").is_err());
        assert!(validate_event_id(&"x".repeat(MAX_EVENT_ID_LEN + 1)).is_err());
        assert_eq!(
            payload_event_id(&json!({"id": "e1"})),
            Ok(Some("e1".into()))
        );
        assert_eq!(payload_event_id(&json!({"id": 42})), Ok(Some("42".into())));
        assert_eq!(payload_event_id(&json!({"id": null})), Ok(None));
        assert_eq!(payload_event_id(&json!({"x": 1})), Ok(None));
        assert_eq!(payload_event_id(&json!([1])), Ok(None));
        assert!(payload_event_id(&json!({"id": 1.5})).is_err());
        assert!(payload_event_id(&json!({"id": {"a": 1}})).is_err());
        assert!(payload_event_id(&json!({"id": ""})).is_err());
    }

    #[test]
    fn filters_compare_top_level_fields() {
        let f = filter(json!({"plan": "pro", "seats": 3}));
        assert!(filter_matches(
            &f,
            &json!({"plan": "pro", "seats": 3, "x": 1})
        ));
        assert!(filter_matches(&f, &json!({"plan": "pro", "seats": 3.0})));
        assert!(!filter_matches(&f, &json!({"plan": "pro"})));
        assert!(!filter_matches(&f, &json!({"plan": "free", "seats": 3})));
        assert!(!filter_matches(&f, &json!({"plan": "pro", "seats": "3"})));
        assert!(!filter_matches(&f, &json!(["plan", "pro"])));
        assert!(!filter_matches(
            &f,
            &json!({"nested": {"plan": "pro", "seats": 3}})
        ));
        assert!(filter_matches(&BTreeMap::new(), &json!("anything")));
        let null = filter(json!({"deleted_at": null}));
        assert!(filter_matches(&null, &json!({"deleted_at": null})));
        assert!(!filter_matches(&null, &json!({})));
        let big = filter(json!({"n": u64::MAX}));
        assert!(filter_matches(&big, &json!({"n": u64::MAX})));
        assert!(!filter_matches(&big, &json!({"n": -1})));
    }

    #[test]
    fn filter_validation() {
        let mut errs = crate::ValidationErrors::default();
        validate_filter(
            &filter(json!({"a": [1], "b": {"c": 1}, "d": "ok", "e": 1, "f": true, "g": null})),
            "triggers[0].filter",
            &mut errs,
        );
        let fields: Vec<_> = errs.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["triggers[0].filter.a", "triggers[0].filter.b"]);
        let mut errs = crate::ValidationErrors::default();
        let many: BTreeMap<String, Value> = (0..=MAX_FILTER_FIELDS)
            .map(|i| (format!("f{i}"), json!(i)))
            .collect();
        validate_filter(&many, "f", &mut errs);
        assert_eq!(errs.errors.len(), 1);
    }
}
