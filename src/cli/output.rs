//! How client commands print: aligned tables for people, pretty JSON with `--json`.

use std::collections::BTreeSet;

/// Print rows as an aligned table.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
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
