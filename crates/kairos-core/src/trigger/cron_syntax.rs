//! Checks the syntax of a cron expression field by field before `croner` parses it.
//!
//! `croner` is lenient in ways that hide mistakes: it replaces day and month names anywhere in the
//! pattern (`0 MON * * *` would fire at 01:00), accepts empty list items (`1,,2`), a `+` prefix
//! that switches the day rule, and reports out-of-range values without naming the field. This
//! module accepts exactly the dialect of DESIGN.md and says which field is wrong and why; `croner`
//! then parses the normalized text.

/// Which extra syntax a field accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    DayOfMonth,
    Month,
    DayOfWeek,
}

/// One field: its name for messages, its range, and its names (index + `min` is the value).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    kind: Kind,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    kind: Kind::Plain,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    kind: Kind::Plain,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    kind: Kind::Plain,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    kind: Kind::DayOfMonth,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    kind: Kind::Month,
};
/// 0 and 7 are both Sunday.
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    kind: Kind::DayOfWeek,
};

/// A checked expression: 5 or 6 upper-case fields, macros expanded.
pub(super) struct Fields {
    pub fields: Vec<String>,
}

impl Fields {
    /// The expression as `croner` should parse it.
    pub fn to_pattern(&self) -> String {
        self.fields.join(" ")
    }

    /// The day-of-month and day-of-week fields.
    pub fn day_fields(&self) -> (&str, &str) {
        let n = self.fields.len();
        (&self.fields[n - 3], &self.fields[n - 1])
    }
}

/// Expands macros and checks every field. Errors are messages for people.
pub(super) fn check(expr: &str) -> Result<Fields, String> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err("the expression is empty; write e.g. `0 3 * * *` or `@daily`".into());
    }
    let expanded = match trimmed.strip_prefix('@') {
        Some(name) => expand_macro(name)?,
        None => trimmed,
    };
    let written: Vec<&str> = expanded.split_whitespace().collect();
    let layout: &[Field] = match written.len() {
        5 => &[MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
        6 => &[SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
        n => {
            return Err(format!(
                "expected 5 fields (min hour dom mon dow) or 6 (sec min hour dom mon dow), found {n}"
            ));
        }
    };
    let fields: Vec<String> = written.iter().map(|f| f.to_ascii_uppercase()).collect();
    for ((field, text), written) in layout.iter().zip(&fields).zip(&written) {
        check_field(field, text).map_err(|e| format!("{} field `{written}`: {e}", field.name))?;
    }
    Ok(Fields { fields })
}

fn expand_macro(name: &str) -> Result<&'static str, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        _ => {
            return Err(format!(
                "unknown macro `@{name}`; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
            ));
        }
    })
}

fn check_field(field: &Field, text: &str) -> Result<(), String> {
    if text == "?" {
        return match field.kind {
            Kind::DayOfMonth | Kind::DayOfWeek => Ok(()),
            _ => Err("`?` is only allowed in the day-of-month and day-of-week fields".into()),
        };
    }
    for item in text.split(',') {
        if item.is_empty() {
            return Err("a list has an empty item".into());
        }
        check_item(field, item)?;
    }
    Ok(())
}

fn check_item(field: &Field, item: &str) -> Result<(), String> {
    if item.contains('?') {
        return Err("`?` stands alone in its field".into());
    }
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (item, None),
    };
    if let Some(step) = step {
        let n: u32 = step
            .parse()
            .map_err(|_| format!("step `{step}` is not a number"))?;
        if n == 0 || n > field.max {
            return Err(format!("step {n} is out of range 1-{}", field.max));
        }
        if base != "*" && !base.contains('-') {
            return Err(format!(
                "a step needs `*` or a range before it, e.g. `*/{n}` or `{base}-{}/{n}`",
                field.max
            ));
        }
    } else if let Some(special) = special_item(field, item) {
        return special;
    }
    if base == "*" {
        return Ok(());
    }
    match base.split_once('-') {
        Some((from, to)) => {
            // `SAT-SUN` is 6-7: a range ending with the name of Sunday ends at 7 (`5-0` is no range).
            let sunday_last = field.kind == Kind::DayOfWeek && to == "SUN";
            let (from, to) = (
                value(field, from)?,
                if sunday_last { 7 } else { value(field, to)? },
            );
            if from > to {
                return Err(format!("range {from}-{to} runs backwards"));
            }
            Ok(())
        }
        None => value(field, base).map(|_| ()),
    }
}

/// `L`, `LW` and `nW` in day-of-month; `nL` and `n#k` in day-of-week. `None`: not a special item.
fn special_item(field: &Field, item: &str) -> Option<Result<(), String>> {
    match field.kind {
        Kind::DayOfMonth => {
            if item == "L" || item == "LW" {
                return Some(Ok(()));
            }
            let day = item.strip_suffix('W')?;
            Some(value(field, day).map(|_| ()))
        }
        Kind::DayOfWeek => {
            if item == "L" {
                return Some(Err(
                    "`L` needs a weekday before it, e.g. `5L` or `FRIL` (the last Friday)".into(),
                ));
            }
            if let Some(day) = item.strip_suffix('L') {
                return Some(value(field, day).map(|_| ()));
            }
            let (day, nth) = item.split_once('#')?;
            Some(value(field, day).and_then(|_| match nth.parse::<u32>() {
                Ok(1..=5) => Ok(()),
                _ => Err(format!(
                    "`#{nth}` must be #1 to #5 (the nth weekday of the month)"
                )),
            }))
        }
        Kind::Plain | Kind::Month => None,
    }
}

/// A number in the field's range, or a name the field accepts.
fn value(field: &Field, text: &str) -> Result<u32, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(n) if (field.min..=field.max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{text} is out of range {}-{}",
                field.min, field.max
            )),
        };
    }
    let position = |names: &[&str]| names.iter().position(|n| *n == text);
    match (field.kind, position(&MONTHS), position(&WEEKDAYS)) {
        (Kind::Month, Some(i), _) => Ok(i as u32 + 1),
        (Kind::DayOfWeek, _, Some(i)) => Ok(i as u32),
        (_, Some(_), _) => Err(format!(
            "`{text}` is a month name; names of months belong in the month field"
        )),
        (_, _, Some(_)) => Err(format!(
            "`{text}` is a day name; names of days belong in the day-of-week field"
        )),
        _ if text.is_empty() => Err("a value is missing".into()),
        _ => Err(format!(
            "`{text}` is neither a number nor a name this field accepts"
        )),
    }
}
