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
    /// A terminal: a live line with the current step and the time taken,
    /// the build's output and kiln's lines printed above it.
    Tty,
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
        3 => Progress::Tty,
        _ => Progress::Plain,
    }
}

/// The mode's name, as `--progress` and [`PROGRESS_VAR`] spell it.
pub fn progress_name(mode: Progress) -> &'static str {
    match mode {
        Progress::Plain => "plain",
        Progress::Quiet => "quiet",
        Progress::Rawjson => "rawjson",
        Progress::Tty => "tty",
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
        Progress::Tty if LIVE_HERE.load(std::sync::atomic::Ordering::Relaxed) => {
            let bar = live_line();
            if kind == "step" || kind == "log" {
                bar.set_message(terminal_safe(message, colour()));
            }
            bar.println(terminal_safe(line, colour()));
        }
        _ => {
            let _ = writeln!(io::stderr().lock(), "{}", terminal_safe(line, colour()));
        }
    }
}

/// A transfer's progress (`label`: `current` of `total` bytes, `total` 0
/// when unknown): a bar above the live line in a terminal, one JSON object
/// with `--progress=rawjson`, otherwise a line when it starts, every few
/// seconds while it goes on and when it ends; nothing when quiet.
pub fn progress_bytes(label: &str, current: u64, total: u64) {
    use std::time::{Duration, Instant};
    /// How often a plain line repeats a long transfer's progress.
    const PLAIN_EVERY: Duration = Duration::from_secs(5);
    let done = total > 0 && current >= total;
    match progress() {
        Progress::Quiet => {}
        Progress::Rawjson => {
            let v = serde_json::json!({"kind": "progress", "level": "info", "message": label,
                "current": current, "total": total});
            let _ = writeln!(io::stderr().lock(), "{v}");
        }
        Progress::Tty if LIVE_HERE.load(std::sync::atomic::Ordering::Relaxed) => {
            let Ok(mut bars) = BARS.lock() else { return };
            if done {
                if let Some(bar) = bars.remove(label) {
                    bar.finish_and_clear();
                }
                return;
            }
            let bar = bars.entry(label.to_string()).or_insert_with(|| {
                let bar = multi().insert_before(live_line(), indicatif::ProgressBar::new(total));
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "  {msg} {bar:24} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(terminal_safe(label, false));
                bar
            });
            bar.set_length(total);
            bar.set_position(current);
        }
        _ => {
            let Ok(mut seen) = PLAIN_SEEN.lock() else {
                return;
            };
            let now = Instant::now();
            let due = match seen.get(label) {
                None => true,
                Some(last) => done || now.duration_since(*last) >= PLAIN_EVERY,
            };
            if !due {
                return;
            }
            if done {
                seen.remove(label);
            } else {
                seen.insert(label.to_string(), now);
            }
            let size = |n| crate::cache::human(n);
            let line = match (done, total) {
                (true, _) => format!("{label}: {} done", size(total)),
                (false, 0) => format!("{label}: {}", size(current)),
                (false, _) => format!("{label}: {} of {}", size(current), size(total)),
            };
            let _ = writeln!(io::stderr().lock(), "{}", terminal_safe(&line, colour()));
        }
    }
}

/// The transfers shown as bars ([`progress_bytes`]), by label.
static BARS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
> = std::sync::LazyLock::new(Default::default);

/// When each transfer's plain line was last printed.
static PLAIN_SEEN: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
> = std::sync::LazyLock::new(Default::default);

static MULTI: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();

/// Everything drawn on stderr in [`Progress::Tty`]: the live line and the
/// transfers' bars.
fn multi() -> &'static indicatif::MultiProgress {
    MULTI.get_or_init(|| {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
    })
}

static LIVE: std::sync::OnceLock<indicatif::ProgressBar> = std::sync::OnceLock::new();

/// Whether this process draws the live line: the worker that runs the
/// build does; kiln itself prints plain lines before and after it.
static LIVE_HERE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Let this process draw the live line ([`Progress::Tty`]).
pub fn draw_live_line_here() {
    LIVE_HERE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The live line of [`Progress::Tty`], drawn on stderr ten times a second.
fn live_line() -> &'static indicatif::ProgressBar {
    LIVE.get_or_init(|| {
        let bar = multi().add(indicatif::ProgressBar::new_spinner());
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {wide_msg}")
        {
            bar.set_style(style);
        }
        bar.set_message("working");
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        bar
    })
}

/// Clear the live line (before the result is printed, or the process ends).
pub fn finish_progress() {
    if let Ok(mut bars) = BARS.lock() {
        for (_, bar) in bars.drain() {
            bar.finish_and_clear();
        }
    }
    if let Some(bar) = LIVE.get() {
        bar.finish_and_clear();
    }
}

static COLOUR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether colour may reach stderr: only on a terminal, and never with
/// `NO_COLOR` set (<https://no-color.org>). Decided once, at start.
pub fn init_colour(no_colour: bool) {
    use std::io::IsTerminal;
    let allowed = !no_colour && io::stderr().is_terminal();
    COLOUR.store(allowed, std::sync::atomic::Ordering::Relaxed);
}

fn colour() -> bool {
    COLOUR.load(std::sync::atomic::Ordering::Relaxed)
}

/// `text` (from a builder, a daemon, a registry) as it may reach a
/// terminal: colour sequences (`ESC [ ... m`) kept only when `colour`;
/// every other escape sequence (cursor moves, title changes, OSC links)
/// dropped; other control characters but newline and tab shown escaped.
pub fn terminal_safe(text: &str, colour: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    let mut seq = String::from("\u{1b}[");
                    let mut last = None;
                    for n in chars.by_ref() {
                        seq.push(n);
                        if ('\u{40}'..='\u{7e}').contains(&n) {
                            last = Some(n);
                            break;
                        }
                    }
                    if colour && last == Some('m') {
                        out.push_str(&seq);
                    }
                }
                Some(']') => {
                    // OSC: up to BEL or ESC \\.
                    chars.next();
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' {
                            break;
                        }
                        if n == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            }
        } else if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&c.escape_default().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Write a result line to stdout. A closed pipe (`kiln ... | head`) is not an error.
pub fn result(text: &str) {
    finish_progress();
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

/// An error on stderr.
pub fn error(text: &str) {
    finish_progress();
    let _ = writeln!(
        io::stderr().lock(),
        "error: {}",
        terminal_safe(text, colour())
    );
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

    #[test]
    fn only_colour_may_reach_a_terminal() {
        let red = "\u{1b}[31mfailed\u{1b}[0m";
        assert_eq!(super::terminal_safe(red, true), red);
        assert_eq!(super::terminal_safe(red, false), "failed");
        // Cursor moves, screen clears, title changes and OSC links never pass.
        let hostile = "a\u{1b}[2J\u{1b}[Hb\u{1b}]0;pwned\u{7}c\u{1b}]8;;http://x\u{1b}\\d";
        assert_eq!(super::terminal_safe(hostile, true), "abcd");
        assert_eq!(
            super::terminal_safe("x\ry\u{7}\n\tz", true),
            "x\\ry\\u{7}\n\tz"
        );
    }
}
