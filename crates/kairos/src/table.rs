//! Plain aligned tables for people. A cell longer than [`MAX_CELL`] characters is cut with `…`
//! (`--json` shows everything), and control characters are shown as `?`, so one odd value
//! never breaks the listing for everyone.

/// Widest cell shown, in characters.
pub const MAX_CELL: usize = 60;

pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", render(headers, rows));
}

/// A cell as shown: control characters replaced, cut at [`MAX_CELL`].
fn cell(text: &str) -> String {
    let clean = |c: char| if c.is_control() { '?' } else { c };
    if text.chars().count() <= MAX_CELL {
        return text.chars().map(clean).collect();
    }
    let mut cut: String = text.chars().take(MAX_CELL - 1).map(clean).collect();
    cut.push('…');
    cut
}

pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let headers: Vec<String> = headers.iter().map(|h| cell(h)).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| cell(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            s.push_str(cell);
            if i + 1 < cells.len() {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                s.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&headers, &mut out);
    for row in &rows {
        line(row, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let out = super::render(
            &["NAME", "STATE"],
            &[
                vec!["a-long-name".into(), "ok".into()],
                vec!["b".into(), "failed".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME         STATE\na-long-name  ok\nb            failed\n"
        );
    }

    #[test]
    fn huge_and_odd_cells_never_break_the_table() {
        let huge = "5".repeat(100_000);
        let out = super::render(
            &["NAME", "SCHEDULE", "NEXT"],
            &[
                vec!["j".into(), huge, "soon".into()],
                vec!["k\nl".into(), "x".into()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[1].contains(&format!("{}…", "5".repeat(59))), "{out}");
        assert!(lines[1].ends_with("soon"), "{out}");
        assert!(lines[2].starts_with("k?l"), "{out}");
    }
}
