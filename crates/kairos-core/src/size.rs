//! Sizes as users write them: `512MiB`, `1GiB`, `64KiB`, `100MB`, `4096` (bytes).

/// Parses a size in bytes: a whole number and an optional unit (`B`, `KB`/`MB`/`GB`/`TB` in
/// powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` in powers of 1024; case-insensitive).
pub fn parse_size(input: &str) -> Result<u64, String> {
    let text = input.trim();
    let bad = || format!("`{input}` is not a size; write e.g. `512MiB`, `1GiB` or `100MB`");
    if text.is_empty() || text.len() > 32 {
        return Err(bad());
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{input}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
        for bad in [
            "",
            "MiB",
            "1.5GiB",
            "-1MiB",
            "12 parsecs",
            "99999999999999999999TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
