//! How client commands print: aligned tables for people, pretty JSON with `--json`.

use std::collections::BTreeSet;

/// Longest cell a table shows, in characters; longer ones end in `…`. Names and labels come
/// from remote clients (a framework's name, a label value), and a table is for reading: the
/// whole value is in `--json`.
const MAX_CELL_CHARS: usize = 200;

/// Print rows as an aligned table.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", render(headers, rows));
}

/// Rows as an aligned table, one line each after the headers, cells cut to
/// [`MAX_CELL_CHARS`]. Padding is counted by hand: a `format!` width over 65,535 panics.
fn render(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let cut = |c: &str| -> String {
        if c.chars().count() <= MAX_CELL_CHARS {
            return c.to_string();
        }
        let mut s: String = c.chars().take(MAX_CELL_CHARS - 1).collect();
        s.push('…');
        s
    };
    let lines: Vec<Vec<String>> = std::iter::once(headers.iter().map(|h| cut(h)).collect())
        .chain(rows.iter().map(|r| r.iter().map(|c| cut(c)).collect()))
        .collect();
    let mut widths: Vec<usize> = vec![0; headers.len()];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for l in lines {
        let mut line = String::new();
        for (i, (c, w)) in l.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(super) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A set as one cell: `a,b`, or `-` when empty.
pub(super) fn set(v: &BTreeSet<String>) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter().cloned().collect::<Vec<_>>().join(",")
    }
}

/// An optional value as one cell: the value, or `-`.
pub(super) fn dash(o: &Option<String>) -> String {
    o.clone().unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_cut_long_cells() {
        let out = render(
            &["ID", "NAME"],
            vec![
                vec!["a".into(), "short".into()],
                vec!["bbb".into(), "x".repeat(100_000)],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], "ID   NAME");
        assert_eq!(lines[1], "a    short");
        let cut = format!("bbb  {}…", "x".repeat(MAX_CELL_CHARS - 1));
        assert_eq!(lines[2], cut);
        assert_eq!(lines[2].chars().count(), 5 + MAX_CELL_CHARS);
        // A row with fewer cells than headers still prints.
        assert_eq!(render(&["A", "B"], vec![vec!["é".into()]]), "A  B\né\n");
    }
}
