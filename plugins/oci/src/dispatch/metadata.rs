//! The instructions that change only the image config, not its files:
//! their pure helpers (shell or exec form, `HEALTHCHECK` and its Go
//! durations).

use serde_json::{json, Value};

use crate::{
    dockerfile::{Args, Instruction},
    error::{at, BuildError},
};

/// `CMD`/`ENTRYPOINT` arguments: the exec form as given, the shell form
/// run by the stage's `SHELL`.
pub(super) fn shell_or_exec(args: &Args, shell: &[String]) -> Vec<String> {
    match args {
        Args::Exec(list) => list.clone(),
        Args::Shell(text) => {
            let mut v = shell.to_vec();
            v.push(text.clone());
            v
        }
    }
}

/// Go's `time.ParseDuration` for `HEALTHCHECK` flags, in nanoseconds.
pub(super) fn duration_ns(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

/// The config's `Healthcheck` for a `HEALTHCHECK` instruction.
pub(super) fn healthcheck(ins: &Instruction, shell: &[String]) -> Result<Value, BuildError> {
    let line = ins.line;
    let text = ins.original.trim();
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    if word.eq_ignore_ascii_case("NONE") {
        if !rest.trim().is_empty() || !ins.flags.is_empty() {
            return Err(at(line, "HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(json!({"Test": ["NONE"]}));
    }
    if !word.eq_ignore_ascii_case("CMD") {
        return Err(at(
            line,
            format!("HEALTHCHECK: expected CMD or NONE, found {word:?}"),
        ));
    }
    let rest = rest.trim();
    let test: Vec<String> = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(list) => std::iter::once("CMD".to_string()).chain(list).collect(),
        Err(_) if rest.is_empty() => return Err(at(line, "HEALTHCHECK CMD needs a command")),
        Err(_) => {
            let _ = shell;
            vec!["CMD-SHELL".to_string(), rest.to_string()]
        }
    };
    let mut check = json!({ "Test": test });
    for (name, value) in &ins.flags {
        let key = match name.as_str() {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: i64 = value.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    at(
                        line,
                        format!("HEALTHCHECK --retries={value}: expected a whole number"),
                    )
                })?;
                if n > 0 {
                    check["Retries"] = json!(n);
                }
                continue;
            }
            other => {
                return Err(at(
                    line,
                    format!("HEALTHCHECK --{other} is not a HEALTHCHECK option"),
                ))
            }
        };
        let ns = duration_ns(value).ok_or_else(|| {
            at(
                line,
                format!("HEALTHCHECK --{name}={value}: expected a duration such as 30s"),
            )
        })?;
        if ns > 0 {
            check[key] = json!(ns);
        }
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("10"), None);
        assert_eq!(duration_ns("x"), None);
    }
}
