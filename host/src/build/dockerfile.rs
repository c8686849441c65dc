//! Just enough of Dockerfile syntax to choose the default builder: the
//! first instruction that runs a command (`RUN`), with Docker's rules for
//! the `# escape=` directive, line continuations (comment and blank lines
//! inside one are skipped), comments and here-documents (`COPY <<EOF`). The full front end lives in the
//! `oci` builder; the host reads no more than this.

/// The 1-based line of the first `RUN`, if any.
pub fn first_run(text: &str) -> Option<usize> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut escape = '\\';
    let mut directives = true;
    let mut continuing = false;
    // Delimiters of here-documents whose bodies are still to be skipped.
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.trim_end_matches('\r');
        if let Some((name, strip_tabs)) = heredocs.first() {
            let text = if *strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if text == name {
                heredocs.remove(0);
            }
            continue;
        }
        let trimmed = line.trim_start();
        if directives {
            match directive(trimmed) {
                Some(("escape", v)) if v == "`" || v == "\\" => {
                    escape = v.chars().next().unwrap_or('\\');
                    continue;
                }
                Some(_) => continue,
                None => directives = false,
            }
        }
        if trimmed.starts_with('#') || (continuing && trimmed.is_empty()) {
            continue;
        }
        let starts = !continuing;
        continuing = line.trim_end().ends_with(escape);
        let word = trimmed.split_whitespace().next().unwrap_or("");
        if starts && word.eq_ignore_ascii_case("RUN") {
            return Some(i + 1);
        }
        let copies = word.eq_ignore_ascii_case("COPY") || word.eq_ignore_ascii_case("ADD");
        if starts && copies && !continuing {
            heredocs.extend(trimmed.split_whitespace().filter_map(|w| {
                let rest = w.strip_prefix("<<")?;
                let strip_tabs = rest.starts_with('-');
                let name = rest
                    .trim_start_matches('-')
                    .trim_matches(|c| c == '"' || c == '\'');
                (!name.is_empty()).then(|| (name.to_string(), strip_tabs))
            }));
        }
    }
    None
}

/// `# key=value` at the top of the file.
fn directive(line: &str) -> Option<(&str, &str)> {
    let body = line.strip_prefix('#')?.trim();
    let (k, v) = body.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphabetic())).then_some((k, v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_run_past_continuations_and_comments() {
        assert_eq!(first_run("FROM scratch\nCOPY a /\n"), None);
        assert_eq!(first_run("FROM scratch\n  run make\n"), Some(2));
        // A RUN inside another instruction's continuation is an argument.
        assert_eq!(first_run("FROM x\nLABEL a=1 \\\n  # c\n\nRUN=2\n"), None);
        assert_eq!(
            first_run("FROM x\nENV A=1 \\\n    B=2\nRUN true\n"),
            Some(4)
        );
        assert_eq!(first_run("FROM x\n# RUN nothing\nCOPY a b\n"), None);
        // With the backtick escape, a backslash does not continue a line.
        assert_eq!(
            first_run("# escape=`\nFROM x\nCOPY a c:\\\nRUN dir\n"),
            Some(4)
        );
        assert_eq!(first_run("# escape=`\nFROM x\nLABEL a=1 `\nRUN=x\n"), None);
        // A here-document's body is not an instruction.
        assert_eq!(
            first_run("FROM x\nCOPY <<EOF /notes\nRUN is just text here\nEOF\nRUN real\n"),
            Some(5)
        );
    }
}
