//! All console output goes through here: results to stdout, diagnostics to
//! stderr. Nothing else in kiln prints.

use std::io::{self, Write};

use serde_json::Value;

/// How progress (status lines, warnings, a builder's events) is shown:
/// buildx's `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// Human lines on stderr (the default; `auto` and `plain` alike).
    Plain,
    /// Nothing but warnings and errors.
    Quiet,
    /// One JSON object per line on stderr: `{"kind","level","message"}`.
    Rawjson,
}

static PROGRESS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The variable a worker process learns the mode from.
pub const PROGRESS_VAR: &str = "KILN_PROGRESS";

/// Set the mode for the rest of the process.
pub fn set_progress(mode: Progress) {
    PROGRESS.store(mode as u8, std::sync::atomic::Ordering::Relaxed);
}

/// The mode in force.
pub fn progress() -> Progress {
    match PROGRESS.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Progress::Quiet,
        2 => Progress::Rawjson,
        _ => Progress::Plain,
    }
}

/// The mode's name, as `--progress` and [`PROGRESS_VAR`] spell it.
pub fn progress_name(mode: Progress) -> &'static str {
    match mode {
        Progress::Plain => "plain",
        Progress::Quiet => "quiet",
        Progress::Rawjson => "rawjson",
    }
}

/// A progress event on stderr in the mode in force: `line` for humans
/// (dropped when quiet unless `always`), or one JSON object.
pub fn event(kind: &str, level: &str, message: &str, line: &str, always: bool) {
    match progress() {
        Progress::Quiet if !always => {}
        Progress::Rawjson => {
            let v = serde_json::json!({"kind": kind, "level": level, "message": message});
            let _ = writeln!(io::stderr().lock(), "{v}");
        }
        _ => {
            let _ = writeln!(io::stderr().lock(), "{line}");
        }
    }
}

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

/// A warning on stderr (shown in every progress mode).
pub fn warn(text: &str) {
    event("warning", "warn", text, &format!("warning: {text}"), true);
}

/// A status line on stderr (what kiln did, for humans; none when quiet).
pub fn status(text: &str) {
    event("status", "info", text, text, false);
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
