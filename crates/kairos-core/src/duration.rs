//! Durations as users write them: `500ms`, `30s`, `10m`, `1h30m`, `48h` (also ISO 8601 `PT1H`).
//! There is no day unit: a day is not always 24 hours. Every duration is at most
//! [`MAX_DURATION`] (366 days), so that no arithmetic on it can overflow an instant.

use jiff::SignedDuration;

/// The longest duration any field takes: 8784h, 366 days.
pub const MAX_DURATION: SignedDuration = SignedDuration::from_hours(366 * 24);

/// Longest input parsed (a duration is a few characters; this bounds error messages too).
const MAX_INPUT_LEN: usize = 64;

/// Parses a duration string. Rejects negative values and values over [`MAX_DURATION`];
/// `allow_zero` decides whether `0s` is valid.
pub fn parse_duration(input: &str, allow_zero: bool) -> Result<SignedDuration, String> {
    if input.len() > MAX_INPUT_LEN {
        return Err(format!(
            "is {} characters long; a duration is at most {MAX_INPUT_LEN} (e.g. `1h30m`)",
            input.len()
        ));
    }
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("duration is empty; write e.g. `30s`, `10m` or `1h30m`".into());
    }
    let parsed: SignedDuration = trimmed.parse().map_err(|_| {
        format!("`{input}` is not a duration; write e.g. `500ms`, `30s`, `10m` or `1h30m`")
    })?;
    if parsed.is_negative() {
        return Err(format!("`{input}` is negative; durations must be positive"));
    }
    if parsed.is_zero() && !allow_zero {
        return Err(format!("`{input}` is zero; it must be greater than zero"));
    }
    if parsed > MAX_DURATION {
        return Err(format!(
            "`{input}` is too long; durations are at most 8784h (366 days)"
        ));
    }
    Ok(parsed)
}

/// Formats a duration compactly for people, e.g. `1h 30m` or `250ms`.
pub fn format_duration(d: SignedDuration) -> String {
    format!("{d:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(
            parse_duration("500ms", false).unwrap(),
            SignedDuration::from_millis(500)
        );
        assert_eq!(
            parse_duration("30s", false).unwrap(),
            SignedDuration::from_secs(30)
        );
        assert_eq!(
            parse_duration("10m", false).unwrap(),
            SignedDuration::from_secs(600)
        );
        assert_eq!(
            parse_duration("1h30m", false).unwrap(),
            SignedDuration::from_secs(5400)
        );
        assert_eq!(
            parse_duration("PT2H", false).unwrap(),
            SignedDuration::from_secs(7200)
        );
        assert_eq!(parse_duration("0s", true).unwrap(), SignedDuration::ZERO);
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(parse_duration("", false).is_err());
        assert!(parse_duration("ten minutes", false).is_err());
        assert!(parse_duration("-5s", false).is_err());
        assert!(parse_duration("0s", false).is_err());
        assert!(parse_duration("5", false).is_err());
        assert!(parse_duration("999999999999999h", false).is_err());
        assert!(parse_duration("8785h", false).is_err());
        assert!(parse_duration(&"1".repeat(100), false).is_err());
        assert_eq!(parse_duration("8784h", false).unwrap(), MAX_DURATION);
    }
}
