//! All console output goes through here: results to stdout, diagnostics to
//! stderr. Nothing else in kiln prints.

use std::io::{self, Write};

use serde_json::Value;

/// Write a result line to stdout. A closed pipe (`kiln ... | head`) is not an error.
pub fn result(text: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Write a JSON document to stdout, pretty-printed.
pub fn json(value: &Value) {
    let text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"<unprintable: {e}>\""));
    result(&text);
}

/// A warning on stderr.
pub fn warn(text: &str) {
    let _ = writeln!(io::stderr().lock(), "warning: {text}");
}

/// A status line on stderr (what kiln did, for humans).
pub fn status(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// `text` from an untrusted source (a daemon, a registry, a plugin) made
/// safe for a terminal: control characters other than newline and tab are
/// shown escaped, so no escape sequence reaches the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An error on stderr.
pub fn error(text: &str) {
    let _ = writeln!(io::stderr().lock(), "error: {text}");
}

/// Render rows as left-aligned columns; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width = vec![0usize; cols];
    for (i, h) in header.iter().enumerate() {
        width[i] = h.chars().count();
    }
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 < cols {
                l.push_str(cell);
                l.push_str(&" ".repeat(width[i] - cell.chars().count() + 2));
            } else {
                l.push_str(cell);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["TYPE", "NAME", "DESCRIPTION"],
            &[
                vec!["image-builder".into(), "local".into(), "Docker".into()],
                vec!["container-registry".into(), "default".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "TYPE                NAME     DESCRIPTION\n\
             image-builder       local    Docker\n\
             container-registry  default"
        );
    }
}
